"""FitNets hint loss (Romero et al. 2015): regress a teacher feature map from a student one."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from searchkd.distill.base import (
    DistillLoss,
    Outputs,
    Shapes,
    check_tap,
    feature,
    last_tap,
    pool_to_common_size,
    register,
)
from searchkd.errors import SearchKDError


@register("hint")
class HintLoss(DistillLoss):
    """``MSE(BN(conv1x1(f_s)), f_t)`` on one student tap and one teacher tap.

    The 1×1 conv + BatchNorm regressor maps the student's channels to the teacher's (a student
    found by the search is usually narrower); it is a submodule, so its parameters train with
    the student and are dropped after distillation. The conv has no bias because the BN
    that follows would cancel it. The regression runs at the student's resolution; when the
    two maps differ in size, the larger is average-pooled to the smaller (see
    :func:`pool_to_common_size`). MSE is the mean over all elements, as in FitNets/RepDistiller.

    Options: ``student_tap``, ``teacher_tap`` — tap paths, or ``"auto"`` (default) for the
    deepest tap of each model (the last entry of its shape dict).
    """

    def __init__(
        self,
        student_shapes: Shapes,
        teacher_shapes: Shapes,
        *,
        student_tap: str = "auto",
        teacher_tap: str = "auto",
    ) -> None:
        super().__init__()
        if student_tap == "auto":
            student_tap = last_tap(student_shapes, "student", "hint")
        if teacher_tap == "auto":
            teacher_tap = last_tap(teacher_shapes, "teacher", "hint")
        self.student_tap = check_tap(student_tap, student_shapes, "student", "hint")
        self.teacher_tap = check_tap(teacher_tap, teacher_shapes, "teacher", "hint")
        s_shape, t_shape = student_shapes[self.student_tap], teacher_shapes[self.teacher_tap]
        for side, tap, shape in (
            ("student", student_tap, s_shape),
            ("teacher", teacher_tap, t_shape),
        ):
            if len(shape) != 4:
                raise SearchKDError(
                    f"loss 'hint' needs a (N, C, H, W) map but {side} tap '{tap}' has shape "
                    f"{tuple(shape)}; tap a convolutional stage"
                )
        self.student_taps = [self.student_tap]
        self.teacher_taps = [self.teacher_tap]
        self.regressor = nn.Sequential(
            nn.Conv2d(s_shape[1], t_shape[1], kernel_size=1, bias=False),
            nn.BatchNorm2d(t_shape[1]),
        )

    def forward(self, student: Outputs, teacher: Outputs, targets: Tensor) -> Tensor:
        f_s = self.regressor(feature(student, self.student_tap, "student"))
        f_t = feature(teacher, self.teacher_tap, "teacher").detach()
        f_s, f_t = pool_to_common_size(f_s, f_t)
        return F.mse_loss(f_s, f_t)
