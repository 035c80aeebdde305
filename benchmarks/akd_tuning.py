"""Choose the AKD controller's defaults on the ground truth, on TUNING seeds only.

Each variant replays the AKD controller under the default MACs budget on seeds 100-119
(``benchmarks/replay.py`` reports on seeds 0-29, which this script never sees) and prints
median trained trials to the first good member, the hypervolume ratio and the 10-epoch
accuracy of the student picked, after 50 trials.

    python benchmarks/akd_tuning.py [--seeds 20] [--trials 50]
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

VARIANTS = [
    {},
    {"lr": 0.01},
    {"lr": 0.005},
    {"entropy_weight": 0.01},
    {"entropy_weight": 0.03},
    {"warmup_target": 0.5},
    {"warmup_steps": 0},
    {"reward_exponent": 0.0},
    {"baseline_decay": 0.95},
    {"baseline_decay": 0.8},
    {"hidden_size": 32},
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--budget", default="macs")
    parser.add_argument("--variants", default=None, help="JSON list of option dicts")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    variants = json.loads(args.variants) if args.variants else VARIANTS
    metric, limit = BUDGETS[args.budget]
    n = args.trials
    print(f"AKD variants, {args.budget} budget, seeds 100..{99 + args.seeds}, {n} trials")
    print(f"| variant | median trials to good | reached | HV@{n} | e10 of pick@{n} | rejected |")
    print("|---|---|---|---|---|---|")
    for variant in variants:
        jobs = [
            (str(TABLE), "akd", s, metric, limit, n, "e2", variant)
            for s in range(100, 100 + args.seeds)
        ]
        with ProcessPoolExecutor(args.workers) as pool:
            rows = list(pool.map(run_one, jobs))
        s = summarize(rows, n)[0]
        hv = statistics.median(r["hv"][n - 1] for r in rows)
        pick = s["picked_e10"].get(n, float("nan"))  # read at the checkpoints 25, 50, 100
        print(
            f"| {json.dumps(variant) or 'defaults'} | {s['median_to_good']} | "
            f"{s['reached']}/{s['seeds']} | {hv:.3f} | {pick:.4f} | {s['rejected']:g} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
