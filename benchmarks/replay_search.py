"""Replay a search on a ground-truth table: the real runner, study, budget, reward and
controller, with a lookup where the proxy training would be.

Only two things differ from ``searchkd search``. Training returns a recorded accuracy of
the member, the seed drawn at random per trial, so seed noise is part of the replay.
Costs come from the table: closed-form MACs, counted parameters, latency measured on one
CPU. The AKD warm-up pre-screens on the table's costs, as a search with a ``lut:`` latency
meter does.
"""

from __future__ import annotations

import logging
import math
import random
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from benchmarks.truth_table import GroundTruth, Member
from searchkd.budget import Budget
from searchkd.config import SearchConfig
from searchkd.errors import SearchKDError
from searchkd.meters import Latency
from searchkd.proxy import ProxyResult
from searchkd.study import DIRECTIONS, OBJECTIVES
from searchkd.study_lock import StudyLock
from searchkd.trials import Candidate, TrialCore
from searchkd.warm_start import RECORD

LOOKED_UP = "none (looked up in the ground-truth table)"  # a replayed trial's train_device


class BudgetUnseen(Budget):
    """A budget that still rejects candidates but stores every constraint as met, for the
    ablation of constraint-aware samplers: TPE and NSGA-II then see a rejected candidate
    only as accuracy 0 (what they would see with no constraints at all)."""

    def constraints(self, measured: dict[str, float | None]) -> list[float]:
        return [0.0] * len(self.NAMES)


BLIND = "-blind"  # a controller name's suffix: the samplers do not see the budget


class ReplaySearch(TrialCore):
    """A search whose candidates are looked up in a ground truth, not trained: the trial
    core with the table's costs and recorded accuracies, on an in-memory study."""

    def __init__(
        self,
        truth: GroundTruth,
        setting: str,
        config: SearchConfig,
        limits: dict[str, float],
        teacher_cost: dict[str, float | None],
        blind: bool = False,
    ) -> None:
        self.truth = truth
        self.setting = setting
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(directions=[d.name.lower() for d in DIRECTIONS])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(OBJECTIVES))
        budget = (BudgetUnseen if blind else Budget)(
            max_macs=limits.get("macs"),
            max_params=limits.get("params"),
            max_latency_ms=limits.get("latency_ms"),
        )
        # An in-memory study no other process sees: the lock is this process's alone.
        lock = StudyLock("sqlite:///:memory:", f"replay-{id(study)}")
        super().__init__(config, truth.space, study, lock, budget, teacher_cost, lambda m: None)
        self.start()

    def _prescreen(self):
        limits = {k: v for k, v in self.budget.limits.items() if v is not None}

        def excess(decisions: dict[str, Any]) -> float:
            member = self.truth.member(self.space.from_decisions(decisions))
            worst = max(member.cost(name) / limit for name, limit in limits.items())
            return max(math.log(max(worst, 1e-12)), 0.0)

        return excess if limits else None

    def cost(self, arch: dict[str, Any], number: int | None = None) -> Candidate:
        member = self.truth.member(arch)
        latency = (
            Latency(member.latency_ms, 0.0, 1, "ground-truth")
            if member.latency_ms is not None
            else None
        )
        candidate = Candidate(number, arch, member.macs, member.params, latency)
        candidate.violations = self.budget.violations(candidate.measured)
        return candidate

    def _scores(self, member: Member) -> list[float]:
        """The member's recorded training-free scores of the configured kind, per init seed."""
        scores = (member.zero_cost or {}).get(self.config.zero_cost.score)
        if not scores:
            raise SearchKDError(f"the table has no {self.config.zero_cost.score} scores")
        return scores

    def pool_score(self, decisions: dict[str, Any], index: int) -> float:
        """The warm-up's score of a pool member: one recorded init seed, drawn by the
        replay seed (as the accuracy seed is drawn per trial)."""
        scores = self._scores(self.truth.member(self.space.from_decisions(decisions)))
        return scores[random.Random(f"{self.config.seed}:pool:{index}").randrange(len(scores))]

    def train(self, candidate: Candidate, number: int) -> ProxyResult:
        member = self.truth.member(candidate.arch)
        draw = random.Random(f"{self.config.seed}:{number}")
        if self.config.zero_cost.skip_quantile > 0:
            scores = self._scores(member)
            self.screen(candidate, scores[draw.randrange(len(scores))])  # init seed
        runs = member.runs(self.setting)
        pick = draw.randrange(len(runs))
        accuracy = runs[pick]
        return ProxyResult(accuracy, accuracy, [accuracy], 0.0, 0.0, {}, pick, device=LOOKED_UP)


@dataclass
class ReplayTrace:
    """What one replayed search trained, in order, and what it cost."""

    controller: str
    seed: int
    trained: list[Member]  # in trial order
    observed: list[float]  # the accuracy each trial reported
    rejected: int
    skipped: int = 0  # by the training-free pre-screen
    queued: int = 0  # by the zero-cost warm-up (the first trials)
    pool: int = 0  # candidates the warm-up scored


