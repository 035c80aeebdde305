"""Quantised students: quantisation-aware KD against post-training quantisation, and how
closely ONNX Runtime's int8 kernels follow the fake-quantised PyTorch model.

    nice -n 19 python benchmarks/quantization.py accuracy   # the accuracy table (digits)
    nice -n 19 python benchmarks/quantization.py accuracy --dataset mnist5k-cluttered \
        --epochs 5 --teacher-epochs 8 --students compact-res16,mobilenet-smallest
    nice -n 19 python benchmarks/quantization.py latency    # the latency table
    nice -n 5 python benchmarks/quantization.py accuracy --dataset mnist5k-cluttered \
        --teacher baselines --students search-macs-akd,plain12x2,resnet14-w8-s2 --seeds 3
    python benchmarks/quantization.py ranking --dataset mnist5k-cluttered  # fp32 proxy ranks
    python benchmarks/quantization.py search --dataset mnist5k-cluttered   # fp32/int8 budget

``accuracy`` with ``--teacher baselines`` uses ``benchmarks/baselines.py``'s teacher and
recipe, so its float rows are that benchmark's; ``--methods`` (default: float KD, PTQ int8,
QAT int8 without KD, QAT int8 KD, Polino's quantised distillation) and ``--seeds``; each run
is appended to ``--results`` as it ends, and reruns skip finished runs. ``ranking``:
:func:`ranking_table`; ``search``: :func:`search_table`.

``accuracy``, on digits by default (1x8x8, 1438 training and 359 validation images): a
ResNet-20 teacher (``resnet20_w16s2`` from 32 px) is trained once; each student is then
trained as a float KD student, post-training quantised (int8 weights, int4 weights;
calibration on 512 training images), and trained quantisation-aware by KD from the same
full-precision teacher from scratch (int8 and int4 weights with the straight-through
estimator; int4 with Polino's stochastic rounding). Every run goes through
``retrain_student`` and ``ptq_bundle``, as the CLI does. Every int8 model is then run in
ONNX Runtime on the whole validation split against its fake-quantised PyTorch model: the
largest logit difference over the largest logit, the top-1 agreement.

``latency``: networks with random weights, prepared and calibrated on random inputs (the
ranges do not change which kernels run), timed round-robin like
``benchmarks/int8_latency.py``: fp32 (the prepared model's float twin), the QAT model's
int8 export, and ONNX Runtime's own static quantisation of the fp32 model (the
``onnxruntime-int8`` meter's quantiser) with per-channel weights, as the QAT export has.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.baselines import OUT as BASELINE_RUNS
from benchmarks.baselines import RESULTS as BASELINES
from benchmarks.baselines import families
from benchmarks.int8_latency import _cpu, _noise, _timed_round, mobilenet_v2
from search_spaces import get_space
from searchkd.config import TeacherConfig
from searchkd.data import load_dataset
from searchkd.int8_meter import quantize_onnx
from searchkd.onnx_export import export_onnx, make_session
from searchkd.quantize import QuantSpec, prepare_qat
from searchkd.quantize.calibrate import calibrate
from searchkd.quantize.onnx_int8 import export_int8
from searchkd.quantize.prepare import float_twin
from searchkd.quantize.ptq import ptq_bundle
from searchkd.recipe import Recipe
from searchkd.retrain import StudentSource, load_retrain_teacher, retrain_student
from searchkd.schedules import NamedTeacher, ScheduleOptions
from searchkd.teacher import load_teacher, resolve_teacher, train_teacher

# method -> (schedule, quantisation): "ptq" quantises the seed's "float KD" run's weights
METHODS: dict[str, tuple[str, QuantSpec | None]] = {
    "float KD": ("kd", None),
    "PTQ int8": ("ptq", QuantSpec()),
    "PTQ int8-w4": ("ptq", QuantSpec(weight_bits=4)),
    "QAT int8 CE": ("ce", QuantSpec()),  # quantisation-aware, labels only: no teacher
    "QAT int8 KD": ("kd", QuantSpec()),  # Apprentice: full-precision teacher
    "QAT int8 polino": ("kd", QuantSpec(variant="polino")),  # quantised distillation
    "QAT int8-w4": ("kd", QuantSpec(weight_bits=4)),
    "QAT int8-w4 polino": ("kd", QuantSpec(weight_bits=4, variant="polino")),
    "QAT int8 KD from float": ("kd", QuantSpec()),  # starts from the "float KD" weights
}
FROM_FLOAT = ("PTQ int8", "PTQ int8-w4", "QAT int8 KD from float")
MUST_SHOW = ("float KD", "PTQ int8", "QAT int8 CE", "QAT int8 KD", "QAT int8 polino")
RESULTS = Path("benchmarks/results/quantization.jsonl")
PROXY_RESULTS = Path("benchmarks/results/quantization_proxy.jsonl")


def students(task: str | None = None) -> dict[str, dict[str, Any]]:
    """Students by name: a few space members, every member of the baselines' families
    (``resnet8-w12-s2``, ``plain12x2``, ``ds24``, ...) and, for ``task``, the search picks
    that ``benchmarks/baselines.py`` trained (``search-macs-akd``: the default search's)."""
    compact, resnet = get_space("compact"), get_space("resnet")
    chosen = {
        "compact-plain8x2": compact.canonical()["plain8x2"],
        "compact-res16": compact.canonical()["res16"],
        "resnet-smallest": resnet.smallest(),
        "mobilenet-smallest": get_space("mobilenet").smallest(),
    }
    chosen.update({name: arch for members in families().values() for name, arch in members})
    if task is not None:
        chosen.update({r["name"]: r["arch"] for r in done(BASELINES).values() if r["task"] == task})
    return chosen


def agreement(student: Path, data) -> tuple[float, float, float]:
    """(largest |int8 logit - fake-quantised logit| / largest |logit|, top-1 agreement,
    the int8 ONNX model's accuracy) of a bundle over the whole validation split."""
    from searchkd import load_student

    record = json.loads(student.read_text())
    model = load_student(student)
    session = make_session(student.parent / record["onnx"])
    int8 = session.run(None, {"input": data.val_x.numpy()})[0]
    with torch.no_grad():
        fake = model(data.val_x).numpy()
    return (
        float(np.abs(int8 - fake).max() / np.abs(fake).max()),
        float((int8.argmax(1) == fake.argmax(1)).mean()),
        float((int8.argmax(1) == data.val_y.numpy()).mean()),
    )


def accuracy_table(args: argparse.Namespace) -> None:
    """Train every (seed, student, method) not yet in ``--results``, seed-major (a run cut
    short still covers every cell), appending one JSON line per run as it ends."""
    torch.set_num_threads(1)
    data = load_dataset(args.dataset, seed=0)
    out = Path(args.out) / args.dataset
    teacher, route, info = _teacher(args, data, out)
    methods = args.methods.split(",")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"unknown methods {unknown}; use {', '.join(METHODS)}")
    archs = students(args.dataset)
    for label in args.students.split(","):  # an architecture JSON file is a student too
        if label.endswith(".json"):
            archs[label] = json.loads(Path(label).read_text())
    results = Path(args.results)
    print(
        f"# {args.dataset} ({len(data.train_x)} training, {len(data.val_x)} validation images, "
        f"{'x'.join(map(str, data.train_x.shape[1:]))}), {args.epochs} epochs per run, teacher "
        f"{teacher.name} (val {info.get('val_accuracy', float('nan')):.4f}); "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    for seed in range(args.seeds):
        recipe = Recipe(epochs=args.epochs, seed=seed)
        for label in args.students.split(","):
            source = StudentSource(
                {"format": "searchkd-student", "arch": archs[label], "dataset": args.dataset},
                f"{args.dataset}-{Path(label).stem}",
            )

            def run(schedule: str, spec, init=None, source=source, recipe=recipe):
                return retrain_student(
                    source, schedule, recipe, ScheduleOptions(), data, teacher, route, info,
                    out / "retrain", out / "cache", progress=False, log=lambda _: None,
                    quantization=spec, init_from=init,
                )  # fmt: skip

            float_student: Path | None = None
            for method in methods:
                key = f"{args.dataset}/{Path(label).stem}/{method}/e{args.epochs}/seed{seed}"
                if key in done(results):
                    continue
                schedule, spec = METHODS[method]
                if method in FROM_FLOAT and float_student is None:
                    float_student = run("kd", None).student  # a finished run is reused
                if schedule == "ptq":
                    path, _ = ptq_bundle(float_student, out / "ptq" / f"seed{seed}", spec)
                elif method in FROM_FLOAT:
                    path = run(schedule, spec, float_student).student
                else:
                    path = run(schedule, spec).student
                    if spec is None:
                        float_student = path
                row = {
                    "key": key, "dataset": args.dataset, "student": Path(label).stem,
                    "method": method,
                    "seed": seed, "epochs": args.epochs, "teacher": teacher.name,
                    **_measured(path, data, quantized=spec is not None),
                    "finished": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S}",
                    "load": round(os.getloadavg()[0], 1),
                }  # fmt: skip
                with results.open("a") as handle:
                    handle.write(json.dumps(row) + "\n")
                print(f"{key}: {row['accuracy']:.4f}", flush=True)
    print(table(results, args.dataset, args.epochs))


