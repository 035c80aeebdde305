"""Cross-entropy on the ground-truth labels: the student's own supervised term."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from searchkd.distill.base import DistillLoss, Outputs, Shapes, register


@register("ce")
class CrossEntropy(DistillLoss):
    """``mean_i -log softmax(s_i)[y_i]``; reads no taps and ignores the teacher.

    It lives in the registry like the distillation terms so that one weights dict
    (e.g. ``{"ce": 0.1, "kd": 0.9}``) describes the whole training objective.
    """

    def __init__(
        self, student_shapes: Shapes | None = None, teacher_shapes: Shapes | None = None
    ) -> None:
        super().__init__()

    def forward(self, student: Outputs, teacher: Outputs, targets: Tensor) -> Tensor:
        return F.cross_entropy(student.logits, targets)
