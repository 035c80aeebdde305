"""Replay each controller on the ground-truth table (benchmarks/results/ground_truth.json).

Every replay is the real local runner, study, budget check, reward and controller, with a
table lookup where proxy training would be (a random recorded seed per trial). Per budget
(MACs: 0.25x the teacher, the default; latency: an absolute limit on the table's CPU
latency) and controller, over ``--seeds`` seeds:

  * trained trials until the first member within the noise of the best feasible accuracy
    ("good": mean accuracy >= best - seed noise; rejected proposals are free, not counted);
  * hypervolume of the trained members' (accuracy, cost) front over the true front's,
    after 25, 50 and 100 trials (mean accuracies, so noise does not inflate it);
  * the 10-epoch accuracy of the student the search would pick (best observed feasible).

    python benchmarks/replay.py [--seeds 30] [--trials 100] [--setting e2] \
        [--plot docs/img/replay_hv.png]
    python benchmarks/replay.py --akd '{"lr": 0.1}' --controllers akd   # a controller variant
    python benchmarks/replay.py --skip 0.5 --score naswot   # with the zero-cost pre-screen
    python benchmarks/replay.py --warmup 20:3 --score-cost 0.01   # each controller with and
        # without the zero-cost warm-up (pool 20, top 3 queued); --score-cost: trial-equivalents
        # per scored candidate (benchmarks/warmup_cost.py), for the cost-counted columns
    python benchmarks/replay.py --budgets macs=2.5e6,latency_ms=1.5   # other budget levels

A budget is ``macs`` (0.25x the teacher), ``latency`` (2 ms), or ``METRIC=LIMIT`` with METRIC
``macs`` or ``latency_ms``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.replay_search import Target, replay  # noqa: E402
from benchmarks.truth_table import GroundTruth  # noqa: E402

TABLE = HERE / "results" / "ground_truth.json"
TEACHER = {"macs": 15_827_840, "params": 272_474, "latency_ms": None}  # resnet20_w16s2, 1x40x40
BUDGETS = {"macs": ("macs", 0.25 * TEACHER["macs"]), "latency": ("latency_ms", 2.0)}
CHECKPOINTS = (25, 50, 100)


def budget_of(spec: str) -> tuple[str, float]:
    """``macs``, ``latency`` (the defaults above) or ``METRIC=LIMIT`` -> (metric, limit)."""
    if spec in BUDGETS:
        return BUDGETS[spec]
    metric, _, limit = spec.partition("=")
    if metric not in ("macs", "latency_ms") or not limit:
        raise SystemExit(f"budget {spec!r}: give macs, latency, macs=LIMIT or latency_ms=LIMIT")
    return metric, float(limit)


def label(controller: str, zero_cost: dict | None) -> str:
    """The row name: the controller, marked when the zero-cost warm-up is on."""
    if zero_cost and zero_cost.get("warmup_pool"):
        return f"{controller} +warm-up"
    return controller


def run_one(job: tuple) -> dict:
    table, controller, seed, metric, limit, trials, setting, akd, *rest = job
    zero_cost = rest[0] if rest else None
    torch.set_num_threads(1)  # one worker per core: more threads only spin against each other
    truth = GroundTruth.load(table)
    target = Target.of(truth, setting, metric, limit)
    trace = replay(
        truth, controller, seed, {metric: limit}, trials, setting, TEACHER, akd, zero_cost
    )
    return {
        "controller": label(controller, zero_cost),
        "pool": trace.pool,
        "seed": seed,
        "metric": metric,
        "to_good": target.trials_to_good(trace),
        "hv": [target.hv_ratio(trace, n) for n in range(1, trials + 1)],
        "picked_e10": {n: target.picked(trace, n, "e10") for n in CHECKPOINTS if n <= trials},
        "rejected": trace.rejected,
        "skipped": trace.skipped,
    }


def summarize(rows: list[dict], trials: int, score_cost: float = 0.0) -> list[dict]:
    """Per controller: medians over seeds. ``score_cost``: trial-equivalents per candidate
    the warm-up scored, added to each seed's trials to good in ``median_with_cost``."""
    out = []
    for controller in dict.fromkeys(r["controller"] for r in rows):
        mine = [r for r in rows if r["controller"] == controller]
        to_good = [r["to_good"] if r["to_good"] is not None else math.inf for r in mine]
        median = statistics.median(to_good)
        with_cost = [t + score_cost * r.get("pool", 0) for t, r in zip(to_good, mine, strict=True)]
        out.append(
            {
                "controller": controller,
                "median_to_good": median,
                "median_with_cost": statistics.median(with_cost),
                "reached": sum(math.isfinite(t) for t in to_good),
                "seeds": len(mine),
                "hv": {
                    n: statistics.median(r["hv"][n - 1] for r in mine)
                    for n in CHECKPOINTS
                    if n <= trials
                },
                "picked_e10": {
                    n: statistics.fmean(
                        r["picked_e10"][n] for r in mine if r["picked_e10"][n] is not None
                    )
                    for n in CHECKPOINTS
                    if n <= trials
                },
                "rejected": statistics.median(r["rejected"] for r in mine),
                "skipped": statistics.median(r["skipped"] for r in mine),
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", default=str(TABLE))
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--setting", default="e2", help="accuracy setting of the table: e2, e4")
    parser.add_argument("--controllers", default="akd,tpe,nsga2,random")
    parser.add_argument("--budgets", default="macs,latency")
    parser.add_argument("--akd", default="{}", help="AKD options as JSON (a variant)")
    parser.add_argument(
        "--skip", type=float, default=0.0, help="zero-cost pre-screen quantile (0: off)"
    )
    parser.add_argument("--score", default="naswot", help="zero-cost score: naswot, diswot")
    parser.add_argument(
        "--warmup",
        default=None,
        metavar="N:K",
        help="also run each controller with the zero-cost warm-up: pool N, top K queued",
    )
    parser.add_argument(
        "--score-cost",
        type=float,
        default=0.0,
        help="trial-equivalents per candidate the warm-up scores (benchmarks/warmup_cost.py)",
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=None, help="write all rows as JSON here")
    parser.add_argument("--plot", default=None, help="PNG of median hypervolume ratio curves")
    args = parser.parse_args()
    akd = json.loads(args.akd)
    zero_cost = {"skip_quantile": args.skip, "score": args.score} if args.skip else None
    variants = [zero_cost]
    if args.warmup:
        pool, _, queue = args.warmup.partition(":")
        warmup = {"warmup_pool": int(pool), "warmup_trials": int(queue or 5), "score": args.score}
        variants.append({**(zero_cost or {}), **warmup})
    truth = GroundTruth.load(args.table)
    started = time.perf_counter()
    results = {}
    for budget in args.budgets.split(","):
        metric, limit = budget_of(budget)
        target = Target.of(truth, args.setting, metric, limit)
        good = sum(target.good(m) for m in target.feasible)
        print(
            f"\n{budget} budget ({metric} <= {limit:g}), setting {args.setting}: "
            f"{len(target.feasible)} of {len(truth.members)} members feasible, best mean "
            f"accuracy {target.best:.4f}, noise {target.noise:.4f}, {good} good members"
        )
        jobs = [
            (args.table, c, s, metric, limit, args.trials, args.setting, akd, variant)
            for c in args.controllers.split(",")
            for variant in variants
            for s in range(args.first_seed, args.first_seed + args.seeds)
        ]
        with ProcessPoolExecutor(args.workers) as pool:
            rows = list(pool.map(run_one, jobs))
        results[budget] = {"target": {"feasible": len(target.feasible), "good": good,
                                      "best": target.best, "noise": target.noise,
                                      "limit": limit, "metric": metric}, "rows": rows}  # fmt: skip
        summary = summarize(rows, args.trials, args.score_cost)
        random_median = next(
            (s["median_to_good"] for s in summary if s["controller"] == "random"), None
        )
        header = "| controller | median trials to good | reached | vs random |"
        if args.warmup:
            header += " + warm-up cost | vs random, cost counted |"
        header += "".join(f" HV@{n} |" for n in CHECKPOINTS if n <= args.trials)
        header += "".join(f" e10 of pick@{n} |" for n in CHECKPOINTS if n <= args.trials)
        header += " rejected (median) | skipped (median) |"
        print(header)
        print("|" + "---|" * (header.count("|") - 1))
        for s in summary:
            med, costed = s["median_to_good"], s["median_with_cost"]
            line = f"| {s['controller']} | {med if math.isfinite(med) else '>' + str(args.trials)} "
            line += f"| {s['reached']}/{s['seeds']} | {ratio_text(med, random_median)} |"
            if args.warmup:
                line += f" {costed:.1f} | {ratio_text(costed, random_median)} |"
            line += "".join(f" {v:.3f} |" for v in s["hv"].values())
            line += "".join(f" {v:.4f} |" for v in s["picked_e10"].values())
            line += f" {s['rejected']:g} | {s['skipped']:g} |"
            print(line)
    last_seed = args.first_seed + args.seeds - 1
    print(f"\n{time.perf_counter() - started:.0f}s; seeds {args.first_seed}..{last_seed}")
    if args.out:
        Path(args.out).write_text(json.dumps(results) + "\n")
    if args.plot:
        plot(results, args.trials, args.plot)


def ratio_text(value: float, reference: float | None) -> str:
    if reference and math.isfinite(reference) and math.isfinite(value):
        return f"{value / reference:.2f}x"
    return "-"


def plot(results: dict, trials: int, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(len(results), 3)
    rows = -(-len(results) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 3.8 * rows), squeeze=False)
    for ax in axes.flat[len(results) :]:
        ax.axis("off")
    for ax, (budget, data) in zip(axes.flat, results.items(), strict=False):  # spare axes
        rows = data["rows"]
        for controller in dict.fromkeys(r["controller"] for r in rows):
            curves = [r["hv"] for r in rows if r["controller"] == controller]
            median = [statistics.median(c[i] for c in curves) for i in range(trials)]
            ax.plot(range(1, trials + 1), median, label=controller)
        ax.set_title(f"{budget} budget ({data['target']['feasible']} feasible members)")
        ax.set_xlabel("trained trials")
        ax.set_ylabel("hypervolume / true front (median)")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
