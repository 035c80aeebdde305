"""What the zero-cost warm-up costs, in proxy trials of the default search.

Sets up the default search (mnist5k-cluttered 1x40x40, the mobilenet space, MACs budget
0.25x the teacher, 2-epoch proxy; NASWOT on a batch of 64) and, alternating so machine
load hits both alike, times:

  * drawing the warm-up pool (uniform draws, closed-form MACs check) and scoring each
    member: build at its init seed + one forward pass + log-det (``Search.pool_score``);
  * one proxy trial of a pool member: costing it (counted MACs, parameters, measured
    latency) plus 2-epoch KD training (``Search.cost`` + ``Search.train``), what every
    trained trial of the search pays.

It prints seconds per scored candidate and per trial, their ratio (trial-equivalents
per scored candidate) and the warm-up's cost for some pool sizes.

    nice -n 19 python benchmarks/warmup_cost.py --teachers searchkd_runs/teachers \
        [--pool 40] [--trials 8] [--seed 0]

``--teachers``: a folder of trained teachers to reuse (copied into a temporary run folder),
so the default teacher is not trained again; without it, it is trained first (~1 min).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from searchkd.config import build_config  # noqa: E402
from searchkd.search import Search  # noqa: E402
from searchkd.warm_start import draw_pool  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teachers", default=None, help="folder of trained teachers to reuse")
    parser.add_argument("--pool", type=int, default=40, help="candidates to score")
    parser.add_argument("--trials", type=int, default=8, help="proxy trials to time")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "runs"
        run_dir.mkdir()
        if args.teachers:
            shutil.copytree(args.teachers, run_dir / "teachers")
        config = build_config(overrides={"run_dir": str(run_dir), "seed": args.seed})
        search = Search(config, log=lambda message: print(message, flush=True))
        measure(search, args.pool, args.trials)


def measure(search: Search, pool_size: int, trials: int) -> None:
    started = time.perf_counter()
    pool, draws = draw_pool(search, search._prescreen(), pool_size)
    draw_seconds = time.perf_counter() - started
    score_s: list[float] = []
    trial_s: list[float] = []
    per_trial = max(1, len(pool) // max(trials, 1))
    for i, decisions in enumerate(pool):
        tick = time.perf_counter()
        search.pool_score(decisions, i)
        score_s.append(time.perf_counter() - tick)
        if i % per_trial == per_trial - 1 and len(trial_s) < trials:
            tick = time.perf_counter()
            candidate = search.cost(search.space.from_decisions(decisions), i)
            if not candidate.rejected:  # parameters or latency could still break the budget
                search.train(candidate, i)
                trial_s.append(time.perf_counter() - tick)
    draw_each = draw_seconds / max(len(pool), 1)
    # The warm-up pays the sum of its scores and the search the sum of its trials, so the
    # exchange rate is a ratio of means; medians are shown beside them.
    each = (statistics.fmean(score_s) + draw_each) / statistics.fmean(trial_s)
    print(
        f"\ntorch threads {torch.get_num_threads()}; pool of {len(pool)} within budget from "
        f"{draws} uniform draws ({draw_seconds:.2f}s); {len(trial_s)} trials timed"
    )
    print("| what | mean s | median s | min-max s | n |")
    print("|---|---|---|---|---|")
    for name, times in (
        ("score one candidate (build + NASWOT, batch 64)", score_s),
        ("one proxy trial (cost + 2-epoch KD)", trial_s),
    ):
        print(
            f"| {name} | {statistics.fmean(times):.3f} | {statistics.median(times):.3f} | "
            f"{min(times):.3f}-{max(times):.3f} | {len(times)} |"
        )
    print(f"\none scored candidate (drawing included) = {each:.4f} trial-equivalents (means)")
    for n in (10, 20, 30, 50, 100):
        seconds = n * (statistics.fmean(score_s) + draw_each)
        print(f"warm-up pool of {n}: {n * each:.2f} trial-equivalents, ~{seconds:.1f}s")


if __name__ == "__main__":
    main()
