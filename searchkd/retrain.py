"""Retraining: take a searched student, train it fully with a schedule, export it.

The inputs come from the study (a trial's architecture, the dataset and seed the search
used, its teacher and loss) or from an exported student file. The teacher is the study's
(or ``--teacher``), optionally stopped early at one of its route checkpoints. The output
is a bundle (:func:`searchkd.export.write_bundle`) in the retraining folder, and for a
study trial a summary in the study's user attributes, which ``searchkd export`` reads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch
from torch import nn

import searchkd
from search_spaces import load_architecture
from searchkd.checkpoint import check_format_version, load_into, load_state_dict, read_json
from searchkd.config import TeacherConfig
from searchkd.cost import check_fits_memory
from searchkd.data import Dataset, load_dataset
from searchkd.errors import ArchitectureError, SearchKDError
from searchkd.export import (
    FORMAT,
    FORMAT_VERSION,
    RETRAIN_PREFIX,
    search_metrics,
    select_trials,
    student_record,
    write_bundle,
)
from searchkd.names import inside
from searchkd.quantize import QuantSpec, quantize_for_training
from searchkd.quantize.spec import VARIANTS
from searchkd.recipe import Recipe, augmentation_for
from searchkd.schedules import (
    SCHEDULES,
    NamedTeacher,
    ScheduleContext,
    ScheduleOptions,
    ScheduleResult,
    fingerprint,
)
from searchkd.teacher import Teacher, load_teacher, resolve_teacher
from searchkd.trainer import RunResult
from searchkd.trials import summarize

CHECK_IMAGES = 256  # validation images the int8 ONNX model is checked on


@dataclass
class StudentSource:
    """A student to retrain and where it came from."""

    record: dict[str, Any]  # a student record (export format), without files
    stem: str
    study: optuna.Study | None = None
    settings: dict[str, Any] = field(default_factory=dict)  # the search's settings, if any

    @property
    def arch(self) -> dict[str, Any]:
        return self.record["arch"]


def students_from_study(
    study: optuna.Study, numbers: list[int] | None = None, top: int | None = None
) -> list[StudentSource]:
    settings = study.user_attrs.get("settings") or {}
    return [
        StudentSource(
            student_record(study, t), f"{study.study_name}-trial{t.number}", study, settings
        )
        for t in select_trials(study, top, numbers)
    ]


def student_from_file(path: str | Path) -> StudentSource:
    """An exported student JSON, or a bare architecture JSON (then --dataset says the rest)."""
    path = Path(path)
    data = read_json(path, "student file")
    if not isinstance(data, dict):
        raise ArchitectureError(f"{path} holds no architecture; pass an exported student JSON")
    if data.get("format") == FORMAT:
        check_format_version(data, path, "student file", FORMAT_VERSION)
    else:  # a bare architecture, wrapped as a student record
        data = {"format": FORMAT, "format_version": FORMAT_VERSION, "arch": data}
    record = {k: v for k, v in data.items() if k not in ("weights", "onnx", "model_card")}
    load_architecture(record.get("arch"))
    return StudentSource(record, path.stem)


@dataclass
class Outcome:
    student: Path  # the exported student JSON
    accuracy: float
    best_accuracy: float
    details: dict[str, Any]


def load_data(source: StudentSource, dataset: str | None, data_dir: str | None) -> Dataset:
    """The dataset and split the student was searched on (the teacher never saw its val)."""
    name = dataset or source.record.get("dataset") or source.settings.get("dataset")
    if name is None:
        raise SearchKDError(f"{source.stem}: no dataset recorded; pass --dataset")
    seed = source.settings.get("seed", source.record.get("data_seed", 0))
    return load_dataset(
        name,
        data_dir or source.settings.get("data_dir"),
        seed,
        source.settings.get("image_size"),
    )


def load_retrain_teacher(
    source: StudentSource,
    data: Dataset,
    run_dir: str | Path,
    teacher: str | None = None,
    teacher_epoch: int | None = None,
    log: Callable[[str], None] = print,
    device: torch.device | None = None,
) -> tuple[NamedTeacher, list[Path], dict[str, Any]]:
    """The teacher (and its route) for a student: ``teacher`` if given, else the search's.

    With ``teacher_epoch`` the route checkpoint of that epoch is the teacher (an early-
    stopped teacher, Cho & Hariharan 2019); its route is cut there. ``device``: where the
    search's teacher trains if it was never trained (it is reused otherwise).
    """
    if teacher:
        full = load_teacher(teacher)
    else:
        config = TeacherConfig.model_validate(source.settings.get("teacher", {}))
        seed = source.settings.get("seed", source.record.get("data_seed", 0))
        full = resolve_teacher(config, data, seed, run_dir, log, device)
    full.check_fits(data)
    route = full.route
    model = full.model
    if teacher_epoch is not None:
        model, route = _early_stopped(full, teacher_epoch, data)
    name = f"teacher@{fingerprint(model)}"
    info = {
        "name": name,
        "folder": str(full.folder) if full.folder else None,
        "arch": full.arch,
        "summary": summarize(full.arch) if full.arch else None,
        "epoch": teacher_epoch or full.meta.get("epochs"),
        "val_accuracy": _teacher_accuracy(full, teacher_epoch),
        "accuracy_kind": "last_epoch" if teacher_epoch is None else f"epoch {teacher_epoch}",
    }
    return NamedTeacher(name, model, full.taps, full.arch), route, info


def _early_stopped(full: Teacher, epoch: int, data: Dataset) -> tuple[nn.Module, list[Path]]:
    if not full.route or full.arch is None:
        raise SearchKDError(
            "--teacher-epoch needs a teacher with a training route; train one with "
            "`searchkd teacher train --arch ARCH --epochs N --out DIR` and pass --teacher DIR"
        )
    if not 1 <= epoch <= len(full.route):
        raise SearchKDError(
            f"--teacher-epoch {epoch}: the teacher's route has epochs 1..{len(full.route)}"
        )
    space, arch = load_architecture(full.arch)
    model = space.build(arch, data.in_channels, data.resolution, data.num_classes)
    path = full.route[epoch - 1]
    load_into(model, load_state_dict(path, "route checkpoint"), path, "route checkpoint")
    return model.eval(), full.route[:epoch]


def _teacher_accuracy(full: Teacher, epoch: int | None) -> float | None:
    if epoch is None:
        return full.meta.get("val_accuracy")
    history = full.meta.get("val_accuracy_per_epoch") or []
    return history[epoch - 1] if len(history) >= epoch else None


def retrain_student(
    source: StudentSource,
    schedule: str,
    recipe: Recipe,
    options: ScheduleOptions,
    data: Dataset,
    teacher: NamedTeacher,
    route: list[Path],
    teacher_info: dict[str, Any],
    out_root: str | Path,
    cache: str | Path,
    progress: bool = True,
    log: Callable[[str], None] = print,
    device: torch.device | None = None,
    quantization: QuantSpec | None = None,
    init_from: str | Path | None = None,
) -> Outcome:
    """Run ``schedule`` for one student on ``device`` (default: the CPU), export the bundle,
    record the result in the study. The exported bundle is the same whichever device
    trained; its model card says which (``train_device``).

    With ``quantization`` the student trains quantisation-aware (:class:`QuantizedContext`)
    from the full-precision teacher, Apprentice's setting (Mishra & Marr 2018), in run
    folders of its own, and ships as an int8 ONNX model. ``init_from`` (a trained float
    student of the same architecture) starts that training from its weights instead of a
    fresh initialisation; the run folders are keyed by those weights."""
    if schedule not in SCHEDULES:
        raise SearchKDError(f"unknown schedule {schedule!r}; use one of {', '.join(SCHEDULES)}")
    space, arch = load_architecture(source.arch)
    shape = [data.in_channels, data.resolution, data.resolution]
    if source.record.get("input_shape") not in (None, shape):
        raise SearchKDError(
            f"{source.stem} was searched for input {source.record['input_shape']}, but "
            f"{data.name} gives {shape}; pass the dataset it was searched on"
        )
    check_fits_memory(
        space, arch, tuple(shape), data.num_classes, recipe.batch_size,
        device or torch.device("cpu"), f"student {source.stem}",
    )  # fmt: skip
    # Runs of all schedules for one student and seed share a folder: a finished run with the
    # same settings is reused (BAN's first generation is the KD student).
    folder = inside(out_root, f"{source.stem}-seed{recipe.seed}")
    init, init_tag = None, ""
    if init_from is not None:
        if quantization is None:
            raise SearchKDError(
                "--init-from starts quantisation-aware training from a trained float "
                "student; add --quantize int8"
            )
        init = float_init(init_from, arch)
        init_tag = f"-from{fingerprint_state(init)}"
    variant = schedule if quantization is None else f"{schedule}-{quantization.tag}{init_tag}"
    runs = folder / ("runs" if quantization is None else f"runs-{quantization.tag}{init_tag}")
    common = (
        arch, data, teacher, route, recipe, options, runs, Path(cache), progress, log,
        device or torch.device("cpu"),
    )  # fmt: skip
    ctx = (
        ScheduleContext(*common)
        if quantization is None
        else QuantizedContext(*common, quantization, init)
    )
    folder = folder / variant
    log(f"{source.stem}: {variant} for {recipe.epochs} epochs, seed {recipe.seed} -> {folder}")
    outcome = SCHEDULES[schedule](ctx)
    result = outcome.result
    record = {
        **source.record,
        "dataset": data.name,
        "input_shape": shape,
        "num_classes": data.num_classes,
    }
    card = _model_card(source, schedule, options, recipe, data, teacher_info, outcome)
    if quantization is not None:
        card["quantization"] = _quantization_card(quantization, recipe, data)
        if init_from is not None:
            card["quantization"]["init_from"] = str(init_from)
            card["quantization"]["method"] += "; started from the trained float student's weights"
    path = write_bundle(
        outcome.model, record, card, folder, f"{source.stem}-{variant}", data.val_x[:CHECK_IMAGES]
    )
    if source.study is not None:
        key = f"{RETRAIN_PREFIX}trial{source.record['trial']}:{schedule}:seed{recipe.seed}"
        if quantization is not None:
            key += f":{quantization.tag}"
        summary = _summary(schedule, recipe, result, teacher.name, path)
        summary["quantization"] = None if quantization is None else quantization.tag
        source.study.set_user_attr(key, summary)
    log(
        f"{source.stem}: {variant} val accuracy {result.accuracy:.4f} (last epoch; best "
        f"{result.best_accuracy:.4f} at epoch {result.best_epoch}); exported {path}"
    )
    return Outcome(path, result.accuracy, result.best_accuracy, outcome.details)


def _model_card(
    source: StudentSource,
    schedule: str,
    options: ScheduleOptions,
    recipe: Recipe,
    data: Dataset,
    teacher_info: dict[str, Any],
    outcome: ScheduleResult,
) -> dict[str, Any]:
    """What the bundle's model card states: how the student was trained and what it scored."""
    space, arch = load_architecture(source.arch)
    result = outcome.result
    accuracy = {
        "value": result.accuracy,
        "kind": result.accuracy_kind,
        "split": "validation",
        "best_epoch_accuracy": result.best_accuracy,
        "best_epoch": result.best_epoch,
        "epochs": len(result.epoch_accuracies),
        "ensemble_accuracy": outcome.details.get("ensemble_accuracy"),
    }
    return {
        "searchkd_version": searchkd.__version__,
        "architecture": {"space": space.name, "summary": summarize(arch), "arch": arch},
        "input_shape": [data.in_channels, data.resolution, data.resolution],
        "num_classes": data.num_classes,
        "dataset": data.name,
        "accuracy": accuracy,
        "teacher": teacher_info,
        "schedule": {"name": schedule, **options.describe(schedule), "details": outcome.details},
        "recipe": {**recipe.to_dict(), "augmentation": augmentation_for(recipe, data.name)},
        "seeds": {
            "training": recipe.seed,
            "data": source.settings.get("seed", source.record.get("data_seed", 0)),
            "search_proxy": search_metrics(source.record).get("proxy_seed"),
        },
        "source": {"study": source.record.get("study"), "trial": source.record.get("trial")},
        "train_seconds": result.train_seconds,
        "train_device": result.train_device,
    }


