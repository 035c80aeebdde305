"""A MnasNet-style factorised hierarchical space of mobile networks.

The skeleton is MobileNetV2's: a stride-2 3x3 stem with 32 channels, seven stages
(base widths 16, 24, 32, 64, 96, 160, 320; strides 1, 2, 2, 2, 1, 2, 1), a 1x1 head
to 1280 channels, global pooling and a linear classifier. As in MnasNet, every stage
decides on its own block type, kernel, expansion, squeeze-and-excitation, depth and
width, so the search can spend capacity where it pays (Tan et al., 2019).

Architectures are explicit (each stage carries its channel count and stride), so
members the decisions cannot reach, such as MnasNet-A1 with its 40/80/112-channel
stages, still build exactly.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

import optuna
import torch
from torch import Tensor, nn

from search_spaces.base import (
    MAX_CHANNELS,
    MAX_KERNEL,
    MAX_LAYERS,
    Architecture,
    SearchSpace,
    arch_error,
    check_choice,
    check_decisions,
    check_fields,
    check_header,
    check_int,
    check_number,
    check_stages,
)

BASE_WIDTHS = (16, 24, 32, 64, 96, 160, 320)
BASE_STRIDES = (1, 2, 2, 2, 1, 2, 1)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
# The 1x1 head to 1280 channels is a third of the MACs of a small student at 40 px;
# letting the search narrow it keeps tiny budgets reachable.
HEAD_MULTS = (0.25, 0.5, 1.0)

# Choices, cheapest first (the first choice of every decision gives the smallest network).
BLOCKS = ("dsconv", "mbconv", "conv")
KERNELS = (3, 5, 7)
EXPANSIONS = (1, 3, 6)
SE_RATIOS = (0.0, 0.25)
LAYERS = (1, 2, 3, 4)
WIDTH_MULTS = (0.25, 0.5, 0.75, 1.0)
ACTIVATIONS = ("relu6", "relu")

_STAGE_KEYS = ("block", "kernel", "expansion", "se", "layers", "channels", "stride")


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a width to a multiple of ``divisor`` (at least ``divisor``), never dropping
    more than 10%: torchvision's rule, so scaled widths stay hardware friendly."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def kept_stride_steps(resolution: int, steps: int) -> int:
    """How many of the ``steps`` stride-2 downsamplings to keep for this input size.

    We keep ``round(log2(resolution / 3))`` of them (capped at ``steps``): the last
    feature map ends near 3-7 px, as 224 px inputs end at 7x7. 224 px keeps all five,
    64 px four (4x4), 40 px four (3x3), 32 px three (4x4), 28 px three (4x4), 8 px one.
    """
    if resolution < 3:
        return 0
    return max(0, min(steps, round(math.log2(resolution / 3))))


def adapted_strides(arch: Architecture, resolution: int) -> tuple[int, list[int]]:
    """(stem stride, per-stage strides) for this input size, dropping the LATEST
    stride-2 steps first.

    Small inputs thus downsample early, exactly as at 224 px, and the deep stages run
    at the final map size. Keeping early layers at full resolution instead (the CIFAR
    habit) costs 2-3x the MACs for the same decisions at 40 px, and early
    high-resolution (depthwise) layers are the slowest per MAC on CPUs; measured with
    the closed-form MAC count on 300 random members at 1x40x40.
    """
    strides = [2] + [stage["stride"] for stage in arch["stages"]]
    steps = [i for i, s in enumerate(strides) if s == 2]
    for i in steps[kept_stride_steps(resolution, len(steps)) :]:
        strides[i] = 1
    return strides[0], strides[1:]


def se_channels(in_channels: int, ratio: float) -> int:
    """SE bottleneck width: a ratio of the block INPUT channels, as in the MnasNet and
    EfficientNet references (not of the expanded channels)."""
    return max(1, round(in_channels * ratio))


def _activation(name: str, inplace: bool = True) -> nn.Module:
    return nn.ReLU6(inplace=inplace) if name == "relu6" else nn.ReLU(inplace=inplace)


def _conv_bn(
    cin: int,
    cout: int,
    kernel: int,
    stride: int = 1,
    groups: int = 1,
    act: str | None = None,
    inplace: bool = True,
) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act is not None:
        layers.append(_activation(act, inplace))
    return nn.Sequential(*layers)


class SqueezeExcite(nn.Module):
    """Channel gating from globally pooled features (1x1 convs with bias, sigmoid gate)."""

    def __init__(self, channels: int, reduced: int, act: str) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.act = _activation(act)
        self.expand = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        scale = self.expand(self.act(self.reduce(x.mean((2, 3), keepdim=True))))
        return x * torch.sigmoid(scale)


class MBConv(nn.Module):
    """Inverted residual (MobileNetV2/MnasNet): 1x1 expand, kxk depthwise, optional SE,
    linear 1x1 projection. With expansion 1 there is no expand conv, which is exactly the
    depthwise-separable block of MnasNet (and MobileNetV2's first bottleneck)."""

    def __init__(
        self, cin: int, cout: int, kernel: int, stride: int, expansion: float, se: float, act: str
    ) -> None:
        super().__init__()
        mid = round(cin * expansion)
        parts: OrderedDict[str, nn.Module] = OrderedDict()
        if expansion != 1:
            parts["expand"] = _conv_bn(cin, mid, 1, act=act)
        parts["depthwise"] = _conv_bn(mid, mid, kernel, stride, groups=mid, act=act)
        if se > 0:
            parts["se"] = SqueezeExcite(mid, se_channels(cin, se), act)
        parts["project"] = _conv_bn(mid, cout, 1)
        self.body = nn.Sequential(parts)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        out = self.body(x)
        return x + out if self.residual else out


class ConvBlock(nn.Module):
    """A plain kxk convolution + BN + activation (optional SE): dense, so costly in MACs,
    but often faster per MAC than depthwise convolutions on CPUs and accelerators."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, se: float, act: str) -> None:
        super().__init__()
        parts: OrderedDict[str, nn.Module] = OrderedDict()
        # Not in place: the BN output is this block's pre-ReLU tap (``body.conv.1``).
        parts["conv"] = _conv_bn(cin, cout, kernel, stride, act=act, inplace=False)
        if se > 0:
            parts["se"] = SqueezeExcite(cout, se_channels(cin, se), act)
        self.body = nn.Sequential(parts)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        out = self.body(x)
        return x + out if self.residual else out


def _block(stage: dict[str, Any], cin: int, stride: int, act: str) -> nn.Module:
    cout, kernel, se = stage["channels"], stage["kernel"], stage["se"]
    if stage["block"] == "conv":
        return ConvBlock(cin, cout, kernel, stride, se, act)
    expansion = stage["expansion"] if stage["block"] == "mbconv" else 1
    return MBConv(cin, cout, kernel, stride, expansion, se, act)


class MobileNet(nn.Module):
    """stem -> stages -> head -> pool -> classifier; a plain module with a plain forward."""

    def __init__(
        self, arch: Architecture, in_channels: int, resolution: int, num_classes: int
    ) -> None:
        super().__init__()
        act = arch.get("act", "relu6")
        stem_stride, strides = adapted_strides(arch, resolution)
        self.stem = _conv_bn(in_channels, arch["stem"], 3, stem_stride, act=act)
        cin = arch["stem"]
        stages = []
        for stage, stride in zip(arch["stages"], strides, strict=True):
            blocks = []
            for i in range(stage["layers"]):
                blocks.append(_block(stage, cin, stride if i == 0 else 1, act))
                cin = stage["channels"]
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.head = _conv_bn(cin, arch["head"], 1, act=act)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(arch["head"], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.classifier(torch.flatten(self.pool(self.head(x)), 1))


def _stage(
    block: str, kernel: int, expansion: float, se: float, layers: int, channels: int, stride: int
) -> dict[str, Any]:
    return {
        "block": block,
        "kernel": kernel,
        "expansion": expansion,
        "se": se,
        "layers": layers,
        "channels": channels,
        "stride": stride,
    }


class MobileNetSpace(SearchSpace):
    """Seven stages x six decisions (block, kernel, expansion, SE, layers, width), plus
    the width of the 1x1 head."""

    name = "mobilenet"
    version = 1

    def decisions(self) -> dict[str, optuna.distributions.CategoricalDistribution]:
        cat = optuna.distributions.CategoricalDistribution
        out: dict[str, optuna.distributions.CategoricalDistribution] = {}
        for i in range(1, len(BASE_WIDTHS) + 1):
            out[f"s{i}_block"] = cat(BLOCKS)
            out[f"s{i}_kernel"] = cat(KERNELS)
            out[f"s{i}_expansion"] = cat(EXPANSIONS)
            out[f"s{i}_se"] = cat(SE_RATIOS)
            out[f"s{i}_layers"] = cat(LAYERS)
            out[f"s{i}_width"] = cat(WIDTH_MULTS)
        out["head_width"] = cat(HEAD_MULTS)
        return out

    def from_decisions(self, decisions: dict[str, Any]) -> Architecture:
        """Expansion is stored as 1 for blocks that ignore it, so decision vectors that
        differ only there give one dict. ("mbconv" with expansion 1 builds the same network
        as "dsconv"; the redundancy is kept so each decision keeps a fixed meaning.)"""
        check_decisions(self, decisions)
        stages = []
        for i, (width, stride) in enumerate(zip(BASE_WIDTHS, BASE_STRIDES, strict=True), 1):
            block = decisions[f"s{i}_block"]
            stages.append(
                _stage(
                    block,
                    decisions[f"s{i}_kernel"],
                    decisions[f"s{i}_expansion"] if block == "mbconv" else 1,
                    float(decisions[f"s{i}_se"]),
                    decisions[f"s{i}_layers"],
                    make_divisible(width * decisions[f"s{i}_width"]),
                    stride,
                )
            )
        head = make_divisible(HEAD_CHANNELS * decisions["head_width"])
        return self._arch(stages, act="relu6", head=head)

    def _arch(
        self, stages: list[dict[str, Any]], act: str, head: int = HEAD_CHANNELS
    ) -> Architecture:
        return {
            "space": self.name,
            "version": self.version,
            "act": act,
            "stem": STEM_CHANNELS,
            "head": head,
            "stages": stages,
        }

    def build(
        self, arch: Architecture, in_channels: int, resolution: int, num_classes: int
    ) -> nn.Module:
        self.validate(arch)
        return MobileNet(arch, in_channels, resolution, num_classes)

    def feature_taps(self, arch: Architecture) -> list[str]:
        return [f"stages.{i}" for i in range(len(arch["stages"]))]

    def preact_taps(self, arch: Architecture) -> dict[str, str]:
        """Per stage, the last block's feature before its activation. An inverted residual
        ends in a linear projection (no ReLU), so its stage output is already pre-activation,
        with the projection's BN; a plain conv block's tap is the BN before its ReLU."""
        taps = {}
        for i, stage in enumerate(arch["stages"]):
            block = f"stages.{i}.{stage['layers'] - 1}"
            if stage["block"] == "conv":
                taps[f"{block}.body.conv.1"] = f"{block}.body.conv.1"
            else:
                taps[f"stages.{i}"] = f"{block}.body.project.1"
        return taps

    def canonical(self) -> dict[str, Architecture]:
        """MobileNetV2-1.0 (torchvision) and MnasNet-A1 (timm ``mnasnet_a1``)."""
        v2 = [
            _stage("mbconv", 3, 1, 0.0, 1, 16, 1),
            _stage("mbconv", 3, 6, 0.0, 2, 24, 2),
            _stage("mbconv", 3, 6, 0.0, 3, 32, 2),
            _stage("mbconv", 3, 6, 0.0, 4, 64, 2),
            _stage("mbconv", 3, 6, 0.0, 3, 96, 1),
            _stage("mbconv", 3, 6, 0.0, 3, 160, 2),
            _stage("mbconv", 3, 6, 0.0, 1, 320, 1),
        ]
        a1 = [
            _stage("dsconv", 3, 1, 0.0, 1, 16, 1),
            _stage("mbconv", 3, 6, 0.0, 2, 24, 2),
            _stage("mbconv", 5, 3, 0.25, 3, 40, 2),
            _stage("mbconv", 3, 6, 0.0, 4, 80, 2),
            _stage("mbconv", 3, 6, 0.25, 2, 112, 1),
            _stage("mbconv", 5, 6, 0.25, 3, 160, 2),
            _stage("mbconv", 3, 6, 0.0, 1, 320, 1),
        ]
        return {
            "mobilenet_v2": self._arch(v2, act="relu6"),
            "mnasnet_a1": self._arch(a1, act="relu"),
        }

    def validate(self, arch: Architecture) -> None:
        check_header(self, arch, ("stem", "head", "stages"), optional=("act",))
        where = f"{self.name} architecture"
        if "act" in arch:
            check_choice(f"{where} 'act'", arch["act"], ACTIVATIONS)
        check_int(f"{where} 'stem'", arch["stem"], maximum=MAX_CHANNELS)
        check_int(f"{where} 'head'", arch["head"], maximum=MAX_CHANNELS)
        stages = arch["stages"]
        check_stages(where, stages)
        for i, stage in enumerate(stages):
            at = f"{where} stages[{i}]"
            check_fields(at, stage, _STAGE_KEYS)
            check_choice(f"{at}.block", stage["block"], BLOCKS)
            check_int(f"{at}.kernel", stage["kernel"], maximum=MAX_KERNEL)
            if stage["kernel"] % 2 == 0:
                raise arch_error(f"{at}.kernel", f"must be odd, got {stage['kernel']}")
            check_number(f"{at}.expansion", stage["expansion"], 1, 16)
            check_number(f"{at}.se", stage["se"], 0, 1)
            check_int(f"{at}.layers", stage["layers"], maximum=MAX_LAYERS)
            check_int(f"{at}.channels", stage["channels"], maximum=MAX_CHANNELS)
            check_choice(f"{at}.stride", stage["stride"], (1, 2))

    def macs(
        self, arch: Architecture, resolution: int, in_channels: int = 3, num_classes: int = 1000
    ) -> int:
        """Conv + linear multiply-adds of one image, in closed form (no module is built).

        Counts what fvcore counts for convolutions and linear layers, which the tests
        check, so cost-driven choices such as :meth:`smallest` need no tracing.
        """
        self.validate(arch)
        stem_stride, strides = adapted_strides(arch, resolution)
        size = _out_size(resolution, stem_stride)
        total = size * size * in_channels * 9 * arch["stem"]
        cin = arch["stem"]
        for stage, stage_stride in zip(arch["stages"], strides, strict=True):
            for i in range(stage["layers"]):
                cost, size = _block_macs(stage, cin, stage_stride if i == 0 else 1, size)
                total += cost
                cin = stage["channels"]
        return total + size * size * cin * arch["head"] + arch["head"] * num_classes


def _out_size(size: int, stride: int) -> int:
    return (size - 1) // stride + 1  # odd kernel, padding kernel // 2


def _block_macs(stage: dict[str, Any], cin: int, stride: int, size: int) -> tuple[int, int]:
    """MACs of one block and its output size; mirrors MBConv and ConvBlock."""
    cout, k2, se = stage["channels"], stage["kernel"] ** 2, stage["se"]
    out = _out_size(size, stride)
    if stage["block"] == "conv":
        total = out * out * cin * k2 * cout
        return total + (2 * cout * se_channels(cin, se) if se > 0 else 0), out
    expansion = stage["expansion"] if stage["block"] == "mbconv" else 1
    mid = round(cin * expansion)
    total = size * size * cin * mid if expansion != 1 else 0
    total += out * out * mid * k2 + out * out * mid * cout
    return total + (2 * mid * se_channels(cin, se) if se > 0 else 0), out
