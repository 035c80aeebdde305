"""The local runner: trials one after another in this process.

It only executes; what to search is the study's and the controller's business.
The requested number of trials counts *trained* candidates: candidates rejected
over budget are recorded (infeasible) but do not use up the count. Resuming is
rerunning: completed trials are counted from the study, trials orphaned by a
dead process are marked failed, and a trial interrupted with Ctrl-C is marked
failed and its architecture queued again, so nothing is lost or duplicated.

Several searchers may share one study (journal file, PostgreSQL). Each counts the
trained trials in the study, not its own, before it trains a candidate; a candidate
sampled when the count is already reached is failed with that reason, untrained. The
total can still overshoot by the trials that were training when the last one was
told: at most one per other searcher.
"""

from __future__ import annotations

import time

from optuna.trial import TrialState

from runners.common import (
    ENOUGH,
    INTERRUPTED,
    STOPPED,
    RunSummary,
    check_consecutive_failures,
    count_duplicate,
    count_rejection,
    failure_reason,
    is_running,
    next_trial,
    requeue,
    resume,
    skip_if_claimed,
)
from searchkd.errors import SearchKDError
from searchkd.progress import progress_bar
from searchkd.pruning import Pruned
from searchkd.search import Search
from searchkd.study import best_feasible_accuracy, mark_failed, trained_trials

__all__ = ["LocalRunner", "RunSummary"]


class LocalRunner:
    """Runs trials sequentially in-process, with a progress bar."""

    def __init__(self, progress: bool = True) -> None:
        self.progress = progress

    def run(self, search: Search, n_trials: int, max_rejections: int = 200) -> RunSummary:
        study = search.study
        done = resume(search, n_trials)
        started = time.perf_counter()
        trained = rejected = failed = pruned = consecutive_failures = duplicates = 0

        def count_proposal_rejected() -> None:
            nonlocal rejected
            rejected = count_rejection(search, rejected, max_rejections)

        bar = progress_bar(
            total=n_trials,
            initial=min(done, n_trials),
            desc="search",
            unit="trial",
            disable=not self.progress,
            dynamic_ncols=True,
        )
        try:
            while done < n_trials:
                trial_started = time.perf_counter()
                trial = next_trial(search, count_proposal_rejected)
                try:
                    candidate = search.prepare(trial)
                    if candidate.rejected:
                        study.tell(trial, search.record(trial, candidate, None))
                        # Not a reset of consecutive_failures: under a tight budget most
                        # proposals are rejected, and every accepted one failing is still
                        # a broken run.
                        rejected = count_rejection(search, rejected, max_rejections)
                        continue
                    done = len(trained_trials(study))  # another searcher may have finished
                    if done >= n_trials:
                        mark_failed(study, trial, ENOUGH.format(n=n_trials))
                        break
                    if skip_if_claimed(search, trial, candidate):  # another trial has it
                        duplicates = count_duplicate(search, duplicates, max_rejections)
                        continue
                    duplicates = 0
                    result = search.train(candidate, trial.number)
                    study.tell(trial, search.record(trial, candidate, result))
                except Pruned as stopped:
                    attrs = getattr(stopped, "attrs", None)  # a skipped candidate's score
                    search.record_pruned(trial, stopped.accuracies, str(stopped), attrs)
                    study.tell(trial, state=TrialState.PRUNED)
                    pruned += 1
                    consecutive_failures = 0
                    continue
                except KeyboardInterrupt:
                    self._interrupted(search, trial)
                    raise
                except SearchKDError as exc:
                    if is_running(study, trial):
                        mark_failed(study, trial, STOPPED.format(error=exc))
                    raise
                except Exception as exc:  # a candidate that cannot train: record, go on
                    reason = failure_reason(exc)
                    mark_failed(study, trial, reason)
                    search.log(f"trial {trial.number} failed: {reason}")
                    failed += 1
                    consecutive_failures += 1
                    check_consecutive_failures(consecutive_failures, reason)
                    continue
                consecutive_failures = 0
                trained += 1
                done = len(trained_trials(study))  # other searchers may share the study
                best = best_feasible_accuracy(study)
                bar.n = min(done, n_trials)
                bar.set_postfix(
                    best=f"{best:.4f}" if best is not None else "-",
                    last=f"{result.accuracy:.4f}",
                    s_per_trial=f"{time.perf_counter() - trial_started:.1f}",
                    rejected=rejected,
                    pruned=pruned,
                )
        finally:
            bar.close()
        return RunSummary(
            completed=done,
            trained_now=trained,
            rejected_now=rejected,
            failed_now=failed,
            seconds=time.perf_counter() - started,
            pruned_now=pruned,
            best_accuracy=best_feasible_accuracy(study),
        )

    @staticmethod
    def _interrupted(search: Search, trial) -> None:
        """Fail the interrupted trial and queue its architecture for the resumed run."""
        try:
            requeue(search, trial, INTERRUPTED)
        except KeyboardInterrupt:  # a second Ctrl-C: the orphan check will clean up
            pass
