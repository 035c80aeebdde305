"""The int8 ONNX model of a quantisation-aware student, checked against it.

The prepared model is exported in evaluation mode with its quantisers as
QuantizeLinear/DequantizeLinear pairs and its weights as int8 tensors behind
DequantizeLinear (the QDQ format ONNX Runtime's static quantisation writes). Biases are
stored as int32 at scale ``input scale x weight scale``, as that quantiser stores them (ONNX
Runtime only fuses a convolution into an int8 kernel when its bias is quantised too), and
the PyTorch layers round their biases onto the same grid.

Evaluated as written (ONNX Runtime with graph optimisations off: float arithmetic on the
dequantised values), the file computes the fake-quantised PyTorch model: the two differ
only where float summation order decides a rounding tie, rare but not impossible, since
every accumulator lies on the lattice of input scale x weight scale. Deployed, ONNX
Runtime fuses it into integer kernels (QLinearConv, QLinearAdd, QGemm...) that requantise
each accumulator with a float multiplier, so an output within a rounding error of a half
step can land one step away from PyTorch's; such one-step differences travel to the
logits. :func:`check_int8` measures the deployed difference on a batch and holds it to
:data:`BOUND`.
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from searchkd.errors import SearchKDError
from searchkd.int8_meter import error_line
from searchkd.onnx_export import OPSET
from searchkd.quantize.layers import QuantLayer
from searchkd.quantize.prepare import activation_quantizers, quant_spec

# The largest logit difference between ONNX Runtime's int8 kernels and the fake-quantised
# PyTorch model, as a fraction of the largest logit, and the least share of images whose
# top-1 class both give; measured values are in docs/quantization.md.
BOUND = {"max_abs_diff_relative": 0.05, "top1_agreement": 0.98}


@dataclass(frozen=True)
class Int8Check:
    path: str
    opset: int
    provider: str
    batch: int
    max_abs_diff: float  # largest |ONNX Runtime logit - PyTorch logit| over the batch
    max_abs_logit: float  # largest |PyTorch logit|, the scale of the difference
    top1_agreement: float  # share of the batch whose top-1 class both runtimes give
    bound: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def export_int8(
    model: nn.Module,
    input_shape: tuple[int, ...],
    path: str | Path,
    images: torch.Tensor | None = None,
    provider: str = "CPUExecutionProvider",
) -> Int8Check:
    """Write the int8 ONNX model of the prepared ``model`` to ``path`` and check it against
    ``model`` on ``images`` (default: 64 standard-normal inputs). A model that was never
    trained or calibrated has no activation ranges and is refused; so is a runtime without
    int8 kernels for it, and a file that disagrees beyond :data:`BOUND` (then removed)."""
    if quant_spec(model) is None:
        raise SearchKDError("export_int8 needs a prepared model (searchkd.quantize.prepare_qat)")
    if not all(bool(q.observed) for q in activation_quantizers(model)):
        raise SearchKDError(
            "the model has activation quantisers that never saw data: train it or calibrate "
            "it (searchkd.quantize.calibrate) before exporting it as int8"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval().to(memory_format=torch.contiguous_format)
    if images is None:
        images = torch.randn(64, *input_shape, generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory() as folder:
        raw = Path(folder) / "qdq.onnx"
        _export(model, images[:1], raw)
        _store_int32_biases(raw, path)
    try:
        return check_int8(model, path, images, provider)
    except SearchKDError:
        path.unlink(missing_ok=True)
        raise


def check_int8(
    model: nn.Module,
    path: str | Path,
    images: torch.Tensor,
    provider: str = "CPUExecutionProvider",
) -> Int8Check:
    """Run the int8 file in ONNX Runtime and the fake-quantised ``model`` in PyTorch on
    ``images``; refuse (one line) when they disagree beyond :data:`BOUND`."""
    x = images.float().contiguous()
    feed = {"input": x.numpy()}
    actual = int8_session(path, provider).run(None, feed)[0]
    with torch.no_grad():
        expected = model.eval()(x).numpy()
    diff = float(np.abs(actual - expected).max())
    scale = float(np.abs(expected).max())
    agreement = float((actual.argmax(1) == expected.argmax(1)).mean())
    check = Int8Check(Path(path).name, OPSET, provider, len(x), diff, scale, agreement, dict(BOUND))
    if diff > BOUND["max_abs_diff_relative"] * scale or agreement < BOUND["top1_agreement"]:
        raise SearchKDError(
            f"the int8 ONNX model {Path(path).name} differs from the fake-quantised PyTorch "
            f"model by up to {diff:.3g} (largest logit {scale:.3g}), top-1 agreement "
            f"{agreement:.1%}; bound: {BOUND['max_abs_diff_relative']:.0%} of the largest "
            f"logit and {BOUND['top1_agreement']:.0%} agreement"
        )
    return check


def int8_session(path: str | Path, provider: str = "CPUExecutionProvider", threads: int = 1):
    """An ONNX Runtime session for an int8 file; a runtime (or execution provider) without
    int8 kernels for it is one line, not ONNX Runtime's multi-line report."""
    from searchkd.onnx_export import check_provider, make_session

    check_provider(provider)  # not installed / no such provider: its own one line
    try:
        return make_session(path, threads, provider)
    except Exception as exc:  # ONNX Runtime's own types (NotImplemented, Fail, ...)
        raise SearchKDError(
            f"ONNX Runtime's {provider} cannot run the int8 model {Path(path).name}: "
            f"{error_line(exc)}"
        ) from None


