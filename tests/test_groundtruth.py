"""The reduced space, the ground-truth table, and replaying controllers on it."""

import json
import math

import pytest
from optuna.trial import TrialState

from benchmarks.replay_search import Target, hypervolume, replay
from benchmarks.truth_table import GroundTruth
from search_spaces import get_space, load_architecture
from search_spaces.base import decisions_key
from searchkd.errors import SearchKDError

SPACE = get_space("mobilenet-reduced")


def test_reduced_space_has_256_distinct_mobilenet_members():
    members = list(SPACE.members())
    assert len(members) == SPACE.size() == 256
    archs = [SPACE.from_decisions(d) for d in members]
    assert len({json.dumps(a, sort_keys=True) for a in archs}) == 256
    assert SPACE.arch_family == "mobilenet"
    space, arch = load_architecture(archs[-1])  # an export loads in the full space
    assert space.name == "mobilenet" and arch == archs[-1]
    assert archs[0] == SPACE.smallest()
    macs = [SPACE.macs(a, 40, 1, 10) for a in archs]
    assert min(macs) == macs[0] < max(macs)


def fake_table(path, noise=0.02):
    """Accuracy grows with the late stages' width and depth; seeds differ by +-noise;
    latency is MACs per million (ms)."""
    rows = []
    for i, d in enumerate(SPACE.members()):
        arch = SPACE.from_decisions(d)
        base = 0.5 + 0.1 * (d["late_width"] == 1.0) + 0.05 * (d["late_layers"] == 2)
        base += 0.02 * (d["early_kernel"] == 5)
        macs = SPACE.macs(arch, 40, 1, 10)
        rows.append(
            {
                "member": i,
                "key": decisions_key(d),
                "decisions": d,
                "macs": macs,
                "params": 1000 + i,
                "latency_ms": macs / 1e6,
                "accuracy": {"e2_s0": base - noise, "e2_s1": base + noise, "e10_s0": base + 0.2},
                "zero_cost": {"naswot": [base * 100, base * 100 + 1]},
            }
        )
    path.write_text(json.dumps({"space": SPACE.name, "members": rows}))
    return GroundTruth.load(path)


def test_table_lookups_and_noise(tmp_path):
    truth = fake_table(tmp_path / "t.json")
    member = truth.members[5]
    assert member.runs("e2") == [member.accuracy["e2_s0"], member.accuracy["e2_s1"]]
    assert member.mean("e2") == pytest.approx(sum(member.runs("e2")) / 2)
    assert truth.noise("e2") == pytest.approx(math.sqrt(2) * 0.02)  # stdev of {b-n, b+n}
    with pytest.raises(SearchKDError, match="two seeds"):
        truth.noise("e10")
    assert truth.member(SPACE.from_decisions(member.decisions)) is member
    limit = 4e6
    assert all(m.macs <= limit for m in truth.feasible({"macs": limit}))
    assert 0 < len(truth.feasible({"macs": limit})) < 256


def test_bad_table_is_one_clear_error(tmp_path):
    with pytest.raises(SearchKDError, match="not found"):
        GroundTruth.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"space": "mobilenet-reduced"}')
    with pytest.raises(SearchKDError, match="malformed"):
        GroundTruth.load(tmp_path / "bad.json")


def test_hypervolume_by_hand():
    # Two points (acc, cost) above reference (0.5, 10): (0.7, 2) and (0.9, 6).
    # Cost 2..6 at best 0.7 -> 4 * 0.2; cost 6..10 at best 0.9 -> 4 * 0.4; total 2.4.
    assert hypervolume([(0.7, 2), (0.9, 6)], 0.5, 10) == pytest.approx(2.4)
    assert hypervolume([(0.7, 2), (0.6, 3), (0.9, 6)], 0.5, 10) == pytest.approx(2.4)
    assert hypervolume([(0.9, 11), (0.4, 1)], 0.5, 10) == 0.0  # outside the box


def test_target_counts_trials_to_a_good_member(tmp_path):
    truth = fake_table(tmp_path / "t.json")
    target = Target.of(truth, "e2", "macs", 6e6)
    good = [m for m in target.feasible if target.good(m)]
    bad = [m for m in target.feasible if not target.good(m)]
    assert good and bad
    assert all(m.mean("e2") >= target.best - target.noise for m in good)

    class Trace:
        trained = [bad[0], bad[1], good[0]]
        observed = [0.1, 0.2, 0.3]

    assert target.trials_to_good(Trace) == 3
    assert 0 < target.hv_ratio(Trace, 3) <= 1
    assert target.picked(Trace, 3, "e10") == good[0].mean("e10")


