"""ONNX export, checked against PyTorch with ONNX Runtime before anyone deploys it.

torch 2.13's default exporter (``dynamo=True``) needs onnxscript and took ~11 s for a small
student here; the TorchScript-based exporter (``dynamo=False``) needs neither, ran in under
a second, and gives the same outputs for these plain CNNs, so it is used first (its
deprecation warning is silenced); the dynamo exporter is the fallback. The batch axis is
dynamic, so the file serves any batch size.
"""

from __future__ import annotations

import statistics
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from searchkd.errors import SearchKDError

OPSET = 17
ATOL = 1e-4  # logits of float32 CNNs agree to ~1e-6 between runtimes; 1e-4 flags real bugs
RTOL = 1e-3


@dataclass(frozen=True)
class OnnxCheck:
    path: str
    opset: int
    exporter: str
    max_abs_diff: float
    atol: float
    rtol: float
    batch: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def export_onnx(
    model: nn.Module, input_shape: tuple[int, ...], path: str | Path, check_batch: int = 4
) -> OnnxCheck:
    """Write ``model`` to ``path`` as ONNX and verify it with ONNX Runtime on a random batch.

    Raises :class:`SearchKDError` (and removes the file) when the runtimes disagree beyond
    ``ATOL + RTOL·|torch|``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval().to(memory_format=torch.contiguous_format)
    example = torch.randn(check_batch, *input_shape, generator=torch.Generator().manual_seed(0))
    exporter = _export(model, example, path)
    with torch.no_grad():
        expected = model(example).numpy()
    actual = _run(path, example.numpy())
    diff = float(np.abs(actual - expected).max())
    if not np.allclose(actual, expected, atol=ATOL, rtol=RTOL):
        path.unlink(missing_ok=True)
        raise SearchKDError(
            f"ONNX export of {path.name} differs from PyTorch by up to {diff:.2e} "
            f"(tolerance {ATOL} + {RTOL}·|logit|); the model uses an op the exporter mistranslates"
        )
    return OnnxCheck(str(path.name), OPSET, exporter, diff, ATOL, RTOL, check_batch)


def _export(model: nn.Module, example: torch.Tensor, path: Path) -> str:
    kwargs = {"input_names": ["input"], "output_names": ["logits"], "opset_version": OPSET}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (example,),
                str(path),
                dynamo=False,
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                **kwargs,
            )
        return "torchscript"
    except Exception:  # the legacy exporter is going away; fall back to the dynamo one
        batch = torch.export.Dim("batch")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model, (example,), str(path), dynamo=True, dynamic_shapes=({0: batch},), **kwargs
            )
        return "dynamo"


def _session(path: str | Path):
    return make_session(path)


def make_session(path: str | Path, threads: int = 1, provider: str = "CPUExecutionProvider"):
    """An ONNX Runtime session on one execution provider (e.g. CUDAExecutionProvider,
    TensorrtExecutionProvider, CoreMLExecutionProvider where the installed build has it)."""
    ort = check_provider(provider)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=[provider])


def check_provider(provider: str):
    """The onnxruntime module, once it is known to be installed with ``provider``."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise SearchKDError(
            "onnxruntime is not installed; `pip install onnxruntime` (or the build for your "
            "accelerator) to export or time ONNX students"
        ) from None
    available = ort.get_available_providers()
    if provider not in available:
        raise SearchKDError(
            f"ONNX Runtime here has no {provider}; available: {', '.join(available)}"
        )
    return ort


def _run(path: str | Path, x: np.ndarray) -> np.ndarray:
    session = _session(path)
    return session.run(None, {session.get_inputs()[0].name: x.astype(np.float32)})[0]


def onnx_latency_ms(path: str | Path, input_shape: tuple[int, ...], runs: int = 50) -> float:
    """Median batch-1 latency in ONNX Runtime, one thread (the card names the meter)."""
    session = _session(path)
    name = session.get_inputs()[0].name
    x = np.random.default_rng(0).standard_normal((1, *input_shape)).astype(np.float32)
    for _ in range(5):
        session.run(None, {name: x})
    times = []
    for _ in range(runs):
        begin = time.perf_counter()
        session.run(None, {name: x})
        times.append((time.perf_counter() - begin) * 1000.0)
    return statistics.median(times)
