"""Per-trial orchestration overhead of the local runner, and the cost of a rejection.

Overhead = a trial's wall time with training replaced by a no-op: the controller
proposes 43 decisions (one policy update first), MACs/params are counted, latency
measured, the trial created with its costs, attributes written, told. A rejection =
a proposal over budget on closed-form MACs, stored in one write. Both on Optuna's
journal file (the default) and on SQLite, with the AKD controller.

    python benchmarks/orchestration.py [--trials 30]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from runners.local import LocalRunner
from searchkd.config import build_config
from searchkd.proxy import ProxyResult
from searchkd.search import Search


def no_training(candidate, number: int = 0) -> ProxyResult:
    return ProxyResult(
        accuracy=0.5,
        best_accuracy=0.5,
        epoch_accuracies=[0.5],
        train_seconds=0.0,
        samples_per_second=0.0,
        loss_terms={},
        seed=0,
    )


def settings(run_dir: Path, storage: str, budget: str, latency: bool) -> dict:
    return {
        "dataset": "digits",
        "run_dir": str(run_dir),
        "storage": storage,
        "seed": 0,
        "teacher": {"arch": "resnet20", "epochs": 1, "batch_size": 64},
        "budget": {"max_macs": budget},
        "latency": {"warmup": 2, "runs": 10, "repeats": 3}
        if latency
        else {"warmup": 0, "runs": 1, "repeats": 1},
    }


def timed(spent: dict[str, float], part: str, method):
    """``method``, adding its wall time to ``spent[part]``."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            spent[part] += time.perf_counter() - started

    return wrapper


def per_trial_ms(
    run_dir: Path, storage: str, budget: str, trials: int, study: str, latency: bool = True
) -> dict[str, float]:
    """Milliseconds per trial: ``total``, and its parts ``controller`` (the policy's
    update and draw), ``costing`` (building the candidate, counting it, timing it) and
    ``study`` (everything else: trial writes, reads, the runner's own work)."""
    search = Search(
        build_config(overrides={**settings(run_dir, storage, budget, latency), "study": study}),
        log=lambda m: None,
    )
    search.train = no_training
    spent: dict[str, float] = defaultdict(float)
    search.cost = timed(spent, "costing", search.cost)
    sampler = search.study.sampler
    sampler.propose = timed(spent, "controller", sampler.propose)
    started = time.perf_counter()
    LocalRunner(progress=False).run(search, trials, max_rejections=10**6)
    total = time.perf_counter() - started
    n = len(search.study.trials)
    parts = {part: seconds / n * 1000 for part, seconds in spent.items()}
    parts["study"] = total / n * 1000 - sum(parts.values())
    return {"total": total / n * 1000, **parts}


def rejection_ms(run_dir: Path, storage: str, rejections: int, study: str) -> float:
    """Time per rejected candidate, as the runner handles it: the controller proposes,
    closed-form MACs reject, one write stores it. After set-up the budget is lowered to
    just above the smallest member, so nearly every proposal is over it."""
    overrides = {**settings(run_dir, storage, "1M", False), "study": study}
    search = Search(build_config(overrides=overrides), log=lambda m: None)
    smallest = search.costs.counts(search.space.smallest())[0]
    search.budget = type(search.budget)(max_macs=smallest * 1.0001)
    times = []
    while len(times) < rejections:
        started = time.perf_counter()
        decisions, candidate = search.propose()
        if not candidate.rejected:
            continue
        search.add_rejected(decisions, candidate)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=30)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp)
        for label, storage in (
            ("journal file (default)", f"journal:{run_dir / 'study.log'}"),
            ("sqlite (WAL)", f"sqlite:///{run_dir / 'study.db'}"),
        ):
            one_run = per_trial_ms(run_dir, storage, "100M", args.trials, "a", latency=False)
            full = per_trial_ms(run_dir, storage, "100M", args.trials, "b")
            reject = rejection_ms(run_dir, storage, args.trials, "c")
            rows.append((label, one_run, full, reject))
    print(
        f"local runner, AKD controller, mobilenet space (43 decisions), digits 1x8x8, "
        f"{args.trials} trials each; training replaced by a no-op; ms per trial"
    )
    print(
        "| storage | total, one latency run | controller | costing (build, count, time) "
        "| study and runner | total, 3x10 latency runs | over-budget rejection (median) |"
    )
    print("|---|---|---|---|---|---|---|")
    for label, a, b, c in rows:
        print(
            f"| {label} | {a['total']:.0f} | {a['controller']:.0f} | {a['costing']:.0f} "
            f"| {a['study']:.0f} | {b['total']:.0f} | {c:.0f} |"
        )


if __name__ == "__main__":
    main()
