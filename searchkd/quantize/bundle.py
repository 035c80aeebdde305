"""What a quantised student's bundle measures: its int8 ONNX file (checked against the
fake-quantised model), its size in parameters and MACs, and its latency both as the int8
model and as the float network it was prepared from, so the card shows what int8 buys."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from searchkd.quantize.onnx_int8 import export_int8
from searchkd.quantize.prepare import float_twin

LATENCY_RUNS = 50  # as onnx_export.onnx_latency_ms times them


def int8_measurements(
    model: nn.Module,
    input_shape: tuple[int, ...],
    path: Path,
    images: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Write the int8 ONNX file of the prepared ``model`` to ``path`` and return the model
    card's ``onnx``, ``params``, ``macs`` and ``latency`` entries. ``images`` (say,
    validation images) are what the int8 check runs on; standard-normal inputs without."""
    from searchkd.cost import count_macs, count_params
    from searchkd.onnx_export import export_onnx, onnx_latency_ms

    check = export_int8(model, input_shape, path, images)
    with float_twin(model), tempfile.TemporaryDirectory() as folder:
        macs = count_macs(model, input_shape)
        fp32 = Path(folder) / "fp32.onnx"
        export_onnx(model, input_shape, fp32)
        fp32_ms = onnx_latency_ms(fp32, input_shape, LATENCY_RUNS)
    int8_ms = onnx_latency_ms(path, input_shape, LATENCY_RUNS)
    return {
        "params": count_params(model),
        "macs": macs,
        "latency": [
            {
                "meter": "onnxruntime-cpu:1t",
                "precision": precision,
                "median_ms": round(ms, 4),
                "runs": LATENCY_RUNS,
            }
            for precision, ms in (("fp32", fp32_ms), ("int8", int8_ms))
        ],
        "onnx": check.to_dict(),
    }
