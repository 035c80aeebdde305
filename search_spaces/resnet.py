"""ResNets: the usual teachers of the distillation literature, and a small student space.

One builder covers torchvision's ImageNet ResNets (7x7 stride-2 stem + max-pool, basic
or bottleneck blocks with the stride on the 3x3 conv), the CIFAR ResNets of RepDistiller
(3x3 stem, three stages, 1x1 conv + BN projection shortcuts whenever the shape changes)
and its pre-activation wide ResNets (BN-ReLU before every conv, 1x1 conv shortcuts
without BN, a final BN-ReLU). Keeping them in one explicit format lets a teacher be
named ("resnet56") or written out as JSON and rebuilt anywhere.

Stage ``channels`` is the block width as in the references: a bottleneck stage outputs
``4 x channels``.

The searchable decisions describe three-stage CIFAR-style networks for small inputs
(<= 64 px); the ImageNet members exist as teachers and for checking the builder.
"""

from __future__ import annotations

from typing import Any

import optuna
import torch
from torch import Tensor, nn

from search_spaces.base import (
    MAX_CHANNELS,
    MAX_LAYERS,
    Architecture,
    SearchSpace,
    check_choice,
    check_decisions,
    check_fields,
    check_header,
    check_int,
    check_stages,
)

BLOCKS = ("basic", "bottleneck")
STEMS = ("imagenet", "cifar", "cifar_s2")
EXPANSION = {"basic": 1, "bottleneck": 4}

# Decision choices, cheapest first.
SEARCH_BLOCKS = ("basic", "bottleneck")
SEARCH_STEMS = ("cifar_s2", "cifar")
WIDTHS = (16, 32, 64)
DEPTHS = (1, 2, 3, 5)
SEARCH_STAGES = 3

_STAGE_KEYS = ("depth", "channels", "stride")


def _conv(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False)


