"""The zero-cost warm-up: a scored pool within budget, its best queued as the first trials,
once per study (on the fake ground truth, and end to end on digits)."""

from __future__ import annotations

import random

import pytest
from optuna.trial import TrialState

from benchmarks.replay_search import ReplaySearch, replay
from runners.local import LocalRunner
from searchkd.config import SearchConfig, build_config
from searchkd.search import Search
from searchkd.study import HAND_DESIGNED
from searchkd.warm_start import RECORD, sample_pool, warm_start
from tests.conftest import fast_settings
from tests.test_groundtruth import fake_table

LIMIT = {"macs": 6e6}


def replay_search(truth, seed: int = 1, **zero_cost) -> ReplaySearch:
    config = SearchConfig(space=truth.space.name, controller="random", seed=seed, trials=30,
                          zero_cost=zero_cost)  # fmt: skip
    return ReplaySearch(truth, "e2", config, LIMIT, {})


def table_score(search: ReplaySearch, decisions: dict, index: int) -> float:
    """The fake table's NASWOT score at the init seed the replay seed picks (two recorded)."""
    member = search.truth.member(search.space.from_decisions(decisions))
    return member.zero_cost["naswot"][
        random.Random(f"{search.config.seed}:pool:{index}").randrange(2)
    ]


def waiting(search) -> list:
    return search.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))


def queued_decisions(search) -> list[dict]:
    """What the queued (waiting) trials will train: Optuna keeps it as fixed params."""
    return [t.system_attrs["fixed_params"] for t in waiting(search)]


def test_warm_up_queues_the_top_k_of_a_pool_within_budget_in_score_order(tmp_path):
    truth = fake_table(tmp_path / "t.json")
    search = replay_search(truth, warmup_pool=20, warmup_trials=4)
    excess = search._prescreen()
    pool, _ = sample_pool(search.space.decisions(), 20, 1, lambda d: excess(d) > 0, 4000)
    assert len({str(sorted(d.items())) for d in pool}) == 20  # distinct
    assert all(truth.member(search.space.from_decisions(d)).macs <= 6e6 for d in pool)
    scores = [table_score(search, d, i) for i, d in enumerate(pool)]
    record = search.study.user_attrs[RECORD]
    assert record["scores"] == scores and record["pool"] == 20
    expected = sorted(range(20), key=lambda i: -scores[i])[:4]
    queued = waiting(search)
    assert queued_decisions(search) == [pool[i] for i in expected]
    assert [t.user_attrs[RECORD]["rank"] for t in queued] == [1, 2, 3, 4]
    assert [t.user_attrs[RECORD]["score"] for t in queued] == [scores[i] for i in expected]


def test_pool_members_over_budget_are_passed_over_never_queued(tmp_path):
    truth = fake_table(tmp_path / "t.json")
    search = replay_search(truth)
    search.config.zero_cost.warmup_pool, search.config.zero_cost.warmup_trials = 60, 5
    # A cheap check that misses what the full one catches (as closed-form MACs miss a
    # latency budget): the pool holds over-budget members.
    record = warm_start(search, lambda decisions: 0.0)
    macs = [truth.member(search.space.from_decisions(d)).macs for d in queued_decisions(search)]
    assert len(macs) == 5 and max(macs) <= 6e6
    assert record["passed_over_budget"] > 0  # the best scores belong to the big members
    ranks = [q["rank"] for q in record["queued"]]
    assert ranks == sorted(ranks) and ranks[-1] == 5 + record["passed_over_budget"]


def test_warm_up_runs_once_and_an_interrupted_one_queues_only_what_is_missing(
    tmp_path, monkeypatch
):
    truth = fake_table(tmp_path / "t.json")
    search = replay_search(truth)
    search.config.zero_cost.warmup_pool, search.config.zero_cost.warmup_trials = 20, 3
    study = search.study
    set_attr = study.set_user_attr

    def killed(key, value):
        if key == RECORD:
            raise KeyboardInterrupt  # after the trials were queued, before the record
        set_attr(key, value)

    monkeypatch.setattr(study, "set_user_attr", killed)
    with pytest.raises(KeyboardInterrupt):
        warm_start(search, search._prescreen())
    monkeypatch.setattr(study, "set_user_attr", set_attr)
    first = queued_decisions(search)
    record = warm_start(search, search._prescreen())
    assert queued_decisions(search) == first and len(first) == 3
    assert warm_start(search, search._prescreen()) == record  # done: nothing scored again
    assert len(waiting(search)) == 3


