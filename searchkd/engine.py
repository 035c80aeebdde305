"""The one training loop: the teacher, every proxy candidate and every retraining run.

They differ in what the student learns from and in what happens between epochs, never in
how an epoch runs, so the loop is written once and each caller configures it with

* a :class:`~searchkd.recipe.Recipe` (epochs, batch size, optimizer, per-step learning-rate
  schedule, augmentation) and an objective (a :class:`~searchkd.distill.CombinedLoss`, which
  the search and retraining both build with :func:`searchkd.proxy.build_objective`);
* a teacher for each epoch: a :data:`Teach` that answers for every batch (the proxy's
  cached outputs, a live teacher, or :func:`labels_only`), set up and torn down per epoch,
  since a retraining schedule may name another teacher for every epoch;
* ``on_epoch(epoch, accuracies so far)``, called after each evaluation: pruning and Ray
  reports in the search (an exception stops training there), checkpoints in retraining.

Datasets here fit in memory as tensors, so batches are index tensors into them: no
DataLoader workers, no copies, and the same indices address the cached teacher outputs.
Batches and their augmentation are drawn from one CPU generator, so every device sees the
same batches in the same order, and a restored :meth:`Engine.load_state_dict` replays them.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from searchkd.data import Dataset
from searchkd.device import synchronize
from searchkd.distill import CombinedLoss, Outputs
from searchkd.features import FeatureTaps
from searchkd.progress import progress_bar
from searchkd.recipe import Recipe, augment, augmentation_for, make_optimizer, make_scheduler

Teach = Callable[[Tensor, Tensor], Outputs]
"""The teacher's outputs for one batch, from the batch's training-set indices (on the CPU)
and its inputs (augmented, on the training device)."""

TeacherFor = Callable[[int], AbstractContextManager[Teach]]
"""The teacher of an epoch, entered for that epoch only (its hooks, its device)."""


def labels_only(indices: Tensor, x: Tensor) -> Outputs:
    """No teacher: for objectives that read only the labels."""
    return Outputs(logits=torch.empty(0))


def every_epoch(teach: Teach) -> TeacherFor:
    """The same teacher for every epoch, with nothing to set up."""
    return lambda epoch: contextlib.nullcontext(teach)


class Engine:
    """A model, its objective and their optimizer, trained epoch by epoch by :meth:`fit`.

    The model and the objective train on ``device``, the model channels-last (the small
    convolutions of these students run 1.4-2x faster that way on the CPU; each batch is
    converted to match), and the objective's connectors train with the model. Only the first
    ``train_size`` training images are used (default: all). ``seed`` draws the batches and
    their augmentation. The model is evaluated on ``data.val_x`` as given.

    What a caller reads after training (or checkpoints): ``accuracies`` (the validation
    accuracy after each finished epoch), ``seconds`` (training time, evaluation excluded),
    ``samples`` (images trained on) and ``loss_terms`` (each term's mean over the last epoch).
    """

    def __init__(
        self,
        model: nn.Module,
        objective: CombinedLoss,
        data: Dataset,
        recipe: Recipe,
        *,
        device: torch.device,
        seed: int,
        train_size: int | None = None,
    ) -> None:
        self.model = model.to(device=device, memory_format=torch.channels_last)
        self.objective = objective.to(device)
        self.data = data
        self.recipe = recipe
        self.device = device
        self.train_size = len(data.train_x) if train_size is None else train_size
        self.augmentation = augmentation_for(recipe, data.name)
        self.optimizer = make_optimizer(
            recipe, [*model.parameters(), *objective.connector_parameters()]
        )
        total_steps = recipe.epochs * steps_per_epoch(self.train_size, recipe.batch_size)
        self.scheduler = make_scheduler(recipe, self.optimizer, total_steps)
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        self.accuracies: list[float] = []
        self.seconds = 0.0
        self.samples = 0
        self.loss_terms: dict[str, float] = {}

    def fit(
        self,
        teacher: TeacherFor | None = None,
        on_epoch: Callable[[int, list[float]], None] | None = None,
        progress: str | None = None,
    ) -> list[float]:
        """Train the recipe's epochs not done yet and return the accuracies after each.

        ``teacher`` (default: labels only) gives each epoch's teacher. ``on_epoch`` runs
        after each evaluation; an exception it raises stops training there. ``progress``
        labels a progress bar per epoch (None: no bar).
        """
        teacher = teacher or every_epoch(labels_only)
        taps = self.objective.student_taps
        # No hooks at all for logit-only losses: training costs what the student costs.
        with FeatureTaps(self.model, taps) if taps else contextlib.nullcontext() as hooks:
            for epoch in range(len(self.accuracies) + 1, self.recipe.epochs + 1):
                with teacher(epoch) as teach, self._bar(progress, epoch) as bar:
                    self._epoch(teach, hooks, bar)
                self.accuracies.append(evaluate(self.model, self.data.val_x, self.data.val_y))
                if on_epoch is not None:
                    on_epoch(epoch, self.accuracies)
        return self.accuracies

    def _epoch(self, teach: Teach, hooks: FeatureTaps | None, bar: tqdm | None) -> None:
        """One pass over the training images. Each batch's training-set indices reach the
        losses that keep per-sample memory (CRD's bank) and the teacher (the proxy's cache)."""
        started = time.perf_counter()
        self.model.train()
        self.objective.train()
        train_x, train_y, device = self.data.train_x, self.data.train_y, self.device
        sums: dict[str, float] = {}
        batches = 0
        for idx in batch_indices(self.train_size, self.recipe.batch_size, self.generator):
            at = idx.to(train_x.device)  # the images may be staged on the training device
            x = augment(train_x[at], self.augmentation, self.generator)
            x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            y = train_y[at].to(device, non_blocking=True)
            target = teach(idx, x)
            logits = self.model(x)  # refills the hooks' features
            student = Outputs(logits, hooks.features if hooks else {}, indices=idx.to(device))
            loss, terms = self.objective(student, target, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            self.samples += len(idx)
            batches += 1
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + value
            if bar is not None:  # reading the loss waits for the GPU: only for a bar
                bar.update(1)
                bar.set_postfix(loss=f"{float(loss.detach()):.3f}", refresh=False)
        synchronize(device)  # queued GPU work belongs to this epoch's time
        self.seconds += time.perf_counter() - started
        self.loss_terms = {name: total / max(1, batches) for name, total in sums.items()}

    def _bar(self, label: str | None, epoch: int) -> AbstractContextManager[tqdm | None]:
        if label is None:
            return contextlib.nullcontext()
        return progress_bar(
            total=steps_per_epoch(self.train_size, self.recipe.batch_size),
            desc=f"{label} epoch {epoch}/{self.recipe.epochs}",
            leave=False,
            dynamic_ncols=True,
        )

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue as if it had never stopped: weights,
        optimizer and schedule, both random states (CRD draws its negatives from torch's
        global one) and the history so far."""
        return {
            "model": self.model.state_dict(),
            "objective": self.objective.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "history": {
                "accuracies": list(self.accuracies),
                "seconds": self.seconds,
                "terms": dict(self.loss_terms),
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`; raises KeyError, RuntimeError, TypeError or
        ValueError when ``state`` is not one of this run."""
        self.model.load_state_dict(state["model"])
        self.objective.load_state_dict(state["objective"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        history = state["history"]
        self.accuracies = list(history["accuracies"])
        self.seconds = history["seconds"]
        self.loss_terms = dict(history["terms"])


def batch_indices(
    n: int, batch_size: int, generator: torch.Generator, drop_last: bool = True
) -> Iterator[Tensor]:
    """Shuffled index batches for one epoch (the last partial batch dropped by default,
    so batch-norm never sees a batch of one)."""
    order = torch.randperm(n, generator=generator)
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    for start in range(0, stop, batch_size):
        yield order[start : start + batch_size]


def steps_per_epoch(n: int, batch_size: int) -> int:
    return max(1, n // batch_size) if n >= batch_size else 1


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 500) -> float:
    """Top-1 accuracy in eval mode, on the model's device (batches of ``x`` and ``y`` are
    moved there when they live elsewhere); restores the model's training flag."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = torch.zeros((), dtype=torch.long, device=device)
    for start in range(0, len(x), batch_size):
        logits = model(x[start : start + batch_size].to(device))
        correct += (logits.argmax(dim=1) == y[start : start + batch_size].to(device)).sum()
    model.train(was_training)
    return int(correct) / max(1, len(x))
