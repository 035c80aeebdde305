"""Structured KD for dense outputs (Liu et al., CVPR 2019): pixel-wise and pair-wise terms."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

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
from searchkd.errors import SearchKDError


@register("pixel_kd")
class PixelWiseKD(DistillLoss):
    """``beta · T² · mean_{n,h,w} KL(softmax(t_nhw / T) ‖ softmax(s_nhw / T))``.

    Every pixel of an N×C×H×W output is a C-class prediction; KD is applied per pixel and
    averaged over pixels and images. Logits of shape N×C count as 1×1 maps, where this is
    plain KD. Defaults are the authors' (``T = 1``, ``lambda_pi = 10`` as ``beta``). The
    student's and teacher's output maps must have the same size (a segmentation student
    predicts at the label resolution).
    """

    def __init__(
        self,
        student_shapes: Shapes | None = None,
        teacher_shapes: Shapes | None = None,
        *,
        temperature: float = 1.0,
        beta: float = 10.0,
    ) -> None:
        super().__init__()
        self.temperature = check_positive(temperature, "temperature", "pixel_kd")
        self.beta = check_positive(beta, "beta", "pixel_kd")

    def forward(self, student: Outputs, teacher: Outputs, targets: Tensor) -> Tensor:
        s, t = student.logits, teacher.logits.detach()
        if s.shape != t.shape or s.dim() not in (2, 4):
            raise SearchKDError(
                f"loss 'pixel_kd' needs student and teacher outputs of one N x C (x H x W) "
                f"shape, got {tuple(s.shape)} and {tuple(t.shape)}"
            )
        if s.dim() == 4:  # (N, C, H, W) -> (N·H·W, C)
            s = s.permute(0, 2, 3, 1).flatten(0, 2)
            t = t.permute(0, 2, 3, 1).flatten(0, 2)
        temp = self.temperature
        kl = F.kl_div(
            F.log_softmax(s / temp, dim=1),
            F.log_softmax(t / temp, dim=1),
            reduction="batchmean",
            log_target=True,
        )
        return self.beta * kl * temp * temp


def pairwise_similarity(f: Tensor) -> Tensor:
    """Cosine similarity between all spatial positions: (N, H·W, H·W)."""
    v = F.normalize(f.flatten(2), dim=1)
    return v.transpose(1, 2) @ v


@register("pairwise")
class PairWiseSimilarity(DistillLoss):
    """``beta · Σ_pairs Σ_{n,i,j} (a^s_ij − a^t_ij)² / (H·W)² / N`` on max-pooled maps.

    Each map is first max-pooled with a window of ``pool_scale`` × its size (ceil mode),
    so the similarity is between coarse "nodes" of the image; ``a_ij`` is the cosine
    similarity of the feature vectors at nodes i and j. The affinity matrices compare
    positions, never channels, so student and teacher widths may differ; the larger map is
    average-pooled to the smaller size first. Defaults are the authors' (``pool_scale
    0.5``, ``lambda_pa = 0.5`` as ``beta``); ``pairs`` defaults to the deepest taps.
    """

    def __init__(
        self,
        student_shapes: Shapes,
        teacher_shapes: Shapes,
        *,
        pairs: str | Sequence[Sequence[str]] = "auto",
        pool_scale: float = 0.5,
        beta: float = 0.5,
    ) -> None:
        super().__init__()
        self.pairs = resolve_pairs(pairs, student_shapes, teacher_shapes, "pairwise", _deepest)
        self.pool_scale = check_positive(pool_scale, "pool_scale", "pairwise")
        if self.pool_scale > 1:
            raise SearchKDError(f"loss 'pairwise' option pool_scale must be <= 1, got {pool_scale}")
        self.beta = check_positive(beta, "beta", "pairwise")
        self.student_taps = list(dict.fromkeys(s for s, _ in self.pairs))
        self.teacher_taps = list(dict.fromkeys(t for _, t in self.pairs))

    def pool(self, f: Tensor) -> Tensor:
        window = [max(1, int(size * self.pool_scale)) for size in f.shape[-2:]]
        return F.max_pool2d(f, window, window, ceil_mode=True)

    def pair_loss(self, f_s: Tensor, f_t: Tensor) -> Tensor:
        f_s, f_t = pool_to_common_size(self.pool(f_s), self.pool(f_t.detach()))
        positions = math.prod(f_t.shape[-2:])
        err = (pairwise_similarity(f_s) - pairwise_similarity(f_t)).pow(2)
        return err.sum() / positions**2 / len(f_t)

    def forward(self, student: Outputs, teacher: Outputs, targets: Tensor) -> Tensor:
        total = sum(
            self.pair_loss(feature(student, s, "student"), feature(teacher, t, "teacher"))
            for s, t in self.pairs
        )
        return self.beta * total


def _deepest(student_taps: list[str], teacher_taps: list[str]) -> list[tuple[str, str]]:
    """The authors apply the pair-wise term to the last feature map only."""
    return [(student_taps[-1], teacher_taps[-1])]
