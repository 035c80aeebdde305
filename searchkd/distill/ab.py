"""Activation-boundary distillation (Heo, Lee, Yun & Choi, AAAI 2019)."""

from __future__ import annotations

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


def boundary_loss(source: Tensor, target: Tensor, margin: float) -> Tensor:
    """Σ of the hinge-squared loss that makes ``source`` activate where ``target`` does.

    Where the teacher neuron is active (t > 0) the student's pre-activation must exceed
    +margin, where it is inactive it must stay below −margin; a student already beyond the
    margin on the right side costs nothing. This is the differentiable surrogate of matching
    the activation boundaries (the paper's alternative L2 loss).
    """
    on = target > 0
    loss = (source + margin).pow(2) * ((source > -margin) & ~on) + (source - margin).pow(2) * (
        (source <= margin) & on
    )
    return loss.sum()


@register("ab")
class ActivationBoundary(DistillLoss):
    """``beta / B · Σ_levels w_l · boundary_loss(connector(s_l), t_l, margin)``.

    Reads pre-ReLU features of both networks (``context``), maps the student's to the
    teacher's channels with a 1×1 conv + BN connector, and weighs levels ``2^-(L-1-l)``.
    Defaults follow RepDistiller's ``ABLoss``: ``margin = 1``, scale ``3 / 1000`` per sample
    (``beta = 0.003``). The paper uses AB to initialise the student before KD; here it is a
    term like any other, so "init then KD" is two runs. Options: ``pairs``, ``margin``,
    ``beta``.
    """

    def __init__(
        self,
        student_shapes: Shapes,
        teacher_shapes: Shapes,
        *,
        pairs: str | Sequence[Sequence[str]] = "auto",
        margin: float = 1.0,
        beta: float = 3e-3,
        context: LossContext,
    ) -> None:
        super().__init__()
        self.pairs = preact_pairs(pairs, context, "ab")
        self.margin = check_positive(margin, "margin", "ab")
        self.beta = check_positive(beta, "beta", "ab")
        self.connectors = nn.ModuleList(
            channel_connector(context.student_preact[s][1], context.teacher_preact[t][1])
            for s, t in self.pairs
        )
        self.weights = depth_weights(len(self.pairs))
        self.student_taps = list(dict.fromkeys(s for s, _ in self.pairs))
        self.teacher_taps = list(dict.fromkeys(t for _, t in self.pairs))

    def forward(self, student: Outputs, teacher: Outputs, targets: Tensor) -> Tensor:
        total = targets.new_zeros((), dtype=torch.float32)
        for weight, (s, t), connect in zip(self.weights, self.pairs, self.connectors, strict=True):
            f_s = connect(feature(student, s, "student"))
            f_s, f_t = pool_to_common_size(f_s, feature(teacher, t, "teacher").detach())
            total = total + weight * boundary_loss(f_s, f_t, self.margin)
        return self.beta * total / len(targets)
