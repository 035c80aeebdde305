"""Optuna's private API, used only through ``searchkd/optuna_internals.py``, checked
against the installed Optuna; and the samplers' use of the constraints the search stores."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import tomllib
from optuna.distributions import CategoricalDistribution
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState
from packaging.requirements import Requirement

from searchkd import optuna_internals as internals
from searchkd.study import CONSTRAINTS_KEY

ROOT = Path(__file__).resolve().parent.parent


def test_installed_optuna_is_a_supported_version():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pinned = [Requirement(r) for r in project["project"]["dependencies"] if r.startswith("optuna")]
    optuna_pin = next(r for r in pinned if r.name == "optuna")
    assert str(optuna_pin.specifier) == str(Requirement(f"optuna{internals.SUPPORTED}").specifier)
    assert optuna_pin.specifier.contains(optuna.__version__), (
        f"Optuna {optuna.__version__} is outside {internals.SUPPORTED}: check every function "
        "in searchkd/optuna_internals.py against it, then widen SUPPORTED and pyproject.toml"
    )


def _journal(path: Path) -> JournalStorage:
    return JournalStorage(JournalFileBackend(str(path)))


def test_private_calls_work_on_a_journal_read_by_another_process(tmp_path):
    """What one storage object writes, a second one on the same file (another searcher)
    reads back: the trial made in one write, attributes written by id, batched records."""
    path = tmp_path / "study.log"
    study = optuna.create_study(study_name="s", storage=_journal(path))
    distribution = CategoricalDistribution(["a", "b"])
    template = optuna.trial.create_trial(
        state=TrialState.RUNNING,
        params={"x": "b"},
        distributions={"x": distribution},
        user_attrs={"worker": "me"},
    )
    trial = internals.create_trial(study, template)
    assert trial.params == {"x": "b"} and trial.user_attrs == {"worker": "me"}

    internals.set_user_attr(study, trial, "fail_reason", "why")
    internals.set_system_attr(study, trial, CONSTRAINTS_KEY, [1.0, -1.0])
    other = optuna.load_study(study_name="s", storage=_journal(path))
    other.tell(trial.number, state=TrialState.FAIL)
    frozen = internals.stored_trial(study, trial)
    assert frozen.state == TrialState.FAIL  # ended by the other storage object
    assert frozen.user_attrs["fail_reason"] == "why"
    assert list(frozen.constraints.values()) == [1.0, -1.0]
    assert internals.trial_id(trial) == internals.trial_id(frozen)

    running = internals.create_trial(study, optuna.trial.create_trial(state=TrialState.RUNNING))
    record = {
        "op_code": internals.JournalOperation.SET_TRIAL_USER_ATTR,
        "worker_id": internals.journal_worker(study._storage),
        "trial_id": internals.trial_id(running),
        "user_attr": {"k": 1},
    }
    internals.append_journal_records(study._storage, [record])
    internals.keep_cached_user_attrs(running, {"k": 1})
    assert running.user_attrs["k"] == 1
    reread = optuna.load_study(study_name="s", storage=_journal(path))
    assert reread.trials[running.number].user_attrs["k"] == 1
    assert isinstance(internals.journal_worker(study._storage), str)


def _share_within_budget(sampler_factory, constrained: bool) -> float:
    """80 trials of a two-decision problem where ``x="big"`` is more accurate (0.9 against
    0.5) and, when ``constrained``, over budget, its constraint stored as the search stores
    it; the share of ``x="fast"`` among the last 30 samples."""
    study = optuna.create_study(direction="maximize", sampler=sampler_factory())
    picks = []
    for _ in range(80):
        trial = study.ask()
        x = trial.suggest_categorical("x", ["fast", "big"])
        y = trial.suggest_categorical("y", [0, 1, 2, 3])
        over = constrained and x == "big"
        internals.set_system_attr(study, trial, CONSTRAINTS_KEY, [1.0 if over else -1.0])
        study.tell(trial, (0.9 if x == "big" else 0.5) + 0.01 * y)
        picks.append(x)
    return picks[-30:].count("fast") / 30


@pytest.mark.parametrize(
    "factory",
    [
        lambda: optuna.samplers.TPESampler(seed=0, multivariate=True, n_startup_trials=10),
        lambda: optuna.samplers.NSGAIISampler(seed=0, population_size=10),
    ],
    ids=["tpe", "nsga2"],
)
def test_tpe_and_nsga2_avoid_what_the_stored_constraints_call_over_budget(factory):
    """No ``constraints_func`` (deprecated since Optuna 5.0): the samplers read the
    constraints the search stores on each trial. With them, the accurate but over-budget
    choice is avoided; without them, it is preferred."""
    with_constraints = _share_within_budget(factory, constrained=True)
    without = _share_within_budget(factory, constrained=False)
    assert with_constraints > 0.5 > without
