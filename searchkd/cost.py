"""What a candidate costs: multiply-accumulates, parameters and measured latency.

MACs and parameters come from fvcore, configured to count what the literature
reports (convolutions and linear layers, one multiply-add = one MAC) and nothing
else, so our figures sit beside published ones. Latency is *measured*, never
predicted from MACs: on CPUs depthwise convolutions cost 3-5x more per MAC than
plain ones, so the two budgets select different students.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

# Ops whose cost the published MAC figures leave out (normalisation, pooling,
# element-wise work). fvcore would otherwise count some of them.
_UNCOUNTED_OPS = (
    "aten::batch_norm",
    "aten::adaptive_avg_pool2d",
    "aten::avg_pool2d",
    "aten::max_pool2d",
    "aten::upsample_nearest2d",
    "aten::upsample_bilinear2d",
    "aten::layer_norm",
    "aten::group_norm",
    "aten::instance_norm",
)


def _import_fvcore():
    """Import fvcore with its torch-2.x deprecation warnings silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fvcore.nn import FlopCountAnalysis

    return FlopCountAnalysis


def _zero(inputs: list[Any], outputs: list[Any]) -> int:
    return 0


def _sdpa_macs(inputs: list[Any], outputs: list[Any]) -> int:
    """MACs of scaled_dot_product_attention, which fvcore does not count:
    Q·Kᵀ plus attention·V, each batch·heads·Lq·Lk·d."""
    from fvcore.nn.jit_handles import get_shape

    q, k, v = (get_shape(x) for x in inputs[:3])
    batch = 1
    for dim in q[:-2]:
        batch *= dim
    lq, d = q[-2], q[-1]
    lk, dv = k[-2], v[-1]
    return batch * lq * lk * (d + dv)


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass at batch 1 (conv, linear, attention)."""
    flop_count_analysis = _import_fvcore()
    was_training = model.training
    model.eval()
    try:
        example = torch.zeros(1, *input_shape)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            analysis = flop_count_analysis(model, example)
            # fvcore ignores a None handle only for ops it has no handle of its own for,
            # so uncounted ops get a handle that counts zero.
            analysis.set_op_handle(**{op: _zero for op in _UNCOUNTED_OPS})
            analysis.set_op_handle("aten::scaled_dot_product_attention", _sdpa_macs)
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            return int(analysis.total())
    finally:
        model.train(was_training)


def count_params(model: nn.Module) -> int:
    """Learnable parameters (what the reference implementations report)."""
    return sum(p.numel() for p in model.parameters())


# Bytes per parameter while training: fp32 weights, their gradient, the optimizer's
# state (AdamW keeps two moments) and one copy in flight (a best-epoch snapshot).
TRAIN_BYTES_PER_PARAM = 4 * 5
# Bytes per activation value per image: the fp32 output kept for the backward pass and
# its gradient.
TRAIN_BYTES_PER_ACTIVATION = 4 * 2


@dataclass(frozen=True)
class MemoryEstimate:
    """What training a network holds in memory, from a build on PyTorch's ``meta``
    device: the shapes of every parameter and layer output, nothing allocated."""

    params: int
    activations_per_image: int  # values output by its layers for one image

    def training_bytes(self, batch_size: int) -> int:
        return (
            self.params * TRAIN_BYTES_PER_PARAM
            + self.activations_per_image * batch_size * TRAIN_BYTES_PER_ACTIVATION
        )


def estimate_memory(build: Callable[[], nn.Module], input_shape: tuple[int, ...]) -> MemoryEstimate:
    """Count the parameters and per-image activations of ``build()`` without allocating
    them, so a network too big for the machine is refused in a second instead of failing
    to allocate after minutes (or driving the machine into swap)."""
    with torch.device("meta"):
        model = build().eval()  # eval: batch norm accepts a batch of one
    values = [0]

    def count(module: nn.Module, inputs: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor):
            values[0] += output.numel()

    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    hooks = [m.register_forward_hook(count) for m in leaves]
    try:
        with torch.no_grad():
            model(torch.empty(1, *input_shape, device="meta"))
    finally:
        for hook in hooks:
            hook.remove()
    return MemoryEstimate(count_params(model), values[0])


def check_fits_memory(
    space: Any,
    arch: dict[str, Any],
    input_shape: tuple[int, int, int],
    num_classes: int,
    batch_size: int,
    device: torch.device,
    what: str = "architecture",
) -> MemoryEstimate:
    """Refuse, in one line naming the field to shrink, an architecture whose training
    would not fit in the memory ``device`` has available now."""
    from search_spaces.base import widest_field
    from searchkd.device import available_memory
    from searchkd.errors import ArchitectureError

    channels, resolution = input_shape[0], input_shape[1]
    estimate = estimate_memory(
        lambda: space.build(arch, channels, resolution, num_classes), input_shape
    )
    need, have = estimate.training_bytes(batch_size), available_memory(device)
    if need > have:
        name, value = widest_field(arch)
        raise ArchitectureError(
            f"{what}: training it would take about {need / 1e9:.1f} GB "
            f"({estimate.params / 1e6:.1f}M parameters, batch {batch_size} of "
            f"{'x'.join(map(str, input_shape))}) but {device.type} has {have / 1e9:.1f} GB "
            f"available; make it smaller (its widest field: {name} = {value}) or lower the "
            "batch size"
        )
    return estimate


@dataclass(frozen=True)
class Latency:
    """A latency measurement: median over repeats and the spread around it."""

    median_ms: float
    spread_ms: float  # inter-quartile range of the repeat medians
    repeats: int  # rounds measured (more than asked when the first ones disagreed)
    meter: str


def _spread(values: list[float]) -> float:
    """Inter-quartile range; 0 for one value."""
    if len(values) < 2:
        return 0.0
    quartiles = statistics.quantiles(values, n=4)
    return float(quartiles[2] - quartiles[0])


def repeat_until_stable(
    one_round: Callable[[], float], repeats: int, max_repeats: int, tolerance: float | None
) -> tuple[float, float, int]:
    """(median, inter-quartile spread, rounds) of round medians (ms).

    ``repeats`` rounds, then more while their spread exceeds ``tolerance`` x median, up to
    ``max_repeats``: a busy machine (another process waking up mid-round) shows as a spread
    round, and more rounds push the median back to the steady value instead of recording
    the noise. ``tolerance`` None, or a single round, keeps the fixed count."""
    rounds = [one_round() for _ in range(repeats)]
    if tolerance is not None and repeats >= 2:
        while len(rounds) < max_repeats and _spread(rounds) > tolerance * statistics.median(rounds):
            rounds.append(one_round())
    return statistics.median(rounds), _spread(rounds), len(rounds)


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
        self,
        device: str = "cpu",
        threads: int = 1,
        warmup: int = 5,
        runs: int = 20,
        repeats: int = 3,
        batch_size: int = 1,
        tolerance: float | None = None,
        max_repeats: int = 10,
    ) -> None:
        self.device = torch.device(device)
        self.threads = threads
        self.warmup = warmup
        self.runs = runs
        self.repeats = repeats
        self.batch_size = batch_size
        self.tolerance, self.max_repeats = tolerance, max(max_repeats, repeats)

    @property
    def name(self) -> str:
        if self.device.type == "cuda":
            return f"torch-cuda:{self.device.index or 0}"
        return f"torch-cpu:{self.threads}t"

    def measure(self, model: nn.Module, input_shape: tuple[int, ...]) -> Latency:
        was_training = model.training
        model.eval()
        # Moving is skipped when the model is already there: even a no-op .to() walks every
        # module, which cost ~3 ms per candidate on the CPU.
        home = next(model.parameters(), torch.empty(0)).device
        moved = home != self.device
        if moved:
            model.to(self.device)
        example = torch.randn(self.batch_size, *input_shape, device=self.device)
        try:
            with torch.inference_mode(), _torch_threads(self.threads):
                for _ in range(self.warmup):
                    model(example)
                median, spread, rounds = repeat_until_stable(
                    lambda: self._round(model, example),
                    self.repeats,
                    self.max_repeats,
                    self.tolerance,
                )
        finally:
            if moved:
                model.to(home)
            model.train(was_training)
        return Latency(median_ms=median, spread_ms=spread, repeats=rounds, meter=self.name)

    def _round(self, model: nn.Module, example: torch.Tensor) -> float:
        times = []
        if self.device.type == "cuda":
            for _ in range(self.runs):
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                torch.cuda.synchronize(self.device)
                start.record()
                model(example)
                end.record()
                torch.cuda.synchronize(self.device)
                times.append(start.elapsed_time(end))
        else:
            for _ in range(self.runs):
                begin = time.perf_counter()
                model(example)
                times.append((time.perf_counter() - begin) * 1000.0)
        return statistics.median(times)


class CostModel:
    """Counts (and caches) the cost of architectures for one input shape.

    MACs and parameters are deterministic per architecture, so they are cached by
    the architecture's canonical JSON; a search that samples the same candidate
    twice pays for it once. Latency is cached too: re-timing the same network
    only adds noise.
    """

    def __init__(
        self,
        build,
        input_shape: tuple[int, ...],
        meter: TorchLatencyMeter | None = None,
        closed_form_macs=None,
        table=None,
    ) -> None:
        self._build = build
        # A latency table (searchkd.latency.LatencyTable) predicts instead of the meter.
        self.table = table
        # fvcore traces the model (~70 ms for a small student); a space that knows its
        # MACs in closed form (tested equal to fvcore) makes rejection near-free.
        self._closed_form_macs = closed_form_macs
        self.input_shape = tuple(input_shape)
        self.meter = meter
        self._counts: dict[str, tuple[int, int]] = {}
        self._latency: dict[str, Latency] = {}

    @staticmethod
    def key(arch: dict[str, Any]) -> str:
        return json.dumps(arch, sort_keys=True)

    def closed_form_macs(self, arch: dict[str, Any]) -> int | None:
        """MACs without building the model, when the space has a formula."""
        if self._closed_form_macs is None:
            return None
        macs = self._closed_form_macs(arch)
        return None if macs is None else int(macs)

    def is_cached(self, arch: dict[str, Any]) -> bool:
        """Counts (and latency, when there is a meter) already known for ``arch``."""
        key = self.key(arch)
        timed = self.meter is None or self.table is not None or key in self._latency
        return key in self._counts and timed

    def counts(self, arch: dict[str, Any], model: nn.Module | None = None) -> tuple[int, int]:
        """(MACs, params) of an architecture, built only when not cached."""
        key = self.key(arch)
        if key not in self._counts:
            model = model if model is not None else self._build(arch)
            macs = self._closed_form_macs(arch) if self._closed_form_macs else None
            if macs is None:
                macs = count_macs(model, self.input_shape)
            self._counts[key] = (int(macs), count_params(model))
        return self._counts[key]

    @property
    def meter_name(self) -> str | None:
        if self.table is not None:
            return self.table.name
        return self.meter.name if self.meter is not None else None

    def latency(self, arch: dict[str, Any], model: nn.Module | None = None) -> Latency | None:
        if self.table is not None:
            return self.table.predict(arch)
        if self.meter is None:
            return None
        key = self.key(arch)
        if key not in self._latency:
            model = model if model is not None else self._build(arch)
            self._latency[key] = self.meter.measure(model, self.input_shape)
        return self._latency[key]
