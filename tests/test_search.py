"""End-to-end behaviour of one search, through the library API (seconds, on digits)."""

from __future__ import annotations

import dataclasses
import json
import math
import socket

import optuna
import pytest
import torch
from optuna.trial import TrialState

import searchkd
from runners.local import LocalRunner
from runners.loop import TrialLoop
from searchkd.config import build_config
from searchkd.errors import BudgetError, SearchKDError
from searchkd.export import export_students
from searchkd.search import Search
from searchkd.study import (
    is_feasible,
    make_storage,
    pareto_front,
    ranked_students,
    trained_trials,
)
from tests.conftest import tiny_settings


def make_search(run_dir, **extra) -> Search:
    return Search(build_config(overrides=tiny_settings(run_dir, **extra)), log=lambda m: None)


@pytest.mark.slow
def test_search_fills_the_study(shared_run_dir):
    search = make_search(shared_run_dir, study="fill")
    summary = LocalRunner(progress=False).run(search, 3)
    study = search.study
    trained = trained_trials(study)
    assert summary.completed == 3 and len(trained) == 3
    assert study.metric_names == ["accuracy", "macs", "latency_ms"]
    for trial in trained:
        attrs = trial.user_attrs
        assert set(trial.params) == set(search.space.decisions())
        assert attrs["macs"] == trial.values[1] <= search.budget.max_macs
        assert attrs["latency_ms"] == pytest.approx(trial.values[2])
        assert attrs["latency_spread_ms"] >= 0
        assert attrs["accuracy_kind"] == "last_epoch"
        assert attrs["epoch_accuracies"][-1] == trial.values[0]
        assert {"loss_ce", "loss_kd"} <= set(attrs)
        assert attrs["arch"]["space"] == "mobilenet"
        assert is_feasible(trial)
    assert pareto_front(study)
    assert study.user_attrs["teacher_cost"]["macs"] > 0


@pytest.mark.slow
def test_over_budget_candidates_are_rejected_untrained_and_not_counted(shared_run_dir, monkeypatch):
    search = make_search(
        shared_run_dir, study="tight", budget={"max_macs": "4M"}, controller="random"
    )
    calls = []
    original = search.train
    monkeypatch.setattr(search, "train", lambda c, n: calls.append(c) or original(c, n))
    summary = LocalRunner(progress=False).run(search, 2)
    trials = search.study.get_trials()
    rejected = [t for t in trials if t.user_attrs.get("trained") is False]
    assert summary.completed == 2 and len(calls) == 2
    assert len(rejected) == summary.rejected_now > 0
    for trial in rejected:
        assert trial.state == TrialState.COMPLETE
        assert trial.values[0] == 0.0 and trial.user_attrs["macs"] > 4e6
        assert not is_feasible(trial)
        assert trial.system_attrs["constraints"][0] > 0  # the list form the dashboard reads
        assert "over budget" in trial.user_attrs["rejected_reason"]
        assert math.isinf(trial.values[2])  # latency not measured: rejected on the count
    assert all(c.macs <= 4e6 for c in calls)


def test_the_rejection_limit_counts_candidates_over_budget_in_a_row(shared_run_dir, monkeypatch):
    """Two of every three candidates over budget is a long run's normal, not a budget
    nothing meets: the limit stops only a run of rejections with nothing in between."""
    search = make_search(
        shared_run_dir, study="in-a-row", controller="random", budget={"max_macs": "10G"}
    )
    original, calls = search.cost, iter(range(10_000))

    def over_budget(arch, number=None):
        return dataclasses.replace(original(arch, number), violations=["forced over budget"])

    def two_in_three_over(arch, number=None):
        fits = next(calls) % 3 == 2
        return original(arch, number) if fits else over_budget(arch, number)

    monkeypatch.setattr(search, "cost", two_in_three_over)
    loop = TrialLoop(search, n_trials=10, max_rejections=2)
    jobs = [loop.next_job() for _ in range(3)]
    assert all(job is not None and not job.candidate.rejected for job in jobs)
    assert loop.counts.rejected == 6  # over the limit in all, never in a row

    monkeypatch.setattr(search, "cost", over_budget)
    with pytest.raises(BudgetError, match="3 candidates in a row were over budget"):
        loop.next_job()


