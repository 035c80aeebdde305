"""ONNX Runtime latency, the ``onnxruntime[:Provider]`` meter: what many edge
deployments run, and the search's default."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from torch import nn

from searchkd.errors import SearchKDError
from searchkd.meters import Latency, MeterSpec, Timing, repeat_until_stable


class OnnxRuntimeMeter:
    """Times a network in ONNX Runtime, which many edge deployments run: exported through
    ``torch.onnx`` (checked against PyTorch), then batch-1 inference on one execution
    provider, timed like :class:`~searchkd.torch_meter.TorchLatencyMeter` (median of ``repeats``
    rounds of ``runs`` calls after ``warmup``, more rounds while they disagree by more than
    ``tolerance``)."""

    def __init__(
        self, provider: str = "CPUExecutionProvider", timing: Timing | None = None
    ) -> None:
        from searchkd.onnx_export import check_provider

        check_provider(provider)  # one line now, not a failed trial per candidate later
        self.provider, self.timing = provider, timing or Timing()

    @classmethod
    def from_spec(cls, spec: MeterSpec, timing: Timing) -> OnnxRuntimeMeter:
        """``onnxruntime`` (the CPU provider) or ``onnxruntime:Provider``; a provider this
        ONNX Runtime lacks is refused in one line here."""
        return cls(spec.argument or "CPUExecutionProvider", timing)

    kind = "onnxruntime"  # how the name starts; the int8 meter says "onnxruntime-int8"

    @property
    def name(self) -> str:
        short = self.provider.removesuffix("ExecutionProvider").lower()
        return f"{self.kind}-{short}:{self.timing.threads}t"

    def measure(self, model: nn.Module, input_shape: tuple[int, ...]) -> Latency:
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            path = self.onnx_file(model, tuple(input_shape), Path(folder))
            session = self.session(path)
        return self.time_session(session, tuple(input_shape))

    def onnx_file(self, model: nn.Module, input_shape: tuple[int, ...], folder: Path) -> Path:
        """The file that is timed: the candidate exported into ``folder``, checked against
        PyTorch. An export that fails is a :class:`RuntimeError`, which fails that trial
        only: one odd candidate must not stop the search."""
        from searchkd.onnx_export import export_onnx

        path = folder / "candidate.onnx"
        was_training = model.training
        try:
            export_onnx(model, input_shape, path, check_batch=1)
        except SearchKDError as exc:
            raise RuntimeError(str(exc)) from None
        finally:
            model.train(was_training)
        return path

    def session(self, path: Path):
        """An ONNX Runtime session for ``path`` on this meter's provider and threads."""
        from searchkd.onnx_export import make_session

        return make_session(path, self.timing.threads, self.provider)

    def time_session(self, session, input_shape: tuple[int, ...]) -> Latency:
        """Batch-1 latency of a built session: ``warmup`` calls, then rounds of ``runs``
        calls until :func:`~searchkd.meters.repeat_until_stable` is satisfied."""
        import numpy as np

        feed = {session.get_inputs()[0].name: np.zeros((1, *input_shape), dtype=np.float32)}
        for _ in range(self.timing.warmup):
            session.run(None, feed)

        def one_round() -> float:
            times = []
            for _ in range(self.timing.runs):
                begin = time.perf_counter()
                session.run(None, feed)
                times.append((time.perf_counter() - begin) * 1000.0)
            return statistics.median(times)

        median, spread, rounds = repeat_until_stable(
            one_round, self.timing.repeats, self.timing.max_repeats, self.timing.tolerance
        )
        return Latency(median_ms=median, spread_ms=spread, repeats=rounds, meter=self.name)
