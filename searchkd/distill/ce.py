"""Cross-entropy on the ground-truth labels: the student's own supervised term."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from searchkd.distill.base import DistillLoss, Outputs, Shapes, register
from searchkd.errors import SearchKDError


@register("ce")
class CrossEntropy(DistillLoss):
    """``mean_i -log softmax(s_i)[y_i]``; reads no taps and ignores the teacher.

    It lives in the registry like the distillation terms so that one weights dict
    (e.g. ``{"ce": 0.1, "kd": 0.9}``) describes the whole training objective.
    ``label_smoothing`` (off by default) mixes the one-hot target with a uniform one; the
    retraining recipe exposes it.
    """

    def __init__(
        self,
        student_shapes: Shapes | None = None,
        teacher_shapes: Shapes | None = None,
        *,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0 <= label_smoothing < 1:
            raise SearchKDError(
                f"loss 'ce' option label_smoothing must be in [0, 1), got {label_smoothing}"
            )
        self.label_smoothing = float(label_smoothing)

    def forward(self, student: Outputs, teacher: Outputs, targets: Tensor) -> Tensor:
        return F.cross_entropy(student.logits, targets, label_smoothing=self.label_smoothing)
