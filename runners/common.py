"""Bookkeeping every runner shares, so trials land in the study the same way whichever
runner executes them: resuming, counting rejections and failures, the reason a failed
trial gives, and queueing an interrupted trial's architecture again."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from searchkd.errors import BudgetError, SearchKDError
from searchkd.search import Search
from searchkd.study import fail_orphaned_trials, mark_failed, trained_trials

MAX_CONSECUTIVE_FAILURES = 3
ENOUGH = "not trained: the study reached {n} trained trials (other searchers completed them)"
INTERRUPTED = "interrupted by the user (Ctrl-C); queued again"
STOPPED = "stopped the search: {error}"  # an error no other candidate would escape
DUPLICATE = "not trained: the same architecture as trial {n} (trained or training)"


@dataclass
class RunSummary:
    completed: int  # trained trials in the study after the run
    trained_now: int
    rejected_now: int
    failed_now: int
    seconds: float
    pruned_now: int
    best_accuracy: float | None


def resume(search: Search, n_trials: int) -> int:
    """Fail the trials a dead process left running; return the trained trials so far."""
    study = search.study
    orphaned = fail_orphaned_trials(study)
    if orphaned:
        search.log(f"resume: marked {len(orphaned)} orphaned trial(s) failed: {orphaned}")
    done = len(trained_trials(study))
    if done:
        search.log(f"resume: {done} of {n_trials} trials already completed")
    return done


def count_rejection(search: Search, rejected: int, max_rejections: int) -> int:
    """One more candidate over budget in this run; too many stops the search."""
    rejected += 1
    if rejected > max_rejections:
        raise BudgetError(
            f"{rejected} candidates in this run were over budget "
            f"({search.budget.describe()}); loosen the budget, or raise max_rejections"
        )
    return rejected


def next_trial(search: Search, rejected: Callable[[], None]) -> optuna.Trial:
    """The next running trial: the AKD controller proposes before a trial exists, so an
    over-budget proposal costs one storage write (and ``rejected()`` counts it) and is
    followed by another; the Optuna samplers sample inside a trial, which this asks for."""
    while True:
        try:
            proposal = search.propose()
        except SearchKDError:
            raise
        except Exception:  # cost it again inside a trial, where a failure is recorded
            proposal = None
        if proposal is not None and proposal[1].rejected:
            search.add_rejected(*proposal)
            rejected()
            continue
        return search.start_trial(*proposal) if proposal else search.ask()


def count_duplicate(search: Search, duplicates: int, max_rejections: int) -> int:
    """One more proposal in a row of an architecture the study already holds; a controller
    that proposes nothing else (a small space under a tight budget, used up) stops."""
    duplicates += 1
    if duplicates > max_rejections:
        raise SearchKDError(
            f"the controller proposed {duplicates} architectures in a row that the study has "
            f"already trained; the {search.space.name} space under this budget may be used up: "
            "ask for fewer --trials, or loosen the budget"
        )
    return duplicates


def skip_if_claimed(search: Search, trial: optuna.Trial, candidate) -> bool:
    """Claim the candidate's architecture before training; when another trial holds it,
    fail this one untrained with the reason and return True."""
    holder = search.claim(trial, candidate)
    if holder is None:
        return False
    mark_failed(search.study, trial, DUPLICATE.format(n=holder))
    return True


def failure_reason(exc: BaseException) -> str:
    """What a failed trial records: the exception's type and first line."""
    first = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def check_consecutive_failures(count: int, reason: str) -> None:
    """A run whose every trial fails is broken, not unlucky: stop it with the last reason."""
    if count >= MAX_CONSECUTIVE_FAILURES:
        raise SearchKDError(
            f"{count} trials in a row failed (last: {reason}); rerun with --debug to see why"
        )


def is_running(study: optuna.Study, trial: optuna.Trial) -> bool:
    return study._storage.get_trial(trial._trial_id).state == TrialState.RUNNING


def requeue(
    search: Search, trial: optuna.Trial, reason: str, user_attrs: dict | None = None
) -> bool:
    """Fail a running trial with ``reason`` and queue its architecture again, so a resumed
    or continuing run trains it; False when the trial had already ended."""
    study = search.study
    frozen = study._storage.get_trial(trial._trial_id)
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