def _projection(cin: int, cout: int, stride: int, norm: bool) -> nn.Module | None:
    """1x1 shortcut when the shape changes (RepDistiller's and torchvision's 'option B')."""
    if stride == 1 and cin == cout:
        return None
    conv = _conv(cin, cout, 1, stride)
    return nn.Sequential(conv, nn.BatchNorm2d(cout)) if norm else conv


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, added to the shortcut, then ReLU.

    ``preact`` is a parameter-free identity on the sum before the final ReLU: a hook point
    for the pre-ReLU feature (OFD, AB) that leaves parameters, state dicts and MACs as they
    were.
    """

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        self.conv1 = _conv(cin, width, 3, stride)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv(width, width, 3)
        self.bn2 = nn.BatchNorm2d(width)
        self.shortcut = _projection(cin, width, stride, norm=True)
        self.preact = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        skip = x if self.shortcut is None else self.shortcut(x)
        return torch.relu(self.preact(out + skip))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carries the stride, "ResNet v1.5"), 1x1 expand to 4x width.
    ``preact`` marks the pre-ReLU sum, as in :class:`BasicBlock`."""

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = width * EXPANSION["bottleneck"]
        self.conv1 = _conv(cin, width, 1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv(width, width, 3, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = _conv(width, cout, 1)
        self.bn3 = nn.BatchNorm2d(cout)
        self.shortcut = _projection(cin, cout, stride, norm=True)
        self.preact = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        skip = x if self.shortcut is None else self.shortcut(x)
        return torch.relu(self.preact(out + skip))


class PreActBasicBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 (He et al. 2016b; RepDistiller's WRN block). A
    projection shortcut reads the pre-activated input, an identity one the raw input."""

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = _conv(cin, width, 3, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv2 = _conv(width, width, 3)
        self.shortcut = _projection(cin, width, stride, norm=False)

    def forward(self, x: Tensor) -> Tensor:
        pre = torch.relu(self.bn1(x))
        out = self.conv2(torch.relu(self.bn2(self.conv1(pre))))
        return out + (x if self.shortcut is None else self.shortcut(pre))


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck: BN-ReLU before each of the 1x1, 3x3, 1x1 convs."""

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = width * EXPANSION["bottleneck"]
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = _conv(cin, width, 1)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv2 = _conv(width, width, 3, stride)
        self.bn3 = nn.BatchNorm2d(width)
        self.conv3 = _conv(width, cout, 1)
        self.shortcut = _projection(cin, cout, stride, norm=False)

    def forward(self, x: Tensor) -> Tensor:
        pre = torch.relu(self.bn1(x))
        out = self.conv2(torch.relu(self.bn2(self.conv1(pre))))
        out = self.conv3(torch.relu(self.bn3(out)))
        return out + (x if self.shortcut is None else self.shortcut(pre))


_BLOCK_CLASSES = {
    ("basic", False): BasicBlock,
    ("bottleneck", False): Bottleneck,
    ("basic", True): PreActBasicBlock,
    ("bottleneck", True): PreActBottleneck,
}


def _stem(kind: str, cin: int, cout: int, preact: bool) -> nn.Sequential:
    """Pre-activation stems end at the conv (the first block normalises), others at ReLU."""
    kernel, stride = (7, 2) if kind == "imagenet" else (3, 2 if kind == "cifar_s2" else 1)
    layers: list[nn.Module] = [_conv(cin, cout, kernel, stride)]
    if not preact:
        layers += [nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    if kind == "imagenet":
        layers.append(nn.MaxPool2d(3, 2, 1))
    return nn.Sequential(*layers)


class ResNet(nn.Module):
    """stem -> stages -> [bn -> relu if pre-activation] -> pool -> fc."""

    def __init__(self, arch: Architecture, in_channels: int, num_classes: int) -> None:
        super().__init__()
        preact = arch["preact"]
        block = _BLOCK_CLASSES[(arch["block"], preact)]
        self.stem = _stem(arch["stem"], in_channels, arch["stem_channels"], preact)
        cin = arch["stem_channels"]
        stages = []
        for stage in arch["stages"]:
            blocks = []
            for i in range(stage["depth"]):
                blocks.append(block(cin, stage["channels"], stage["stride"] if i == 0 else 1))
                cin = stage["channels"] * EXPANSION[arch["block"]]
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.bn: nn.Module | None = nn.BatchNorm2d(cin) if preact else None
        # Not in place: the final BN's output is the last stage's pre-ReLU tap.
        self.relu: nn.Module | None = nn.ReLU() if preact else None
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        if self.bn is not None and self.relu is not None:
            x = self.relu(self.bn(x))
        return self.fc(torch.flatten(self.pool(x), 1))


def _arch(
    block: str,
    stem: str,
    stem_channels: int,
    depths: tuple[int, ...],
    channels: tuple[int, ...],
    strides: tuple[int, ...],
    preact: bool = False,
) -> Architecture:
    return {
        "space": ResNetSpace.name,
        "version": ResNetSpace.version,
        "block": block,
        "stem": stem,
        "stem_channels": stem_channels,
        "preact": preact,
        "stages": [
            {"depth": d, "channels": c, "stride": s}
            for d, c, s in zip(depths, channels, strides, strict=True)
        ],
    }


def _imagenet(block: str, depths: tuple[int, ...]) -> Architecture:
    return _arch(block, "imagenet", 64, depths, (64, 128, 256, 512), (1, 2, 2, 2))


def _cifar(
    n: int, widths: tuple[int, int, int, int], stem: str = "cifar", preact: bool = False
) -> Architecture:
    """RepDistiller's convention: ``widths`` = (stem, stage1, stage2, stage3)."""
    return _arch("basic", stem, widths[0], (n, n, n), widths[1:], (1, 2, 2), preact)


class ResNetSpace(SearchSpace):
    """Three-stage CIFAR-style ResNets: block, stem stride, base width, depth per stage."""

    name = "resnet"
    version = 1

    def decisions(self) -> dict[str, optuna.distributions.CategoricalDistribution]:
        cat = optuna.distributions.CategoricalDistribution
        out = {"block": cat(SEARCH_BLOCKS), "stem": cat(SEARCH_STEMS), "width": cat(WIDTHS)}
        for i in range(1, SEARCH_STAGES + 1):
            out[f"s{i}_depth"] = cat(DEPTHS)
        return out

    def from_decisions(self, decisions: dict[str, Any]) -> Architecture:
        """Widths double per stage from ``width`` (the stem has ``width`` channels too)."""
        check_decisions(self, decisions)
        width = decisions["width"]
        depths = tuple(decisions[f"s{i}_depth"] for i in range(1, SEARCH_STAGES + 1))
        return _arch(
            decisions["block"],
            decisions["stem"],
            width,
            depths,
            (width, 2 * width, 4 * width),
            (1, 2, 2),
        )

    def build(
        self, arch: Architecture, in_channels: int, resolution: int, num_classes: int
    ) -> nn.Module:
        """``resolution`` does not change the network: the stem in ``arch`` fixes strides."""
        self.validate(arch)
        return ResNet(arch, in_channels, num_classes)

    def feature_taps(self, arch: Architecture) -> list[str]:
        return [f"stages.{i}" for i in range(len(arch["stages"]))]

    def preact_taps(self, arch: Architecture) -> dict[str, str]:
        """Post-activation blocks: the last block's ``preact`` marker (the residual sum
        before the ReLU), with the BN of its residual branch. Pre-activation networks apply
        BN-ReLU at the START of the next block, so there the tap is that next BN (the first
        block's ``bn1`` of the next stage, or the final ``bn``), with itself as the BN."""
        stages = arch["stages"]
        if arch["preact"]:
            taps = [f"stages.{i + 1}.0.bn1" for i in range(len(stages) - 1)] + ["bn"]
            return {tap: tap for tap in taps}
        last_bn = "bn3" if arch["block"] == "bottleneck" else "bn2"
        return {
            f"stages.{i}.{stage['depth'] - 1}.preact": f"stages.{i}.{stage['depth'] - 1}.{last_bn}"
            for i, stage in enumerate(stages)
        }

    def canonical(self) -> dict[str, Architecture]:
        """torchvision's ImageNet ResNets; RepDistiller's CIFAR ResNets and WRNs; and
        CIFAR ResNet-20 with a stride-2 stem, the default teacher for 40x40 inputs
        (``_w32s2`` with base width 32, ``_w16s2`` with the original 16)."""
        return {
            "resnet18": _imagenet("basic", (2, 2, 2, 2)),
            "resnet34": _imagenet("basic", (3, 4, 6, 3)),
            "resnet50": _imagenet("bottleneck", (3, 4, 6, 3)),
            "resnet20": _cifar(3, (16, 16, 32, 64)),
            "resnet56": _cifar(9, (16, 16, 32, 64)),
            "resnet110": _cifar(18, (16, 16, 32, 64)),
            "resnet8x4": _cifar(1, (32, 64, 128, 256)),
            "resnet32x4": _cifar(5, (32, 64, 128, 256)),
            "wrn_16_2": _cifar(2, (16, 32, 64, 128), preact=True),
            "wrn_40_2": _cifar(6, (16, 32, 64, 128), preact=True),
            "resnet20_w32s2": _cifar(3, (32, 32, 64, 128), stem="cifar_s2"),
            "resnet20_w16s2": _cifar(3, (16, 16, 32, 64), stem="cifar_s2"),
        }

    def validate(self, arch: Architecture) -> None:
        check_header(self, arch, ("block", "stem", "stem_channels", "preact", "stages"))
        where = f"{self.name} architecture"
        check_choice(f"{where} 'block'", arch["block"], BLOCKS)
        check_choice(f"{where} 'stem'", arch["stem"], STEMS)
        check_int(f"{where} 'stem_channels'", arch["stem_channels"], maximum=MAX_CHANNELS)
        check_choice(f"{where} 'preact'", arch["preact"], (False, True))
        stages = arch["stages"]
        check_stages(where, stages)
        for i, stage in enumerate(stages):
            at = f"{where} stages[{i}]"
            check_fields(at, stage, _STAGE_KEYS)
            check_int(f"{at}.depth", stage["depth"], maximum=MAX_LAYERS)
            check_int(f"{at}.channels", stage["channels"], maximum=MAX_CHANNELS)
            check_choice(f"{at}.stride", stage["stride"], (1, 2))
