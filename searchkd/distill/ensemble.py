"""Distilling an ensemble of teachers into one student (Hinton, Vinyals & Dean 2015)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from searchkd.distill.base import (
    DistillLoss,
    LossContext,
    Outputs,
    Shapes,
    check_positive,
    register,
)
from searchkd.errors import SearchKDError


def ensemble_log_probs(logits: list[Tensor], temperature: float) -> Tensor:
    """log of the arithmetic mean of the teachers' softened distributions."""
    stacked = torch.stack([F.log_softmax(z.detach() / temperature, dim=1) for z in logits])
    return torch.logsumexp(stacked, dim=0) - math.log(len(logits))


@register("ensemble_kd")
class EnsembleKD(DistillLoss):
    """``T² · KL(mean_m softmax(t_m / T) ‖ softmax(s / T))`` over all teachers m.

    The soft target is the average of the teachers' softened predictions, as Hinton et al.
    distil an ensemble; with one teacher this is exactly ``kd``. The teachers are the
    configured ``teacher`` plus the ``ensemble`` list; their logits are cached once like the
    single teacher's and arrive as ``Outputs.logits`` and ``Outputs.ensemble_logits``.
    Options: ``temperature`` (default 4, as ``kd``).
    """

    def __init__(
        self,
        student_shapes: Shapes | None = None,
        teacher_shapes: Shapes | None = None,
        *,
        temperature: float = 4.0,
        context: LossContext,
    ) -> None:
        super().__init__()
        if context.num_teachers < 2:
            raise SearchKDError(
                "loss 'ensemble_kd' needs at least two teachers; list the extra ones under "
                "`ensemble:` in the config (each like `teacher:`)"
            )
        self.temperature = check_positive(temperature, "temperature", "ensemble_kd")
        self.num_teachers = context.num_teachers

    def forward(self, student: Outputs, teacher: Outputs, targets: Tensor) -> Tensor:
        logits = [teacher.logits, *teacher.ensemble_logits]
        if len(logits) != self.num_teachers:
            raise SearchKDError(
                f"loss 'ensemble_kd' was built for {self.num_teachers} teachers but the batch "
                f"holds logits of {len(logits)}"
            )
        t = self.temperature
        log_p_s = F.log_softmax(student.logits / t, dim=1)
        log_p_t = ensemble_log_probs(logits, t)
        return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * t * t
