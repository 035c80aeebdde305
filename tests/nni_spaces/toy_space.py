"""A small convolutional NNI model space for the adapter's tests (imports nni: only the
tests that skip without it import this module)."""

from __future__ import annotations

import nni
import torch
from nni.nas.nn.pytorch import (
    InputChoice,
    LayerChoice,
    ModelSpace,
    MutableBatchNorm2d,
    MutableConv2d,
    MutableDropout,
    MutableLinear,
)
from torch import nn


class ToySpace(ModelSpace):
    """An optional 1x1 mixing conv, a stem of searched width, one searched block (3x3 conv,
    5x5 conv or nothing), a choice of which feature map the classifier reads, and a
    searched dropout."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, widths=(4, 8, 16)):
        super().__init__()
        width = nni.choice("width", list(widths))
        # Plain modules as candidates: NNI's freeze hands these out uncopied.
        self.mix = LayerChoice(
            {"none": nn.Identity(), "conv1": nn.Conv2d(in_channels, in_channels, 1)},
            label="mix",
        )
        self.stem = nn.Sequential(
            MutableConv2d(in_channels, width, 3, padding=1, bias=False),
            MutableBatchNorm2d(width),
            nn.ReLU(),
        )
        self.block = LayerChoice(
            {
                "conv3": nn.Sequential(
                    MutableConv2d(width, width, 3, padding=1, bias=False),
                    MutableBatchNorm2d(width),
                    nn.ReLU(),
                ),
                "conv5": nn.Sequential(
                    MutableConv2d(width, width, 5, padding=2, bias=False),
                    MutableBatchNorm2d(width),
                    nn.ReLU(),
                ),
                "skip": nn.Identity(),
            },
            label="block",
        )
        self.read = InputChoice(2, n_chosen=1, label="read")
        self.drop = MutableDropout(nni.choice("dropout", [0.0, 0.25]))
        self.head = MutableLinear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stem = self.stem(self.mix(x))
        out = self.read([stem, self.block(stem)])
        return self.head(self.drop(out.mean((2, 3))))


class NumericSpace(ModelSpace):
    """A width as a quantised number and a dropout rate as a float: Optuna int and float
    decisions (the TPE, NSGA-II and random controllers search them)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10):
        super().__init__()
        width = nni.quniform("width", 4, 12, 4).int()
        self.conv = MutableConv2d(in_channels, width, 3, padding=1)
        self.drop = MutableDropout(nni.uniform("dropout", 0.0, 0.5))
        self.head = MutableLinear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(torch.relu(self.conv(x)).mean((2, 3))))


class NormalSpace(ModelSpace):
    """A normally distributed number: a mutable kind the adapter refuses."""

    def __init__(self):
        super().__init__()
        self.drop = MutableDropout(nni.normal("rate", 0.1, 0.05))
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(x.flatten(1)))


class NotASpace(nn.Module):
    """A plain module: the adapter refuses it by name."""
