"""Flow of solution procedure (Yim et al. 2017): match Gram matrices between stages."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from searchkd.distill.attention import auto_pairs
from searchkd.distill.base import (
    DistillLoss,
    Outputs,
    Shapes,
    channel_connector,
    check_positive,
    feature,
    register,
    resolve_pairs,
)
from searchkd.errors import SearchKDError


def fsp_matrix(f1: Tensor, f2: Tensor) -> Tensor:
    """``G[n, i, j] = mean_{h,w} f1[n, i, h, w] · f2[n, j, h, w]``: shape (N, C1, C2).

    The "flow" from one stage to the next. When the earlier map is larger it is
    average-pooled to the later one's size first, as in RepDistiller's ``FSP``.
    """
    if f1.shape[-2:] != f2.shape[-2:]:
        f1 = F.adaptive_avg_pool2d(f1, f2.shape[-2:])
    return f1.flatten(2) @ f2.flatten(2).transpose(1, 2) / f1.shape[2] / f1.shape[3]


@register("fsp")
class FlowOfSolution(DistillLoss):
    """``beta · Σ_k mean( (G_s^k − G_t^k)² )`` over consecutive tapped stages k, k+1.

    The student and teacher stages are paired (``pairs``, default ``"auto"``: nearest
    relative depth); consecutive pairs give the flows. An FSP matrix is C_k × C_{k+1}, so
    the two networks' matrices are comparable only when the paired stages have equal channel
    counts. Otherwise this loss refuses with a clear error, unless ``connector: true``, which
    maps each student stage to its teacher's channels with a 1×1 conv + BN trained with the
    student (an extension: the paper pairs networks of equal widths).

    Defaults: ``beta = 1`` and the plain mean of squared differences per flow, summed over
    flows (RepDistiller's ``FSP``). Options: ``pairs``, ``connector``, ``beta``.
    """

    def __init__(
        self,
        student_shapes: Shapes,
        teacher_shapes: Shapes,
        *,
        pairs: str | Sequence[Sequence[str]] = "auto",
        connector: bool = False,
        beta: float = 1.0,
    ) -> None:
        super().__init__()
        self.pairs = resolve_pairs(pairs, student_shapes, teacher_shapes, "fsp", auto_pairs)
        if len(self.pairs) < 2:
            raise SearchKDError(
                f"loss 'fsp' needs at least two stage pairs to form a flow, got {self.pairs}; "
                "tap more stages or list more pairs"
            )
        if not isinstance(connector, bool):
            raise SearchKDError(
                f"loss 'fsp' option connector must be true or false, got {connector!r}"
            )
        channels = [(student_shapes[s][1], teacher_shapes[t][1]) for s, t in self.pairs]
        mismatched = [
            f"{s} ({c_s}) vs {t} ({c_t})"
            for (s, t), (c_s, c_t) in zip(self.pairs, channels, strict=True)
            if c_s != c_t
        ]
        if mismatched and not connector:
            raise SearchKDError(
                "loss 'fsp' compares C x C' flow matrices, but the paired stages' channel counts "
                f"differ: {'; '.join(mismatched)}; set fsp option connector: true to map the "
                "student's channels with a trained 1x1 conv, or pair stages of equal width"
            )
        self.connectors = nn.ModuleList(
            channel_connector(c_s, c_t) if c_s != c_t else nn.Identity() for c_s, c_t in channels
        )
        self.beta = check_positive(beta, "beta", "fsp")
        self.student_taps = list(dict.fromkeys(s for s, _ in self.pairs))
        self.teacher_taps = list(dict.fromkeys(t for _, t in self.pairs))

    def forward(self, student: Outputs, teacher: Outputs, targets: Tensor) -> Tensor:
        f_s = [
            connect(feature(student, s, "student"))
            for (s, _), connect in zip(self.pairs, self.connectors, strict=True)
        ]
        f_t = [feature(teacher, t, "teacher").detach() for _, t in self.pairs]
        total = sum(
            (fsp_matrix(f_s[k], f_s[k + 1]) - fsp_matrix(f_t[k], f_t[k + 1])).pow(2).mean()
            for k in range(len(self.pairs) - 1)
        )
        return self.beta * total