def test_akd_rejects_a_proposal_on_closed_form_macs_without_building_it(
    shared_run_dir, monkeypatch
):
    search = make_search(shared_run_dir, study="propose", budget={"max_macs": "4M"})
    monkeypatch.setattr(search.study.sampler, "_sample", lambda number: big_decisions(search))
    monkeypatch.setattr(search, "build", lambda arch: pytest.fail("built a rejected proposal"))
    decisions, candidate = search.propose()
    assert candidate.rejected and candidate.params is None and candidate.macs > 4e6
    before = len(search.study.trials)
    search.add_rejected(decisions, candidate)
    (stored,) = search.study.trials[before:]
    assert stored.state == TrialState.COMPLETE and stored.params == decisions
    assert stored.user_attrs["trained"] is False and not is_feasible(stored)
    assert search.reward(stored) < 0  # the controller learns from it like any rejection


def test_a_rejected_proposal_is_one_storage_write(shared_run_dir, monkeypatch):
    search = make_search(shared_run_dir, study="one-write", budget={"max_macs": "4M"})
    monkeypatch.setattr(search.study.sampler, "_sample", lambda number: big_decisions(search))
    storage = search.study._storage
    writes = []
    for method in (
        "create_new_trial",
        "set_trial_param",
        "set_trial_user_attr",
        "set_trial_system_attr",
        "set_trial_state_values",
    ):
        original = getattr(storage, method)
        monkeypatch.setattr(
            storage,
            method,
            lambda *a, _m=method, _o=original, **k: writes.append(_m) or _o(*a, **k),
        )
    search.add_rejected(*search.propose())
    assert writes == ["create_new_trial"]


def big_decisions(search) -> dict:
    """The last (largest) choice of every decision."""
    return {name: dist.choices[-1] for name, dist in search.space.decisions().items()}


def test_unreachable_budget_fails_before_the_search(shared_run_dir):
    with pytest.raises(BudgetError, match="no member of the mobilenet space") as info:
        make_search(shared_run_dir, study="impossible", budget={"max_macs": "1k"})
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "budget", [{"max_macs": "0.0001x"}, {"max_latency_ms": "0.0001"}, {"max_latency_ms": "0.001x"}]
)
def test_a_budget_no_member_meets_is_refused_before_the_teacher_trains(
    tmp_path, monkeypatch, budget
):
    """The teacher's costs are its untrained network's: a relative budget is checked on
    them, and the refusal comes in seconds, with no run folder (so no study) made."""
    monkeypatch.setattr(
        "searchkd.teacher.train_teacher", lambda *a, **k: pytest.fail("trained the teacher")
    )
    with pytest.raises(BudgetError, match="no member of the mobilenet space meets the budget"):
        make_search(tmp_path / "runs", study="refused", budget=budget)
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_resume_after_interrupt_loses_and_duplicates_nothing(shared_run_dir, monkeypatch):
    search = make_search(shared_run_dir, study="resume")
    calls = {"n": 0}
    original = search.train

    def interrupt_second(candidate, number):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(candidate, number)

    monkeypatch.setattr(search, "train", interrupt_second)
    with pytest.raises(KeyboardInterrupt):
        LocalRunner(progress=False).run(search, 3)
    study = search.study
    failed = [t for t in study.get_trials() if t.state == TrialState.FAIL]
    assert len(trained_trials(study)) == 1 and len(failed) == 1
    assert "interrupted" in failed[0].user_attrs["fail_reason"]

    resumed = make_search(shared_run_dir, study="resume")  # "rerun the same command"
    summary = LocalRunner(progress=False).run(resumed, 3)
    trained = trained_trials(resumed.study)
    assert summary.completed == 3 and summary.trained_now == 2 and len(trained) == 3
    first_run = trained_trials(study)[0]
    assert first_run.number in {t.number for t in trained}  # nothing lost
    retried = [t for t in trained if t.user_attrs.get("retry_of") == failed[0].number]
    assert len(retried) == 1 and retried[0].params == failed[0].params
    assert sum(t.params == failed[0].params for t in trained) == 1  # trained once, not twice


