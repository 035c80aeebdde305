"""Relational distillation: transfer how samples relate to each other, not the features.

RKD (Park et al., CVPR 2019) matches pairwise distances and triplet angles; DarkRank (Chen,
Wang & Zhang, AAAI 2018) matches the teacher's ranking of the batch by similarity. Both
compare one embedding per sample within each network, so the student's width never has to
equal the teacher's and no connector is needed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from searchkd.distill.base import (
    DistillLoss,
    Outputs,
    Shapes,
    check_positive,
    embedding_tap,
    feature,
    pooled,
    register,
)
from searchkd.errors import SearchKDError


def normalised_distances(e: Tensor) -> Tensor:
    """Pairwise Euclidean distances divided by their mean over distinct pairs (RKD's μ)."""
    d = torch.cdist(e, e)
    off_diagonal = ~torch.eye(len(e), dtype=torch.bool, device=e.device)
    return d / d[off_diagonal].mean().clamp_min(1e-12)


def triplet_angles(e: Tensor) -> Tensor:
    """``cos ∠(e_i − e_j, e_k − e_j)`` for all (i, j, k): shape (N, N, N)."""
    diff = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), dim=2)  # [j, i] = e_i − e_j
    return diff @ diff.transpose(1, 2)


@register("rkd")
class RelationalKD(DistillLoss):
    """``w_d · Huber(ψ_D(s), ψ_D(t)) + w_a · Huber(ψ_A(s), ψ_A(t))`` on pooled features.

    ψ_D: pairwise distances normalised by their mean; ψ_A: cosines of all triplet angles;
    Huber is smooth-L1 averaged over elements. Defaults are the authors' and RepDistiller's:
    ``distance_weight = 25``, ``angle_weight = 50``, on the deepest tap's globally pooled
    feature (a ResNet's penultimate vector). Options: ``student_tap``, ``teacher_tap``
    (``"auto"`` = deepest), ``distance_weight``, ``angle_weight`` (either may be 0).
    """

    def __init__(
        self,
        student_shapes: Shapes,
        teacher_shapes: Shapes,
        *,
        student_tap: str = "auto",
        teacher_tap: str = "auto",
        distance_weight: float = 25.0,
        angle_weight: float = 50.0,
    ) -> None:
        super().__init__()
        self.student_tap = embedding_tap(student_tap, student_shapes, "student", "rkd")
        self.teacher_tap = embedding_tap(teacher_tap, teacher_shapes, "teacher", "rkd")
        for option, value in (("distance_weight", distance_weight), ("angle_weight", angle_weight)):
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise SearchKDError(
                    f"loss 'rkd' option {option} must be a number >= 0, got {value!r}"
                )
        if distance_weight == 0 and angle_weight == 0:
            raise SearchKDError("loss 'rkd' needs distance_weight or angle_weight > 0")
        self.distance_weight = float(distance_weight)
        self.angle_weight = float(angle_weight)
        self.student_taps = [self.student_tap]
        self.teacher_taps = [self.teacher_tap]

    def forward(self, student: Outputs, teacher: Outputs, targets: Tensor) -> Tensor:
        s = pooled(feature(student, self.student_tap, "student"))
        t = pooled(feature(teacher, self.teacher_tap, "teacher").detach())
        loss = s.new_zeros(())
        if self.distance_weight:
            d = F.smooth_l1_loss(normalised_distances(s), normalised_distances(t))
            loss = loss + self.distance_weight * d
        if self.angle_weight:
            a = F.smooth_l1_loss(triplet_angles(s), triplet_angles(t))
            loss = loss + self.angle_weight * a
        return loss


@register("darkrank")
class DarkRank(DistillLoss):
    """Hard DarkRank: ``−mean_q log P(π_t(q) | student)`` (ListMLE / Plackett–Luce).

    For each query q of the batch, the teacher ranks the other samples by similarity
    ``S = −alpha · ‖x_q − x_i‖^beta``; π_t keeps its ``list_length`` most similar. The loss is
    the negative log-likelihood of that order under the Plackett–Luce model of the student's
    similarities, ``Σ_i S_s(π_i) − logsumexp_{k ≥ i} S_s(π_k)``. It is never zero (a ranking
    is never certain); it is minimal when the student's similarities are ordered like the
    teacher's and far apart. Embeddings are the pooled deepest taps, L2-normalised as in the
    metric-learning setting of the paper. Defaults ``alpha = 3``, ``beta = 3``,
    ``list_length = 4`` follow the RKD authors' reimplementation (``HardDarkRank``).
    """

    def __init__(
        self,
        student_shapes: Shapes,
        teacher_shapes: Shapes,
        *,
        student_tap: str = "auto",
        teacher_tap: str = "auto",
        alpha: float = 3.0,
        beta: float = 3.0,
        list_length: int = 4,
    ) -> None:
        super().__init__()
        self.student_tap = embedding_tap(student_tap, student_shapes, "student", "darkrank")
        self.teacher_tap = embedding_tap(teacher_tap, teacher_shapes, "teacher", "darkrank")
        self.alpha = check_positive(alpha, "alpha", "darkrank")
        self.beta = check_positive(beta, "beta", "darkrank")
        if isinstance(list_length, bool) or not isinstance(list_length, int) or list_length < 1:
            raise SearchKDError(
                f"loss 'darkrank' option list_length must be an integer >= 1, got {list_length!r}"
            )
        self.list_length = list_length
        self.student_taps = [self.student_tap]
        self.teacher_taps = [self.teacher_tap]

    def similarity(self, e: Tensor) -> Tensor:
        # cdist's gradient at a zero distance (the diagonal) is NaN; the diagonal is masked
        # out below, and a clamp keeps its gradient finite.
        return -self.alpha * torch.cdist(e, e).clamp_min(1e-12).pow(self.beta)

    def forward(self, student: Outputs, teacher: Outputs, targets: Tensor) -> Tensor:
        s = F.normalize(pooled(feature(student, self.student_tap, "student")), dim=1)
        t = F.normalize(pooled(feature(teacher, self.teacher_tap, "teacher").detach()), dim=1)
        n = len(s)
        if n < 2:
            raise SearchKDError("loss 'darkrank' needs batches of at least 2 samples")
        length = min(self.list_length, n - 1)
        eye = torch.eye(n, dtype=torch.bool, device=s.device)
        score_t = self.similarity(t).masked_fill(eye, float("-inf"))
        order = score_t.argsort(dim=1, descending=True)[:, :length]  # the query itself is last
        ranked = self.similarity(s).gather(1, order)
        # logsumexp over the not-yet-placed tail: a reversed cumulative logsumexp
        tails = ranked.flip(1).logcumsumexp(dim=1).flip(1)
        return -(ranked - tails).sum(dim=1).mean()
