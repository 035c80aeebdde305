"""The trial core: what one trial does to the study, whoever costs and trains it.

A trial is proposed (:meth:`TrialCore.propose`, or sampled inside a trial by an Optuna
sampler), costed (:meth:`~TrialCore.cost`), rejected over budget or claimed, trained
(:meth:`~TrialCore.train`) and recorded (:meth:`~TrialCore.record`). How a candidate is
costed and trained is the subclass's: :class:`~searchkd.search.Search` builds and times
it and proxy-trains it with KD; the ground-truth replay looks both up in a table. The
loop that strings trials together is ``runners/loop.py``; the set-up (data, teacher,
cache, study) is ``searchkd/search.py``.
"""

from __future__ import annotations

import json
import math
import random
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from search_spaces.base import SearchSpace, uniform_decisions
from searchkd.budget import Budget
from searchkd.config import SearchConfig
from searchkd.controller import make_sampler, mnas_reward, overbudget_reward
from searchkd.meters import Latency
from searchkd.optuna_internals import create_trial, stored_trial
from searchkd.proxy import ProxyResult
from searchkd.pruning import Skipped, SuccessiveHalving
from searchkd.study import (
    CONSTRAINTS_KEY,
    arch_key,
    claim_architecture,
    held_architectures,
    params_in_one_write,
    set_constraints,
    set_user_attrs,
    worker_id,
)
from searchkd.study_lock import StudyLock
from searchkd.warm_start import queue_hand_designed, warm_start

_UNSET = object()  # an attribute the trial does not have yet
UNTRIED_RECORD = "untried_after_duplicate"  # user attribute: queued after that duplicate


@dataclass
class Candidate:
    """A sampled architecture with its cost, before any training. ``number`` is None for a
    proposal that has no trial yet; ``params`` is None when closed-form MACs alone
    rejected it."""

    number: int | None
    arch: dict[str, Any]
    macs: int
    params: int | None
    latency: Latency | None
    violations: list[str] = field(default_factory=list)
    zero_cost: float | None = None  # training-free score, when the pre-screen is on

    @property
    def rejected(self) -> bool:
        return bool(self.violations)

    @property
    def measured(self) -> dict[str, float | None]:
        latency = self.latency.median_ms if self.latency else None
        return {"macs": self.macs, "params": self.params, "latency_ms": latency}


def summarize(arch: dict[str, Any]) -> str:
    """A compact one-line description of an architecture for tables and tooltips,
    e.g. ``ds7/se x1 c16 | mb5e6 x2 c24 | ... head 320``."""
    stages = arch.get("stages")
    if isinstance(arch.get("sample"), dict):  # an nni: space: its mutables' values
        return " ".join(f"{k}={v}" for k, v in arch["sample"].items())[:120]
    if not isinstance(stages, list):
        return json.dumps(arch, sort_keys=True)[:120]
    short = {"dsconv": "ds", "mbconv": "mb", "conv": "conv", "fused": "fu"}
    parts = []
    if "stem_stride" in arch:
        parts.append(f"stem{arch.get('stem')}/s{arch['stem_stride']}")
    for stage in stages:
        if stage.get("layers") == 0:
            continue  # a stage the architecture does not have
        if "block" in stage:
            text = f"{short.get(stage['block'], stage['block'])}{stage.get('kernel', '')}"
            if stage.get("block") in ("mbconv", "fused"):
                text += f"e{stage.get('expansion')}"
            if stage.get("se"):
                text += "/se"
            text += f" x{stage.get('layers')} c{stage.get('channels')}"
        else:
            text = f"x{stage.get('depth')} c{stage.get('channels')}"
        parts.append(text)
    prefix = f"{arch['block']}: " if "block" in arch else ""
    suffix = f" | head {arch['head']}" if arch.get("head") else ""
    return prefix + " | ".join(parts) + suffix