@pytest.mark.slow
def test_orphaned_running_trial_is_failed_on_resume(shared_run_dir):
    search = make_search(shared_run_dir, study="orphan")
    trial = search.study.ask()
    trial.set_user_attr("worker", f"{socket.gethostname()}:999999")  # a dead pid here
    alive = search.study.ask()
    alive.set_user_attr("worker", f"{socket.gethostname()}:1")  # init: alive, not ours
    LocalRunner(progress=False).run(search, 1)
    frozen = search.study.get_trials()[trial.number]
    assert frozen.state == TrialState.FAIL
    assert "process 999999" in frozen.user_attrs["fail_reason"]
    assert search.study.get_trials()[alive.number].state == TrialState.RUNNING


@pytest.mark.slow  # >= 1 s: the full suite runs it
def test_export_and_load_student_round_trip(shared_run_dir, tmp_path):
    search = make_search(shared_run_dir, study="fill")
    LocalRunner(progress=False).run(search, 3)  # already complete: runs nothing
    paths = export_students(search.study, tmp_path, top=2)
    assert len(paths) == 2
    record = json.loads(paths[0].read_text())
    pick = ranked_students(search.study)[0]  # what export takes first: the search's pick
    assert record["trial"] == pick.number and record["arch"] == pick.user_attrs["arch"]
    with pytest.warns(UserWarning, match="architecture only: the model has fresh random") as w:
        model = searchkd.load_student(paths[0])  # not retrained: no weights to load
    assert w[0].filename == __file__  # points at the caller's line
    out = model(torch.zeros(2, *record["input_shape"]))
    assert out.shape == (2, record["num_classes"])
    assert sum(p.numel() for p in model.parameters()) == record["metrics"]["params"]


def test_load_student_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SearchKDError, match="not valid JSON"):
        searchkd.load_student(bad)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(SearchKDError, match="not a searchkd student file"):
        searchkd.load_student(other)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(
        json.dumps(
            {
                "format": "searchkd-student",
                "format_version": 1,
                "arch": {"space": "nope"},
                "input_shape": [1, 8, 8],
                "num_classes": 10,
            }
        )
    )
    with pytest.raises(SearchKDError, match="nope"):
        searchkd.load_student(wrong)


@pytest.mark.slow
def test_teacher_is_trained_once_and_reused(shared_run_dir):
    first = make_search(shared_run_dir, study="reuse-a")
    second = make_search(shared_run_dir, study="reuse-b")
    assert first.teacher.folder == second.teacher.folder
    assert len(first.teacher.route) == 2 and all(p.exists() for p in first.teacher.route)
    for a, b in zip(
        first.teacher.model.parameters(), second.teacher.model.parameters(), strict=True
    ):
        assert torch.equal(a, b)


@pytest.mark.slow
def test_study_resumed_with_other_settings_is_refused(shared_run_dir):
    make_search(shared_run_dir, study="spaces")
    with pytest.raises(SearchKDError, match=r"other settings \(.*space.* differ\)"):
        make_search(shared_run_dir, study="spaces", space="resnet", budget={"max_macs": None})
    with pytest.raises(SearchKDError, match=r"\(budget.max_macs differ\)"):
        make_search(shared_run_dir, study="spaces", budget={"max_macs": "5M"})
    make_search(shared_run_dir, study="spaces", trials=7)  # the count may change


@pytest.mark.slow
def test_a_study_of_an_older_space_version_is_refused(shared_run_dir):
    """The compact space gained the basic block in version 2: its decisions' choices
    changed, so a study made with version 1 (no version among its settings) is refused
    with the setting named instead of failing inside Optuna."""
    search = make_search(shared_run_dir, study="v1", space="compact", budget={"max_macs": None})
    settings = search.study.user_attrs["settings"]
    assert settings["space_version"] == search.space.version == 2
    del settings["space_version"]
    search.study.set_user_attr("settings", settings)
    with pytest.raises(SearchKDError, match=r"\(space_version differ\)"):
        make_search(shared_run_dir, study="v1", space="compact", budget={"max_macs": None})
    assert "space_version" not in make_search(shared_run_dir, study="v0").settings()


