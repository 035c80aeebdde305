"""Choose the zero-cost warm-up's pool size N and queue length K on TUNING seeds only.

Replays each (N, K) on the ground truth under the two default budgets (MACs 0.25x the
teacher, latency 2 ms) on seeds 100-119, as ``benchmarks/akd_tuning.py`` does;
``benchmarks/replay.py`` reports on seeds 0-29 (and on other budget levels), which this
script never sees. Prints, per controller and variant, the median trained trials to the
first good member, the same with the warm-up's scoring cost counted (``--score-cost``
trial-equivalents per scored candidate, measured by ``benchmarks/warmup_cost.py``), the
seeds that reached one, and the hypervolume ratio after ``--trials``.

    python benchmarks/warmup_tuning.py --score-cost 0.01 [--seeds 20] [--trials 50] \
        [--controllers akd,random] [--variants '[[20, 3], [50, 5]]']
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from replay import BUDGETS, TABLE, run_one, summarize  # noqa: E402

VARIANTS = [[0, 0], [10, 1], [10, 3], [20, 1], [20, 3], [20, 5], [30, 3], [30, 5]]
VARIANTS += [[50, 3], [50, 5], [50, 10], [100, 5], [100, 10]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--controllers", default="akd,random")
    parser.add_argument("--budgets", default="macs,latency")
    parser.add_argument("--score-cost", type=float, required=True)
    parser.add_argument("--variants", default=None, help="JSON list of [N, K] pairs")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    variants = json.loads(args.variants) if args.variants else VARIANTS
    n = args.trials
    seeds = range(100, 100 + args.seeds)
    print(f"Warm-up variants, seeds 100..{99 + args.seeds}, {n} trained trials, NASWOT, "
          f"{args.score_cost:g} trial-equivalents per scored candidate")  # fmt: skip
    print(f"| budget | controller | N:K | median trials to good | + warm-up cost | reached "
          f"| HV@{n} |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for budget in args.budgets.split(","):
        metric, limit = BUDGETS[budget]
        for controller in args.controllers.split(","):
            for pool, queue in variants:
                zero_cost = {"warmup_pool": pool, "warmup_trials": queue} if pool else None
                jobs = [
                    (str(TABLE), controller, s, metric, limit, n, "e2", {}, zero_cost)
                    for s in seeds
                ]
                with ProcessPoolExecutor(args.workers) as executor:
                    rows = list(executor.map(run_one, jobs))
                s = summarize(rows, n, args.score_cost)[0]
                hv = statistics.median(r["hv"][n - 1] for r in rows)
                print(
                    f"| {budget} | {controller} | {f'{pool}:{queue}' if pool else 'off'} | "
                    f"{s['median_to_good']} | {s['median_with_cost']:.1f} | "
                    f"{s['reached']}/{s['seeds']} | {hv:.3f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
