"""Plain distillation from one teacher (Hinton et al. 2015), and the labels-only baseline."""

from __future__ import annotations

from searchkd.schedules.base import ScheduleContext, ScheduleResult
from searchkd.trainer import FixedTeacher


def run_kd(ctx: ScheduleContext) -> ScheduleResult:
    """The student learns from the teacher with the recipe's loss (0.1·CE + 0.9·KD default)."""
    teacher = ctx.teacher
    guide = FixedTeacher(teacher.name, teacher.model, teacher.taps, teacher.preact)
    trained = ctx.train(ctx.arch, guide, ctx.recipe, ctx.folder / "kd", "student")
    return ScheduleResult(trained.model, trained.result, {"teacher": teacher.name})


def run_ce(ctx: ScheduleContext) -> ScheduleResult:
    """Cross-entropy only, same recipe: the baseline every schedule is compared against."""
    recipe = ctx.recipe.with_loss({"ce": 1.0})
    trained = ctx.train(
        ctx.arch, FixedTeacher("labels", None), recipe, ctx.folder / "ce", "student"
    )
    return ScheduleResult(trained.model, trained.result, {"teacher": None})