def _summary(
    schedule: str, recipe: Recipe, result: RunResult, teacher: str, path: Path
) -> dict[str, Any]:
    """A retraining as the study records it, where ``searchkd export`` reads it."""
    return {
        "schedule": schedule,
        "seed": recipe.seed,
        "epochs": recipe.epochs,
        "accuracy": result.accuracy,
        "accuracy_kind": result.accuracy_kind,
        "best_accuracy": result.best_accuracy,
        "best_epoch": result.best_epoch,
        "teacher": teacher,
        "train_device": result.train_device,
        "student": str(path.resolve()),
    }


def _quantization_card(quantization: QuantSpec, recipe: Recipe, data: Dataset) -> dict[str, Any]:
    """How a quantisation-aware student was quantised, for its model card."""
    return {
        **quantization.to_dict(),
        "precision": quantization.precision,
        "method": f"quantisation-aware training: {VARIANTS[quantization.variant]}",
        "calibration": (
            f"activation ranges: moving average (momentum {quantization.momentum}) of each "
            f"training batch's min and max, over the {recipe.epochs} epochs on the "
            f"{data.name} training split; int8 check on the first "
            f"{min(len(data.val_x), CHECK_IMAGES)} validation images"
        ),
    }


@dataclass
class QuantizedContext(ScheduleContext):
    """A schedule context whose networks of the student's architecture are built
    quantisation-aware (every generation of BAN, RCO's student); other architectures (TAKD's
    assistants) and the teacher stay full precision."""

    quantization: QuantSpec = field(default_factory=QuantSpec)
    init: dict[str, torch.Tensor] | None = None  # float weights the student starts from

    def build(self, arch: dict[str, Any], seed: int) -> nn.Module:
        model = super().build(arch, seed)
        if arch != self.arch:
            return model
        if self.init is not None:
            model.load_state_dict(self.init)
        return quantize_for_training(model, self.quantization)


