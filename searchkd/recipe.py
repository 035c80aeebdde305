"""How a network is trained: optimizer, decay, augmentation, loss.

The training engine (:mod:`searchkd.engine`) takes its epochs, batch size, optimizer,
schedule and augmentation from a :class:`Recipe`; the teacher and the proxy each build
theirs. Its defaults are those of
retraining, the long run a user ships: everything that decides the result of that run is
in the recipe, so a run folder and the assistant cache can be keyed by it, and a model card
can state it.

Defaults follow the usual CIFAR-style practice (SGD with Nesterov momentum, lr 0.05,
weight decay 5e-4, cosine decay per step, batch 128, label smoothing off). Augmentation is
picked from the data: ±2 px shifts for the digit tasks (a flip would turn a 2 into
something else), pad-4 crop and horizontal flip for CIFAR-like natural images.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import nn

from searchkd.config import MAX_SEED
from searchkd.data import DATASET_KINDS
from searchkd.distill.combined import check_weights
from searchkd.errors import SearchKDError

OPTIMIZERS = ("sgd", "adamw")
LR_SCHEDULES = ("cosine", "step")
AUGMENTATIONS = ("auto", "shift", "cropflip", "none")
SHIFT_PIXELS = 2  # digit tasks: the teacher's own augmentation
CROP_PADDING = 4  # CIFAR convention: pad 4, crop back to size


@dataclass(frozen=True)
class Recipe:
    """How one network is trained; ``lr`` and ``weight_decay`` default per optimizer."""

    epochs: int
    seed: int = 0
    optimizer: str = "sgd"
    lr: float | None = None  # sgd 0.05, adamw 1e-3
    momentum: float = 0.9
    weight_decay: float | None = None  # sgd 5e-4, adamw 0.05
    lr_schedule: str = "cosine"
    step_milestones: tuple[float, ...] = (0.5, 0.75)  # fractions of training, step decay
    step_gamma: float = 0.1
    label_smoothing: float = 0.0
    batch_size: int = 128
    augment: str = "auto"
    loss: dict[str, float] = field(default_factory=lambda: {"ce": 0.1, "kd": 0.9})
    loss_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, f"epochs {self.epochs}: train at least one epoch"),
            (self.optimizer in OPTIMIZERS, f"optimizer {self.optimizer!r}: use {OPTIMIZERS}"),
            (
                self.lr_schedule in LR_SCHEDULES,
                f"lr schedule {self.lr_schedule!r}: use one of {LR_SCHEDULES}",
            ),
            (self.augment in AUGMENTATIONS, f"augment {self.augment!r}: use {AUGMENTATIONS}"),
            (self.lr is None or self.lr > 0, f"lr {self.lr}: give a positive learning rate"),
            (
                0 <= self.label_smoothing < 1,
                f"label smoothing {self.label_smoothing}: give a value in [0, 1)",
            ),
            (self.batch_size >= 1, f"batch size {self.batch_size}: give a positive size"),
            (
                0 <= self.seed <= MAX_SEED,
                f"seed {self.seed}: give a seed between 0 and {MAX_SEED}",
            ),
            (
                all(0 < m < 1 for m in self.step_milestones),
                f"step milestones {self.step_milestones}: give fractions of training in (0, 1)",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise SearchKDError(f"recipe: {message}")
        check_weights(self.loss)  # a misspelt loss is named before any run folder is compared

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else (0.05 if self.optimizer == "sgd" else 1e-3)

    @property
    def decay(self) -> float:
        if self.weight_decay is not None:
            return self.weight_decay
        return 5e-4 if self.optimizer == "sgd" else 0.05

    def with_loss(self, weights: dict[str, float]) -> Recipe:
        """The same recipe with other loss weights (e.g. cross-entropy only)."""
        options = {k: v for k, v in self.loss_options.items() if k in weights}
        return replace(self, loss=dict(weights), loss_options=options)

    def to_dict(self) -> dict[str, Any]:
        """JSON form with the per-optimizer defaults filled in (what actually ran)."""
        data = asdict(self)
        data.update(lr=self.learning_rate, weight_decay=self.decay)
        data["step_milestones"] = list(self.step_milestones)
        return data


def augmentation_for(recipe: Recipe, dataset: str) -> str:
    """The augmentation that runs: ``auto`` means the dataset's own (shifts for digits,
    crop+flip for photographs and datasets it does not know)."""
    if recipe.augment != "auto":
        return recipe.augment
    kind = DATASET_KINDS.get(dataset)
    return kind.augmentation if kind is not None else "cropflip"


def augment(x: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """One random augmentation per sample, drawn from ``generator`` (so resume replays it)."""
    if kind == "shift":
        return random_shift(x, SHIFT_PIXELS, generator)
    if kind == "cropflip":
        # zero-padded random crop == random translation by up to the padding
        x = random_shift(x, CROP_PADDING, generator)
        flip = torch.rand(len(x), generator=generator) < 0.5
        return torch.where(flip[:, None, None, None], x.flip(-1), x)
    return x


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by up to ±max_shift pixels (zero padding), per sample."""
    if max_shift <= 0:
        return x
    n, _, h, w = x.shape
    padded = nn.functional.pad(x, (max_shift,) * 4)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None, :])[:, :, None]  # n,h,1
    cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, :]  # n,1,w
    batch = torch.arange(n)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2).contiguous()


def make_optimizer(recipe: Recipe, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=recipe.learning_rate, weight_decay=recipe.decay)
    return torch.optim.SGD(
        params,
        lr=recipe.learning_rate,
        momentum=recipe.momentum,
        weight_decay=recipe.decay,
        nesterov=recipe.momentum > 0,
    )


def lr_factor(recipe: Recipe, step: int, total_steps: int) -> float:
    """The learning-rate multiplier at ``step``: cosine to 0, or x gamma at each milestone."""
    done, total = min(step, total_steps), max(1, total_steps)
    if recipe.lr_schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * done / total))
    passed = sum(done / total >= m for m in recipe.step_milestones)
    return recipe.step_gamma**passed


def make_scheduler(
    recipe: Recipe, optimizer: torch.optim.Optimizer, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-step decay, so short and long runs follow the same curve."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(recipe, step, total_steps)
    )
