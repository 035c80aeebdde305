"""Retraining schedules compared: cross-entropy only, KD, TAKD, RCO and BAN, 3 seeds each.

    nice -n 19 python benchmarks/schedules.py [--epochs 5] [--teacher-epochs 8] [--out DIR]
    python benchmarks/schedules.py --student benchmarks/results/searched_student.json \
        --cases main --dataset mnist5k --results benchmarks/results/schedules_searched_mnist5k.jsonl

Cases (student picked by hand from the mobilenet space, not by a search, so every case
trains the same network; see STUDENTS):

- ``mnist5k-cluttered`` and ``mnist5k``: student ``ds3-w0.5`` (depthwise-separable 3x3
  blocks, width x0.5, one layer per stage, head x0.25) under the default teacher
  ``resnet20_w16s2``;
- large gap, ``mnist5k-cluttered``: the space's smallest member under ``resnet20_w32s2``
  (about 100x its MACs); BAN is left out there (it does not address a gap).

Everything goes through the library path ``searchkd retrain`` uses
(:func:`searchkd.retrain.retrain_student`), so each run is resumable and exported with an
ONNX check. Results are appended to ``results.jsonl`` as each run finishes; rerunning skips
finished runs (and resumes an interrupted one from its last epoch), then prints the table.
Accuracy is the LAST epoch's validation accuracy (1,000 images), mean ± std over seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from search_spaces import get_space
from searchkd.data import load_dataset
from searchkd.recipe import Recipe
from searchkd.retrain import StudentSource, load_retrain_teacher, retrain_student
from searchkd.schedules import ScheduleOptions
from searchkd.teacher import METADATA, resolve_arch, train_teacher

SEEDS = (0, 1, 2)
METHODS = ("ce", "kd", "takd", "rco", "ban")


def _uniform(block: str, kernel: int, width: float, head: float) -> dict:
    space = get_space("mobilenet")
    decisions = {}
    for i in range(1, 8):
        decisions.update(
            {
                f"s{i}_block": block,
                f"s{i}_kernel": kernel,
                f"s{i}_expansion": 1,
                f"s{i}_se": 0.0,
                f"s{i}_layers": 1,
                f"s{i}_width": width,
            }
        )
    decisions["head_width"] = head
    return space.from_decisions(decisions)


STUDENTS = {
    "ds3-w0.5": lambda: _uniform("dsconv", 3, 0.5, 0.25),
    "smallest": lambda: get_space("mobilenet").smallest(),
}
CASES = [
    # (case, dataset, student, teacher arch, methods)
    ("main", "mnist5k-cluttered", "ds3-w0.5", "resnet20_w16s2", METHODS),
    ("main", "mnist5k", "ds3-w0.5", "resnet20_w16s2", METHODS),
    ("large-gap", "mnist5k-cluttered", "smallest", "resnet20_w32s2", ("ce", "kd", "takd", "rco")),
]


def teacher_dir(out: Path, dataset: str, arch: str, epochs: int) -> Path:
    folder = out / "teachers" / f"{dataset}-{arch}-e{epochs}"
    if not (folder / METADATA).exists():
        data = load_dataset(dataset, seed=0)
        started = time.perf_counter()
        train_teacher(resolve_arch(arch, "resnet"), data, folder, epochs, seed=0, log=_log)
        _log(f"teacher {arch} on {dataset}: {time.perf_counter() - started:.0f}s")
    return folder


def done_keys(results: Path) -> set[str]:
    if not results.exists():
        return set()
    return {json.loads(line)["key"] for line in results.read_text().splitlines() if line.strip()}


def run_case(case, dataset, student, teacher_arch, methods, seed, args, results: Path) -> None:
    out = Path(args.out)
    tdir = teacher_dir(out, dataset, teacher_arch, args.teacher_epochs)
    data = load_dataset(dataset, seed=0)
    source = StudentSource(
        {"format": "searchkd-student", "arch": STUDENTS[student](), "dataset": dataset},
        f"{case}-{dataset}-{student}",
    )
    teacher, route, info = load_retrain_teacher(source, data, out, str(tdir), None, _log)
    options = ScheduleOptions(anchors=4, anchor_selection="interval", generations=2)
    for method in methods:
        key = f"{case}/{dataset}/{student}/{teacher_arch}/{method}/seed{seed}/e{args.epochs}"
        if key in done_keys(results):
            continue
        recipe = Recipe(epochs=args.epochs, seed=seed)
        started = time.perf_counter()
        outcome = retrain_student(
            source, method, recipe, options, data, teacher, route, info,
            out / "retrain", out / "assistants", progress=False, log=_log,
        )  # fmt: skip
        row = {
            "key": key,
            "case": case,
            "dataset": dataset,
            "student": student,
            "teacher": teacher_arch,
            "teacher_accuracy": info["val_accuracy"],
            "method": method,
            "seed": seed,
            "epochs": args.epochs,
            "accuracy": outcome.accuracy,
            "best_accuracy": outcome.best_accuracy,
            "wall_seconds": round(time.perf_counter() - started, 1),
            "train_seconds": _train_seconds(outcome),
            "details": outcome.details,
        }
        with results.open("a") as handle:
            handle.write(json.dumps(row) + "\n")


def _train_seconds(outcome) -> float:
    """Seconds of training every run of the method needs (assistants and earlier
    generations included, even when reused from disk)."""
    card = json.loads(outcome.student.with_suffix(".card.json").read_text())
    seconds = card["train_seconds"]
    details = outcome.details
    if "generations" in details:
        seconds = sum(g["train_seconds"] for g in details["generations"])
    seconds += sum(a["train_seconds"] for a in details.get("assistants", []))
    return round(seconds, 1)


def table(results: Path) -> str:
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(
            (row["case"], row["dataset"], row["student"], row["teacher"], row["method"]), []
        ).append(row)
    lines = [
        "| case | dataset | student → teacher (teacher acc.) | method | accuracy (last epoch) "
        "| seeds | train s per seed (all runs) |",
        "|---|---|---|---|---|---|---|",
    ]
    for (case, dataset, student, teacher, method), group in groups.items():
        accs = [100 * r["accuracy"] for r in group]
        spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
        seconds = statistics.mean(r["train_seconds"] for r in group)
        teacher_accuracy = 100 * group[0]["teacher_accuracy"]
        lines.append(
            f"| {case} | {dataset} | {student} → {teacher} ({teacher_accuracy:.1f}) "
            f"| {method} | {statistics.mean(accs):.2f} ± {spread:.2f} "
            f"| {len(group)} | {seconds:.0f} |"
        )
    return "\n".join(lines)


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5, help="student epochs per run")
    parser.add_argument("--teacher-epochs", type=int, default=8)
    parser.add_argument("--out", default="benchmarks/results/schedules")
    parser.add_argument("--table-only", action="store_true")
    parser.add_argument(
        "--student",
        default=None,
        help="an exported student's JSON (searchkd export): the main cases train it instead "
        "of the hand-picked ds3-w0.5",
    )
    parser.add_argument("--cases", default="main,large-gap", help="which cases to run")
    parser.add_argument("--dataset", default=None, help="only the cases on this dataset")
    parser.add_argument("--results", default=None, help="JSON lines (default OUT/results.jsonl)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = Path(args.results) if args.results else out / "results.jsonl"
    cases = [c for c in CASES if c[0] in args.cases.split(",")]
    if args.dataset:
        cases = [c for c in cases if c[1] == args.dataset]
    if args.student:
        exported = json.loads(Path(args.student).read_text())
        STUDENTS["searched"] = lambda: exported["arch"]
        cases = [(c[0], c[1], "searched" if c[0] == "main" else c[2], *c[3:]) for c in cases]
    torch.set_num_threads(1)  # on a loaded 2-core machine one thread per process runs best
    if not args.table_only:
        for seed in SEEDS:  # seed-major: a cut-short run still covers every case
            for case in cases:
                run_case(*case, seed, args, results)
    print(table(results))


if __name__ == "__main__":
    main()
