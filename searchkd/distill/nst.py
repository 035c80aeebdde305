"""Neuron selectivity transfer (Huang & Wang 2017): match the distribution of channel maps."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

from searchkd.distill.attention import auto_pairs
from searchkd.distill.base import (
    DistillLoss,
    Outputs,
    Shapes,
    check_positive,
    feature,
    pool_to_common_size,
    register,
    resolve_pairs,
)


def polynomial_mmd(f_s: Tensor, f_t: Tensor) -> Tensor:
    """Squared MMD between the channel maps of two (N, C, H, W) features, kernel (x·y)².

    Each channel's spatial map is one sample of the layer's "selectivity" distribution; it is
    L2-normalised over positions, so only the pattern counts, not its scale. Channel counts
    may differ (the kernel compares every student channel with every teacher channel); the
    spatial sizes must agree. The three kernel means are over batch and channel pairs, as in
    RepDistiller's ``NSTLoss``.
    """
    s = F.normalize(f_s.flatten(2), dim=2)
    t = F.normalize(f_t.flatten(2), dim=2)
    k_tt = (t @ t.transpose(1, 2)).pow(2).mean()
    k_ss = (s @ s.transpose(1, 2)).pow(2).mean()
    k_st = (s @ t.transpose(1, 2)).pow(2).mean()
    return k_tt + k_ss - 2 * k_st


@register("nst")
class NeuronSelectivityTransfer(DistillLoss):
    """``beta · Σ_pairs MMD²_poly(f_s, f_t)``.

    Defaults follow RepDistiller (``--distill nst``, weight 50, polynomial kernel of degree 2
    with c = 0): ``beta = 50`` so a config weight of 1 reproduces it. The larger of two maps
    is average-pooled to the smaller's size (:func:`pool_to_common_size`).

    Options: ``pairs`` — ``"auto"`` (nearest relative depth, :func:`auto_pairs`) or
    ``[student_tap, teacher_tap]`` items; ``beta`` — scale.
    """

    def __init__(
        self,
        student_shapes: Shapes,
        teacher_shapes: Shapes,
        *,
        pairs: str | Sequence[Sequence[str]] = "auto",
        beta: float = 50.0,
    ) -> None:
        super().__init__()
        self.pairs = resolve_pairs(pairs, student_shapes, teacher_shapes, "nst", auto_pairs)
        self.beta = check_positive(beta, "beta", "nst")
        self.student_taps = list(dict.fromkeys(s for s, _ in self.pairs))
        self.teacher_taps = list(dict.fromkeys(t for _, t in self.pairs))

    def forward(self, student: Outputs, teacher: Outputs, targets: Tensor) -> Tensor:
        total = sum(
            polynomial_mmd(
                *pool_to_common_size(
                    feature(student, s, "student"), feature(teacher, t, "teacher").detach()
                )
            )
            for s, t in self.pairs
        )
        return self.beta * total
