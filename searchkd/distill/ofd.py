"""Overhaul of feature distillation (Heo et al., ICCV 2019)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from searchkd.distill.base import (
    DistillLoss,
    LossContext,
    Outputs,
    Shapes,
    channel_connector,
    check_positive,
    depth_weights,
    feature,
    pool_to_common_size,
    register,
)
from searchkd.distill.preact import preact_pairs
from searchkd.errors import SearchKDError


def bn_margin(weight: Tensor, bias: Tensor) -> Tensor:
    """Per channel, the expected value of the teacher's response where it is negative.

    A BN output is modelled as N(bias, |weight|²); the margin is E[x | x < 0] =
    ``m − s·φ(m/s) / Φ(−m/s)``. Channels whose negative side has probability ≤ 0.001 get
    ``−3s`` instead (the authors' ``get_margin_from_BN``), which also avoids dividing by ~0.
    """
    s = weight.detach().abs().clamp_min(1e-12)
    m = bias.detach()
    below = torch.special.ndtr(-m / s)
    density = torch.exp(-((m / s) ** 2) / 2) / math.sqrt(2 * math.pi)
    margin = m - s * density / below.clamp_min(1e-12)
    return torch.where(below > 0.001, margin, -3 * s)


def partial_l2(source: Tensor, target: Tensor) -> Tensor:
    """Σ (source − target)² except where the target is negative and the source is below it.

    A negative teacher response only says "off"; a student that is even more off is fine
    (after the ReLU both give 0), so that case is not penalised.
    """
    mask = (source > target) | (target > 0)
    return ((source - target).pow(2) * mask).sum()


@register("ofd")
class OverhaulFD(DistillLoss):
    """``beta / B · Σ_levels w_l · partial_L2(connector(s_l), max(t_l, margin_l))``.

    Student and teacher features are pre-ReLU (``context.student_preact``/``teacher_preact``),
    the connector is 1×1 conv + BN to the teacher's channels, the teacher's features are
    clamped from below at the per-channel margin derived from the batch norm that produces
    them (``context.teacher_bn``), and levels weigh ``2^-(L-1-l)`` (deepest 1). The sum is
    divided by the batch size and scaled by ``beta = 1e-3``, the authors' CIFAR setting
    (``loss_distill.sum() / batch_size / 1000``). Larger maps are average-pooled to the
    smaller size. Options: ``pairs`` (pre-ReLU tap pairs or ``"auto"``), ``beta``.
    """

    def __init__(
        self,
        student_shapes: Shapes,
        teacher_shapes: Shapes,
        *,
        pairs: str | Sequence[Sequence[str]] = "auto",
        beta: float = 1e-3,
        context: LossContext,
    ) -> None:
        super().__init__()
        self.pairs = preact_pairs(pairs, context, "ofd")
        missing = [t for _, t in self.pairs if t not in context.teacher_bn]
        if missing:
            raise SearchKDError(
                f"loss 'ofd' needs the batch-norm statistics of teacher taps {', '.join(missing)}"
                f"; known: {', '.join(context.teacher_bn) or '(none)'}"
            )
        self.beta = check_positive(beta, "beta", "ofd")
        self.connectors = nn.ModuleList(
            channel_connector(context.student_preact[s][1], context.teacher_preact[t][1])
            for s, t in self.pairs
        )
        for i, (_, t) in enumerate(self.pairs):
            margin = bn_margin(*context.teacher_bn[t])
            self.register_buffer(f"margin{i}", margin.reshape(1, -1, 1, 1).clone())
        self.weights = depth_weights(len(self.pairs))
        self.student_taps = list(dict.fromkeys(s for s, _ in self.pairs))
        self.teacher_taps = list(dict.fromkeys(t for _, t in self.pairs))

    def forward(self, student: Outputs, teacher: Outputs, targets: Tensor) -> Tensor:
        total = targets.new_zeros((), dtype=torch.float32)
        for i, ((s, t), connect) in enumerate(zip(self.pairs, self.connectors, strict=True)):
            f_s = connect(feature(student, s, "student"))
            f_t = feature(teacher, t, "teacher").detach()
            f_s, f_t = pool_to_common_size(f_s, f_t)
            f_t = torch.maximum(f_t, getattr(self, f"margin{i}"))
            total = total + self.weights[i] * partial_l2(f_s, f_t)
        return self.beta * total / len(targets)
