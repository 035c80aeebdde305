"""How well do training-free scores rank the ground truth, and what does skipping save?

Rank correlation of NASWOT and DisWOT-style scores (at initialisation, two init seeds)
with the table's accuracies, beside MACs and parameters; then replays (30 seeds) with
and without ``zero_cost.skip_quantile`` for AKD and random search.

    python benchmarks/zero_cost.py [--seeds 30] [--skip 0.5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau, spearmanr

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from replay import BUDGETS, TABLE, run_one, summarize  # noqa: E402

from benchmarks.truth_table import GroundTruth  # noqa: E402


def correlations(truth: GroundTruth) -> None:
    members = truth.members
    print("| score | init seed 0 vs 1 (Spearman) | vs 2-epoch proxy | vs 4-epoch | vs 10-epoch "
          "(Spearman / Kendall) |")  # fmt: skip
    print("|---|---|---|---|---|")
    columns = {
        name: [statistics.fmean(m.zero_cost[name]) for m in members]
        for name in ("naswot", "diswot")
    }
    columns["MACs"] = [m.macs for m in members]
    columns["params"] = [m.params for m in members]
    for name, values in columns.items():
        if name in ("naswot", "diswot"):
            a = [m.zero_cost[name][0] for m in members]
            b = [m.zero_cost[name][1] for m in members]
            stability = f"{spearmanr(a, b)[0]:.2f}"
        else:
            stability = "-"
        cells = []
        for setting in ("e2", "e4", "e10"):
            acc = np.array([m.mean(setting) for m in members])
            cells.append(f"{spearmanr(values, acc)[0]:.2f}")
        acc10 = [m.mean("e10") for m in members]
        cells[-1] += f" / {kendalltau(values, acc10)[0]:.2f}"
        print(f"| {name} | {stability} | " + " | ".join(cells) + " |")


def skipping(seeds: int, skip: float, score: str) -> None:
    print(f"\nReplays, seeds 0..{seeds - 1}, 2-epoch proxy, skip below the {skip:.0%} quantile "
          f"of {score}; 'trials' are trained trials")  # fmt: skip
    print("| budget | controller | pre-screen | median trials to good | reached | e10 of pick@25 "
          "| e10 of pick@50 | skipped (median, per 50 trained) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for budget, (metric, limit) in BUDGETS.items():
        for controller in ("akd", "random"):
            for zero_cost in (None, {"skip_quantile": skip, "score": score}):
                jobs = [
                    (str(TABLE), controller, s, metric, limit, 50, "e2", {}, zero_cost)
                    for s in range(seeds)
                ]
                with ProcessPoolExecutor(2) as pool:
                    rows = list(pool.map(run_one, jobs))
                s = summarize(rows, 50)[0]
                median = s["median_to_good"]
                print(
                    f"| {budget} | {controller} | {'on' if zero_cost else 'off'} | "
                    f"{median if median != float('inf') else '>50'} | {s['reached']}/{seeds} | "
                    f"{s['picked_e10'][25] * 100:.2f} % | {s['picked_e10'][50] * 100:.2f} % | "
                    f"{s['skipped']:g} |",
                    flush=True,
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--skip", type=float, default=0.5)
    parser.add_argument("--score", default="naswot")
    args = parser.parse_args()
    correlations(GroundTruth.load(TABLE))
    skipping(args.seeds, args.skip, args.score)


if __name__ == "__main__":
    main()
