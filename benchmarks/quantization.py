"""Quantised students: quantisation-aware KD against post-training quantisation, and how
closely ONNX Runtime's int8 kernels follow the fake-quantised PyTorch model.

    nice -n 19 python benchmarks/quantization.py accuracy   # the accuracy table (digits)
    nice -n 19 python benchmarks/quantization.py accuracy --dataset mnist5k-cluttered \
        --epochs 5 --teacher-epochs 8 --students compact-res16,mobilenet-smallest
    nice -n 19 python benchmarks/quantization.py latency    # the latency table

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

from benchmarks.int8_latency import _cpu, _noise, _timed_round, mobilenet_v2
from search_spaces import get_space
from searchkd.data import load_dataset
from searchkd.int8_meter import quantize_onnx
from searchkd.onnx_export import export_onnx, make_session
from searchkd.quantize import QuantSpec, prepare_qat
from searchkd.quantize.calibrate import calibrate
from searchkd.quantize.onnx_int8 import export_int8
from searchkd.quantize.prepare import float_twin
from searchkd.quantize.ptq import ptq_bundle
from searchkd.recipe import Recipe
from searchkd.retrain import StudentSource, retrain_student
from searchkd.schedules import NamedTeacher, ScheduleOptions
from searchkd.teacher import load_teacher, train_teacher

QAT = {
    "QAT int8": QuantSpec(),
    "QAT int8-w4": QuantSpec(weight_bits=4),
    "QAT int8-w4 polino": QuantSpec(weight_bits=4, variant="polino"),
}
PTQ = {"PTQ int8": QuantSpec(), "PTQ int8-w4": QuantSpec(weight_bits=4)}


def students() -> dict[str, dict[str, Any]]:
    compact, resnet = get_space("compact"), get_space("resnet")
    return {
        "compact-plain8x2": compact.canonical()["plain8x2"],
        "compact-res16": compact.canonical()["res16"],
        "resnet-smallest": resnet.smallest(),
        "mobilenet-smallest": get_space("mobilenet").smallest(),
    }


def agreement(student: Path, data) -> tuple[float, float]:
    """(largest |int8 logit - fake-quantised logit| / largest |logit|, top-1 agreement) of
    a bundle over the whole validation split."""
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
    )


def accuracy_table(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    data = load_dataset(args.dataset)
    out = Path(args.out) / args.dataset
    teacher_name = "resnet20" if data.resolution < 32 else "resnet20_w16s2"
    if not (out / "teacher" / "teacher.pt").exists():
        train_teacher(
            get_space("resnet").canonical()[teacher_name], data, out / "teacher",
            epochs=args.teacher_epochs or args.epochs, log=print,
        )  # fmt: skip
    full = load_teacher(out / "teacher")
    teacher = NamedTeacher(f"teacher@{teacher_name}", full.model, full.taps, full.arch)
    recipe = Recipe(epochs=args.epochs)
    print(
        f"# {args.dataset} ({len(data.train_x)} training, {len(data.val_x)} validation images, "
        f"{'x'.join(map(str, data.train_x.shape[1:]))}), {args.epochs} epochs per run, teacher "
        f"{teacher_name} (val {full.meta.get('val_accuracy'):.4f}); "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, load average {os.getloadavg()[0]:.1f}"
    )
    print("| student | method | val accuracy | int8 vs PyTorch: max abs diff / max logit | "
          "top-1 agreement | fp32 ms | int8 ms |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|")
    for label in args.students.split(","):
        source = StudentSource({"format": "searchkd-student", "arch": students()[label]}, label)

        def run(spec: QuantSpec | None, source: StudentSource = source):
            return retrain_student(
                source, "kd", recipe, ScheduleOptions(), data, teacher, [], {"name": teacher.name},
                out / "retrain", out / "cache", progress=False, log=lambda _: None,
                quantization=spec,
            )  # fmt: skip

        float_run = run(None)
        rows = [("float KD", float_run.student)]
        for method, spec in PTQ.items():
            path, _ = ptq_bundle(float_run.student, out / "ptq", spec)
            rows.append((method, path))
        rows += [(method, run(spec).student) for method, spec in QAT.items()]
        for method, path in rows:
            record = json.loads(path.read_text())
            card = json.loads((path.parent / record["model_card"]).read_text())
            latency = {  # ONNX Runtime's: the float card's one, the int8 card's two
                m.get("precision", "fp32"): m["median_ms"]
                for m in card["latency"]
                if m["meter"].startswith("onnxruntime")
            }
            diff, top1 = agreement(path, data) if "int8" in method else (None, None)
            print(
                f"| {label} | {method} | {card['accuracy']['value']:.4f} | "
                + (f"{diff:.4f} | {top1:.4f}" if diff is not None else "- | -")
                + f" | {latency['fp32']:.3f} | "
                + (f"{latency['int8']:.3f} |" if "int8" in latency else "- |"),
                flush=True,
            )


def latency_networks() -> list[tuple[str, str, dict[str, Any], tuple[int, int, int]]]:
    compact = get_space("compact").canonical()
    chosen = [(n, "compact", compact[n], (1, 40, 40)) for n in ("plain16", "ds16", "res16")]
    shape = (3, 96, 96)
    return chosen + [
        ("res16", "compact", compact["res16"], shape),
        ("mobilenet_v2-0.5", "mobilenet", mobilenet_v2(0.5), shape),
        ("resnet18", "resnet", get_space("resnet").canonical()["resnet18"], shape),
    ]


def latency_table(args: argparse.Namespace) -> None:
    import onnxruntime

    torch.set_num_threads(1)
    kinds = ("fp32", "QAT int8", "ORT static int8")
    load_before = os.getloadavg()
    rows, sessions = [], []
    with tempfile.TemporaryDirectory() as scratch:
        for label, space, arch, shape in latency_networks():
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
    print("| network | input | fp32 ms | QAT int8 ms | ORT static int8 ms | QAT / static | "
          "noise fp32 / QAT / static |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|")
    for index, (label, shape) in enumerate(rows):
        median = {k: statistics.median(passes[(index, k)]) for k in kinds}
        noise = " / ".join(f"{_noise(passes[(index, k)]):.0%}" for k in kinds)
        print(
            f"| {label} | {shape} | {median['fp32']:.3f} | {median['QAT int8']:.3f} | "
            f"{median['ORT static int8']:.3f} | "
            f"{median['QAT int8'] / median['ORT static int8']:.2f} | {noise} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("table", choices=("accuracy", "latency"))
    parser.add_argument("--dataset", default="digits", help="accuracy: the dataset")
    parser.add_argument(
        "--students", default="compact-plain8x2,resnet-smallest,mobilenet-smallest",
        help=f"accuracy: among {', '.join(students())}",
    )  # fmt: skip
    parser.add_argument("--epochs", type=int, default=15, help="accuracy: epochs per run")
    parser.add_argument("--teacher-epochs", type=int, help="accuracy: default --epochs")
    parser.add_argument("--out", default="runs/quantization", help="accuracy: run folder")
    parser.add_argument("--passes", type=int, default=9, help="latency: round-robin passes")
    parser.add_argument("--pass-ms", type=float, default=60.0, help="latency: ms a pass")
    args = parser.parse_args()
    (accuracy_table if args.table == "accuracy" else latency_table)(args)


if __name__ == "__main__":
    main()
