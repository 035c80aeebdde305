"""PyTorch eager latency, the ``torch-cpu`` and ``torch-cuda`` meters: what a model
served by PyTorch itself runs. For very small networks it mostly times per-operator
dispatch, so ONNX Runtime is the search's default (see ``LatencyConfig``).
"""

from __future__ import annotations

import contextlib
import statistics
import time

import torch
from torch import nn

from searchkd.errors import SearchKDError
from searchkd.meters import Latency, MeterSpec, Timing, repeat_until_stable


@contextlib.contextmanager
def _torch_threads(n: int):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


class TorchLatencyMeter:
    """Times one forward pass at batch 1 with PyTorch eager.

    CPU timing is single-threaded by default: two threads occasionally jump 2x on
    a busy 2-core machine, one thread gives the steadiest ranking. On CUDA it uses
    events after synchronising. Each round takes the median of ``runs`` timed calls
    after ``warmup`` untimed ones; ``repeats`` rounds, more while their spread exceeds
    ``tolerance`` of their median (up to ``max_repeats``; :func:`repeat_until_stable`).
    We report the median of the rounds, their inter-quartile spread and their count.
    """

    def __init__(
        self, device: str = "cpu", timing: Timing | None = None, batch_size: int = 1
    ) -> None:
        self.device = torch.device(device)
        self.timing = timing or Timing()
        self.batch_size = batch_size

    @classmethod
    def from_spec(cls, spec: MeterSpec, timing: Timing) -> TorchLatencyMeter:
        """``torch-cpu`` or ``torch-cuda``; the latter refused, in one line, where PyTorch
        sees no CUDA device, before any candidate is timed."""
        if spec.kind.name == "torch-cuda" and not torch.cuda.is_available():
            raise SearchKDError(
                "latency meter torch-cuda: this machine has no CUDA device for PyTorch; use "
                "torch-cpu, a lut: table profiled on the target, or run where a GPU is visible"
            )
        device = "cuda" if spec.kind.name == "torch-cuda" else "cpu"
        return cls(device, timing)

    @property
    def name(self) -> str:
        if self.device.type == "cuda":
            return f"torch-cuda:{self.device.index or 0}"
        return f"torch-cpu:{self.timing.threads}t"

    def measure(self, model: nn.Module, input_shape: tuple[int, ...]) -> Latency:
        was_training = model.training
        model.eval()
        # Moving is skipped when the model is already there: even a no-op .to() walks every
        # module, which cost ~3 ms per candidate on the CPU.
        home = next(model.parameters(), torch.empty(0)).device
        moved = home != self.device
        if moved:
            model.to(self.device)
        # From its own generator: timing a network must not move the seeded stream that
        # the controller and the training draw from.
        example = torch.randn(
            self.batch_size, *input_shape, generator=torch.Generator().manual_seed(0)
        ).to(self.device)
        try:
            with torch.inference_mode(), _torch_threads(self.timing.threads):
                for _ in range(self.timing.warmup):
                    model(example)
                median, spread, rounds = repeat_until_stable(
                    lambda: self._round(model, example),
                    self.timing.repeats,
                    self.timing.max_repeats,
                    self.timing.tolerance,
                )
        finally:
            if moved:
                model.to(home)
            model.train(was_training)
        return Latency(median_ms=median, spread_ms=spread, repeats=rounds, meter=self.name)

    def _round(self, model: nn.Module, example: torch.Tensor) -> float:
        times = []
        if self.device.type == "cuda":
            for _ in range(self.timing.runs):
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                torch.cuda.synchronize(self.device)
                start.record()
                model(example)
                end.record()
                torch.cuda.synchronize(self.device)
                times.append(start.elapsed_time(end))
        else:
            for _ in range(self.timing.runs):
                begin = time.perf_counter()
                model(example)
                times.append((time.perf_counter() - begin) * 1000.0)
        return statistics.median(times)
