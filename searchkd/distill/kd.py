"""Hinton et al. 2015 knowledge distillation on softened logits."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from searchkd.distill.base import DistillLoss, Outputs, Shapes, check_positive, register


@register("kd")
class HintonKD(DistillLoss):
    """``T² · KL(softmax(t/T) ‖ softmax(s/T))``, summed over classes, averaged over the batch.

    The temperature ``T`` (default 4, the usual CIFAR choice, as in RepDistiller) softens both
    distributions so the student learns the teacher's relative scores for wrong classes. The
    ``T²`` factor keeps the gradient magnitude roughly independent of ``T`` (the soft-target
    gradients scale as 1/T²), so the weight of this term need not be retuned with ``T``.
    ``batchmean`` is the reduction that matches the mathematical KL per sample; the default
    ``mean`` would also divide by the number of classes.
    """

    def __init__(
        self,
        student_shapes: Shapes | None = None,
        teacher_shapes: Shapes | None = None,
        *,
        temperature: float = 4.0,
    ) -> None:
        super().__init__()
        self.temperature = check_positive(temperature, "temperature", "kd")

    def forward(self, student: Outputs, teacher: Outputs, targets: Tensor) -> Tensor:
        t = self.temperature
        log_p_s = F.log_softmax(student.logits / t, dim=1)
        log_p_t = F.log_softmax(teacher.logits.detach() / t, dim=1)
        # log_target=True: both sides stay in log space, no log(0) for saturated teachers.
        return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * t * t
