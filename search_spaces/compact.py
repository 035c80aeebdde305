"""Compact CNNs for small inputs and CPU latency: the space a 40 px task on a CPU needs.

The mobilenet space is built for 224 px phones: a fixed stride-2 stem, seven mandatory
stages, a 1x1 head of hundreds of channels, and depthwise blocks that cost 3-5x more CPU
time per MAC than dense convolutions at this size. Its smallest member is slower than a
five-layer plain CNN. This space holds that plain CNN and everything around it:

* a 3x3 stem of 8-32 channels with stride 1 or 2 (small inputs may keep full resolution);
* four stages (strides 1, 2, 2, 2), each choosing its block, kernel, expansion, depth
  **including zero** (a stage may vanish, so shallow nets are members) and width, with
  widths from 8 channels up;
* blocks: dense ``conv`` (kxk + BN + ReLU), ``basic`` (ResNet's basic block: two kxk
  convs, the sum with the shortcut activated; a 1x1 projection where the shape changes),
  ``fused`` (Fused-MBConv of EfficientNetV2: kxk expand conv, 1x1 linear projection),
  ``mbconv`` (inverted residual: 1x1 expand, kxk depthwise, 1x1 linear projection) and
  ``dsconv`` (MobileNetV1's depthwise kxk + pointwise 1x1, both activated); a residual
  wherever shape allows;
* an optional 1x1 head (0 = none), global pooling and a linear classifier.

A stride-2 step is skipped once the feature map is 3 px or less, so inputs from 8 px up
build every member. The hand-designed students a practitioner writes first (plain and
depthwise-separable stacks with widths doubling per stage) and the CIFAR ResNet-8/14 with a
stride-2 stem are canonical members, so those baselines of ``benchmarks/baselines.py`` are
exact points of the space.

Version 2 added the ``basic`` block; version-1 architectures are members unchanged and
still load.
"""

from __future__ import annotations

from typing import Any

import optuna
import torch
from torch import Tensor, nn

from search_spaces.base import (
    Architecture,
    SearchSpace,
    arch_error,
    check_choice,
    check_decisions,
    check_fields,
    check_header,
    check_int,
)

STEM_WIDTHS = (8, 12, 16, 24, 32)
STEM_STRIDES = (2, 1)  # cheapest first
STAGE_STRIDES = (1, 2, 2, 2)
BASE_WIDTHS = (16, 32, 64, 128)
WIDTH_MULTS = (0.5, 0.75, 1.0, 1.5)
BLOCKS = ("conv", "dsconv", "mbconv", "fused", "basic")
KERNELS = (3, 5)
EXPANSIONS = (1, 2, 4)
LAYERS = (0, 1, 2, 3)
HEADS = (0, 128, 256, 512)
EXPANDING = ("mbconv", "fused")  # blocks whose expansion decision means something
MIN_STRIDED_SIZE = 4  # a stride-2 step needs a map of at least 4 px

_STAGE_KEYS = ("block", "kernel", "expansion", "layers", "channels")


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]


class Block(nn.Module):
    """One block of any kind; ``body`` holds its layers, a residual adds when shapes match
    (``basic`` always adds: through a 1x1 projection when they do not, then activates)."""

    def __init__(self, kind: str, cin: int, cout: int, kernel: int, stride: int, expansion: int):
        super().__init__()
        mid = round(cin * expansion)
        parts: list[nn.Module]
        self.shortcut: nn.Module | None = None
        self.activate: nn.Module | None = None
        if kind == "basic":
            parts = [
                *_conv_bn(cin, cout, kernel, stride), nn.ReLU(inplace=True),
                *_conv_bn(cout, cout, kernel),
            ]  # fmt: skip
            if stride != 1 or cin != cout:
                self.shortcut = nn.Sequential(*_conv_bn(cin, cout, 1, stride))
            self.activate = nn.ReLU(inplace=True)
        elif kind == "conv":
            # Not in place: the BN output stays readable for pre-activation taps.
            parts = [*_conv_bn(cin, cout, kernel, stride), nn.ReLU()]
        elif kind == "dsconv":
            parts = [
                *_conv_bn(cin, cin, kernel, stride, groups=cin), nn.ReLU(inplace=True),
                *_conv_bn(cin, cout, 1), nn.ReLU(inplace=True),
            ]  # fmt: skip
        elif kind == "mbconv":
            expand = [*_conv_bn(cin, mid, 1), nn.ReLU(inplace=True)] if expansion != 1 else []
            parts = [
                *expand,
                *_conv_bn(mid, mid, kernel, stride, groups=mid), nn.ReLU(inplace=True),
                *_conv_bn(mid, cout, 1),
            ]  # fmt: skip
        else:  # fused
            parts = [
                *_conv_bn(cin, mid, kernel, stride),
                nn.ReLU(inplace=True),
                *_conv_bn(mid, cout, 1),
            ]
        self.body = nn.Sequential(*parts)
        self.residual = kind == "basic" or (stride == 1 and cin == cout)

    def forward(self, x: Tensor) -> Tensor:
        out = self.body(x)
        if not self.residual:
            return out
        out = out + (x if self.shortcut is None else self.shortcut(x))
        return out if self.activate is None else self.activate(out)


