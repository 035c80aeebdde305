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
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

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
from searchkd.device import describe_device, prepare_device
from searchkd.distill import CombinedLoss, Outputs
from searchkd.engine import Engine, Teach, labels_only
from searchkd.errors import CheckpointError, SearchKDError
from searchkd.features import FeatureTaps
from searchkd.proxy import TeacherOutputs, build_objective, compute_teacher_outputs
from searchkd.recipe import Recipe

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
        return _reuse(model, folder, label, log)

    prepare_device(device)
    objective = _objective(model, data, recipe, guide, student_taps, student_preact, device)
    engine = Engine(model, objective, data, recipe, device=device, seed=recipe.seed)
    teachers: list[str] = []  # the guide's choice for each epoch
    devices: list[str] = []
    if (folder / STATE).exists():
        teachers, devices = _resume(engine, folder / STATE, label)
        log(f"{label}: resuming {folder} after epoch {len(engine.accuracies)}/{recipe.epochs}")
    guide.restore(list(teachers))
    if describe_device(device) not in devices:
        devices.append(describe_device(device))

    def teacher(epoch: int) -> AbstractContextManager[Teach]:
        name, module = guide.teacher(epoch, model)
        teachers.append(name)
        return _live(module, objective.teacher_taps, device)

    def checkpoint(epoch: int, accuracies: list[float]) -> None:
        state = engine.state_dict()
        state["history"].update(teachers=teachers, devices=devices)
        save_object(state, folder / STATE)
        log(
            f"{label} epoch {epoch}/{recipe.epochs}: val accuracy {accuracies[-1]:.4f} "
            f"(teacher {teachers[-1]}, {engine.seconds:.0f}s)"
        )
        if on_epoch_end is not None:
            on_epoch_end(epoch)

    engine.fit(teacher, checkpoint, label if progress else None)
    return _finish(engine, teachers, devices, folder)


def _finish(engine: Engine, teachers: list[str], devices: list[str], folder: Path) -> TrainedModel:
    """Write the finished run (weights, then its result) in place of its training state."""
    accuracies = engine.accuracies
    best = max(range(len(accuracies)), key=accuracies.__getitem__)
    result = RunResult(
        accuracy=accuracies[-1],
        best_accuracy=accuracies[best],
        best_epoch=best + 1,
        epoch_accuracies=accuracies,
        teachers=teachers,
        train_seconds=round(engine.seconds, 2),
        seed=engine.seed,
        loss_terms=engine.loss_terms,
        train_device=", ".join(devices),
    )
    model = engine.model.to(device="cpu", memory_format=torch.contiguous_format)
    save_state_dict(model, folder / WEIGHTS)
    write_json(result.to_dict(), folder / RESULT)  # last: its presence means "finished"
    (folder / STATE).unlink(missing_ok=True)
    model.eval()
    return TrainedModel(model, result, folder)


def _reuse(model: nn.Module, folder: Path, label: str, log: Callable[[str], None]) -> TrainedModel:
    """The finished run in ``folder``, its weights loaded into ``model``."""
    load_into(model, load_state_dict(folder / WEIGHTS, label), folder / WEIGHTS, label)
    result = _read_result(folder / RESULT, label)
    log(f"{label}: reusing finished run in {folder} (accuracy {result.accuracy:.4f})")
    model.eval()
    return TrainedModel(model, result, folder)


def _resume(engine: Engine, path: Path, label: str) -> tuple[list[str], list[str]]:
    """Restore ``engine`` from the state an interrupted run wrote; the teachers of its
    finished epochs and the devices they ran on."""
    state = load_object(path, f"{label} checkpoint")
    try:
        engine.load_state_dict(state)
        history = state["history"]
        # a state written before devices were recorded has none
        return list(history["teachers"]), list(history.get("devices", []))
    except (KeyError, RuntimeError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{label} checkpoint: {path} is not a state of this run "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:80] if str(exc) else ''}); "
            "delete it to start that run afresh"
        ) from None


@contextlib.contextmanager
def _live(module: nn.Module | None, taps: Sequence[str], device: torch.device) -> Iterator[Teach]:
    """The teacher of one epoch, run on every batch in eval mode without gradients, with
    ``taps`` hooked for that epoch only: the same teacher module guides other runs."""
    if module is None:
        yield labels_only
        return
    module.to(device=device, memory_format=torch.channels_last)
    module.eval()
    with FeatureTaps(module, taps, detach=True) if taps else contextlib.nullcontext() as hooks:

        @torch.no_grad()
        def teach(indices: torch.Tensor, x: torch.Tensor) -> Outputs:
            return Outputs(logits=module(x), features=dict(hooks.features) if hooks else {})

        yield teach


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
