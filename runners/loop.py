"""The trial loop, once for every runner: which candidate trains next, and what each
outcome writes into the study.

A runner only executes training jobs. It asks :meth:`TrialLoop.next_job` for a candidate
(proposed, costed, within budget, its architecture claimed), trains it where it trains
(in this process, or on a Ray worker), and reports the outcome back: :meth:`completed`,
:meth:`pruned`, :meth:`failed`, :meth:`lost` (the worker died), :meth:`interrupted` or
:meth:`stopped` (an error no other candidate would escape). Counting trained trials from
the study (not from this process), rejections, duplicates and failures in a row, and
resuming after a dead process, happen here and nowhere else.

The requested number of trials counts *trained* candidates: candidates rejected over
budget are recorded (infeasible) but do not use up the count. Several searchers may share
one study; each counts the study's trained trials before it trains a candidate, and a
candidate sampled when the count is already reached is failed with that reason, untrained.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import optuna
from optuna.trial import TrialState

from searchkd.errors import BudgetError, SearchKDError
from searchkd.optuna_internals import stored_trial
from searchkd.proxy import ProxyResult
from searchkd.study import best_feasible_accuracy, fail_orphaned_trials, mark_failed, trained_trials
from searchkd.trials import Candidate, TrialCore

MAX_CONSECUTIVE_FAILURES = 3
ENOUGH = "not trained: the study reached {n} trained trials (other searchers completed them)"
INTERRUPTED = "interrupted by the user (Ctrl-C); queued again"
STOPPED = "stopped the search: {error}"  # an error no other candidate would escape
DUPLICATE = "not trained: the same architecture as trial {n} (trained or training)"


class SpaceUsedUp(SearchKDError):
    """The controller proposes only architectures the study already holds: under this
    budget the space has nothing new left (or the controller cannot find it)."""


@dataclass
class RunSummary:
    completed: int  # trained trials in the study after the run
    trained_now: int
    rejected_now: int
    failed_now: int
    seconds: float
    pruned_now: int
    best_accuracy: float | None


@dataclass
class Counts:
    """What this run did; the study holds what every run did."""

    trained: int = 0
    rejected: int = 0
    consecutive_rejections: int = 0  # over-budget candidates since the last one within it
    failed: int = 0
    pruned: int = 0
    consecutive_failures: int = 0
    consecutive_lost: int = 0
    duplicates: int = 0  # proposals in a row of architectures the study holds


@dataclass
class Job:
    """One candidate to train: its running trial, its costs and its seed."""

    trial: optuna.Trial
    candidate: Candidate
    seed: int
    accuracies: list[float] = field(default_factory=list)  # per epoch, as reported so far


class TrialLoop:
    """The ask/tell loop's decisions and bookkeeping for one run of ``n_trials``."""

    def __init__(self, search: TrialCore, n_trials: int, max_rejections: int = 200) -> None:
        self.search, self.study = search, search.study
        self.n_trials, self.max_rejections = n_trials, max_rejections
        self.counts = Counts()
        self.started = time.perf_counter()
        self.resumed = self._resume()

    def _resume(self) -> int:
        """Fail the trials a dead process left running; return the trained trials so far."""
        orphaned = fail_orphaned_trials(self.study)
        if orphaned:
            self.search.log(f"resume: marked {len(orphaned)} orphaned trial(s) failed: {orphaned}")
        done = self.trained()
        if done:
            self.search.log(f"resume: {done} of {self.n_trials} trials already completed")
        return done

    def trained(self) -> int:
        """Trained trials in the study, by every searcher that shares it."""
        return len(trained_trials(self.study))

    def finished(self) -> bool:
        return self.trained() >= self.n_trials

    # --- proposing ---------------------------------------------------------------------
    def next_job(self) -> Job | None:
        """The next candidate to train, or None when the study already holds enough
        trained trials. Over-budget candidates are recorded and counted on the way, as
        are candidates that cannot be built or costed and architectures already held."""
        search, study = self.search, self.study
        while True:
            trial = self._next_trial()
            try:
                candidate = search.prepare(trial)
            except KeyboardInterrupt:
                self.interrupted([trial])
                raise
            except SearchKDError as exc:
                self.stopped(trial, exc)
                raise
            except Exception as exc:  # a candidate that cannot be built or costed
                self.failed(trial, failure_reason(exc))
                continue
            if candidate.rejected:
                study.tell(trial, search.record(trial, candidate, None))
                # Not a reset of consecutive failures: under a tight budget most proposals
                # are rejected, and every accepted one failing is still a broken run.
                self._count_rejection()
                continue
            if self.finished():  # another searcher may have finished the count
                mark_failed(study, trial, ENOUGH.format(n=self.n_trials))
                return None
            holder = search.claim(trial, candidate)
            if holder is not None:  # another trial has this architecture
                mark_failed(study, trial, DUPLICATE.format(n=holder))
                self._count_duplicate()
                search.queue_untried(after=trial.number)
                continue
            self.counts.duplicates = self.counts.consecutive_rejections = 0
            return Job(trial, candidate, search.seed_for(trial.number))

    def _next_trial(self) -> optuna.Trial:
        """The next running trial: the AKD controller proposes before a trial exists, so an
        over-budget proposal costs one storage write and is followed by another; the Optuna
        samplers sample inside a trial, which this asks for."""
        search = self.search
        while True:
            try:
                proposal = search.propose()
            except SearchKDError:
                raise
            except Exception:  # cost it again inside a trial, where a failure is recorded
                proposal = None
            if proposal is not None and proposal[1].rejected:
                search.add_rejected(*proposal)
                self._count_rejection()
                continue
            return search.start_trial(*proposal) if proposal else search.ask()

    def _count_rejection(self) -> None:
        """One more candidate over budget; too many in a row stops the search.

        Counted in a row, not per run: where most of a space is over budget (a uniform
        random search under the default MACs budget rejects about seven draws in eight)
        a long run rejects many candidates yet keeps finding ones that fit, while a budget
        almost nothing meets rejects every proposal."""
        self.counts.rejected += 1
        self.counts.consecutive_rejections += 1
        if self.counts.consecutive_rejections > self.max_rejections:
            raise BudgetError(
                f"{self.counts.consecutive_rejections} candidates in a row were over budget "
                f"({self.search.budget.describe()}); loosen the budget, or raise max_rejections"
            )

    def _count_duplicate(self) -> None:
        """One more proposal in a row of an architecture the study already holds; a
        controller that proposes nothing else (a small space under a tight budget, used
        up) stops."""
        self.counts.duplicates += 1
        if self.counts.duplicates > self.max_rejections:
            raise SpaceUsedUp(
                f"the controller proposed {self.counts.duplicates} architectures in a row that "
                f"the study has already trained; the {self.search.space.name} space under this "
                "budget may be used up: ask for fewer --trials, or loosen the budget"
            )

    # --- outcomes ----------------------------------------------------------------------
    def completed(self, job: Job, result: ProxyResult) -> None:
        self.study.tell(job.trial, self.search.record(job.trial, job.candidate, result))
        self.counts.trained += 1
        self.counts.consecutive_failures = self.counts.consecutive_lost = 0

    def pruned(
        self, job: Job, accuracies: list[float], reason: str, attrs: dict | None = None
    ) -> None:
        """Stopped at a rung (or skipped by the pre-screen, whose score is in ``attrs``)."""
        self.search.record_pruned(job.trial, accuracies, reason, attrs)
        self.study.tell(job.trial, state=TrialState.PRUNED)
        self.counts.pruned += 1
        self.counts.consecutive_failures = 0

    def failed(self, trial: optuna.Trial, reason: str) -> None:
        """A candidate that cannot train: record why and go on, unless every trial fails
        (a broken run, not an unlucky one)."""
        if is_running(self.study, trial):
            mark_failed(self.study, trial, reason)
        self.search.log(f"trial {trial.number} failed: {reason}")
        self.counts.failed += 1
        self.counts.consecutive_failures += 1
        if self.counts.consecutive_failures >= MAX_CONSECUTIVE_FAILURES:
            raise SearchKDError(
                f"{self.counts.consecutive_failures} trials in a row failed (last: {reason}); "
                "rerun with --debug to see why"
            )

    def lost(self, trial: optuna.Trial, reason: str, max_retries: int) -> None:
        """The worker training ``trial`` died: not the candidate's fault, so its
        architecture is queued again, up to ``max_retries`` times."""
        attempt = int(trial.user_attrs.get("attempt", 1))
        self.counts.failed += 1
        self.counts.consecutive_lost += 1
        if attempt <= max_retries:
            self.requeue(trial, reason, {"attempt": attempt + 1})
            self.search.log(f"trial {trial.number} failed: {reason}; architecture queued again")
        else:
            mark_failed(self.study, trial, f"{reason} (attempt {attempt}; not retried again)")
            self.search.log(f"trial {trial.number} failed: {reason}; no retries left")
        limit = MAX_CONSECUTIVE_FAILURES * (max_retries + 1)
        if self.counts.consecutive_lost >= limit:
            raise SearchKDError(
                f"{limit} trials in a row lost their worker (last: {reason}); check the "
                "workers' memory (--workers, --cpus-per-trial) and the nodes' logs"
            )

    def interrupted(self, trials: Iterable[optuna.Trial]) -> None:
        """Ctrl-C: fail the running trials and queue their architectures for the resumed
        run. A second Ctrl-C leaves the rest to the resume's orphan check."""
        try:
            for trial in trials:
                self.requeue(trial, INTERRUPTED)
        except KeyboardInterrupt:
            pass

    def stopped(self, trial: optuna.Trial, error: BaseException) -> None:
        """The search stops on ``error``; the trial it happened in is not left RUNNING."""
        if is_running(self.study, trial):
            mark_failed(self.study, trial, STOPPED.format(error=error))

    def requeue(self, trial: optuna.Trial, reason: str, user_attrs: dict | None = None) -> bool:
        """Fail a running trial with ``reason`` and queue its architecture again, so a
        resumed or continuing run trains it; False when the trial had already ended."""
        study, search = self.study, self.search
        frozen = stored_trial(study, trial)
        if frozen.state != TrialState.RUNNING:
            return False
        mark_failed(study, trial, reason)
        if set(frozen.params) == set(search.space.decisions()):
            study.enqueue_trial(
                frozen.params,
                user_attrs={"retry_of": trial.number, **(user_attrs or {})},
                skip_if_exists=False,
            )
        return True

    def summary(self) -> RunSummary:
        counts = self.counts
        return RunSummary(
            completed=self.trained(),
            trained_now=counts.trained,
            rejected_now=counts.rejected,
            failed_now=counts.failed,
            seconds=time.perf_counter() - self.started,
            pruned_now=counts.pruned,
            best_accuracy=best_feasible_accuracy(self.study),
        )


def failure_reason(exc: BaseException) -> str:
    """What a failed trial records: the exception's type and first line."""
    first = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def is_running(study: optuna.Study, trial: optuna.Trial) -> bool:
    return stored_trial(study, trial).state == TrialState.RUNNING
