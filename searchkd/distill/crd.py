"""Contrastive representation distillation (Tian, Krishnan & Isola, ICLR 2020).

The student's embedding of a sample must pick out the teacher's embedding of the SAME
sample among many teacher embeddings of other samples (and vice versa). The negatives come
from memory banks that hold a momentum-averaged embedding of every training sample, so one
batch sees thousands of negatives without running the teacher on them; this is why the
trainer passes each batch's training-set indices (:attr:`Outputs.indices`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from searchkd.distill.base import (
    DistillLoss,
    LossContext,
    Outputs,
    Shapes,
    check_positive,
    embedding_tap,
    feature,
    pooled,
    register,
)
from searchkd.errors import SearchKDError


class Embed(nn.Module):
    """Linear projection to the contrastive space, then L2 normalisation."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.linear(x), dim=1)


def nce_loss(scores: Tensor, num_samples: int) -> Tensor:
    """NCE loss of (B, 1 + K) unnormalised probabilities, the positive in column 0.

    With noise distribution P_n = 1 / N and K noise samples, a score x is "data" with
    posterior ``x / (x + K·P_n)``; the loss is ``−(Σ log h(pos) + Σ log(1 − h(neg))) / B``
    (CRD's ``ContrastLoss``).
    """
    k = scores.shape[1] - 1
    noise = k / num_samples
    eps = 1e-7
    log_pos = torch.log(scores[:, 0] / (scores[:, 0] + noise + eps))
    log_neg = torch.log(noise / (scores[:, 1:] + noise + eps))
    return -(log_pos.sum() + log_neg.sum()) / scores.shape[0]


@register("crd")
class ContrastiveRD(DistillLoss):
    """``L_NCE(student emb. vs teacher bank) + L_NCE(teacher emb. vs student bank)``.

    Both networks' pooled deepest taps go through their own linear embedding head (trained
    with the student; the teacher's features are constants, only its head learns) to
    ``feature_dim``-dimensional unit vectors. Each sample's positive is the other network's
    bank entry of the same index; ``negatives`` negatives are drawn with replacement from
    samples of OTHER classes (the authors' default ``mode='exact'`` sampling). Scores are
    ``exp(v·m / temperature)`` divided by a normaliser Z fixed from the first batch, and
    after each training batch the banks move toward the new embeddings with ``momentum``
    and are re-normalised. Defaults are the authors' (``feat_dim 128, nce_k 16384,
    nce_t 0.07, nce_m 0.5``); their CRD weight is 0.8 (the config's weight).

    Needs ``context.train_targets`` (memory size and class of every bank entry) and
    ``Outputs.indices`` on the student's outputs.
    """

    def __init__(
        self,
        student_shapes: Shapes,
        teacher_shapes: Shapes,
        *,
        student_tap: str = "auto",
        teacher_tap: str = "auto",
        feature_dim: int = 128,
        negatives: int = 16384,
        temperature: float = 0.07,
        momentum: float = 0.5,
        context: LossContext,
    ) -> None:
        super().__init__()
        if context.train_targets is None:
            raise SearchKDError(
                "loss 'crd' needs the training labels for its memory bank; the trainer must "
                "pass context=LossContext(train_targets=...) to build_loss"
            )
        for option, value in (("feature_dim", feature_dim), ("negatives", negatives)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SearchKDError(
                    f"loss 'crd' option {option} must be an integer >= 1, got {value!r}"
                )
        if (
            isinstance(momentum, bool)
            or not isinstance(momentum, int | float)
            or not 0 <= momentum < 1
        ):
            raise SearchKDError(f"loss 'crd' option momentum must be in [0, 1), got {momentum!r}")
        self.student_tap = embedding_tap(student_tap, student_shapes, "student", "crd")
        self.teacher_tap = embedding_tap(teacher_tap, teacher_shapes, "teacher", "crd")
        self.student_taps = [self.student_tap]
        self.teacher_taps = [self.teacher_tap]
        self.temperature = check_positive(temperature, "temperature", "crd")
        self.momentum = float(momentum)
        self.negatives = negatives
        self.embed_student = Embed(student_shapes[self.student_tap][1], feature_dim)
        self.embed_teacher = Embed(teacher_shapes[self.teacher_tap][1], feature_dim)
        labels = context.train_targets.long()
        self.num_samples = len(labels)
        stdv = 1.0 / math.sqrt(feature_dim / 3)
        self.register_buffer("labels", labels.clone(), persistent=False)
        self.register_buffer(
            "bank_student", torch.rand(self.num_samples, feature_dim) * 2 * stdv - stdv
        )
        self.register_buffer(
            "bank_teacher", torch.rand(self.num_samples, feature_dim) * 2 * stdv - stdv
        )
        # The normalising constants, estimated once from the first batch (negative = unset).
        self.register_buffer("z_student", torch.tensor(-1.0))
        self.register_buffer("z_teacher", torch.tensor(-1.0))
        others = [torch.nonzero(labels != c).flatten() for c in range(int(labels.max()) + 1)]
        if any(len(o) == 0 for o in others):
            raise SearchKDError("loss 'crd' needs training samples of at least two classes")
        self._other_classes = others

    def sample_negatives(self, targets: Tensor) -> Tensor:
        """(B, K) bank indices, each drawn uniformly from the samples of other classes."""
        device, targets = targets.device, targets.cpu()
        out = torch.empty(len(targets), self.negatives, dtype=torch.long)
        for c in targets.unique().tolist():
            rows = torch.nonzero(targets == c).flatten()
            pool = self._other_classes[c]
            out[rows] = pool[torch.randint(len(pool), (len(rows), self.negatives))]
        return out.to(device)

    def scores(self, v: Tensor, bank: Tensor, idx: Tensor, z: Tensor) -> Tensor:
        """``exp(bank[idx] · v / T) / Z`` of shape (B, 1 + K); sets Z on first use."""
        logits = torch.einsum("bkd,bd->bk", bank[idx], v) / self.temperature
        out = torch.exp(logits)
        if z.item() < 0:
            z.fill_(out.mean().item() * self.num_samples)
        return out / z

    @torch.no_grad()
    def update_bank(self, bank: Tensor, index: Tensor, v: Tensor) -> None:
        moved = bank[index] * self.momentum + v.detach() * (1 - self.momentum)
        bank[index] = F.normalize(moved, dim=1)

    def forward(self, student: Outputs, teacher: Outputs, targets: Tensor) -> Tensor:
        index = student.indices if student.indices is not None else teacher.indices
        if index is None:
            raise SearchKDError(
                "loss 'crd' needs the batch's training-set indices; set Outputs.indices"
            )
        index = index.to(self.bank_student.device)
        v_s = self.embed_student(pooled(feature(student, self.student_tap, "student")))
        v_t = self.embed_teacher(pooled(feature(teacher, self.teacher_tap, "teacher").detach()))
        idx = torch.cat([index[:, None], self.sample_negatives(self.labels[index])], dim=1)
        # The banks are read before this batch updates them (the update is in place).
        loss = nce_loss(
            self.scores(v_s, self.bank_teacher, idx, self.z_student), self.num_samples
        ) + nce_loss(self.scores(v_t, self.bank_student, idx, self.z_teacher), self.num_samples)
        if self.training:
            self.update_bank(self.bank_student, index, v_s)
            self.update_bank(self.bank_teacher, index, v_t)
        return loss