class TrialCore(ABC):
    """One study's trials: proposing, costing against the budget, recording outcomes and
    the controller's reward. Subclasses say how a candidate is costed (:meth:`cost`),
    trained (:meth:`train`) and scored without training (:meth:`pool_score`), and what
    the controller's warm-up may check without building a module (:meth:`_prescreen`)."""

    def __init__(
        self,
        config: SearchConfig,
        space: SearchSpace,
        study: optuna.Study,
        lock: StudyLock,
        budget: Budget,
        teacher_cost: dict[str, float | None],
        log: Callable[[str], None] = print,
        pruner: SuccessiveHalving | None = None,
    ) -> None:
        self.config = config
        self.space = space
        self.study = study
        self.lock = lock
        self.budget = budget
        self.teacher_cost = teacher_cost
        self.log = log
        self.pruner = pruner
        self._devices_noted: set[str] = set()  # see _note_device

    def start(self) -> None:
        """Attach the controller and queue the first trials: the zero-cost warm-up's picks
        and the hand-designed members (once per study; a searcher starting beside finds
        them queued)."""
        self._attach_controller()
        with self.lock.hold():
            warm_start(self, self._prescreen())
            queue_hand_designed(self)

    # --- what a subclass provides --------------------------------------------------------
    @abstractmethod
    def cost(self, arch: dict[str, Any], number: int | None = None) -> Candidate:
        """The candidate's costs and budget violations."""

    @abstractmethod
    def train(self, candidate: Candidate, number: int) -> ProxyResult:
        """The candidate's proxy result; may raise :class:`~searchkd.pruning.Pruned`."""

    @abstractmethod
    def pool_score(self, decisions: dict[str, Any], index: int) -> float:
        """The training-free score of the zero-cost warm-up's ``index``-th pool member."""

    def _prescreen(self) -> Callable[[dict[str, Any]], float] | None:
        """log(cost / limit) of the worst budget a decision vector breaks, from what is
        known without building a module; None when nothing is."""
        return None

    # --- the controller -----------------------------------------------------------------
    def _attach_controller(self) -> None:
        """The configured controller as the study's sampler, warmed up on the budget."""
        config = self.config
        self.study.sampler = make_sampler(
            config.controller,
            self.space.decisions(),
            self.reward,
            config.seed,
            config.akd.model_dump(exclude={"reward_exponent"}),
            prescreen=self._prescreen(),
        )
        warm_up = getattr(self.study.sampler, "warm_up", None)
        if warm_up is not None and (history := warm_up()):
            self.log(
                f"controller warm-up on closed-form costs: {len(history)} batches, "
                f"{history[0]:.0%} -> {history[-1]:.0%} of samples within budget"
            )

    # --- the controller's reward --------------------------------------------------------
    def reward(self, trial: optuna.trial.FrozenTrial) -> float | None:
        """MnasNet's reward for trained candidates. A candidate rejected over budget gets
        a negative reward that grows with log(cost / limit), so a policy whose samples are
        all over budget still learns which way the budget lies."""
        attrs = trial.user_attrs
        if trial.state == TrialState.PRUNED:
            # Stopped at a rung: its last accuracy is what it showed (ASHA's view of it).
            if not attrs.get("epoch_accuracies"):
                return None
            accuracy = attrs["epoch_accuracies"][-1]
        elif trial.values is None:
            return None
        elif not attrs.get("trained", True):
            violation = max(max(trial.constraints.values(), default=1.0), 0.0)
            return overbudget_reward(math.log1p(min(violation, 1e6)))  # log(cost / limit)
        else:
            accuracy = trial.values[0]
        if self.budget.max_latency_ms is not None:
            cost, target = attrs.get("latency_ms"), self.budget.max_latency_ms
        else:
            cost, target = attrs.get("macs"), self.budget.max_macs or self.teacher_cost["macs"]
        return mnas_reward(accuracy, cost, target, self.config.akd.reward_exponent)

    # --- one trial ------------------------------------------------------------------------
    def propose(self) -> tuple[dict[str, Any], Candidate] | None:
        """Ask the controller for the next architecture *before* any trial exists, and cost
        it; None when the controller cannot propose without a trial (the Optuna samplers).

        A rejected proposal is then stored in one write (:meth:`add_rejected`), an accepted
        one becomes a running trial in one write (:meth:`start_trial`)."""
        propose = getattr(self.study.sampler, "propose", None)
        waiting = self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        if propose is None or waiting:  # a queued retry goes first, through study.ask()
            return None
        decisions = propose(self.study)
        if decisions is None:  # the controller samples inside a trial this time
            return None
        return decisions, self.cost(self.space.from_decisions(decisions))

    def start_trial(self, decisions: dict[str, Any], candidate: Candidate) -> optuna.Trial:
        """A running trial that already holds every decision and the candidate's costs, in
        one write (suggesting the decisions again reads them back without a write)."""
        template = optuna.trial.create_trial(
            state=TrialState.RUNNING,
            params=decisions,
            distributions=self.space.decisions(),
            user_attrs={"worker": worker_id(), **self._attrs(candidate, None)},
            system_attrs={CONSTRAINTS_KEY: self.budget.constraints(candidate.measured)},
        )
        return create_trial(self.study, template)

    def ask(self) -> optuna.Trial:
        """``study.ask()``, except that a new trial names its owner (this process) in the
        write that creates it. A process killed between creating a trial and naming itself
        would leave a RUNNING trial that no resume can attribute, so it would never be
        failed. A queued trial is claimed through ``study.ask()``, which does it atomically."""
        if self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            return self.study.ask()
        template = optuna.trial.create_trial(
            state=TrialState.RUNNING, user_attrs={"worker": worker_id()}
        )
        return create_trial(self.study, template)

    def add_rejected(self, decisions: dict[str, Any], candidate: Candidate) -> None:
        """Store an over-budget proposal as one completed, infeasible, untrained trial."""
        self.study.add_trial(
            optuna.trial.create_trial(
                values=self._values(candidate, None),
                params=decisions,
                distributions=self.space.decisions(),
                user_attrs={"worker": worker_id(), **self._attrs(candidate, None)},
                system_attrs={CONSTRAINTS_KEY: self.budget.constraints(candidate.measured)},
            )
        )

    def prepare(self, trial: optuna.Trial) -> Candidate:
        """Sample and cost a candidate for a running trial (costs are cached by
        architecture, so a proposed candidate is not costed twice)."""
        if trial.user_attrs.get("worker") != worker_id():
            trial.set_user_attr("worker", worker_id())
        with params_in_one_write(trial.storage):
            arch = self.space.sample(trial)
        return self.cost(arch, trial.number)

    def claim(self, trial: optuna.Trial, candidate: Candidate) -> int | None:
        """Claim the candidate's architecture for this trial before it trains; the number of
        the trial that holds it already (trained or training), if one does."""
        return claim_architecture(self.study, self.lock, trial, candidate.arch)

    def queue_untried(self, after: int, attempts: int = 200) -> bool:
        """Queue a uniform draw of an architecture the study does not hold (within budget
        where the closed-form pre-screen can tell), to be trained next; False when
        ``attempts`` draws found none.

        Called after the controller proposed an architecture the study holds. TPE and
        NSGA-II learn only from finished trials, and a duplicate is recorded failed, so a
        controller whose model has settled proposes the same architectures again and
        again; one fresh observation changes its model. The draw is seeded by
        ``after`` (the duplicate's trial number), so a replayed search draws the same."""
        rng = random.Random(self.config.seed * 1_000_003 + after)
        prescreen = self._prescreen()
        held = held_architectures(self.study)
        distributions = self.space.decisions()
        for _ in range(attempts):
            decisions = uniform_decisions(distributions, rng)
            if prescreen is not None and prescreen(decisions) > 0:
                continue
            if arch_key(self.space.from_decisions(decisions)) in held:
                continue
            self.study.enqueue_trial(decisions, user_attrs={UNTRIED_RECORD: after})
            return True
        return False

    def seed_for(self, number: int) -> int:
        """Each trial trains with its own seed, so trials are independent and replayable."""
        return self.config.seed + number

    def screen(self, candidate: Candidate, score: float) -> None:
        """Keep the candidate's training-free score; raise :class:`Skipped` when it falls
        below the configured quantile of the scores of earlier candidates in the study."""
        settings = self.config.zero_cost
        candidate.zero_cost = score
        history = [
            t.user_attrs["zero_cost"]
            for t in self.study.get_trials(
                deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)
            )
            if "zero_cost" in t.user_attrs
        ]
        if len(history) < settings.min_history:
            return
        cutoff = float(np.quantile(history, settings.skip_quantile))
        if score < cutoff:
            raise Skipped(settings.score, score, cutoff, settings.skip_quantile, len(history))

    def _rung_check(self, epoch: int, accuracies: list[float]) -> None:
        history = [
            t.user_attrs["epoch_accuracies"]
            for t in self.study.get_trials(
                deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)
            )
            if t.user_attrs.get("epoch_accuracies")
        ]
        self.pruner.check(epoch, accuracies, history)

    def record_pruned(
        self,
        trial: optuna.Trial,
        accuracies: list[float],
        reason: str,
        attrs: dict[str, Any] | None = None,
    ) -> None:
        """What a stopped (or skipped) candidate showed, for the dashboard and the
        controller; ``attrs``: more user attributes (a skipped one's score)."""
        set_user_attrs(
            trial,
            {"epoch_accuracies": list(accuracies), "pruned_reason": reason, **(attrs or {})},
        )

    def record(
        self, trial: optuna.Trial, candidate: Candidate, result: ProxyResult | None
    ) -> list[float]:
        """Write the candidate's attributes and constraints; return the objective values.

        A rejected candidate is recorded COMPLETE with accuracy 0 (it was not trained;
        ``trained`` says so) and positive constraints, so the dashboard marks it
        infeasible and constraint-aware samplers learn to avoid its region. An
        unmeasured latency is stored as +inf.
        """
        attrs = self._attrs(candidate, result)
        if result is not None:
            attrs["seed"] = result.seed
            self._note_device(result.device)
        frozen = stored_trial(self.study, trial)
        fresh = {k: v for k, v in attrs.items() if frozen.user_attrs.get(k, _UNSET) != v}
        set_user_attrs(trial, fresh)  # skips what start_trial wrote; one append on a journal
        if frozen.system_attrs.get(CONSTRAINTS_KEY) != self.budget.constraints(candidate.measured):
            set_constraints(self.study, trial, self.budget, candidate.measured)
        return self._values(candidate, result)

    def _note_device(self, device: str) -> None:
        """Keep the study's list of the devices its trials trained on (``train_devices``):
        train_seconds of trials on different devices are not comparable."""
        if device in self._devices_noted:  # no storage read or write per trial
            return
        devices = sorted({*self.study.user_attrs.get("train_devices", []), device})
        if devices != self.study.user_attrs.get("train_devices"):
            self.study.set_user_attr("train_devices", devices)
        self._devices_noted.update(devices)

    @staticmethod
    def _values(candidate: Candidate, result: ProxyResult | None) -> list[float]:
        latency = candidate.latency.median_ms if candidate.latency else math.inf
        accuracy = result.accuracy if result is not None else 0.0
        return [accuracy, float(candidate.macs), latency]

    @staticmethod
    def _attrs(candidate: Candidate, result: ProxyResult | None) -> dict[str, Any]:
        """The trial's user attributes. ``params`` is None for a candidate rejected on
        closed-form MACs alone (it was never built)."""
        attrs: dict[str, Any] = {
            "arch": candidate.arch,
            "summary": summarize(candidate.arch),
            "macs": candidate.macs,
            "params": candidate.params,
            "trained": result is not None,
        }
        if candidate.latency is not None:
            attrs.update(
                latency_ms=candidate.latency.median_ms,
                latency_spread_ms=candidate.latency.spread_ms,
                latency_rounds=candidate.latency.repeats,
                latency_meter=candidate.latency.meter,
            )
            if candidate.latency.fp32_ms is not None:  # an int8 meter times fp32 too
                attrs["latency_fp32_ms"] = candidate.latency.fp32_ms
        if candidate.zero_cost is not None:
            attrs["zero_cost"] = candidate.zero_cost
        if candidate.rejected:
            attrs["rejected_reason"] = "over budget: " + "; ".join(candidate.violations)
        if result is not None:
            attrs.update(
                accuracy_kind="last_epoch",
                best_accuracy=result.best_accuracy,
                epoch_accuracies=result.epoch_accuracies,
                train_seconds=result.train_seconds,
                samples_per_second=result.samples_per_second,
                train_device=result.device,
                **{f"loss_{name}": value for name, value in result.loss_terms.items()},
            )
        return attrs
