"""Is the task hard enough, and how long should the proxy train? Read off the ground truth.

Per training setting of the table (1, 2, 4, 10 epochs): the accuracy spread across the
256 students against the seed-to-seed noise of one student, the rank agreement of two
seeds, and the rank correlation with 10-epoch training. Then the compute-matched
question: with the same proxy epochs in total, is it better to train N candidates for
2 epochs or N/2 for 4? Answered by replaying searches (30 seeds) and reading the 10-epoch
accuracy of the student each search picks.

    python benchmarks/proxy_length.py [--seeds 30]
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

from replay import BUDGETS, TABLE, TEACHER  # noqa: E402

from benchmarks.replay_search import Target, replay  # noqa: E402
from benchmarks.truth_table import GroundTruth  # noqa: E402


def task_check(truth: GroundTruth) -> None:
    members = truth.members
    reference = np.array([m.accuracy["e10_s0"] for m in members])
    print(
        "| proxy | students | mean acc | spread (sd of means) | range | seed noise (sd) "
        "| spread / noise | seed-vs-seed Spearman | Spearman vs 10 epochs (seed 0) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for setting in ("e1", "e2", "e4", "e10"):
        rows = [m for m in members if m.runs(setting)]
        means = np.array([m.mean(setting) for m in rows])
        two = [m for m in rows if len(m.runs(setting)) > 1]
        if two:
            noise = truth.noise(setting)
            a = [m.runs(setting)[0] for m in two]
            b = [m.runs(setting)[1] for m in two]
            seeds = f"{spearmanr(a, b)[0]:.2f} ({len(two)} students)"
            ratio = f"{means.std() / noise:.2f}"
            noise_text = f"{noise * 100:.2f} pp"
        else:
            seeds = ratio = noise_text = "-"
        first = (
            np.array([m.runs(setting)[0] for m in members]) if len(rows) == len(members) else None
        )
        rho = f"{spearmanr(first, reference)[0]:.2f}" if first is not None else "-"
        print(
            f"| {setting[1:]} epochs | {len(rows)} | {means.mean() * 100:.1f} % | "
            f"{means.std() * 100:.2f} pp | {means.min() * 100:.1f}-{means.max() * 100:.1f} % | "
            f"{noise_text} | {ratio} | {seeds} | {rho} |"
        )
    macs = [m.macs for m in members]
    print(
        f"\nMACs alone vs 10 epochs: Spearman {spearmanr(macs, reference)[0]:.2f}, "
        f"Kendall {kendalltau(macs, reference)[0]:.2f}"
    )


def picked(job: tuple) -> float:
    controller, seed, setting, trials, budget = job
    truth = GroundTruth.load(TABLE)
    metric, limit = BUDGETS[budget]
    target = Target.of(truth, setting, metric, limit)
    trace = replay(truth, controller, seed, {metric: limit}, trials, setting, TEACHER)
    return target.picked(trace, trials, "e10")


def compute_matched(seeds: int) -> None:
    print("\n| budget | controller | 2-epoch proxy x N | 4-epoch proxy x N/2 | N |")
    print("|---|---|---|---|---|")
    for budget in BUDGETS:
        for controller in ("akd", "random"):
            for n in (20, 40, 100):
                cells = []
                for setting, trials in (("e2", n), ("e4", n // 2)):
                    jobs = [(controller, s, setting, trials, budget) for s in range(seeds)]
                    with ProcessPoolExecutor(2) as pool:
                        values = list(pool.map(picked, jobs))
                    se = statistics.stdev(values) / len(values) ** 0.5
                    cells.append(f"{statistics.fmean(values) * 100:.2f} ± {se * 100:.2f} %")
                print(f"| {budget} | {controller} | {cells[0]} | {cells[1]} | {n} |", flush=True)
    print("(10-epoch accuracy of the student each search picks: mean ± standard error over seeds)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=30)
    args = parser.parse_args()
    truth = GroundTruth.load(TABLE)
    task_check(truth)
    compute_matched(args.seeds)


if __name__ == "__main__":
    main()
