"""A 256-member slice of the ``mobilenet`` space, small enough to train every member.

The controllers are compared on a ground truth (``benchmarks/ground_truth.py``): every
member trained with the proxy recipe and stored in a table, so a search can be replayed
by lookup, many times over, instead of by training. That needs a space of a few hundred
members, not the full space's 10^28.

The slice keeps the MnasNet idea of per-stage decisions, coarsened to two groups: the
four early stages (base widths 16-64, where the feature maps are large and depthwise
convolutions cost most time per MAC on CPUs) and the three late ones (96-320, where the
parameters are). Each group chooses block type, kernel, depth and width; expansion (6),
squeeze-and-excitation (none) and the head (640 channels) are fixed. Its members are
ordinary ``mobilenet`` architectures: they build, export, retrain and load as such, and
a latency table profiled for ``mobilenet`` covers them.
"""

from __future__ import annotations

from typing import Any

import optuna

from search_spaces.base import Architecture, check_decisions
from search_spaces.mobilenet import BASE_WIDTHS, MobileNetSpace

GROUPS = {"early": range(1, 5), "late": range(5, len(BASE_WIDTHS) + 1)}
BLOCKS = ("dsconv", "mbconv")
KERNELS = (3, 5)
LAYERS = (1, 2)
WIDTH_MULTS = (0.5, 1.0)
EXPANSION = 6
HEAD_WIDTH = 0.5

_FULL = MobileNetSpace()


class MobileNetReducedSpace(MobileNetSpace):
    """Two stage groups x four binary decisions (block, kernel, layers, width)."""

    name = "mobilenet-reduced"
    family = "mobilenet"  # its architectures are mobilenet architectures

    def decisions(self) -> dict[str, optuna.distributions.CategoricalDistribution]:
        cat = optuna.distributions.CategoricalDistribution
        out: dict[str, optuna.distributions.CategoricalDistribution] = {}
        for group in GROUPS:
            out[f"{group}_block"] = cat(BLOCKS)
            out[f"{group}_kernel"] = cat(KERNELS)
            out[f"{group}_layers"] = cat(LAYERS)
            out[f"{group}_width"] = cat(WIDTH_MULTS)
        return out

    def full_decisions(self, decisions: dict[str, Any]) -> dict[str, Any]:
        """The same member as decisions of the full ``mobilenet`` space."""
        check_decisions(self, decisions)
        full: dict[str, Any] = {"head_width": HEAD_WIDTH}
        for group, stages in GROUPS.items():
            for i in stages:
                full[f"s{i}_block"] = decisions[f"{group}_block"]
                full[f"s{i}_kernel"] = decisions[f"{group}_kernel"]
                full[f"s{i}_expansion"] = EXPANSION
                full[f"s{i}_se"] = 0.0
                full[f"s{i}_layers"] = decisions[f"{group}_layers"]
                full[f"s{i}_width"] = decisions[f"{group}_width"]
        return full

    def from_decisions(self, decisions: dict[str, Any]) -> Architecture:
        return _FULL.from_decisions(self.full_decisions(decisions))

    def validate(self, arch: Architecture) -> None:
        """Any ``mobilenet`` architecture builds here; membership of the slice is not
        required, so a student exported from this space loads like any other."""
        _FULL.validate(arch)

    def canonical(self) -> dict[str, Architecture]:
        """None: MobileNetV2 and MnasNet-A1 lie outside the slice (use ``mobilenet``)."""
        return {}
