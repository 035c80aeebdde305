"""Helpers for the losses that read features BEFORE the ReLU (OFD, AB, Heo et al. 2019).

After a ReLU every negative response is 0, so a student cannot tell "slightly off" from
"strongly off"; the pre-ReLU value keeps that information. Search spaces expose these
tensors as named taps (``SearchSpace.preact_taps``) and the trainer passes their shapes in
:class:`~searchkd.distill.base.LossContext`.
"""

from __future__ import annotations

from collections.abc import Sequence

from searchkd.distill.attention import auto_pairs
from searchkd.distill.base import LossContext, Shapes, resolve_pairs
from searchkd.errors import SearchKDError


def preact_pairs(
    pairs: str | Sequence[Sequence[str]], context: LossContext, loss: str
) -> list[tuple[str, str]]:
    """Pair the student's and teacher's pre-ReLU taps ("auto": nearest relative depth)."""
    student: Shapes = context.student_preact
    teacher: Shapes = context.teacher_preact
    if not student or not teacher:
        raise SearchKDError(
            f"loss '{loss}' reads pre-ReLU features, but the trainer gave "
            f"{len(student)} student and {len(teacher)} teacher pre-ReLU taps; use models "
            "from a searchkd space (they expose preact_taps) or pass them in LossContext"
        )
    return resolve_pairs(pairs, student, teacher, loss, auto_pairs)