def _export(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    layers = [m for m in model.modules() if isinstance(m, QuantLayer)]
    for layer in layers:
        layer.freeze()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter(
                "ignore"
            )  # the tracer's notes on constants and the legacy exporter
            torch.onnx.export(
                model,
                (example,),
                str(path),
                dynamo=False,  # QDQ and the int8 weights come from TorchScript symbolics
                input_names=["input"],
                output_names=["logits"],
                opset_version=OPSET,
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            )
    except Exception as exc:  # the exporter's errors have no common type
        raise SearchKDError(f"int8 ONNX export failed: {error_line(exc)}") from None
    finally:
        for layer in layers:
            layer.unfreeze()


def _store_int32_biases(source: Path, target: Path) -> None:
    """Store constants as initializers, and rewrite every Conv/Gemm whose input and weight
    come from DequantizeLinear so that its float bias becomes DequantizeLinear(int32 bias)."""
    import onnx
    from onnx import helper, numpy_helper

    proto = onnx.load(str(source))
    graph = proto.graph
    _constants_to_initializers(graph)
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}

    def scale_of(tensor: str) -> np.ndarray | None:
        node = producer.get(tensor)
        if node is None or node.op_type != "DequantizeLinear":
            return None
        return constants.get(node.input[1])

    nodes = []
    for node in graph.node:
        if node.op_type in ("Conv", "Gemm") and len(node.input) == 3:
            bias = constants.get(node.input[2])
            x_scale, w_scale = scale_of(node.input[0]), scale_of(node.input[1])
            if (
                bias is not None
                and bias.dtype == np.float32
                and x_scale is not None
                and w_scale is not None
            ):
                scale = (x_scale * w_scale).astype(np.float32)
                integers = np.clip(np.round(bias / scale), -(2**31), 2**31 - 1).astype(np.int32)
                stem = f"{node.name or node.output[0]}_bias"
                graph.initializer.extend(
                    [
                        numpy_helper.from_array(integers, f"{stem}_int32"),
                        numpy_helper.from_array(scale, f"{stem}_scale"),
                        numpy_helper.from_array(
                            np.zeros_like(integers, shape=scale.shape), f"{stem}_zero"
                        ),
                    ]
                )
                axis = {"axis": 0} if scale.ndim else {}
                nodes.append(
                    helper.make_node(
                        "DequantizeLinear",
                        [f"{stem}_int32", f"{stem}_scale", f"{stem}_zero"],
                        [f"{stem}_dequantized"],
                        **axis,
                    )
                )
                node.input[2] = f"{stem}_dequantized"
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    _drop_unused(graph)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(target))


def _constants_to_initializers(graph) -> None:  # an onnx GraphProto
    """The tracer writes tensor constants (the int8 weights among them) as Constant nodes;
    stored as initializers they are the model's weights, where tools look for them."""
    nodes = []
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute[0].name == "value":
            tensor = node.attribute[0].t
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
        else:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)


def _drop_unused(graph) -> None:  # an onnx GraphProto
    used = {name for node in graph.node for name in node.input}
    initializers = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