def float_init(path: str | Path, arch: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The weights of the trained float student at ``path`` for quantisation-aware training
    of ``arch`` to start from; one line when it has none, is quantised already or is
    another architecture."""
    from searchkd.export import load_student

    record = read_json(Path(path), "student file")
    if not isinstance(record, dict) or not record.get("weights"):
        raise SearchKDError(
            f"--init-from {path}: no trained weights there; give the JSON of a retrained "
            "float student"
        )
    if record.get("quantization"):
        raise SearchKDError(f"--init-from {path} is quantised already; start from a float student")
    _, own = load_architecture(record.get("arch"))
    if own != arch:
        raise SearchKDError(
            f"--init-from {path} is another architecture ({summarize(own)}) than the "
            f"student retrained ({summarize(arch)})"
        )
    return load_student(path).state_dict()


def fingerprint_state(state: dict[str, torch.Tensor]) -> str:
    """A short hash of a state dict, for the folder names of runs that start from it."""
    import hashlib

    digest = hashlib.sha256()
    for key, tensor in sorted(state.items()):
        digest.update(key.encode())
        digest.update(tensor.detach().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()[:8]


def recipe_from(source: StudentSource, **overrides: Any) -> Recipe:
    """The recipe with the search's loss weights unless overridden (None = default)."""
    loss = source.settings.get("loss") or {}
    values = {"loss": loss.get("weights"), "loss_options": loss.get("options")}
    values.update(overrides)
    if overrides.get("loss") is not None and values["loss_options"]:
        # keep the search's options (e.g. the KD temperature) only for losses still weighted
        values["loss_options"] = {
            k: v for k, v in values["loss_options"].items() if k in values["loss"]
        }
    return Recipe(**{k: v for k, v in values.items() if v is not None})
