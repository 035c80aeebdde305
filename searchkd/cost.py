"""What a candidate costs: multiply-accumulates, parameters and measured latency.

MACs and parameters come from fvcore, configured to count what the literature
reports (convolutions and linear layers, one multiply-add = one MAC) and nothing
else, so our figures sit beside published ones. Latency is *measured*, never
predicted from MACs: on CPUs depthwise convolutions cost 3-5x more per MAC than
plain ones, so the two budgets select different students.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

# Latency, repeat_until_stable and TorchLatencyMeter live in searchkd.meters and
# searchkd.torch_meter; scripts and benchmarks import them from here too ("as": re-exported).
from searchkd.meters import Latency as Latency
from searchkd.meters import LatencyMeter
from searchkd.meters import repeat_until_stable as repeat_until_stable
from searchkd.torch_meter import TorchLatencyMeter as TorchLatencyMeter

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
    try:
        activations = _activations(model, torch.empty(1, *input_shape, device="meta"))
    except RuntimeError:
        # A forward that makes a tensor on a fixed device (NNI's NAS-Bench-201 space does)
        # cannot run on the meta device: count one image's activations on the CPU instead,
        # once the parameters alone are known (a network is rarely huge in activations only).
        real = build().eval()
        activations = _activations(real, torch.zeros(1, *input_shape))
    return MemoryEstimate(count_params(model), activations)


def _activations(model: nn.Module, image: torch.Tensor) -> int:
    """The elements every leaf module outputs for one image."""
    values = [0]

    def count(module: nn.Module, inputs: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor):
            values[0] += output.numel()

    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    hooks = [m.register_forward_hook(count) for m in leaves]
    try:
        with torch.no_grad():
            model(image)
    finally:
        for hook in hooks:
            hook.remove()
    return values[0]


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
        meter: LatencyMeter | None = None,
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
