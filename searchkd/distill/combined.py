"""The training objective: a weighted sum of registered losses, with every term reported."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from searchkd.distill.base import LOSSES, DistillLoss, LossContext, Outputs, Shapes, make_loss
from searchkd.errors import SearchKDError


def check_weights(weights: Mapping[str, float]) -> dict[str, float]:
    """Validate config weights (names, values); return the nonzero ones in config order.
    A search calls it before opening its study, so a misspelt loss leaves none behind."""
    if not weights:
        raise SearchKDError(
            f"no loss weights given; set weights for some of: {', '.join(sorted(LOSSES))}"
        )
    unknown = [name for name in weights if name not in LOSSES]
    if unknown:
        raise SearchKDError(
            f"unknown distillation loss {', '.join(repr(n) for n in unknown)}; "
            f"known losses: {', '.join(sorted(LOSSES))}"
        )
    for name, weight in weights.items():
        if (
            isinstance(weight, bool)
            or not isinstance(weight, int | float)
            or not math.isfinite(weight)
        ):
            raise SearchKDError(f"loss weight for '{name}' must be a finite number, got {weight!r}")
        if weight < 0:
            raise SearchKDError(f"loss weight for '{name}' must be >= 0, got {weight}")
    kept = {name: float(weight) for name, weight in weights.items() if weight != 0}
    if not kept:
        raise SearchKDError(
            f"all loss weights are zero ({', '.join(weights)}); give at least one a weight > 0"
        )
    return kept


class CombinedLoss(nn.Module):
    """``Σ_name weight[name] · loss[name](student, teacher, targets)`` over the nonzero weights.

    Zero-weighted losses are dropped before they are built, so a disabled hint loss adds no
    regressor parameters and no taps. ``forward`` also returns each term, unweighted and as a
    plain float, so the trainer can log every term without holding the graph.

    The terms are submodules: move this module to the student's device, switch it with
    ``train()``/``eval()`` together with the student, and give :meth:`connector_parameters`
    to the student's optimizer.
    """

    def __init__(
        self,
        weights: Mapping[str, float],
        options: Mapping[str, Mapping[str, Any]] | None = None,
        student_shapes: Shapes | None = None,
        teacher_shapes: Shapes | None = None,
        context: LossContext | None = None,
    ) -> None:
        super().__init__()
        options = dict(options or {})
        weights = dict(weights)
        kept = check_weights(weights)
        stray = [name for name in options if name not in weights]
        if stray:
            raise SearchKDError(
                f"options given for loss {', '.join(repr(n) for n in stray)} without a weight; "
                f"weighted losses: {', '.join(weights)}"
            )
        self.weights: dict[str, float] = kept
        self.terms = nn.ModuleDict(
            {
                name: make_loss(
                    name,
                    student_shapes or {},
                    teacher_shapes or {},
                    context,
                    **dict(options.get(name, {})),
                )
                for name in kept
            }
        )

    @property
    def student_taps(self) -> list[str]:
        """Student tap paths any term reads, in first-use order, without repeats."""
        return list(dict.fromkeys(tap for term in self._terms() for tap in term.student_taps))

    @property
    def teacher_taps(self) -> list[str]:
        """Teacher tap paths any term reads: the ones to precompute and cache."""
        return list(dict.fromkeys(tap for term in self._terms() for tap in term.teacher_taps))

    def connector_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters the terms own (e.g. hint regressors); train with the student."""
        return [param for param in self.parameters() if param.requires_grad]

    def _terms(self) -> list[DistillLoss]:
        return list(self.terms.values())  # type: ignore[arg-type]

    def forward(
        self, student: Outputs, teacher: Outputs, targets: Tensor
    ) -> tuple[Tensor, dict[str, float]]:
        total: Tensor | None = None
        logged: dict[str, float] = {}
        for name, term in self.terms.items():
            value = term(student, teacher, targets)
            logged[name] = float(value.detach())
            weighted = self.weights[name] * value
            total = weighted if total is None else total + weighted
        assert total is not None  # check_weights guarantees at least one term
        return total, logged


def build_loss(
    weights: Mapping[str, float],
    options: Mapping[str, Mapping[str, Any]] | None,
    student_shapes: Shapes,
    teacher_shapes: Shapes,
    context: LossContext | None = None,
) -> CombinedLoss:
    """Build the objective from config: ``weights`` by loss name, ``options`` by loss name.

    ``context`` carries what some losses need beyond tap shapes (pre-ReLU taps, the
    teacher's batch-norm statistics, training labels, the number of teachers)."""
    return CombinedLoss(weights, options, student_shapes, teacher_shapes, context)
