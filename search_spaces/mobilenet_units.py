"""How a mobilenet-space network splits into units that run on their own (the stem, each
block, the head with pooling and classifier): what a per-block latency table
(``searchkd.latency.LatencyTable``, the ``lut:`` meter) times once per unit and sums per
network. The decomposition belongs beside the blocks it rebuilds; the table code only asks
:data:`LATENCY_UNITS` for a space's two functions."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from search_spaces import get_space
from search_spaces.base import Unit
from search_spaces.mobilenet import (
    BASE_WIDTHS,
    BLOCKS,
    EXPANSIONS,
    HEAD_CHANNELS,
    HEAD_MULTS,
    KERNELS,
    SE_RATIOS,
    STEM_CHANNELS,
    WIDTH_MULTS,
    _block,
    _conv_bn,
    adapted_strides,
    make_divisible,
)


class _Tail(nn.Module):
    """The 1x1 head, global pooling and classifier, as the network runs them."""

    def __init__(self, cin: int, head: int, classes: int, act: str) -> None:
        super().__init__()
        self.head = _conv_bn(cin, head, 1, act=act)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(head, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.head(x)), 1))


def _key(**fields: Any) -> str:
    return json.dumps(fields, sort_keys=True)


def _size_after(size: int, stride: int) -> int:
    return (size - 1) // stride + 1  # odd kernel with padding kernel // 2, as the space


def _block_unit(stage: dict[str, Any], cin: int, stride: int, size: int, act: str) -> Unit:
    # dsconv and mbconv with expansion 1 build the same module, so they share a key.
    kind = "conv" if stage["block"] == "conv" else "mbconv"
    expansion = 1 if kind == "conv" else stage["expansion"]
    key = _key(
        unit="block",
        kind=kind,
        kernel=stage["kernel"],
        expansion=expansion,
        se=stage["se"],
        act=act,
        cin=cin,
        cout=stage["channels"],
        stride=stride,
        size=size,
    )
    return Unit(key, (cin, size, size), lambda: _block(stage, cin, stride, act))


def _stem_unit(in_channels: int, stem: int, stride: int, size: int, act: str) -> Unit:
    key = _key(unit="stem", cin=in_channels, cout=stem, stride=stride, size=size, act=act)
    return Unit(
        key, (in_channels, size, size), lambda: _conv_bn(in_channels, stem, 3, stride, act=act)
    )


def _tail_unit(cin: int, head: int, classes: int, size: int, act: str) -> Unit:
    key = _key(unit="tail", cin=cin, head=head, classes=classes, size=size, act=act)
    return Unit(key, (cin, size, size), lambda: _Tail(cin, head, classes, act))


def mobilenet_units(
    arch: dict[str, Any], in_channels: int, resolution: int, num_classes: int
) -> list[Unit]:
    """The units of one mobilenet-space network, in execution order."""
    get_space("mobilenet").validate(arch)
    act = arch.get("act", "relu6")
    stem_stride, strides = adapted_strides(arch, resolution)
    units = [_stem_unit(in_channels, arch["stem"], stem_stride, resolution, act)]
    size, cin = _size_after(resolution, stem_stride), arch["stem"]
    for stage, stage_stride in zip(arch["stages"], strides, strict=True):
        for i in range(stage["layers"]):
            stride = stage_stride if i == 0 else 1
            units.append(_block_unit(stage, cin, stride, size, act))
            size, cin = _size_after(size, stride), stage["channels"]
    units.append(_tail_unit(cin, arch["head"], num_classes, size, act))
    return units


def mobilenet_unit_space(in_channels: int, resolution: int, num_classes: int) -> Iterator[Unit]:
    """Every distinct unit the space's decisions can produce at this input size.

    Stage strides, and so every stage's input size, depend on the resolution only; a
    stage's first block takes any width of the stage before, its later blocks their own.
    """
    space = get_space("mobilenet")
    smallest = space.smallest()
    act = smallest.get("act", "relu6")
    stem_stride, strides = adapted_strides(smallest, resolution)
    seen: set[str] = set()

    def fresh(unit: Unit) -> bool:
        new = unit.key not in seen
        seen.add(unit.key)
        return new

    yield _stem_unit(in_channels, STEM_CHANNELS, stem_stride, resolution, act)
    size = _size_after(resolution, stem_stride)
    previous_widths = [STEM_CHANNELS]
    for base, stride in zip(BASE_WIDTHS, strides, strict=True):
        widths = sorted({make_divisible(base * m) for m in WIDTH_MULTS})
        for stage in _stage_variants(widths):
            for cin in previous_widths:
                if fresh(unit := _block_unit(stage, cin, stride, size, act)):
                    yield unit
            after = _size_after(size, stride)
            if fresh(unit := _block_unit(stage, stage["channels"], 1, after, act)):
                yield unit
        size, previous_widths = _size_after(size, stride), widths
    for cin in previous_widths:
        for mult in HEAD_MULTS:
            head = make_divisible(HEAD_CHANNELS * mult)
            yield _tail_unit(cin, head, num_classes, size, act)


def _stage_variants(widths: list[int]) -> Iterator[dict[str, Any]]:
    for channels in widths:
        for block in BLOCKS:
            for kernel in KERNELS:
                for expansion in EXPANSIONS if block == "mbconv" else (1,):
                    for se in SE_RATIOS:
                        yield {
                            "block": block,
                            "kernel": kernel,
                            "expansion": expansion,
                            "se": float(se),
                            "channels": channels,
                        }


# The spaces a latency table can be made for: name -> (units of one network, all units).
LATENCY_UNITS = {"mobilenet": (mobilenet_units, mobilenet_unit_space)}
