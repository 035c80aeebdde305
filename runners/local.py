"""The local runner: trials one after another in this process.

It only executes: which candidate comes next, and what each outcome writes into the
study, is the trial loop's business (``runners/loop.py``). Resuming is rerunning;
a trial interrupted with Ctrl-C is failed and its architecture queued again.
"""

from __future__ import annotations

import time

from runners.loop import RunSummary, TrialLoop, failure_reason
from searchkd.errors import SearchKDError
from searchkd.progress import progress_bar
from searchkd.pruning import Pruned
from searchkd.study import best_feasible_accuracy
from searchkd.trials import TrialCore

__all__ = ["LocalRunner", "RunSummary"]


class LocalRunner:
    """Runs trials sequentially in-process, with a progress bar."""

    def __init__(self, progress: bool = True) -> None:
        self.progress = progress

    def run(self, search: TrialCore, n_trials: int, max_rejections: int = 200) -> RunSummary:
        loop = TrialLoop(search, n_trials, max_rejections)
        bar = progress_bar(
            total=n_trials,
            initial=min(loop.resumed, n_trials),
            desc="search",
            unit="trial",
            disable=not self.progress,
            dynamic_ncols=True,
        )
        try:
            while not loop.finished():
                trial_started = time.perf_counter()
                job = loop.next_job()
                if job is None:
                    break
                try:
                    result = search.train(job.candidate, job.trial.number)
                    loop.completed(job, result)
                except Pruned as stopped:
                    attrs = getattr(stopped, "attrs", None)  # a skipped candidate's score
                    loop.pruned(job, stopped.accuracies, str(stopped), attrs)
                    continue
                except KeyboardInterrupt:
                    loop.interrupted([job.trial])
                    raise
                except SearchKDError as exc:
                    loop.stopped(job.trial, exc)
                    raise
                except Exception as exc:  # a candidate that cannot train: record, go on
                    loop.failed(job.trial, failure_reason(exc))
                    continue
                best = best_feasible_accuracy(search.study)
                bar.n = min(loop.trained(), n_trials)
                bar.set_postfix(
                    best=f"{best:.4f}" if best is not None else "-",
                    last=f"{result.accuracy:.4f}",
                    s_per_trial=f"{time.perf_counter() - trial_started:.1f}",
                    rejected=loop.counts.rejected,
                    pruned=loop.counts.pruned,
                )
        finally:
            bar.close()
        return loop.summary()
