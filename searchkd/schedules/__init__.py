"""Retraining schedules: how the teacher's knowledge reaches the student in a full run.

Each schedule is one function ``run(ctx) -> ScheduleResult`` in its own module; this
registry maps the names the CLI accepts to them.
"""

from searchkd.schedules.ban import run_ban
from searchkd.schedules.base import (
    NamedTeacher,
    ScheduleContext,
    ScheduleOptions,
    ScheduleResult,
    fingerprint,
)
from searchkd.schedules.kd import run_ce, run_kd
from searchkd.schedules.rco import run_rco
from searchkd.schedules.takd import pick_assistants, run_takd

SCHEDULES = {"ce": run_ce, "kd": run_kd, "takd": run_takd, "rco": run_rco, "ban": run_ban}

__all__ = [
    "SCHEDULES",
    "NamedTeacher",
    "ScheduleContext",
    "ScheduleOptions",
    "ScheduleResult",
    "fingerprint",
    "pick_assistants",
]
