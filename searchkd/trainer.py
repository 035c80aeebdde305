"""One resumable training run: a student, a guide that names its teacher each epoch, a recipe.

Every schedule (KD, TAKD, RCO, born-again) is a sequence of such runs; they differ only in
which teacher guides which epoch. A :class:`Guide` answers that at the start of each epoch
and the name it gives is stored in the checkpoint, so a resumed run replays the same choices
(RCO's greedy anchors depend on the student, which a resume must not re-decide).

The teacher runs at every step, in eval mode and without gradients: augmentation makes every
batch new, so its outputs cannot be cached the way the proxy caches them.

A run folder holds ``settings.json`` (what defines the run), ``state.pt`` (written
atomically after every epoch: weights, optimizer, scheduler, random states, history),
and on completion ``student.pt`` and ``result.json``. Rerunning the same run continues from
the last finished epoch; on the CPU, with the same seed and thread count, it ends with the
same weights as an uninterrupted run (on CUDA, kernels are not bit-reproducible).

The device is not part of a run's settings: a run may resume on another device. Batches
are drawn and augmented on the CPU (the same ones on every device) and copied over; the
state is written with CPU tensors, and the finished model is returned on the CPU.
"""

from __future__ import annotations

import contextlib
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from searchkd.checkpoint import (
    load_into,
    load_object,
    load_state_dict,
    read_json,
    save_object,
    save_state_dict,
    write_json,
)
from searchkd.config import differing_settings
from searchkd.data import Dataset
from searchkd.device import describe_device, prepare_device, synchronize
from searchkd.distill import CombinedLoss, Outputs
from searchkd.engine import batch_indices, evaluate, steps_per_epoch
from searchkd.errors import CheckpointError, SearchKDError
from searchkd.features import FeatureTaps
from searchkd.progress import progress_bar
from searchkd.proxy import TeacherOutputs, build_objective, compute_teacher_outputs
from searchkd.recipe import Recipe, augment, augmentation_for, make_optimizer, make_scheduler

STATE = "state.pt"
WEIGHTS = "student.pt"
RESULT = "result.json"
SETTINGS = "settings.json"


class Guide(ABC):
    """Names and provides the teacher for each epoch; ``None`` means labels only.

    ``reference`` is a teacher module whose taps shape the loss's connectors (every teacher
    a guide hands out shares its architecture). ``taps`` are the teachers' stage taps and
    ``preact`` their pre-ReLU taps (tap -> the path of its batch norm), both from the
    teacher's space, as the search caches them. ``restore`` receives the names recorded by
    an interrupted run so a stateful guide can pick up where it was.
    """

    reference: nn.Module | None = None
    taps: list[str]
    preact: Mapping[str, str] = MappingProxyType({})

    @abstractmethod
    def teacher(self, epoch: int, student: nn.Module) -> tuple[str, nn.Module | None]:
        """The teacher's name and module for ``epoch`` (module None: labels only)."""

    def restore(self, names: list[str]) -> None:  # noqa: B027  (optional hook)
        """Called once before training with the teacher names of finished epochs."""

    def describe(self) -> dict[str, Any]:
        return {}


class FixedTeacher(Guide):
    """One teacher for the whole run (plain KD), or none (cross-entropy only)."""

    def __init__(
        self,
        name: str,
        model: nn.Module | None,
        taps: list[str] | None = None,
        preact: Mapping[str, str] | None = None,
    ):
        self.name = name
        self.reference = model
        self.taps = list(taps or [])
        self.preact = dict(preact or {})

    def teacher(self, epoch: int, student: nn.Module) -> tuple[str, nn.Module | None]:
        return self.name, self.reference

    def describe(self) -> dict[str, Any]:
        return {"teacher": self.name}


@dataclass
class RunResult:
    """What a finished run measured. ``accuracy`` is the LAST epoch's validation accuracy
    (the weights saved are the last epoch's); the best epoch is recorded beside it."""

    accuracy: float
    best_accuracy: float
    best_epoch: int
    epoch_accuracies: list[float]
    teachers: list[str]
    train_seconds: float
    seed: int
    accuracy_kind: str = "last_epoch"
    loss_terms: dict[str, float] = field(default_factory=dict)
    train_device: str = "cpu"  # the device(s) its epochs ran on (describe_device)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainedModel:
    model: nn.Module
    result: RunResult
    folder: Path


