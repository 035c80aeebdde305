"""Accuracy and training-time overhead of every distillation method on one fixed pair.

One student (the hand-picked 2.56M-MAC mobilenet-space member of
``benchmarks/proxy_throughput.py``), the default teacher (resnet20_w16s2, trained by
searchkd with the default recipe, cached in the run folder), ``mnist5k-cluttered``, the
proxy trainer (``train_proxy``, teacher outputs cached once, only the taps a method reads),
the proxy's defaults except the epoch count. Each method runs for every seed; the table gives
LAST-epoch validation accuracy (mean ± std over seeds) and the training time relative to
plain KD (CE 0.1 + KD 0.9) of the same seed, median over seeds.

Resumable: every finished (method, seed) run is appended to a JSON-lines file and skipped
when the script is started again with the same settings; ``--table`` only prints the table.

    nice -n 19 python benchmarks/loss_methods.py --epochs 3 --seeds 0 1 2
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

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for proxy_throughput's student

from proxy_throughput import student_arch  # noqa: E402

from search_spaces import get_space, load_architecture  # noqa: E402
from searchkd.config import ProxyConfig, TeacherConfig  # noqa: E402
from searchkd.data import load_dataset  # noqa: E402
from searchkd.proxy import (  # noqa: E402
    TeacherOutputs,
    build_objective,
    compute_teacher_outputs,
    train_proxy,
)
from searchkd.teacher import resolve_teacher  # noqa: E402

# (row label, weights, options). Following RepDistiller's tables, a feature or relational
# method runs beside cross-entropy (weight 1) with its published scale inside the loss;
# the KD-style methods use the KD recipe (CE 0.1 + 0.9). CRD runs with 4096 negatives,
# not the published 16384: the training set has 4,000 images and a 16384-negative batch
# gathers 2 GB from the memory banks per step on this 2-core machine.
CRD_OPTIONS = {"negatives": 4096}
METHODS: list[tuple[str, dict[str, float], dict[str, dict[str, Any]]]] = [
    ("ce (no teacher)", {"ce": 1.0}, {}),
    ("kd", {"ce": 0.1, "kd": 0.9}, {}),
    ("hint (FitNets)", {"ce": 1.0, "hint": 1.0}, {}),
    ("at", {"ce": 1.0, "at": 1.0}, {}),
    ("nst", {"ce": 1.0, "nst": 1.0}, {}),
    ("fsp (connector)", {"ce": 1.0, "fsp": 1.0}, {"fsp": {"connector": True}}),
    ("rkd", {"ce": 1.0, "rkd": 1.0}, {}),
    ("darkrank", {"ce": 1.0, "darkrank": 1.0}, {}),
    ("crd", {"ce": 1.0, "crd": 0.8}, {"crd": CRD_OPTIONS}),
    ("crd + kd", {"ce": 0.1, "kd": 0.9, "crd": 0.8}, {"crd": CRD_OPTIONS}),
    ("ofd", {"ce": 1.0, "ofd": 1.0}, {}),
    ("ab", {"ce": 1.0, "ab": 1.0}, {}),
    ("pairwise (structured KD)", {"ce": 1.0, "pairwise": 1.0}, {}),
    ("weighted_kd (balanced)", {"ce": 0.1, "weighted_kd": 0.9}, {}),
    ("ensemble_kd (2 teachers)", {"ce": 0.1, "ensemble_kd": 0.9}, {}),
]
ENSEMBLE_SEEDS = (1,)  # the default teacher (seed 0) plus one more of the same recipe


def subset(outputs: TeacherOutputs, taps: list[str], ensemble: bool) -> TeacherOutputs:
    """Only what a method reads, as a search would cache it (batch slicing costs time)."""
    return TeacherOutputs(
        logits=outputs.logits,
        features={t: outputs.features[t] for t in taps},
        stage_taps=[t for t in outputs.shapes() if t in taps],
        preact=[t for t in outputs.preact if t in taps],
        bn={t: v for t, v in outputs.bn.items() if t in taps},
        ensemble=outputs.ensemble if ensemble else [],
    )


def load_done(path: Path, settings: dict[str, Any]) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["settings"] == settings]


def print_table(rows: list[dict[str, Any]], settings: dict[str, Any]) -> None:
    by_method: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_method.setdefault(row["method"], []).append(row)
    # The load on a shared machine drifts, so each run is compared with plain KD of the
    # SAME seed (run minutes apart); the median of those ratios resists a load spike.
    kd_seconds = {r["seed"]: r["train_seconds"] for r in by_method.get("kd", [])}
    print(
        f"mnist5k-cluttered, student {settings['student_macs'] / 1e6:.2f}M MACs "
        f"(mobilenet space), teacher {settings['teacher']}, {settings['epochs']} epochs, "
        f"batch {settings['batch_size']}, LAST-epoch val accuracy"
    )
    print("\n| method | losses (weights) | accuracy, mean ± std | seeds | time vs kd (median) |")
    print("|---|---|---|---|---|")
    for label, weights, _ in METHODS:
        runs = by_method.get(label)
        if not runs:
            continue
        accs = [100 * r["accuracy"] for r in runs]
        std = f"{statistics.stdev(accs):.2f}" if len(accs) > 1 else "n/a"
        ratios = [
            r["train_seconds"] / kd_seconds[r["seed"]] for r in runs if r["seed"] in kd_seconds
        ]
        ratio = f"{statistics.median(ratios):.2f}x" if ratios else "n/a"
        terms = ", ".join(f"{k} {v:g}" for k, v in weights.items())
        seeds = ",".join(str(r["seed"]) for r in sorted(runs, key=lambda r: r["seed"]))
        print(f"| {label} | {terms} | {statistics.mean(accs):.2f} ± {std} | {seeds} | {ratio} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--run-dir", default="searchkd_runs", help="where teachers are cached")
    parser.add_argument("--results", default="benchmarks/results/loss_methods.jsonl")
    parser.add_argument("--methods", nargs="*", help="row labels to run (default: all)")
    parser.add_argument("--table", action="store_true", help="only print the table")
    parser.add_argument(
        "--student",
        default=None,
        help="an exported student's JSON (searchkd export); default: the hand-picked one",
    )
    args = parser.parse_args()

    data = load_dataset("mnist5k-cluttered", None, 0, None)
    if args.student:
        exported = json.loads(Path(args.student).read_text())
        space, arch = load_architecture(exported.get("arch", exported))
    else:
        space, arch = get_space("mobilenet"), student_arch()
    config = ProxyConfig(epochs=args.epochs)
    settings = {
        "epochs": args.epochs,
        "batch_size": config.batch_size,
        "student": arch,
        "student_macs": space.macs(arch, data.resolution, data.in_channels, data.num_classes),
        "teacher": TeacherConfig().arch,
        "threads": torch.get_num_threads(),
    }
    results = Path(args.results)
    done = load_done(results, settings)
    if args.table:
        print_table(done, settings)
        return
    finished = {(r["method"], r["seed"]) for r in done}
    # Seed-major: an interrupted run still leaves every method with the same seeds.
    todo = [
        (label, weights, options, seed)
        for seed in args.seeds
        for label, weights, options in METHODS
        if (not args.methods or label in args.methods) and (label, seed) not in finished
    ]
    if not todo:
        print_table(done, settings)
        return

    teacher = resolve_teacher(TeacherConfig(), data, 0, args.run_dir)
    members = [
        resolve_teacher(TeacherConfig(seed=s), data, 0, args.run_dir) for s in ENSEMBLE_SEEDS
    ]
    teacher_space = get_space(teacher.arch["space"])
    cached = compute_teacher_outputs(
        teacher.model,
        data.train_x,
        teacher.taps,
        preact=teacher_space.preact_taps(teacher.arch),
        ensemble=[m.model for m in members],
    )
    stage_taps, preact_taps = space.feature_taps(arch), list(space.preact_taps(arch))
    shape = (1, data.in_channels, data.resolution, data.resolution)
    results.parent.mkdir(parents=True, exist_ok=True)
    for label, weights, options, seed in todo:
        torch.manual_seed(seed)
        model = space.build(arch, data.in_channels, data.resolution, data.num_classes)
        probe = build_objective(
            model, shape, cached, stage_taps, weights, options, data.train_y, preact_taps
        )
        view = subset(cached, probe.teacher_taps, "ensemble_kd" in weights)
        reads_features = bool(probe.student_taps)
        started = time.perf_counter()
        result = train_proxy(
            model,
            data,
            view,
            stage_taps if reads_features else [],
            weights,
            options,
            config,
            seed,
            student_preact=preact_taps if reads_features else [],
        )
        row = {
            "method": label,
            "seed": seed,
            "accuracy": result.accuracy,
            "best_accuracy": result.best_accuracy,
            "train_seconds": result.train_seconds,
            "wall_seconds": round(time.perf_counter() - started, 2),
            "loss_terms": result.loss_terms,
            "settings": settings,
        }
        with results.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        print(
            f"{label} seed {seed}: accuracy {result.accuracy:.4f} "
            f"({result.train_seconds:.1f}s training)",
            flush=True,
        )
        done.append(row)
    print()
    print_table(done, settings)


if __name__ == "__main__":
    main()