def _out_size(size: int, stride: int) -> int:
    return (size - 1) // stride + 1  # odd kernel, padding kernel // 2


def _strided(size: int, stride: int) -> int:
    """The stride a stage's first block really uses at this map size."""
    return stride if size >= MIN_STRIDED_SIZE else 1


class CompactNet(nn.Module):
    """stem -> stages (some may be empty) -> optional 1x1 head -> pool -> classifier."""

    def __init__(self, arch: Architecture, in_channels: int, resolution: int, num_classes: int):
        super().__init__()
        self.stem = nn.Sequential(
            *_conv_bn(in_channels, arch["stem"], 3, arch["stem_stride"]), nn.ReLU(inplace=True)
        )
        size, cin = _out_size(resolution, arch["stem_stride"]), arch["stem"]
        stages = []
        for stage, stride in zip(arch["stages"], STAGE_STRIDES, strict=True):
            blocks = []
            for i in range(stage["layers"]):
                step = _strided(size, stride) if i == 0 else 1
                blocks.append(
                    Block(stage["block"], cin, stage["channels"], stage["kernel"], step,
                          stage["expansion"])
                )  # fmt: skip
                size, cin = _out_size(size, step), stage["channels"]
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        head = arch["head"]
        self.head = (
            nn.Sequential(*_conv_bn(cin, head, 1), nn.ReLU(inplace=True)) if head else nn.Identity()
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(head or cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.classifier(torch.flatten(self.pool(self.head(x)), 1))


def _stage(block: str, kernel: int, expansion: int, layers: int, channels: int) -> dict[str, Any]:
    return {
        "block": block,
        "kernel": kernel,
        "expansion": expansion if block in EXPANDING else 1,
        "layers": layers,
        "channels": channels,
    }


def _empty(index: int) -> dict[str, Any]:
    """Stage ``index`` with no blocks, in the one form every empty stage is stored in."""
    return _stage("conv", 3, 1, 0, BASE_WIDTHS[index])


class CompactSpace(SearchSpace):
    """Stem width and stride, four stages x five decisions, and the head width."""

    name = "compact"
    version = 2
    readable_versions = (1, 2)

    def decisions(self) -> dict[str, optuna.distributions.CategoricalDistribution]:
        cat = optuna.distributions.CategoricalDistribution
        out = {"stem_width": cat(STEM_WIDTHS), "stem_stride": cat(STEM_STRIDES)}
        for i in range(len(BASE_WIDTHS)):
            out[f"s{i + 1}_block"] = cat(BLOCKS)
            out[f"s{i + 1}_kernel"] = cat(KERNELS)
            out[f"s{i + 1}_expansion"] = cat(EXPANSIONS)
            out[f"s{i + 1}_layers"] = cat(LAYERS)
            out[f"s{i + 1}_width"] = cat(WIDTH_MULTS)
        out["head"] = cat(HEADS)
        return out

    def from_decisions(self, decisions: dict[str, Any]) -> Architecture:
        """Expansion is stored as 1 for blocks that ignore it, and an empty stage in one
        form whatever its other decisions, so decision vectors that build the same network
        give one architecture (which the study trains once)."""
        check_decisions(self, decisions)
        stages = [
            _stage(
                decisions[f"s{i + 1}_block"],
                decisions[f"s{i + 1}_kernel"],
                decisions[f"s{i + 1}_expansion"],
                decisions[f"s{i + 1}_layers"],
                int(base * decisions[f"s{i + 1}_width"]),
            )
            for i, base in enumerate(BASE_WIDTHS)
        ]
        stages = [stage if stage["layers"] else _empty(i) for i, stage in enumerate(stages)]
        return self._arch(decisions["stem_width"], decisions["stem_stride"], stages,
                          decisions["head"])  # fmt: skip

    def _arch(
        self, stem: int, stem_stride: int, stages: list[dict[str, Any]], head: int = 0
    ) -> Architecture:
        return {
            "space": self.name,
            "version": self.version,
            "stem": stem,
            "stem_stride": stem_stride,
            "stages": stages,
            "head": head,
        }

    def build(
        self, arch: Architecture, in_channels: int, resolution: int, num_classes: int
    ) -> nn.Module:
        self.validate(arch)
        return CompactNet(arch, in_channels, resolution, num_classes)

    def feature_taps(self, arch: Architecture) -> list[str]:
        taps = [f"stages.{i}" for i, stage in enumerate(arch["stages"]) if stage["layers"]]
        return taps or ["stem"]

    def canonical(self) -> dict[str, Architecture]:
        """Hand-designed students, the first nets a practitioner writes for small inputs:
        ``plainW`` (a stride-2 3x3 stem of W channels, then one 3x3 conv per stage at 2W,
        4W, 8W: five layers with the classifier), ``plainWx2`` (two convs per stage),
        ``dsW`` (a stride-1 stem of W, then depthwise-separable blocks at W, 2W, 4W, 8W),
        and the off-the-shelf CIFAR ResNets with a stride-2 stem of W: ``resW`` (ResNet-8,
        one basic block per stage at W, 2W, 4W) and ``resWx2`` (ResNet-14, two)."""
        out = {}
        for w in (8, 12, 16, 24):
            plain = [_empty(0)] + [_stage("conv", 3, 1, 1, w * 2**k) for k in (1, 2, 3)]
            out[f"plain{w}"] = self._arch(w, 2, plain)
            out[f"plain{w}x2"] = self._arch(w, 2, [dict(s, layers=2 * s["layers"]) for s in plain])
            ds = [_stage("dsconv", 3, 1, 1, w * 2**k) for k in (0, 1, 2, 3)]
            out[f"ds{w}"] = self._arch(w, 1, ds)
            res = [_stage("basic", 3, 1, 1, w * 2**k) for k in (0, 1, 2)]
            res.append(_empty(3))
            out[f"res{w}"] = self._arch(w, 2, res)
            out[f"res{w}x2"] = self._arch(w, 2, [dict(s, layers=2 * s["layers"]) for s in res])
        return out

    def decisions_of(self, arch: Architecture) -> dict[str, Any] | None:
        """Every member is reachable, so each architecture maps back to one decision vector;
        None for one stored otherwise (an empty stage not in its one form, as version 1
        stored them)."""
        self.validate(arch)
        decisions: dict[str, Any] = {"stem_width": arch["stem"], "stem_stride": arch["stem_stride"]}
        for i, (stage, base) in enumerate(zip(arch["stages"], BASE_WIDTHS, strict=True), 1):
            decisions.update(
                {
                    f"s{i}_block": stage["block"],
                    f"s{i}_kernel": stage["kernel"],
                    f"s{i}_expansion": stage["expansion"],
                    f"s{i}_layers": stage["layers"],
                    f"s{i}_width": stage["channels"] / base,
                }
            )
        decisions["head"] = arch["head"]
        space = self.decisions()
        if any(value not in space[name].choices for name, value in decisions.items()):
            return None
        return decisions if self.from_decisions(decisions) == arch else None

    def validate(self, arch: Architecture) -> None:
        check_header(self, arch, ("stem", "stem_stride", "stages", "head"))
        where = f"{self.name} architecture"
        check_int(f"{where} 'stem'", arch["stem"])
        check_choice(f"{where} 'stem_stride'", arch["stem_stride"], (1, 2))
        check_int(f"{where} 'head'", arch["head"], minimum=0)
        stages = arch["stages"]
        if not isinstance(stages, list) or len(stages) != len(STAGE_STRIDES):
            raise arch_error(where, f"'stages' must be a list of {len(STAGE_STRIDES)} stages")
        for i, stage in enumerate(stages):
            at = f"{where} stages[{i}]"
            check_fields(at, stage, _STAGE_KEYS)
            check_choice(f"{at}.block", stage["block"], BLOCKS)
            check_int(f"{at}.kernel", stage["kernel"])
            if stage["kernel"] % 2 == 0:
                raise arch_error(f"{at}.kernel", f"must be odd, got {stage['kernel']}")
            check_int(f"{at}.expansion", stage["expansion"])
            check_int(f"{at}.layers", stage["layers"], minimum=0)
            check_int(f"{at}.channels", stage["channels"])

    def macs(
        self, arch: Architecture, resolution: int, in_channels: int = 3, num_classes: int = 1000
    ) -> int:
        """Conv + linear multiply-adds of one image in closed form (what fvcore counts for
        convolutions and linear layers; the tests check it)."""
        self.validate(arch)
        size = _out_size(resolution, arch["stem_stride"])
        total, cin = size * size * in_channels * 9 * arch["stem"], arch["stem"]
        for stage, stride in zip(arch["stages"], STAGE_STRIDES, strict=True):
            for i in range(stage["layers"]):
                step = _strided(size, stride) if i == 0 else 1
                cost, size = block_macs(stage, cin, step, size)
                total += cost
                cin = stage["channels"]
        head = arch["head"]
        if head:
            total += size * size * cin * head
        return total + (head or cin) * num_classes


def block_macs(stage: dict[str, Any], cin: int, stride: int, size: int) -> tuple[int, int]:
    """MACs of one block and its output size; mirrors :class:`Block`."""
    cout, k2, kind = stage["channels"], stage["kernel"] ** 2, stage["block"]
    out = _out_size(size, stride)
    mid = round(cin * stage["expansion"])
    if kind == "conv":
        return out * out * cin * k2 * cout, out
    if kind == "dsconv":
        return out * out * cin * (k2 + cout), out
    if kind == "basic":
        projection = cin * cout if stride != 1 or cin != cout else 0
        return out * out * (cin * k2 * cout + cout * k2 * cout + projection), out
    if kind == "mbconv":
        expand = size * size * cin * mid if stage["expansion"] != 1 else 0
        return expand + out * out * mid * (k2 + cout), out
    return out * out * (cin * k2 * mid + mid * cout), out  # fused
