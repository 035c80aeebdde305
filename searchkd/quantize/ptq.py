"""Post-training quantisation: the baseline quantisation-aware training must beat.

A trained float student is prepared exactly as for QAT (batch norms folded with their
running statistics, quantisers where ONNX Runtime rounds) and calibrated on training
images, with no training. It is measured three ways on the validation split: in PyTorch
(fake-quantised), as its int8 ONNX model in ONNX Runtime, and as ONNX Runtime's own static
quantisation of the float ONNX model calibrated on the same images (the int8 latency
meter's quantiser), so the comparison also covers the tool a deployment would use.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from searchkd.data import Dataset
from searchkd.engine import evaluate
from searchkd.quantize.calibrate import CALIBRATION_BATCH, CALIBRATION_IMAGES, calibrate
from searchkd.quantize.prepare import quantize_for_training
from searchkd.quantize.spec import QuantSpec


def calibration_images(data: Dataset, count: int = CALIBRATION_IMAGES, seed: int = 0):
    """``count`` training images drawn without replacement, the same for the same seed."""
    order = torch.randperm(len(data.train_x), generator=torch.Generator().manual_seed(seed))
    return data.train_x[order[:count]]


def post_training_quantize(
    model: nn.Module, images: torch.Tensor, spec: QuantSpec | None = None
) -> nn.Module:
    """The prepared, calibrated copy of the trained float ``model`` (left as it was)."""
    prepared = quantize_for_training(model.eval(), spec or QuantSpec())
    return calibrate(prepared, images)


def ptq_baseline(
    model: nn.Module,
    data: Dataset,
    spec: QuantSpec | None = None,
    count: int = CALIBRATION_IMAGES,
    seed: int = 0,
) -> tuple[nn.Module, dict[str, Any]]:
    """Post-training quantise ``model`` on ``count`` training images of ``data`` and return
    it with the validation accuracies of the float model and of each int8 version. ONNX
    Runtime's static quantisation stores weights in 8 bits only, so with 4-bit weights its
    entry is None."""
    from searchkd.int8_meter import quantize_onnx
    from searchkd.onnx_export import export_onnx
    from searchkd.quantize.onnx_int8 import export_int8, int8_session

    spec = spec or QuantSpec()
    images = calibration_images(data, count, seed)
    quantized = post_training_quantize(model, images, spec)
    shape = tuple(data.train_x.shape[1:])
    with tempfile.TemporaryDirectory() as folder:
        ours = Path(folder) / "ptq-int8.onnx"
        export_int8(quantized, shape, ours, data.val_x[:256])
        onnxruntime_static = None
        if spec.weight_bits == 8:
            fp32 = Path(folder) / "fp32.onnx"
            export_onnx(model, shape, fp32)
            batches = [b.numpy() for b in images.split(CALIBRATION_BATCH)]
            static = quantize_onnx(
                fp32, Path(folder) / "static.onnx", shape, calibration=batches,
                per_channel=spec.per_channel,
            )  # fmt: skip
            onnxruntime_static = _accuracy(int8_session(static), data)
        int8_onnx = _accuracy(int8_session(ours), data)
    return quantized, {
        "calibration_images": len(images),
        "calibration_seed": seed,
        "fp32": evaluate(model, data.val_x, data.val_y),
        "fake_quantized": evaluate(quantized, data.val_x, data.val_y),
        "int8_onnx": int8_onnx,
        "onnxruntime_static": onnxruntime_static,
    }


def _accuracy(session, data: Dataset, batch_size: int = 256) -> float:
    name = session.get_inputs()[0].name
    correct = 0
    for start in range(0, len(data.val_x), batch_size):
        x = data.val_x[start : start + batch_size].numpy()
        logits = session.run(None, {name: x})[0]
        correct += int(
            (np.argmax(logits, 1) == data.val_y[start : start + batch_size].numpy()).sum()
        )
    return correct / max(1, len(data.val_x))


def ptq_bundle(
    student: str | Path,
    out_dir: str | Path,
    spec: QuantSpec | None = None,
    count: int = CALIBRATION_IMAGES,
    dataset: str | None = None,
    data_dir: str | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Post-training quantise an exported float student (a bundle with weights) and export
    it as an int8 bundle beside its measurements; returns the new student JSON and the
    accuracies of :func:`ptq_baseline`. The student's dataset (or ``dataset``) gives the
    calibration images (training split) and the validation split."""
    from searchkd.checkpoint import read_json
    from searchkd.errors import SearchKDError
    from searchkd.export import load_student, write_bundle
    from searchkd.names import shell_command
    from searchkd.retrain import CHECK_IMAGES, load_data, student_from_file

    student = Path(student)
    record = read_json(student, "student file")
    if isinstance(record, dict) and record.get("quantization"):
        raise SearchKDError(
            f"{student} is already quantised; post-training quantisation starts from a float "
            "student"
        )
    if not isinstance(record, dict) or not record.get("weights"):
        retrain = shell_command("searchkd", "retrain", "--arch", student, "--epochs", "E")
        raise SearchKDError(f"{student} has no trained weights; train it first with `{retrain}`")
    spec = spec or QuantSpec()
    source = student_from_file(student)
    data = load_data(source, dataset, data_dir)
    model = load_student(student)
    quantized, accuracies = ptq_baseline(model, data, spec, count)
    card = read_json(student.parent / record["model_card"], "model card")
    card = {k: v for k, v in card.items() if k not in ("latency", "onnx", "params", "macs")}
    card["accuracy"] = {
        **card["accuracy"],
        "value": accuracies["fake_quantized"],
        "kind": "post_training_int8",
        "float_value": accuracies["fp32"],
    }
    card["quantization"] = {
        **spec.to_dict(),
        "precision": spec.precision,
        "method": "post-training quantisation of the float student (no training)",
        "calibration": (
            f"activation ranges: the min and max over "
            f"{accuracies['calibration_images']} training images of {data.name} (seed "
            f"{accuracies['calibration_seed']}); int8 check on the first "
            f"{min(len(data.val_x), CHECK_IMAGES)} validation images"
        ),
        "post_training": accuracies,
    }
    path = write_bundle(
        quantized, source.record, card, out_dir, f"{student.stem}-ptq-{spec.tag}",
        data.val_x[:CHECK_IMAGES],
    )  # fmt: skip
    return path, accuracies