def test_a_bad_teacher_or_table_is_named_before_the_study_is_compared_or_made(
    shared_run_dir, tmp_path
):
    make_search(shared_run_dir, study="named")
    with pytest.raises(SearchKDError, match="teacher arch 'resnet999' is neither a member"):
        make_search(shared_run_dir, study="named", teacher={"arch": "resnet999"})
    (tmp_path / "teacher.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SearchKDError, match=r"no teacher.json beside /.*teacher.pt; a searchkd"):
        make_search(
            shared_run_dir, study="named", teacher={"checkpoint": str(tmp_path / "teacher.pt")}
        )
    with pytest.raises(SearchKDError, match="nope.json"):
        make_search(shared_run_dir, study="named", latency={"meter": "lut:/nope.json"})
    storage = make_storage(build_config(overrides=tiny_settings(shared_run_dir)).storage_url)
    before = optuna.get_all_study_names(storage)
    with pytest.raises(SearchKDError, match="resnet999"):
        make_search(shared_run_dir, study="never-made", teacher={"arch": "resnet999"})
    assert optuna.get_all_study_names(storage) == before  # no empty study left behind


@pytest.mark.slow
def test_cross_entropy_only_loss_and_bad_loss_fail_fast(shared_run_dir):
    search = make_search(shared_run_dir, study="ce-only", loss={"weights": {"ce": 1.0}})
    LocalRunner(progress=False).run(search, 1)
    assert "loss_kd" not in trained_trials(search.study)[0].user_attrs
    with pytest.raises(SearchKDError, match="unknown loss|known"):
        make_search(shared_run_dir, study="bad-loss", loss={"weights": {"kdd": 1.0}})


@pytest.mark.slow
def test_a_candidate_that_cannot_be_costed_fails_its_trial_and_the_search_goes_on(
    shared_run_dir, monkeypatch
):
    search = make_search(shared_run_dir, study="odd-candidate")
    original, calls = search.cost, {"n": 0}

    def odd_first(arch, number=None):
        calls["n"] += 1
        if calls["n"] <= 2:  # the proposal, then the same candidate inside its trial
            raise RuntimeError("odd op the exporter cannot translate")
        return original(arch, number)

    monkeypatch.setattr(search, "cost", odd_first)
    summary = LocalRunner(progress=False).run(search, 2)
    failed = [t for t in search.study.trials if t.state == TrialState.FAIL]
    assert summary.completed == 2 and summary.failed_now == 1 and len(failed) == 1
    assert failed[0].user_attrs["fail_reason"].startswith("RuntimeError: odd op")


@pytest.mark.slow
def test_every_accepted_candidate_failing_stops_the_search_though_rejections_come_between(
    shared_run_dir, monkeypatch
):
    search = make_search(
        shared_run_dir, study="all-fail", budget={"max_macs": "4M"}, controller="random"
    )

    def broken(candidate, number):
        raise RuntimeError("kernel not implemented")

    monkeypatch.setattr(search, "train", broken)
    with pytest.raises(SearchKDError, match=r"^3 trials in a row failed \(last: RuntimeError"):
        LocalRunner(progress=False).run(search, 5)
    trials = search.study.get_trials()
    failed = [t.number for t in trials if t.state == TrialState.FAIL]
    rejected = [t.number for t in trials if t.user_attrs.get("trained") is False]
    assert len(failed) == 3
    assert any(failed[0] < number < failed[-1] for number in rejected)  # the case at stake


@pytest.mark.slow
def test_zero_cost_prescreen_skips_candidates_untrained_and_records_scores(shared_run_dir):
    search = make_search(
        shared_run_dir,
        study="zero-cost",
        controller="random",
        zero_cost={"skip_quantile": 0.6, "min_history": 2, "batch": 16},
    )
    summary = LocalRunner(progress=False).run(search, 4)
    study = search.study
    trained = trained_trials(study)
    skipped = study.get_trials(states=(TrialState.PRUNED,))
    assert summary.completed == len(trained) == 4
    assert summary.pruned_now == len(skipped) > 0
    for trial in skipped:
        assert trial.user_attrs["skipped"] is True and trial.user_attrs["epoch_accuracies"] == []
        assert "skipped before training: naswot score" in trial.user_attrs["pruned_reason"]
    assert all(isinstance(t.user_attrs["zero_cost"], float) for t in trained + skipped)