def _teacher(args: argparse.Namespace, data, out: Path):
    """(teacher, route, info): with ``--teacher baselines`` the teacher that
    ``benchmarks/baselines.py`` trained for the task (from its run folder, trained there
    if it is not), so the float rows are that benchmark's recipe; else one trained here."""
    if args.teacher == "baselines":
        folder = BASELINE_RUNS / args.dataset
        full = resolve_teacher(TeacherConfig(), data, 0, folder, print)
        probe = StudentSource({"format": "searchkd-student", "arch": {}}, "probe")
        return load_retrain_teacher(probe, data, folder, str(full.folder), None, print)
    teacher_name = "resnet20" if data.resolution < 32 else "resnet20_w16s2"
    if not (out / "teacher" / "teacher.pt").exists():
        train_teacher(
            get_space("resnet").canonical()[teacher_name], data, out / "teacher",
            epochs=args.teacher_epochs or args.epochs, log=print,
        )  # fmt: skip
    full = load_teacher(out / "teacher")
    teacher = NamedTeacher(f"teacher@{teacher_name}", full.model, full.taps, full.arch)
    return teacher, [], {"name": teacher.name, "val_accuracy": full.meta.get("val_accuracy")}


def _measured(path: Path, data, quantized: bool) -> dict[str, Any]:
    """The bundle's last-epoch accuracy (PyTorch; fake-quantised for int8), and for int8
    bundles the int8 ONNX model's accuracy and agreement with PyTorch on the whole
    validation split; the card's ONNX Runtime latencies (timed under the training load)."""
    record = json.loads(path.read_text())
    card = json.loads((path.parent / record["model_card"]).read_text())
    latency = {  # ONNX Runtime's: the float card's one, the int8 card's two
        m.get("precision", "fp32"): m["median_ms"]
        for m in card["latency"]
        if m["meter"].startswith("onnxruntime")
    }
    row = {
        "accuracy": card["accuracy"]["value"],
        "best_accuracy": card["accuracy"].get("best_epoch_accuracy"),
        "train_seconds": card.get("train_seconds"),
        "fp32_ms": latency.get("fp32"),
        "int8_ms": latency.get("int8"),
        "student_file": str(path),
    }
    if quantized:
        diff, top1, onnx_accuracy = agreement(path, data)
        row.update(int8_onnx_accuracy=onnx_accuracy, max_diff=diff, top1_agreement=top1)
    return row