@pytest.mark.parametrize("controller", ["random", "akd"])
def test_replay_trains_only_feasible_members_and_is_reproducible(tmp_path, controller):
    truth = fake_table(tmp_path / "t.json")
    limit = {"macs": 6e6}
    trace = replay(truth, controller, 3, limit, trials=12)
    again = replay(truth, controller, 3, limit, trials=12)
    assert len(trace.trained) == 12
    assert all(m.macs <= 6e6 for m in trace.trained)
    assert all(acc in m.runs("e2") for acc, m in zip(trace.observed, trace.trained, strict=True))
    assert [m.index for m in trace.trained] == [m.index for m in again.trained]
    assert trace.observed == again.observed


def test_replay_asking_for_more_trials_than_feasible_members_ends_with_all_of_them(tmp_path):
    """Under a budget only a few members meet, a controller runs out of new architectures
    before the trial count: the replay ends with every feasible member trained once."""
    truth = fake_table(tmp_path / "t.json")
    limit = {"macs": 6e6}
    feasible = {m.index for m in truth.feasible(limit)}
    trace = replay(truth, "random", 0, limit, trials=len(feasible) + 20)
    assert sorted(m.index for m in trace.trained) == sorted(feasible)


def test_zero_cost_skip_in_replay_skips_low_scores_without_counting_them(tmp_path):
    truth = fake_table(tmp_path / "t.json")
    skip = {"skip_quantile": 0.5, "min_history": 3}
    trace = replay(truth, "random", 0, {"macs": 6e6}, trials=15, zero_cost=skip)
    assert len(trace.trained) == 15 and trace.skipped > 0
    plain = replay(truth, "random", 0, {"macs": 6e6}, trials=15)
    assert trace.skipped and plain.skipped == 0
    # Skipping low scores (here: low accuracy) raises the mean accuracy trained.
    mean = lambda t: sum(m.mean("e2") for m in t.trained) / len(t.trained)  # noqa: E731
    assert mean(trace) > mean(plain)


def test_skipped_trials_are_pruned_with_their_score_and_reason(tmp_path):
    from benchmarks.replay_search import ReplaySearch
    from runners.local import LocalRunner
    from searchkd.config import SearchConfig

    truth = fake_table(tmp_path / "t.json")
    config = SearchConfig(
        space=SPACE.name, controller="random", zero_cost={"skip_quantile": 0.5, "min_history": 3}
    )
    search = ReplaySearch(truth, "e2", config, {"macs": 6e6}, {})
    summary = LocalRunner(progress=False).run(search, 10)
    assert summary.completed == 10 and summary.pruned_now > 0
    skipped = search.study.get_trials(states=(TrialState.PRUNED,))
    trained = [t for t in search.study.get_trials(states=(TrialState.COMPLETE,))
               if t.user_attrs["trained"]]  # fmt: skip
    assert len(skipped) == summary.pruned_now
    for trial in skipped:
        assert trial.user_attrs["skipped"] is True
        assert "skipped before training: naswot score" in trial.user_attrs["pruned_reason"]
    history = [t.user_attrs["zero_cost"] for t in skipped + trained]
    assert all(isinstance(v, float) for v in history)


@pytest.mark.parametrize("controller", ["tpe", "nsga2"])
def test_optuna_samplers_do_not_stall_on_architectures_the_study_holds(tmp_path, controller):
    """A duplicate is recorded failed and TPE and NSGA-II learn only from finished trials,
    so once their model settles they propose trained architectures again and again (50 in
    a row stops a search); the loop queues an untried draw after each duplicate."""
    from benchmarks.replay_search import ReplaySearch
    from runners.local import LocalRunner
    from searchkd.config import SearchConfig

    truth = fake_table(tmp_path / "t.json")
    limit = {"macs": 6e6}
    trials = len(truth.feasible(limit)) - 2
    config = SearchConfig(space=SPACE.name, controller=controller, seed=0, trials=trials)
    search = ReplaySearch(truth, "e2", config, limit, {})
    summary = LocalRunner(progress=False).run(search, trials, max_rejections=50)
    assert summary.completed == trials
    queued = [t for t in search.study.trials if "untried_after_duplicate" in t.user_attrs]
    assert queued and all(t.user_attrs["trained"] for t in queued if t.state.is_finished())
