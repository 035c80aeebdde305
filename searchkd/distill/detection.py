"""Detection-style KD (Chen et al., NIPS 2017): class-weighted soft targets and a
teacher-bounded regression loss."""

from __future__ import annotations

from collections.abc import Sequence

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


@register("weighted_kd")
class ClassWeightedKD(DistillLoss):
    """``T² · mean_n Σ_c w_c · p_t,c · (log p_t,c − log p_s,c)``: KD with class weights.

    Chen et al. weight the soft cross-entropy per class so that a dominant class (the
    detector's background) does not drown the rare ones. Here the weights are either given
    (``class_weights``, one per class) or ``"balanced"`` (default): inverse class frequency
    of the training labels, normalised to mean 1, so balanced data gives plain ``kd``. The
    teacher's entropy is subtracted (KL rather than cross-entropy), which changes no
    gradient and makes identical student and teacher cost exactly 0.
    """

    def __init__(
        self,
        student_shapes: Shapes | None = None,
        teacher_shapes: Shapes | None = None,
        *,
        class_weights: str | Sequence[float] = "balanced",
        temperature: float = 4.0,
        context: LossContext,
    ) -> None:
        super().__init__()
        self.temperature = check_positive(temperature, "temperature", "weighted_kd")
        if isinstance(class_weights, str):
            if class_weights != "balanced":
                raise SearchKDError(
                    "loss 'weighted_kd' option class_weights must be 'balanced' or a list of "
                    f"one weight per class, got {class_weights!r}"
                )
            if context.train_targets is None:
                raise SearchKDError(
                    "loss 'weighted_kd' with class_weights 'balanced' needs the training labels "
                    "(LossContext.train_targets); or give class_weights as a list"
                )
            counts = torch.bincount(context.train_targets.long()).float()
            weights = torch.where(counts > 0, 1.0 / counts.clamp_min(1), torch.zeros_like(counts))
        else:
            values = list(class_weights)
            if not values or any(
                isinstance(w, bool) or not isinstance(w, int | float) or w < 0 for w in values
            ):
                raise SearchKDError(
                    f"loss 'weighted_kd' option class_weights must be numbers >= 0, got {values!r}"
                )
            weights = torch.tensor(values, dtype=torch.float32)
        if weights.sum() <= 0:
            raise SearchKDError("loss 'weighted_kd' class weights must not all be 0")
        self.register_buffer("class_weights", weights / weights[weights > 0].mean())

    def forward(self, student: Outputs, teacher: Outputs, targets: Tensor) -> Tensor:
        if student.logits.shape[1] != len(self.class_weights):
            raise SearchKDError(
                f"loss 'weighted_kd' has {len(self.class_weights)} class weights but the model "
                f"predicts {student.logits.shape[1]} classes"
            )
        t = self.temperature
        log_p_s = F.log_softmax(student.logits / t, dim=1)
        log_p_t = F.log_softmax(teacher.logits.detach() / t, dim=1)
        per_class = log_p_t.exp() * (log_p_t - log_p_s) * self.class_weights
        return per_class.sum(dim=1).mean() * t * t


@register("bounded_regression")
class TeacherBoundedRegression(DistillLoss):
    """``mean_n [‖s_n − y_n‖² + margin > ‖t_n − y_n‖²] · ‖s_n − y_n‖²``.

    For regression heads (the detector's box offsets, a pose regressor): the teacher is
    not a target (it may be wrong), but an upper bound. A sample costs its squared error
    only while the student is not better than the teacher by ``margin``; then it costs
    nothing. The outputs are the models' ``logits`` (the regression outputs, N × D) and
    ``targets`` the float regression targets of the same shape. Chen et al. use it beside
    the task loss (e.g. smooth-L1), with ``margin = 0`` by default here.
    """

    def __init__(
        self,
        student_shapes: Shapes | None = None,
        teacher_shapes: Shapes | None = None,
        *,
        margin: float = 0.0,
    ) -> None:
        super().__init__()
        if isinstance(margin, bool) or not isinstance(margin, int | float) or margin < 0:
            raise SearchKDError(
                f"loss 'bounded_regression' option margin must be a number >= 0, got {margin!r}"
            )
        self.margin = float(margin)

    def forward(self, student: Outputs, teacher: Outputs, targets: Tensor) -> Tensor:
        s, t = student.logits, teacher.logits.detach()
        if not targets.is_floating_point() or targets.shape != s.shape:
            raise SearchKDError(
                "loss 'bounded_regression' needs float regression targets shaped like the "
                f"outputs {tuple(s.shape)}, got {targets.dtype} {tuple(targets.shape)}; it is "
                "for regression heads, not class labels"
            )
        err_s = (s - targets).pow(2).flatten(1).sum(dim=1)
        err_t = (t - targets).pow(2).flatten(1).sum(dim=1)
        return (err_s * (err_s + self.margin > err_t)).mean()
