"""Route-constrained optimisation (RCO, Jin et al. 2019): follow the teacher's own route.

The converged teacher is a hard target for a small student; the teacher's intermediate
checkpoints are easier ones on the way to it. Training is split into ``anchors`` equal
stages of epochs; stage s distils from one route checkpoint, and the anchors only move
forward (easy to hard), the last stage always using the final teacher.

- **interval**: anchors at equal epoch intervals of the route (for a 20-epoch route and 4
  anchors: epochs 5, 10, 15, 20).
- **greedy**: at each stage start the student's current mimic loss (KL at the recipe's KD
  temperature, 4 by default, on a fixed probe set of training images) is measured against
  every later checkpoint; the anchor is
  the latest one whose loss is within ``greedy_tolerance`` times the loss to the very next
  checkpoint. A student that already follows the teacher well skips ahead; one that does
  not takes the next small step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from search_spaces import load_architecture
from searchkd.checkpoint import load_into, load_state_dict
from searchkd.errors import SearchKDError
from searchkd.schedules.base import ScheduleContext, ScheduleResult
from searchkd.trainer import Guide

SELECTIONS = ("interval", "greedy")
TEMPERATURE = 4.0  # the kd loss's default; a recipe's own kd temperature replaces it


def interval_anchors(route_length: int, anchors: int) -> list[int]:
    """Route indices (0-based) of ``anchors`` checkpoints at equal epoch intervals."""
    picks = [round(route_length * k / anchors) - 1 for k in range(1, anchors + 1)]
    return sorted({max(0, p) for p in picks})


def stage_of(epoch: int, epochs: int, stages: int) -> int:
    """0-based stage of a 1-based epoch when ``epochs`` are split into ``stages`` parts."""
    return min(stages - 1, (epoch - 1) * stages // epochs)


@torch.no_grad()
def mimic_loss(
    student: nn.Module, teacher: nn.Module, x: torch.Tensor, temperature: float = TEMPERATURE
) -> float:
    """KL(teacher ‖ student) at the distillation temperature on ``x``, both in eval mode, on
    the student's device (the teacher and ``x`` are moved there)."""
    was_training = student.training
    device = next(student.parameters()).device
    student.eval()
    teacher.eval().to(device)
    x = x.to(device)
    log_s = F.log_softmax(student(x) / temperature, dim=1)
    log_t = F.log_softmax(teacher(x) / temperature, dim=1)
    student.train(was_training)
    return float(F.kl_div(log_s, log_t, reduction="batchmean", log_target=True))


class RouteGuide(Guide):
    """Hands out route checkpoints stage by stage, never going back."""

    def __init__(
        self,
        teacher_name: str,
        route: list[Path],
        build: Any,
        taps: list[str],
        epochs: int,
        stages: int,
        selection: str,
        probe: torch.Tensor,
        tolerance: float,
        temperature: float = TEMPERATURE,
        preact: dict[str, str] | None = None,
    ) -> None:
        if selection not in SELECTIONS:
            raise SearchKDError(f"rco: anchor selection {selection!r}; use one of {SELECTIONS}")
        if stages < 1:
            raise SearchKDError(f"rco: {stages} anchors; use at least one")
        self.teacher_name = teacher_name
        self.route = route
        self.stages = min(stages, epochs)
        self.epochs = epochs
        self.selection = selection
        self.probe = probe
        self.tolerance = tolerance
        self.temperature = temperature
        self.taps = taps
        self.preact = dict(preact or {})
        self._build = build
        self._loaded: dict[int, nn.Module] = {}
        self.planned = interval_anchors(len(route), self.stages)
        self.stages = len(self.planned)
        self.chosen: list[int] = []  # route index per started stage
        self.reference = self._module(len(route) - 1)

    def name(self, index: int) -> str:
        return f"route:{self.route[index].stem}"

    def _module(self, index: int) -> nn.Module:
        if index not in self._loaded:
            model = self._build()
            path = self.route[index]
            load_into(model, load_state_dict(path, "route checkpoint"), path, "route checkpoint")
            self._loaded[index] = model.eval()
        return self._loaded[index]

    def restore(self, names: list[str]) -> None:
        by_name = {self.name(i): i for i in range(len(self.route))}
        self.chosen = []
        for epoch, name in enumerate(names, 1):
            if stage_of(epoch, self.epochs, self.stages) == len(self.chosen):
                self.chosen.append(by_name[name])

    def teacher(self, epoch: int, student: nn.Module) -> tuple[str, nn.Module | None]:
        stage = stage_of(epoch, self.epochs, self.stages)
        if stage == len(self.chosen):
            self.chosen.append(self._pick(stage, student))
        index = self.chosen[stage]
        return self.name(index), self._module(index)

    def _pick(self, stage: int, student: nn.Module) -> int:
        last = len(self.route) - 1
        if stage == self.stages - 1:
            return last  # the final stage learns from the converged teacher
        if self.selection == "interval":
            return self.planned[stage]
        start = self.chosen[-1] + 1 if self.chosen else 0
        losses = {
            i: mimic_loss(student, self._module(i), self.probe, self.temperature)
            for i in range(start, last)
        }
        if not losses:
            return last
        limit = self.tolerance * losses[start]
        return max(i for i, loss in losses.items() if loss <= limit)

    def describe(self) -> dict[str, Any]:
        described = {
            "teacher": self.teacher_name,
            "route": [p.name for p in self.route],
            "stages": self.stages,
            "selection": self.selection,
            "tolerance": self.tolerance if self.selection == "greedy" else None,
            "planned": [self.name(i) for i in self.planned],
        }
        if self.selection == "greedy":  # the probe decides greedy picks: a resume must match it
            described.update(probe_size=len(self.probe), temperature=self.temperature)
        return described


def run_rco(ctx: ScheduleContext) -> ScheduleResult:
    """Train the student along the teacher's route; needs a teacher trained by searchkd."""
    if not ctx.route or ctx.teacher.arch is None:
        raise SearchKDError(
            f"rco: teacher {ctx.teacher.name} has no training route (checkpoints per epoch); "
            "train one with `searchkd teacher train --arch ARCH --epochs N --out DIR` and pass "
            "--teacher DIR"
        )
    space, arch = load_architecture(ctx.teacher.arch)
    data = ctx.data

    def build() -> nn.Module:
        return space.build(arch, data.in_channels, data.resolution, data.num_classes)

    options = ctx.options
    guide = RouteGuide(
        ctx.teacher.name,
        ctx.route,
        build,
        ctx.teacher.taps,
        ctx.recipe.epochs,
        options.anchors,
        options.anchor_selection,
        data.train_x[: options.probe_size],
        options.greedy_tolerance,
        ctx.recipe.loss_options.get("kd", {}).get("temperature", TEMPERATURE),
        ctx.teacher.preact,
    )
    trained = ctx.train(ctx.arch, guide, ctx.recipe, ctx.folder / "rco", "student")
    anchors = list(dict.fromkeys(trained.result.teachers))
    return ScheduleResult(
        trained.model,
        trained.result,
        {"teacher": ctx.teacher.name, "anchors": anchors, **guide.describe()},
    )
