"""Teacher-assistant distillation (TAKD, Mirzadeh et al. 2019): teacher → assistant(s) → student.

A large capacity gap makes the teacher's soft targets hard to follow; an assistant of
intermediate size bridges it, each link trained with plain KD.

**How assistants are picked.** With ``count`` assistants, the k-th target cost is the
geometric interpolation ``s^(1-k/(count+1)) · t^(k/(count+1))`` of student and teacher MACs
(for one assistant: ``sqrt(s·t)``, the middle of the gap on a log scale, where the gap is
felt). Candidates are the space's canonical members plus ``samples`` random members drawn
with a fixed seed; only those strictly between student and teacher cost qualify, and the one
closest to each target in log-MACs wins (ties: fewer MACs, then the architecture's JSON, so
the pick is deterministic). Sampling rather than scaling the student keeps this generic
over spaces; the price is that the assistant's shape may differ from the student's.

**Reuse.** A trained assistant is cached under a key of (architecture, teacher, recipe with
the assistant seed, data and split): students with other seeds, or other students under the
same teacher, reuse it instead of training it again.
"""

from __future__ import annotations

import math
import random
from dataclasses import replace
from typing import Any

from search_spaces import get_space, load_architecture
from search_spaces.base import uniform_decisions
from searchkd.cost import count_macs
from searchkd.data import Dataset
from searchkd.errors import SearchKDError
from searchkd.schedules.base import (
    NamedTeacher,
    ScheduleContext,
    ScheduleResult,
    fingerprint,
    key_of,
)
from searchkd.trainer import FixedTeacher


def arch_macs(arch: dict[str, Any], data: Dataset) -> int:
    """MACs of one image: closed form where the space has it, else counted by tracing."""
    space, arch = load_architecture(arch)
    macs = space.macs(arch, data.resolution, data.in_channels, data.num_classes)
    if macs is None:
        model = space.build(arch, data.in_channels, data.resolution, data.num_classes)
        macs = count_macs(model, (data.in_channels, data.resolution, data.resolution))
    return int(macs)


def target_costs(student_macs: int, teacher_macs: int, count: int) -> list[float]:
    """Geometrically spaced costs between student and teacher, largest first."""
    ratio = teacher_macs / student_macs
    return [student_macs * ratio ** (k / (count + 1)) for k in range(count, 0, -1)]


def pick_assistants(
    student: dict[str, Any],
    teacher_macs: int,
    data: Dataset,
    count: int = 1,
    samples: int = 200,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """``count`` assistants from the student's space, largest first (see module docstring)."""
    space, student = load_architecture(student)
    student_macs = arch_macs(student, data)
    if count < 1:
        raise SearchKDError(f"takd: {count} assistants; pick at least one")
    if teacher_macs <= student_macs:
        raise SearchKDError(
            f"takd: the teacher ({teacher_macs:,} MACs) is not larger than the student "
            f"({student_macs:,} MACs); no assistant fits between them — use --schedule kd"
        )
    rng = random.Random(seed)
    decisions = space.decisions()
    pool = list(space.canonical().values()) + [
        space.from_decisions(uniform_decisions(decisions, rng)) for _ in range(samples)
    ]
    scored: dict[str, tuple[dict[str, Any], int]] = {}
    for arch in pool:
        key = key_of(arch)
        if key not in scored:
            macs = arch_macs(arch, data)
            if student_macs < macs < teacher_macs:
                scored[key] = (arch, macs)
    chosen: list[tuple[dict[str, Any], int]] = []
    for target in target_costs(student_macs, teacher_macs, count):
        options = [(a, m) for a, m in scored.values() if a not in (c for c, _ in chosen)]
        if not options:
            raise SearchKDError(
                f"takd: none of {len(pool)} members of the {space.name} space lies between "
                f"the student ({student_macs:,} MACs) and the teacher ({teacher_macs:,}); "
                "give assistants with --assistant"
            )
        chosen.append(
            min(options, key=lambda am: (abs(math.log(am[1] / target)), am[1], key_of(am[0])))
        )
    # where the space is sparse, a later (smaller) target can get a larger member than an
    # earlier one; the chain must still shrink link by link
    return [arch for arch, _ in sorted(chosen, key=lambda am: -am[1])]


def run_takd(ctx: ScheduleContext) -> ScheduleResult:
    """Train (or reuse) each assistant with KD from the link above, then the student."""
    options = ctx.options
    teacher_macs = arch_macs(ctx.teacher.arch, ctx.data) if ctx.teacher.arch else None
    if options.assistants:
        assistants = [load_architecture(a)[1] for a in options.assistants]
    else:
        if teacher_macs is None:
            raise SearchKDError(
                "takd: the teacher has no searchkd architecture, so its cost is unknown; "
                "give assistants explicitly with --assistant"
            )
        assistants = pick_assistants(
            ctx.arch,
            teacher_macs,
            ctx.data,
            options.assistant_count,
            options.assistant_samples,
            options.assistant_seed,
        )
    recipe = replace(ctx.recipe, seed=options.assistant_seed)
    above: NamedTeacher = ctx.teacher
    chain = []
    for i, arch in enumerate(assistants, 1):
        folder = ctx.cache / key_of(arch, above.name, recipe.to_dict(), ctx.data.name, ctx.data_key)
        guide = FixedTeacher(above.name, above.model, above.taps, above.preact)
        trained = ctx.train(arch, guide, recipe, folder, f"assistant {i}/{len(assistants)}")
        name = f"assistant:{get_space(arch['space']).name}@{fingerprint(trained.model)}"
        above = NamedTeacher(name, trained.model, ctx.taps(arch), arch)
        chain.append(
            {
                "arch": arch,
                "macs": arch_macs(arch, ctx.data),
                "accuracy": trained.result.accuracy,
                "train_seconds": trained.result.train_seconds,
                "name": name,
                "folder": str(trained.folder),
            }
        )
    guide = FixedTeacher(above.name, above.model, above.taps, above.preact)
    trained = ctx.train(ctx.arch, guide, ctx.recipe, ctx.folder / "takd", "student")
    details = {
        "teacher": ctx.teacher.name,
        "teacher_macs": teacher_macs,
        "student_macs": arch_macs(ctx.arch, ctx.data),
        "assistants": chain,
        "picked": "explicit" if options.assistants else "geometric mean of MACs",
    }
    return ScheduleResult(trained.model, trained.result, details)