def test_replay_with_warm_up_trains_the_queue_first_and_is_reproducible(tmp_path):
    truth = fake_table(tmp_path / "t.json")
    warmup = {"warmup_pool": 15, "warmup_trials": 3}
    trace = replay(truth, "akd", 2, LIMIT, trials=10, zero_cost=warmup)
    again = replay(truth, "akd", 2, LIMIT, trials=10, zero_cost=warmup)
    assert [m.index for m in trace.trained] == [m.index for m in again.trained]
    assert trace.observed == again.observed and trace.queued == 3 and trace.pool == 15
    search = replay_search(truth, seed=2, **warmup)
    top = sorted(search.study.user_attrs[RECORD]["scores"], reverse=True)[:3]
    scores = [m.zero_cost["naswot"] for m in trace.trained[:3]]
    assert all(any(s == t for s in pair) for pair, t in zip(scores, top, strict=True))


@pytest.mark.slow
def test_search_trains_the_warm_up_first_learns_from_it_and_resumes_without_requeueing(
    shared_run_dir, monkeypatch
):
    settings = fast_settings(
        shared_run_dir,
        study="warm-up",
        space="mobilenet",  # closed-form MACs: the pool is drawn without building anything
        zero_cost={"warmup_pool": 4, "warmup_trials": 2, "batch": 16},
    )
    search = Search(build_config(overrides=settings), log=lambda m: None)
    LocalRunner(progress=False).run(search, 3)
    trials = search.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    trained = [t for t in trials if t.user_attrs["trained"]]
    assert [t.user_attrs[RECORD]["rank"] for t in trained[:2]] == [1, 2]
    assert [t.number for t in trained[:2]] == [0, 1] and RECORD not in trained[2].user_attrs
    assert {0, 1} <= {number for number, _, _ in search.study.sampler.history}  # learned from
    record = search.study.user_attrs[RECORD]
    assert record["pool"] == 4 and len(record["scores"]) == 4 and record["seconds"] > 0
    assert [q["score"] for q in record["queued"]] == sorted(record["scores"], reverse=True)[:2]

    def no_scoring(*args):
        raise AssertionError("a resumed search scored the pool again")

    monkeypatch.setattr(Search, "pool_score", no_scoring)
    resumed = Search(build_config(overrides=settings), log=lambda m: None)
    assert not waiting(resumed) and resumed.study.user_attrs[RECORD] == record
    queued = [t for t in resumed.study.get_trials(deepcopy=False) if RECORD in t.user_attrs]
    assert len(queued) == 2


def test_warm_up_queues_at_most_its_pool(tmp_path):
    truth = fake_table(tmp_path / "t.json")
    search = replay_search(truth, warmup_pool=3)  # warmup_trials: 5 by default
    assert len(waiting(search)) == 3 and search.study.user_attrs[RECORD]["pool"] == 3


@pytest.mark.slow
def test_hand_designed_members_within_budget_are_trained_first_once(shared_run_dir):
    """Per family the largest member within budget, largest first. At 1x8x8 the compact
    members cost: plain8 99k, plain12 220k, plain16 391k; plain8x2 292k, plain12x2 656k;
    ds16 91k, ds24 186k; res12 205k, res16 346k; res8x2 202k, res12x2 445k MACs; under
    300k that is plain8x2, plain12, res12, res8x2 and ds24."""
    settings = fast_settings(
        shared_run_dir, study="hand", space="compact", budget={"max_macs": "300k"}
    )
    search = Search(build_config(overrides=settings), log=lambda m: None)
    expected = ["plain8x2", "plain12", "res12", "res8x2", "ds24"]
    assert search.study.user_attrs[HAND_DESIGNED] == expected
    LocalRunner(progress=False).run(search, 6)
    trained = [t for t in search.study.get_trials(deepcopy=False) if t.user_attrs.get("trained")]
    assert [t.user_attrs.get(HAND_DESIGNED) for t in trained] == [*expected, None]
    canonical = search.space.canonical()
    assert [t.user_attrs["arch"] for t in trained[:5]] == [canonical[name] for name in expected]
    resumed = Search(build_config(overrides=settings), log=lambda m: None)
    assert not waiting(resumed)


def test_hand_designed_seeds_can_be_turned_off(shared_run_dir):
    settings = fast_settings(
        shared_run_dir, study="no-hand", space="compact", hand_designed_seeds=False
    )
    search = Search(build_config(overrides=settings), log=lambda m: None)
    assert not waiting(search) and HAND_DESIGNED not in search.study.user_attrs