def replay(
    truth: GroundTruth,
    controller: str,
    seed: int,
    limits: dict[str, float],
    trials: int,
    setting: str = "e2",
    teacher_cost: dict[str, float | None] | None = None,
    akd: dict[str, Any] | None = None,
    zero_cost: dict[str, Any] | None = None,
) -> ReplayTrace:
    """Run the local runner on the table with ``controller`` until ``trials`` are trained
    (or every member within the limits is). ``controller`` may end in ``-blind``: the
    samplers then do not see the budget's constraints (:class:`BudgetUnseen`)."""
    from runners.local import LocalRunner
    from runners.loop import SpaceUsedUp

    blind = controller.endswith(BLIND)
    config = SearchConfig(
        space=truth.space.name,
        controller=controller.removesuffix(BLIND),
        seed=seed,
        trials=trials,
        akd=akd or {},
        zero_cost=zero_cost or {},
    )
    search = ReplaySearch(truth, setting, config, limits, teacher_cost or {}, blind)
    logging.getLogger("optuna").setLevel(logging.WARNING)
    # A search trains each architecture once, so it can train no more members than the
    # budget admits (62 of 256 under the MACs budget); a controller that keeps proposing
    # ones it has trained before the last is found ends with what it trained.
    trials = min(trials, len(truth.feasible(limits)))
    try:
        LocalRunner(progress=False).run(search, trials, max_rejections=100 * trials)
    except SpaceUsedUp:
        pass
    trained, observed, rejected = [], [], 0
    for trial in search.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if trial.user_attrs.get("trained"):
            trained.append(truth.member(trial.user_attrs["arch"]))
            observed.append(trial.values[0])
        else:
            rejected += 1
    skipped = sum(
        bool(t.user_attrs.get("skipped"))
        for t in search.study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
    )
    warmup = search.study.user_attrs.get(RECORD) or {"queued": [], "pool": 0}
    return ReplayTrace(
        controller,
        seed,
        trained,
        observed,
        rejected,
        skipped,
        len(warmup["queued"]),
        warmup["pool"],
    )


def hypervolume(points: Sequence[tuple[float, float]], acc_ref: float, cost_ref: float) -> float:
    """Area dominated by (accuracy up, cost down) points, bounded by the reference point
    (``acc_ref``, ``cost_ref``); points worse than it on either axis add nothing."""
    inside = sorted((c, a) for a, c in points if c <= cost_ref and a > acc_ref)
    area, best = 0.0, acc_ref
    for i, (cost, acc) in enumerate(inside):
        best = max(best, acc)
        next_cost = inside[i + 1][0] if i + 1 < len(inside) else cost_ref
        area += (next_cost - cost) * (best - acc_ref)
    return area


@dataclass
class Target:
    """The yardsticks of one (table, setting, budget): the best feasible mean accuracy,
    the noise, and the true front's hypervolume."""

    setting: str
    metric: str  # the budgeted cost: "macs" or "latency_ms"
    limit: float
    feasible: list[Member]
    best: float
    noise: float
    acc_ref: float
    true_hv: float

    @classmethod
    def of(cls, truth: GroundTruth, setting: str, metric: str, limit: float) -> Target:
        feasible = truth.feasible({metric: limit})
        means = [m.mean(setting) for m in feasible]
        acc_ref = min(m.mean(setting) for m in truth.members)
        true_hv = hypervolume(
            [(a, m.cost(metric)) for a, m in zip(means, feasible, strict=True)], acc_ref, limit
        )
        return cls(
            setting, metric, limit, feasible, max(means), truth.noise(setting), acc_ref, true_hv
        )

    def good(self, member: Member) -> bool:
        """Within the noise of the best feasible accuracy (and feasible)."""
        cost = member.cost(self.metric)
        return (
            cost is not None
            and cost <= self.limit
            and member.mean(self.setting) >= self.best - self.noise
        )

    def trials_to_good(self, trace: ReplayTrace) -> int | None:
        """Trained trials until the first good member (None: never)."""
        for i, member in enumerate(trace.trained, 1):
            if self.good(member):
                return i
        return None

    def hv_ratio(self, trace: ReplayTrace, n: int) -> float:
        """The hypervolume of the first ``n`` trained members' front (mean accuracies),
        over the true front's."""
        points = [(m.mean(self.setting), m.cost(self.metric)) for m in trace.trained[:n]]
        return hypervolume(points, self.acc_ref, self.limit) / self.true_hv

    def picked(self, trace: ReplayTrace, n: int, reference: str) -> float | None:
        """The ``reference`` accuracy (e.g. longer training) of the member the search
        would pick after ``n`` trials: the best observed feasible one."""
        pool = [
            (acc, m)
            for acc, m in zip(trace.observed[:n], trace.trained[:n], strict=True)
            if (c := m.cost(self.metric)) is not None and c <= self.limit
        ]
        if not pool:
            return None
        return max(pool, key=lambda pair: pair[0])[1].mean(reference)
