"""int8 ONNX Runtime latency, the ``onnxruntime-int8[:Provider]`` meter: edge deployments
run int8, so a budget on the fp32 model's latency is a budget on a model nobody ships.

The candidate is exported as the ``onnxruntime`` meter exports it, quantised with ONNX
Runtime's static quantisation (QDQ format, per-tensor, int8 weights and uint8 activations)
and timed with the same loop.

Activations are unsigned because that is the combination ONNX Runtime's x86 int8 kernels
are built for (u8 x s8 multiply-adds, VNNI where the CPU has it): on this project's 2-core
AVX-512 VNNI CPU, one thread, ResNet-18 at 3x96x96 ran 12.5 ms in fp32, 10.0 ms with int8
activations and 2.0 ms with uint8 ones (benchmarks/int8_latency.py). Timing signed
activations would call int8 slow where a deployment would not be.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from torch import nn

from searchkd.errors import first_line
from searchkd.meters import Latency
from searchkd.onnx_meter import OnnxRuntimeMeter

CALIBRATION_BATCHES = 4
CALIBRATION_SEED = 0


class _Feeds:
    """Calibration inputs as ONNX Runtime's ``CalibrationDataReader``: ``get_next`` gives
    one feed, then None."""

    def __init__(self, input_name: str, batches: list[np.ndarray]):
        self._feeds = iter([{input_name: batch.astype(np.float32)} for batch in batches])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)

    def rewind(self) -> None:  # part of the reader interface; calibration reads once
        pass


def random_batches(input_shape: tuple[int, ...], batches: int, seed: int) -> list[np.ndarray]:
    """Deterministic standard-normal batch-1 inputs: calibration for timing only."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((1, *input_shape)).astype(np.float32) for _ in range(batches)]


def quantize_onnx(
    fp32_path: str | Path,
    int8_path: str | Path,
    input_shape: tuple[int, ...],
    batches: int = CALIBRATION_BATCHES,
    seed: int = CALIBRATION_SEED,
    signed_activations: bool = False,
    calibration: list[np.ndarray] | None = None,
    per_channel: bool = False,
) -> Path:
    """Write the static int8 quantisation of the ONNX model at ``fp32_path`` to
    ``int8_path``: QDQ, int8 weights (per tensor, or per output channel with
    ``per_channel``), uint8 activations (int8 with ``signed_activations``), min-max
    calibration.

    The model is first pre-processed as ONNX Runtime advises (its graph optimiser, ONNX
    shape inference; the symbolic shape inference meant for transformers is skipped, at
    ~2 s a candidate). It is not cosmetic: ``torch.onnx`` feeds repeated conv biases
    through Identity nodes, the quantiser leaves such biases in float, and ONNX Runtime
    then cannot fuse those convolutions into int8 kernels (resnet20 at 1x8x8 timed
    0.43 ms quantised without it, 0.26 ms with it).

    Calibration runs the ``calibration`` batches, by default ``batches`` deterministic
    random inputs of ``input_shape``. For timing that is enough: calibration only sets the
    scales and zero points, not which nodes are quantised nor the kernels that run, so the
    latency is that of the model calibrated on training images. A model meant to be
    *deployed* needs calibration on real inputs (training images) for its accuracy."""
    import tempfile

    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if calibration is None:
        calibration = random_batches(tuple(input_shape), batches, seed)
    with tempfile.TemporaryDirectory() as folder:
        prepared = Path(folder) / "preprocessed.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        input_name = onnx.load(str(prepared), load_external_data=False).graph.input[0].name
        quantize_static(
            str(prepared),
            str(int8_path),
            _Feeds(input_name, calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            activation_type=QuantType.QInt8 if signed_activations else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
    return Path(int8_path)


def error_line(exc: BaseException) -> str:
    """The quantiser's and ONNX Runtime's errors have no common type: name it."""
    first = first_line(exc, 200)
    return first if first == type(exc).__name__ else f"{type(exc).__name__}: {first}"


class OnnxRuntimeInt8Meter(OnnxRuntimeMeter):
    """Times a network as the int8 model an edge runtime would run: exported and checked
    like :class:`~searchkd.onnx_meter.OnnxRuntimeMeter`, quantised by :func:`quantize_onnx`,
    then timed on the same provider with the same loop.

    A candidate the quantiser cannot handle, or a provider that has no int8 kernel for it,
    is a one-line :class:`RuntimeError`: that trial fails and the search goes on. An
    unknown provider is refused when the meter is built, as for the fp32 meter."""

    kind = "onnxruntime-int8"

    def measure(self, model: nn.Module, input_shape: tuple[int, ...]) -> Latency:
        """The int8 model's latency, with the fp32 model it was quantised from timed
        right after it on the same provider and threads (``fp32_ms``: what the
        ``onnxruntime`` meter would time), so a trial records both."""
        import tempfile

        shape = tuple(input_shape)
        with tempfile.TemporaryDirectory() as folder:
            fp32_path = super().onnx_file(model, shape, Path(folder))
            int8 = self.session(self._quantized(fp32_path, shape))
            fp32 = super().session(fp32_path)
        latency = self.time_session(int8, shape)
        return replace(latency, fp32_ms=self.time_session(fp32, shape).median_ms)

    def onnx_file(self, model: nn.Module, input_shape: tuple[int, ...], folder: Path) -> Path:
        return self._quantized(super().onnx_file(model, input_shape, folder), input_shape)

    @staticmethod
    def _quantized(fp32: Path, input_shape: tuple[int, ...]) -> Path:
        try:
            return quantize_onnx(fp32, fp32.with_name("candidate-int8.onnx"), input_shape)
        except Exception as exc:  # the quantiser's errors have no common type
            raise RuntimeError(
                f"int8 quantisation of the candidate failed: {error_line(exc)}"
            ) from None

    def session(self, path: Path):
        try:
            return super().session(path)
        except Exception as exc:  # ONNX Runtime's own error types (Fail, NotImplemented...)
            raise RuntimeError(
                f"ONNX Runtime's {self.provider} cannot run the int8 model: {error_line(exc)}"
            ) from None
