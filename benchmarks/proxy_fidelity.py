"""Does the proxy rank students the way 15-epoch KD retraining does? Measured, not assumed.

    python benchmarks/proxy_fidelity.py --task mnist5k-cluttered [--seeds 2]
    python benchmarks/proxy_fidelity.py --table

The reference is every network the baselines benchmark retrained (zoo, hand-designed, and
the picks of the searches made before this benchmark changed the proxy; KD, 15 epochs,
last-epoch accuracy, mean over its seeds). Each is trained again with every proxy setting
below (the search's own proxy code, :meth:`searchkd.search.ProxyJob.run`, with the cached
logits of the same teacher), and
per setting the table gives the rank agreement with 15-epoch accuracy (Spearman, Kendall),
the 15-epoch accuracy of the network the proxy ranks first, and the proxy's training time
relative to the current default (one thread, the same process, side by side).

Settings differ in epochs and batch size: the default trains 2 epochs of batch 128, about
64 SGD steps on 4,000 images, and the question is whether more, smaller steps at about
the same cost rank better.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from scipy.stats import kendalltau, spearmanr

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from searchkd.config import ProxyConfig, TeacherConfig  # noqa: E402
from searchkd.data import load_dataset  # noqa: E402
from searchkd.proxy import compute_teacher_outputs  # noqa: E402
from searchkd.search import ProxyJob  # noqa: E402
from searchkd.teacher import resolve_teacher  # noqa: E402

# retrained networks: the baselines, and the picks of the searches before this benchmark
REFERENCES = (
    HERE / "results" / "baselines.jsonl",
    HERE / "results" / "baselines_searches_v1.jsonl",
)
RESULTS = HERE / "results" / "proxy_fidelity.jsonl"
RUNS = HERE / "baselines_runs"  # the baselines benchmark's teachers are reused
CLOSE = 0.89  # the networks within 4.5 pp of the best: where the search's choice is made
SETTINGS = {  # name -> (epochs, batch size, lr)
    "e2-b128": (2, 128, 0.05),  # the default before this benchmark
    "e2-b64": (2, 64, 0.05),
    "e2-b32": (2, 32, 0.05),
    "e1-b32": (1, 32, 0.05),
    "e4-b128": (4, 128, 0.05),
    "e3-b64": (3, 64, 0.05),
    "e2-b128-lr0.2": (2, 128, 0.2),  # as many steps as the default, the lr scaled with batch
    "e2-b128-lr0.4": (2, 128, 0.4),
    "e2-b32-lr0.1": (2, 32, 0.1),
    "e2-b32-lr0.2": (2, 32, 0.2),
    "e2-b64-lr0.2": (2, 64, 0.2),
    "e2-b16": (2, 16, 0.05),
    "e1-b16": (1, 16, 0.05),
}


def reference(task: str, epochs: int = 15) -> dict[str, tuple[float, dict[str, Any]]]:
    """Network name -> (mean last-epoch accuracy over its seeds, architecture)."""
    runs: dict[str, list[float]] = {}
    archs: dict[str, dict[str, Any]] = {}
    for line in (line for path in REFERENCES for line in path.read_text().splitlines()):
        row = json.loads(line)
        if row["task"] == task and row["epochs"] == epochs:
            runs.setdefault(row["name"], []).append(row["accuracy"])
            archs[row["name"]] = row["arch"]
    return {name: (statistics.mean(acc), archs[name]) for name, acc in runs.items()}


def done() -> set[str]:
    if not RESULTS.exists():
        return set()
    return {json.loads(line)["key"] for line in RESULTS.read_text().splitlines() if line}


def run(task: str, seeds: int, settings: list[str]) -> None:
    torch.set_num_threads(1)
    data = load_dataset(task, seed=0)
    teacher = resolve_teacher(TeacherConfig(), data, 0, RUNS / task, print)
    outputs = compute_teacher_outputs(teacher.model, data.train_x, [])
    nets = reference(task)
    finished = done()
    for seed in range(seeds):
        for name, (_, arch) in nets.items():
            for setting in settings:
                key = f"{task}/{name}/{setting}/seed{seed}"
                if key in finished:
                    continue
                epochs, batch, lr = SETTINGS[setting]
                job = ProxyJob(
                    arch["space"], data.in_channels, data.resolution, data.num_classes,
                    {"ce": 0.1, "kd": 0.9}, {},
                    ProxyConfig(epochs=epochs, batch_size=batch, lr=lr),
                )  # fmt: skip
                started = time.perf_counter()
                result = job.run(arch, seed, data, outputs)
                row = {
                    "key": key, "task": task, "name": name, "setting": setting, "seed": seed,
                    "accuracy": result.accuracy, "train_seconds": result.train_seconds,
                    "wall_seconds": round(time.perf_counter() - started, 2),
                }  # fmt: skip
                print(json.dumps(row), flush=True)
                with RESULTS.open("a") as handle:
                    handle.write(json.dumps(row) + "\n")


def table(task: str) -> str:
    nets = reference(task)
    rows = [json.loads(line) for line in RESULTS.read_text().splitlines() if line]
    rows = [r for r in rows if r["task"] == task and r["name"] in nets]
    low, high = (f(a for a, _ in nets.values()) * 100 for f in (min, max))
    lines = [
        f"{task}: {len(nets)} networks with 15-epoch KD accuracy ({low:.1f}-{high:.1f} %)",
        "",
        "| proxy | runs | Spearman | Kendall | Spearman, 89-93 % only | "
        "15-epoch acc. of the proxy's first | best possible | train time vs e2-b128 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    base_time = _mean_time(rows, "e2-b128")
    best = max(a for a, _ in nets.values())
    for setting in SETTINGS:
        mine = [r for r in rows if r["setting"] == setting]
        names = sorted({r["name"] for r in mine})
        if len(names) < 3:
            continue
        proxy = [statistics.mean(r["accuracy"] for r in mine if r["name"] == n) for n in names]
        truth = [nets[n][0] for n in names]
        first = names[max(range(len(names)), key=proxy.__getitem__)]
        seeds = len({r["seed"] for r in mine})
        time_ratio = _mean_time(rows, setting) / base_time if base_time else float("nan")
        rho, tau = spearmanr(proxy, truth)[0], kendalltau(proxy, truth)[0]
        # without the networks every setting puts last (the 224 px MobileNets, 81-85 %)
        close = [(p, t) for p, t in zip(proxy, truth, strict=True) if t >= CLOSE]
        rho_close = spearmanr(*zip(*close, strict=True))[0]
        lines.append(
            f"| {setting} | {len(names)} nets x {seeds} seed(s) | {rho:.2f} | {tau:.2f} | "
            f"{rho_close:.2f} ({len(close)}) | "
            f"{nets[first][0] * 100:.2f} % ({first}) | "
            f"{best * 100:.2f} % | {time_ratio:.2f}x |"
        )
    return "\n".join(lines)


def _mean_time(rows: list[dict[str, Any]], setting: str) -> float:
    """Mean training seconds per network of ``setting`` over the networks every setting ran."""
    times = [r["train_seconds"] for r in rows if r["setting"] == setting]
    return statistics.mean(times) if times else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="mnist5k-cluttered")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--table", action="store_true")
    args = parser.parse_args()
    if args.table:
        print(table(args.task))
        return
    run(args.task, args.seeds, args.settings.split(","))


if __name__ == "__main__":
    main()
