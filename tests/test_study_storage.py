"""Several user attributes in one journal append: the file stays a plain Optuna journal."""

from __future__ import annotations

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from searchkd.study import make_storage, set_user_attrs

ATTRS = {"accuracy_kind": "last_epoch", "seed": 3, "epoch_accuracies": [0.1, 0.4], "x": None}


def test_attributes_go_in_one_append_and_replay_in_plain_optuna(tmp_path, monkeypatch):
    path = tmp_path / "study.log"
    storage = make_storage(f"journal:{path}")
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()
    appends = []
    original = storage._backend.append_logs
    monkeypatch.setattr(
        storage._backend, "append_logs", lambda logs: (appends.append(len(logs)), original(logs))
    )
    set_user_attrs(trial, ATTRS)
    assert appends == [len(ATTRS)]  # one append (one lock, one fsync) for every attribute
    assert trial.user_attrs == ATTRS  # the running trial sees them, as with set_user_attr
    study.tell(trial, 1.0)

    reread = optuna.load_study(
        study_name="s", storage=JournalStorage(JournalFileBackend(str(path)))
    )
    assert reread.trials[0].user_attrs == ATTRS
    assert reread.trials[0].state == optuna.trial.TrialState.COMPLETE


def test_other_storages_write_one_attribute_at_a_time():
    study = optuna.create_study()  # in memory: no batched write
    trial = study.ask()
    set_user_attrs(trial, ATTRS)
    study.tell(trial, 1.0)
    assert study.trials[0].user_attrs == ATTRS


def test_a_new_trial_names_its_owner_in_the_write_that_creates_it():
    from types import SimpleNamespace

    from searchkd.search import Search
    from searchkd.study import worker_id

    holder = SimpleNamespace(study=optuna.create_study())
    trial = Search.ask(holder)  # only the study is used
    stored = holder.study._storage.get_trial(trial._trial_id)
    # a kill right after this write leaves a trial the orphan check can attribute
    assert stored.user_attrs == {"worker": worker_id()}
    assert stored.state == optuna.trial.TrialState.RUNNING
    holder.study.enqueue_trial({"x": 1})  # a queued trial is claimed, not created
    queued = Search.ask(holder)
    assert queued.suggest_int("x", 0, 3) == 1
    assert len(holder.study.trials) == 2


def test_a_sampled_architecture_is_one_append_and_replays_in_plain_optuna(tmp_path, monkeypatch):
    from search_spaces import get_space
    from searchkd.study import params_in_one_write

    path = tmp_path / "study.log"
    storage = make_storage(f"journal:{path}")
    space = get_space("mobilenet")
    study = optuna.create_study(
        storage=storage, study_name="s", sampler=optuna.samplers.TPESampler(seed=0)
    )
    study.enqueue_trial({"s1_kernel": 5})  # a fixed value among the sampled ones
    trial = study.ask()
    appends = []
    original = storage._backend.append_logs
    monkeypatch.setattr(
        storage._backend, "append_logs", lambda logs: (appends.append(len(logs)), original(logs))
    )
    with params_in_one_write(trial.storage):
        arch = space.sample(trial)
        assert appends == []  # nothing written while sampling
    decisions = space.decisions()
    assert appends == [len(decisions)]  # then every decision in one append
    assert trial.params["s1_kernel"] == 5
    assert storage.get_trial(trial._trial_id).params == trial.params
    assert space.sample(trial) == arch  # asking again reads the stored values back
    study.tell(trial, 1.0)

    reread = optuna.load_study(
        study_name="s", storage=JournalStorage(JournalFileBackend(str(path)))
    )
    assert reread.trials[0].params == trial.params
    assert set(reread.trials[0].distributions) == set(decisions)


def test_a_sampling_error_keeps_what_was_set(tmp_path):
    from searchkd.study import params_in_one_write

    storage = make_storage(f"journal:{tmp_path / 'e.log'}")
    study = optuna.create_study(storage=storage, study_name="e")
    trial = study.ask()
    try:
        with params_in_one_write(trial.storage):
            trial.suggest_int("a", 0, 3)
            raise RuntimeError("sampler broke")
    except RuntimeError:
        pass
    assert "a" in study._storage.get_trial(trial._trial_id).params