def table(results: Path, dataset: str, epochs: int) -> str:
    """Per student and method: last-epoch validation accuracy, mean ± sd over seeds."""
    rows = [r for r in done(results).values() if r["dataset"] == dataset and r["epochs"] == epochs]
    cells: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        cells.setdefault((row["student"], row["method"]), []).append(row)
    lines = [
        "| student | method | accuracy % (last epoch, mean ± sd) | seeds | per seed "
        "| int8 ONNX accuracy % | worst int8 vs PyTorch: max diff / max logit, top-1 "
        "agreement |",
        "|---|---|---|---:|---|---|---|",
    ]
    order = {m: i for i, m in enumerate(METHODS)}
    for (student, method), group in sorted(
        cells.items(), key=lambda c: (c[0][0], order.get(c[0][1], 99))
    ):
        group.sort(key=lambda r: r["seed"])
        accs = [100 * r["accuracy"] for r in group]
        sd = f"{statistics.stdev(accs):.2f}" if len(accs) > 1 else "n/a"
        onnx = [100 * r["int8_onnx_accuracy"] for r in group if "int8_onnx_accuracy" in r]
        check = (
            f"{max(r['max_diff'] for r in group):.4f}, "
            f"{min(r['top1_agreement'] for r in group):.4f}"
            if onnx
            else "-"
        )
        lines.append(
            f"| {student} | {method} | {statistics.mean(accs):.2f} ± {sd} | {len(accs)} "
            f"| {', '.join(f'{a:.1f}' for a in accs)} "
            f"| {f'{statistics.mean(onnx):.2f}' if onnx else '-'} | {check} |"
        )
    methods = [m for m in METHODS if any(m == c[1] for c in cells)]
    lines += [
        "",
        "| student | " + " | ".join(methods) + " |",
        "|---|" + "---:|" * len(methods),
    ]
    for student in sorted({c[0] for c in cells}):
        row = []
        for method in methods:
            accs = [100 * r["accuracy"] for r in cells.get((student, method), [])]
            sd = f" ± {statistics.stdev(accs):.2f}" if len(accs) > 1 else ""
            row.append(f"{statistics.mean(accs):.2f}{sd} ({len(accs)})" if accs else "-")
        lines.append(f"| {student} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def done(results: Path) -> dict[str, dict[str, Any]]:
    if not results.exists():
        return {}
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    return {row["key"]: row for row in rows}


def latency_networks() -> list[tuple[str, str, dict[str, Any], tuple[int, int, int]]]:
    compact = get_space("compact").canonical()
    chosen = [(n, "compact", compact[n], (1, 40, 40)) for n in ("plain16", "ds16", "res16")]
    shape = (3, 96, 96)
    return chosen + [
        ("res16", "compact", compact["res16"], shape),
        ("mobilenet_v2-0.5", "mobilenet", mobilenet_v2(0.5), shape),
        ("resnet18", "resnet", get_space("resnet").canonical()["resnet18"], shape),
    ]


def student_networks(names: str, dataset: str, sizes: str = "40,96"):
    """The named students at 1x40x40 (the mnist tasks' input) and at 3xSxS for the other
    ``sizes``, where int8 convolutions may have enough work per call to pay."""
    archs = students(dataset)
    shapes = [(1, 40, 40) if s == 40 else (3, s, s) for s in map(int, sizes.split(","))]
    return [(n, archs[n]["space"], archs[n], s) for s in shapes for n in names.split(",")]


def latency_table(args: argparse.Namespace) -> None:
    import onnxruntime

    torch.set_num_threads(1)
    kinds = ("fp32", "QAT int8", "ORT static int8")
    load_before = os.getloadavg()
    rows, sessions = [], []
    chosen = latency_networks() if args.latency_fixed or not args.latency_students else []
    if args.latency_students:
        chosen = student_networks(args.latency_students, args.dataset, args.latency_sizes) + chosen
    with tempfile.TemporaryDirectory() as scratch:
        for label, space, arch, shape in chosen:
            torch.manual_seed(0)
            model = get_space(space).build(arch, shape[0], shape[1], 10).eval()
            images = torch.randn(16, *shape)
            prepared = calibrate(prepare_qat(model), images)
            folder = Path(scratch) / str(len(rows))
            folder.mkdir()
            with float_twin(prepared):
                export_onnx(prepared, shape, folder / "fp32.onnx")
            export_int8(prepared, shape, folder / "qat.onnx", images)
            batches = [b.numpy() for b in images.split(8)]
            quantize_onnx(folder / "fp32.onnx", folder / "static.onnx", shape,
                          calibration=batches, per_channel=True)  # fmt: skip
            for kind, name in zip(kinds, ("fp32", "qat", "static"), strict=True):
                session = make_session(folder / f"{name}.onnx")
                feed = {"input": np.zeros((1, *shape), np.float32)}
                for _ in range(5):
                    session.run(None, feed)
                one = _timed_round(session, feed, 3)
                runs = max(3, min(200, math.ceil(args.pass_ms / max(one, 1e-3))))
                sessions.append((len(rows), kind, session, feed, runs))
            rows.append((label, "x".join(map(str, shape))))
        passes: dict[tuple[int, str], list[float]] = {(i, k): [] for i, k, *_ in sessions}
        for number in range(args.passes):
            shift = number % len(sessions)
            for index, kind, session, feed, runs in sessions[shift:] + sessions[:shift]:
                passes[(index, kind)].append(_timed_round(session, feed, runs))
    load_after = os.getloadavg()
    print(
        f"# {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {_cpu()}, onnxruntime "
        f"{onnxruntime.__version__}, 1 thread, batch 1, {args.passes} round-robin passes; "
        f"load average before {load_before[0]:.1f}, after {load_after[0]:.1f}"
    )
    print("| network | input | fp32 ms | QAT int8 ms | ORT static int8 ms | int8 / fp32 | "
          "QAT / static | noise fp32 / QAT / static |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for index, (label, shape) in enumerate(rows):
        median = {k: statistics.median(passes[(index, k)]) for k in kinds}
        noise = " / ".join(f"{_noise(passes[(index, k)]):.0%}" for k in kinds)
        print(
            f"| {label} | {shape} | {median['fp32']:.3f} | {median['QAT int8']:.3f} | "
            f"{median['ORT static int8']:.3f} | {median['QAT int8'] / median['fp32']:.2f} | "
            f"{median['QAT int8'] / median['ORT static int8']:.2f} | {noise} |"
        )


def ranking_table(args: argparse.Namespace) -> None:
    """How well the full-precision proxy ranks students once they are retrained int8: per
    network, its proxy accuracy (the search's default proxy, :class:`ProxyJob` with the
    default :class:`ProxyConfig`, KD from the baselines' teacher, mean of seeds 0 and 1;
    trained here once and kept in ``--proxy-results``), its 15-epoch float KD accuracy
    (``benchmarks/baselines.py``, mean of 3 seeds) and its 15-epoch QAT int8 KD accuracy
    (this script, seed 0), with the rank correlations between them."""
    from scipy.stats import kendalltau, spearmanr

    fp32_runs: dict[str, list[float]] = {}
    for row in done(BASELINES).values():
        if row["task"] == args.dataset and row["epochs"] == 15:
            fp32_runs.setdefault(row["name"], []).append(row["accuracy"])
    fp32 = {name: statistics.mean(v) for name, v in fp32_runs.items()}
    int8 = {
        r["student"]: r["accuracy"]
        for r in done(Path(args.results)).values()
        if r["dataset"] == args.dataset and r["epochs"] == args.epochs and r["seed"] == 0
        and r["method"] == "QAT int8 KD"
    }  # fmt: skip
    archs = students(args.dataset)  # the baselines' architectures, as trained above
    names = [n for n in int8 if n in fp32 and n in archs]
    proxy = proxy_accuracies({n: archs[n] for n in names}, args)
    names.sort(key=lambda n: -int8[n])
    print(
        f"proxy: the search's default (2 epochs, batch 32, lr 0.1; fp32), mean of seeds 0 and "
        f"1; float KD 15 epochs (mean of 3 seeds); QAT int8 KD {args.epochs} epochs (seed 0); "
        f"{len(names)} networks"
    )
    print("| network | proxy % | float KD % | QAT int8 KD % | int8 - float pp |")
    print("|---|---:|---:|---:|---:|")
    for n in names:
        print(
            f"| {n} | {100 * proxy[n]:.1f} | {100 * fp32[n]:.2f} | {100 * int8[n]:.1f} "
            f"| {100 * (int8[n] - fp32[n]):+.2f} |"
        )
    pairs = (
        ("proxy", proxy, "QAT int8 KD", int8),
        ("proxy", proxy, "float KD", fp32),
        ("float KD", fp32, "QAT int8 KD", int8),
    )
    print()
    print("| ranks | Spearman | Kendall | first by the left: its right-hand accuracy, best |")
    print("|---|---:|---:|---|")
    for left_name, left, right_name, right in pairs:
        a, b = [left[n] for n in names], [right[n] for n in names]
        first = max(names, key=lambda n: left[n])
        print(
            f"| {left_name} vs {right_name} | {spearmanr(a, b)[0]:.2f} | "
            f"{kendalltau(a, b)[0]:.2f} | {first}: {100 * right[first]:.1f} %, best "
            f"{max(names, key=lambda n: right[n])}: {100 * max(b):.1f} % |"
        )


def proxy_accuracies(archs: dict[str, dict[str, Any]], args) -> dict[str, float]:
    """Name -> mean proxy accuracy over seeds 0 and 1, trained once per architecture and
    seed (keyed by the architecture, not its name: names of search picks were reused)."""
    import hashlib

    from searchkd.config import ProxyConfig
    from searchkd.proxy import compute_teacher_outputs
    from searchkd.search import ProxyJob

    results = Path(args.proxy_results)
    cached = done(results)
    data, outputs = None, None
    accuracies: dict[str, list[float]] = {}
    for name, arch in archs.items():
        digest = hashlib.sha256(json.dumps(arch, sort_keys=True).encode()).hexdigest()[:12]
        for seed in (0, 1):
            key = f"{args.dataset}/{digest}/seed{seed}"
            if key not in cached:
                if data is None:
                    torch.set_num_threads(1)
                    data = load_dataset(args.dataset, seed=0)
                    folder = BASELINE_RUNS / args.dataset
                    teacher = resolve_teacher(TeacherConfig(), data, 0, folder, print)
                    outputs = compute_teacher_outputs(teacher.model, data.train_x, [])
                job = ProxyJob(
                    arch["space"], data.in_channels, data.resolution, data.num_classes,
                    {"ce": 0.1, "kd": 0.9}, {}, ProxyConfig(),
                )  # fmt: skip
                result = job.run(arch, seed, data, outputs)
                cached[key] = {"key": key, "name": name, "accuracy": result.accuracy}
                with results.open("a") as handle:
                    handle.write(json.dumps(cached[key]) + "\n")
            accuracies.setdefault(name, []).append(cached[key]["accuracy"])
    return {name: statistics.mean(v) for name, v in accuracies.items()}


SEARCH_METERS = ("onnxruntime", "onnxruntime-int8")


def search_table(args: argparse.Namespace) -> None:
    """Does an int8 latency budget pick other blocks than an fp32 one? Two searches that
    differ only in the meter, each under ``--max-latency-ms`` (relative: the same fraction
    of the teacher's latency under its own meter), no MACs budget; then the picks and the
    blocks of the trained students within budget, and both picks timed by both meters."""
    import subprocess
    import sys

    from searchkd.meters import Timing, make_meter
    from searchkd.study import default_storage, load_existing_study, ranked_students
    from searchkd.trials import summarize

    def cell(arch: dict[str, Any]) -> str:  # a summary inside a markdown table cell
        return summarize(arch).replace("|", "\\|")

    run_dir = BASELINE_RUNS / args.dataset
    picks = {}
    print(
        f"# {args.dataset}, {args.trials} trials, budget --max-latency-ms "
        f"{args.max_latency_ms} --max-macs none, seed {args.search_seed}; "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, load {os.getloadavg()[0]:.1f}"
    )
    for meter in SEARCH_METERS:
        study = (
            f"{args.dataset}-lat{args.max_latency_ms}-{meter}-t{args.trials}-s{args.search_seed}"
        )
        facts = run_dir / f"{study}.facts.json"
        if not facts.exists():
            command = [
                sys.executable, "-m", "searchkd.cli", "search", "--dataset", args.dataset,
                "--run-dir", str(run_dir), "--study", study, "--seed", str(args.search_seed),
                "--no-progress", "--max-macs", "none", "--max-latency-ms", args.max_latency_ms,
                "--latency", meter, "--trials", str(args.trials),
            ]  # fmt: skip
            started = datetime.now(timezone.utc)
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            seconds = (datetime.now(timezone.utc) - started).total_seconds()
            facts.write_text(json.dumps({"seconds": round(seconds), "load": os.getloadavg()[0]}))
        loaded = load_existing_study(study, default_storage(run_dir, must_exist=True))
        ranked = ranked_students(loaded)
        trials = loaded.get_trials(deepcopy=False)
        blocks: dict[str, int] = {}
        for trial in ranked:
            for stage in trial.user_attrs["arch"].get("stages", []):
                if stage.get("layers"):
                    blocks[stage["block"]] = blocks.get(stage["block"], 0) + stage["layers"]
        total = sum(blocks.values()) or 1
        mix = ", ".join(f"{b} {100 * c / total:.0f} %" for b, c in sorted(blocks.items()))
        teacher = loaded.user_attrs["teacher_cost"]["latency_ms"]
        budget = loaded.user_attrs["budget"]["latency_ms"]
        print(
            f"\n## {meter}: teacher {teacher:.3f} ms, budget {budget:.3f} ms; "
            f"{sum(1 for t in trials if t.user_attrs.get('trained'))} trained, "
            f"{len(ranked)} within budget, {json.loads(facts.read_text())['seconds']} s"
        )
        print(f"layers by block among the students within budget: {mix}")
        print("| rank | trial | proxy % | latency ms (this meter) | fp32 ms | architecture |")
        print("|---:|---:|---:|---:|---:|---|")
        for rank, trial in enumerate(ranked[:5], 1):
            fp32 = trial.user_attrs.get("latency_fp32_ms", trial.values[2])
            print(
                f"| {rank} | {trial.number} | {100 * trial.values[0]:.1f} | "
                f"{trial.values[2]:.3f} | {fp32:.3f} | {cell(trial.user_attrs['arch'])} |"
            )
        picks[meter] = ranked[0].user_attrs["arch"]
    torch.set_num_threads(1)
    data = load_dataset(args.dataset, seed=0)
    shape = (data.in_channels, data.resolution, data.resolution)
    meter = make_meter("onnxruntime-int8", Timing(threads=1, tolerance=0.05))
    print("\nBoth picks timed again by the int8 meter (which times the fp32 model too), now:")
    print("| picked under | int8 ms | fp32 ms | architecture |")
    print("|---|---:|---:|---|")
    for name, arch in picks.items():
        model = get_space(arch["space"]).build(arch, *shape[:2], data.num_classes)
        latency = meter.measure(model.eval(), shape)
        print(f"| {name} | {latency.median_ms:.3f} | {latency.fp32_ms:.3f} | {cell(arch)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("table", choices=("accuracy", "latency", "ranking", "search"))
    parser.add_argument("--dataset", default="digits", help="accuracy: the dataset")
    parser.add_argument(
        "--students", default="compact-plain8x2,resnet-smallest,mobilenet-smallest",
        help="accuracy: space members (compact-res16, ...), the baselines' family members "
        "(plain12x2, resnet8-w12-s2, ...), their search picks (search-macs-akd) or "
        "architecture JSON files (named by their stem)",
    )  # fmt: skip
    parser.add_argument("--methods", default=",".join(MUST_SHOW), help=", ".join(METHODS))
    parser.add_argument("--seeds", type=int, default=1, help="accuracy: seeds 0..N-1")
    parser.add_argument("--epochs", type=int, default=15, help="accuracy: epochs per run")
    parser.add_argument(
        "--teacher", choices=("own", "baselines"), default="own",
        help="accuracy: train a ResNet-20 here, or reuse benchmarks/baselines.py's teacher",
    )  # fmt: skip
    parser.add_argument("--teacher-epochs", type=int, help="accuracy, own: default --epochs")
    parser.add_argument(
        "--out", default="benchmarks/baselines_runs/quantization", help="accuracy: run folder"
    )
    parser.add_argument("--results", default=str(RESULTS), help="accuracy: JSON lines")
    parser.add_argument(
        "--table-only", action="store_true", help="accuracy: print the table of --results"
    )
    parser.add_argument(
        "--latency-students", help="latency: these students (as --students) at 1x40x40 and "
        "3x96x96 instead of the fixed networks",
    )  # fmt: skip
    parser.add_argument("--latency-sizes", default="40,96", help="latency: of the students")
    parser.add_argument(
        "--latency-fixed", action="store_true", help="latency: the fixed networks too"
    )
    parser.add_argument("--proxy-results", default=str(PROXY_RESULTS), help="ranking: cache")
    parser.add_argument("--trials", type=int, default=12, help="search: trained trials each")
    parser.add_argument("--max-latency-ms", default="0.4x", help="search: the latency budget")
    parser.add_argument("--search-seed", type=int, default=0, help="search: its --seed")
    parser.add_argument("--passes", type=int, default=9, help="latency: round-robin passes")
    parser.add_argument("--pass-ms", type=float, default=60.0, help="latency: ms a pass")
    args = parser.parse_args()
    if args.table == "accuracy" and args.table_only:
        print(table(Path(args.results), args.dataset, args.epochs))
    else:
        tables = {"accuracy": accuracy_table, "latency": latency_table}
        tables.update(ranking=ranking_table, search=search_table)
        tables[args.table](args)


if __name__ == "__main__":
    main()