def train_run(
    model: nn.Module,
    data: Dataset,
    recipe: Recipe,
    guide: Guide,
    folder: str | Path,
    settings: dict[str, Any],
    label: str = "student",
    progress: bool = True,
    log: Callable[[str], None] = print,
    on_epoch_end: Callable[[int], None] | None = None,
    device: torch.device | None = None,
    student_taps: Sequence[str] = (),
    student_preact: Sequence[str] = (),
) -> TrainedModel:
    """Train ``model`` in ``folder``; resume a partial run there, or reuse a finished one.

    ``settings`` (JSON) must describe everything that decides the result; a folder that
    holds a run with other settings is refused rather than silently mixed. ``device``
    (default: the CPU): where the student, its loss and the guide's teachers run.
    ``student_taps``/``student_preact``: the student's stage and pre-ReLU taps, from its
    space (``feature_taps``/``preact_taps``), as the search hooks them; without them only
    losses that read no student features can be built.
    """
    device = device or torch.device("cpu")
    folder = Path(folder)
    _claim(folder, settings)
    if (folder / RESULT).exists():
        load_into(model, load_state_dict(folder / WEIGHTS, label), folder / WEIGHTS, label)
        result = _read_result(folder / RESULT, label)
        log(f"{label}: reusing finished run in {folder} (accuracy {result.accuracy:.4f})")
        model.eval()
        return TrainedModel(model, result, folder)

    prepare_device(device)
    # channels-last: 1.4-2x faster small convs on CPU
    model.to(device=device, memory_format=torch.channels_last)
    objective = _objective(model, data, recipe, guide, student_taps, student_preact, device)
    objective.to(device)
    params = list(model.parameters()) + objective.connector_parameters()
    n = len(data.train_x)
    optimizer = make_optimizer(recipe, params)
    scheduler = make_scheduler(
        recipe, optimizer, recipe.epochs * steps_per_epoch(n, recipe.batch_size)
    )
    generator = torch.Generator().manual_seed(recipe.seed)
    history: dict[str, Any] = {
        "accuracies": [],
        "teachers": [],
        "seconds": 0.0,
        "terms": {},
        "devices": [],
    }
    if (folder / STATE).exists():
        state = load_object(folder / STATE, f"{label} checkpoint")
        try:
            model.load_state_dict(state["model"])
            objective.load_state_dict(state["objective"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            generator.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
            history = state["history"]
            done = len(history["accuracies"])
        except (KeyError, RuntimeError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"{label} checkpoint: {folder / STATE} is not a state of this run "
                f"({type(exc).__name__}: {str(exc).splitlines()[0][:80] if str(exc) else ''}); "
                "delete it to start that run afresh"
            ) from None
        log(f"{label}: resuming {folder} after epoch {done}/{recipe.epochs}")
    guide.restore(list(history["teachers"]))
    kind = augmentation_for(recipe, data.name)
    history.setdefault("devices", [])  # a state written before devices were recorded
    if describe_device(device) not in history["devices"]:
        history["devices"].append(describe_device(device))

    for epoch in range(len(history["accuracies"]) + 1, recipe.epochs + 1):
        name, teacher = guide.teacher(epoch, model)
        started = time.perf_counter()
        terms = _epoch(
            model, teacher, objective, data, recipe, kind, optimizer, scheduler, generator,
            _bar(progress, f"{label} epoch {epoch}/{recipe.epochs}", n, recipe.batch_size),
            device,
        )  # fmt: skip
        synchronize(device)
        history["seconds"] += time.perf_counter() - started
        history["accuracies"].append(evaluate(model, data.val_x, data.val_y))
        history["teachers"].append(name)
        history["terms"] = terms
        save_object(
            {
                "model": model.state_dict(),
                "objective": objective.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "generator": generator.get_state(),
                "torch_rng": torch.get_rng_state(),
                "history": history,
            },
            folder / STATE,
        )
        log(
            f"{label} epoch {epoch}/{recipe.epochs}: val accuracy "
            f"{history['accuracies'][-1]:.4f} (teacher {name}, {history['seconds']:.0f}s)"
        )
        if on_epoch_end is not None:
            on_epoch_end(epoch)

    accuracies = history["accuracies"]
    best = max(range(len(accuracies)), key=accuracies.__getitem__)
    result = RunResult(
        accuracy=accuracies[-1],
        best_accuracy=accuracies[best],
        best_epoch=best + 1,
        epoch_accuracies=accuracies,
        teachers=history["teachers"],
        train_seconds=round(history["seconds"], 2),
        seed=recipe.seed,
        loss_terms=history["terms"],
        train_device=", ".join(history["devices"]) or "cpu",
    )
    model.to(device="cpu", memory_format=torch.contiguous_format)
    save_state_dict(model, folder / WEIGHTS)
    write_json(result.to_dict(), folder / RESULT)  # last: its presence means "finished"
    (folder / STATE).unlink(missing_ok=True)
    model.eval()
    return TrainedModel(model, result, folder)


def _read_result(path: Path, label: str) -> RunResult:
    data = read_json(path, f"{label} result")
    try:
        return RunResult(**data)
    except TypeError:
        raise CheckpointError(
            f"{label} result: {path} is not a run result; delete it to train that run again"
        ) from None


def _claim(folder: Path, settings: dict[str, Any]) -> None:
    """Write the run's settings, or check that a run already there has the same ones."""
    path = folder / SETTINGS
    if path.exists():
        stored = read_json(path, "run settings")
        if stored != settings:
            changed = differing_settings(stored, settings)
            raise SearchKDError(
                f"{folder} holds a run with other settings ({', '.join(changed)} differ); "
                "rerun with the same options to resume, or pass another --out"
            )
        return
    write_json(settings, path)


def _objective(
    model: nn.Module,
    data: Dataset,
    recipe: Recipe,
    guide: Guide,
    student_taps: Sequence[str] = (),
    student_preact: Sequence[str] = (),
    device: torch.device | None = None,
) -> CombinedLoss:
    """The loss of this run, built by :func:`searchkd.proxy.build_objective` as the search's.

    The search builds its loss against the teacher's cached outputs; a retraining runs its
    teacher live (augmentation makes every batch new), so one training image through the
    reference teacher stands in for that cache: the same tap shapes, pre-ReLU taps and
    batch-norm statistics reach the losses, and with them the training labels (CRD), so a
    loss that trains in the search trains here.
    """
    if guide.reference is None and set(recipe.loss) - {"ce"}:
        raise SearchKDError(
            f"loss {sorted(recipe.loss)} needs a teacher, but this run has none; "
            "train with --schedule ce or give a teacher"
        )
    options = {k: dict(v) for k, v in recipe.loss_options.items()}
    if recipe.label_smoothing and "ce" in recipe.loss:
        options.setdefault("ce", {})["label_smoothing"] = recipe.label_smoothing
    teacher = (
        compute_teacher_outputs(
            guide.reference, data.train_x[:1], list(guide.taps), preact=guide.preact, device=device
        )
        if guide.reference is not None
        else TeacherOutputs(logits=torch.empty(0))
    )
    return build_objective(
        model,
        (1, data.in_channels, data.resolution, data.resolution),
        teacher,
        student_taps,
        recipe.loss,
        options,
        data.train_y.cpu(),  # CRD samples its negatives on the CPU
        student_preact,
    )


def _epoch(
    model, teacher, objective, data, recipe, kind, optimizer, scheduler, generator, bar, device,
) -> dict[str, float]:  # fmt: skip
    """One epoch; the losses' taps are hooked (only those: logit losses cost no hooks), and
    each batch's training-set indices reach the losses that keep per-sample memory (CRD)."""
    model.train()
    objective.train()
    sums: dict[str, float] = {}
    batches = 0
    wanted = objective.teacher_taps if teacher is not None else []
    if teacher is not None:
        teacher.to(device=device, memory_format=torch.channels_last)
    student_taps = objective.student_taps
    student_hooks = FeatureTaps(model, student_taps) if student_taps else None
    teacher_hooks = FeatureTaps(teacher, wanted, detach=True) if wanted else None
    with student_hooks or contextlib.nullcontext(), teacher_hooks or contextlib.nullcontext():
        for idx in batch_indices(len(data.train_x), recipe.batch_size, generator):
            x = augment(data.train_x[idx], kind, generator)
            x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            y = data.train_y[idx].to(device, non_blocking=True)
            if teacher is not None:
                teacher.eval()
                with torch.no_grad():
                    target = Outputs(
                        logits=teacher(x),
                        features=dict(teacher_hooks.features) if teacher_hooks else {},
                    )
            else:
                target = Outputs(logits=torch.empty(0))
            logits = model(x)
            student = Outputs(
                logits=logits,
                features=student_hooks.features if student_hooks else {},
                indices=idx.to(device),
            )
            loss, terms = objective(student, target, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            batches += 1
            for key, value in terms.items():
                sums[key] = sums.get(key, 0.0) + value
            bar.update(1)
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}", refresh=False)
    bar.close()
    return {k: v / max(1, batches) for k, v in sums.items()}


def _bar(enabled: bool, description: str, n: int, batch_size: int) -> tqdm:
    return progress_bar(
        total=steps_per_epoch(n, batch_size),
        desc=description,
        disable=not enabled,
        leave=False,
        dynamic_ncols=True,
    )
