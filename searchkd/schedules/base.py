"""What every schedule receives and returns.

A schedule turns (student architecture, teacher, recipe) into a trained student by a
sequence of :func:`searchkd.trainer.train_run` calls. Each call gets its own folder under
the retraining folder, so an interrupted schedule resumes at the run it was in, and runs
that finished are reused.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import nn

from search_spaces import load_architecture
from searchkd.data import Dataset
from searchkd.recipe import Recipe
from searchkd.trainer import Guide, RunResult, TrainedModel, train_run


@dataclass
class ScheduleOptions:
    """Options of the schedules; each schedule reads only its own."""

    assistants: list[dict[str, Any]] = field(default_factory=list)  # TAKD: explicit chain
    assistant_count: int = 1  # TAKD: how many to pick automatically
    assistant_samples: int = 200  # TAKD: random members of the space considered
    assistant_seed: int = 0  # TAKD: assistants are shared by all student seeds
    anchors: int = 4  # RCO: number of route anchors (stages)
    anchor_selection: str = "interval"  # RCO: interval | greedy
    greedy_tolerance: float = 1.5  # RCO greedy: accepted loss, relative to the next anchor's
    probe_size: int = 512  # RCO greedy: training images the mimic loss is measured on
    generations: int = 3  # BAN
    ensemble: bool = False  # BAN: report the ensemble of generations too

    def describe(self, schedule: str) -> dict[str, Any]:
        keys = {
            "takd": ("assistants", "assistant_count", "assistant_samples", "assistant_seed"),
            "rco": ("anchors", "anchor_selection", "greedy_tolerance", "probe_size"),
            "ban": ("generations", "ensemble"),
        }.get(schedule, ())
        return {k: getattr(self, k) for k in keys}


@dataclass
class NamedTeacher:
    """A teacher module with a stable name: its origin plus a hash of its weights."""

    name: str
    model: nn.Module
    taps: list[str]
    arch: dict[str, Any] | None = None

    @property
    def preact(self) -> dict[str, str]:
        """Its pre-ReLU taps (tap -> batch-norm path) from its space; a teacher without a
        searchkd architecture (a factory's) has none."""
        if self.arch is None:
            return {}
        space, arch = load_architecture(self.arch)
        return dict(space.preact_taps(arch))


@dataclass
class ScheduleContext:
    arch: dict[str, Any]
    data: Dataset
    teacher: NamedTeacher
    route: list[Path]  # the teacher's route checkpoints, oldest first (RCO)
    recipe: Recipe
    options: ScheduleOptions
    folder: Path  # this retraining's runs live here
    cache: Path  # trained assistants, shared between retrainings
    progress: bool = True
    log: Callable[[str], None] = print
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))  # trains there

    @cached_property
    def data_key(self) -> str:
        """Which images and split the runs see: the same dataset name and shape with another
        split seed must not resume or reuse a run (its training set holds our validation)."""
        digest = hashlib.sha256()
        for tensor in (self.data.train_x, self.data.train_y, self.data.val_x, self.data.val_y):
            digest.update(tensor.contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]

    def build(self, arch: dict[str, Any], seed: int) -> nn.Module:
        """A freshly initialised network; the seed fixes the initial weights."""
        space, arch = load_architecture(arch)
        torch.manual_seed(seed)
        return space.build(arch, self.data.in_channels, self.data.resolution, self.data.num_classes)

    def taps(self, arch: dict[str, Any]) -> list[str]:
        """The stage taps of ``arch``, from its space (what the search hooks)."""
        space, arch = load_architecture(arch)
        return space.feature_taps(arch)

    def preact(self, arch: dict[str, Any]) -> dict[str, str]:
        """The pre-ReLU taps of ``arch`` (tap -> batch-norm path), from its space."""
        space, arch = load_architecture(arch)
        return dict(space.preact_taps(arch))

    def train(
        self,
        arch: dict[str, Any],
        guide: Guide,
        recipe: Recipe,
        folder: Path,
        label: str,
    ) -> TrainedModel:
        """One run of ``arch`` under ``guide``, keyed by everything that decides its result;
        the student's taps come from its space, as in the search."""
        settings = {
            "arch": arch,
            "dataset": self.data.name,
            "data_shape": list(self.data.train_x.shape),
            "data_key": self.data_key,
            "recipe": recipe.to_dict(),
            "guide": guide.describe(),
        }
        return train_run(
            self.build(arch, recipe.seed),
            self.data,
            recipe,
            guide,
            folder,
            settings,
            label,
            self.progress,
            self.log,
            device=self.device,
            student_taps=self.taps(arch),
            student_preact=list(self.preact(arch)),
        )


@dataclass
class ScheduleResult:
    model: nn.Module
    result: RunResult
    details: dict[str, Any] = field(default_factory=dict)


def fingerprint(model: nn.Module) -> str:
    """A short hash of a module's weights: two teachers with one name can't be confused."""
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()[:12]


def key_of(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]
