"""The teacher: loaded from a checkpoint, built by a user factory, or trained here.

A teacher trained by searchkd keeps checkpoints along its training route
(``route/epoch_NNN.pt``): retraining schedules such as RCO distil from those
intermediate teachers. In the default flow the teacher is trained once and
reused by every later search with the same data, seed and recipe: its folder
name is a hash of exactly those inputs.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from search_spaces import get_space, load_architecture
from searchkd.checkpoint import load_into, load_state_dict, read_json, save_state_dict, write_json
from searchkd.config import TeacherConfig
from searchkd.cost import check_fits_memory
from searchkd.data import Dataset
from searchkd.device import describe_device, prepare_device
from searchkd.distill import build_loss
from searchkd.engine import Engine
from searchkd.errors import CheckpointError, SearchKDError
from searchkd.recipe import SHIFT_PIXELS, Recipe

CHECKPOINT = "teacher.pt"
METADATA = "teacher.json"


@dataclass
class Teacher:
    """A trained network plus what distillation needs to know about it."""

    model: nn.Module
    taps: list[str]
    arch: dict[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    folder: Path | None = None

    @property
    def route(self) -> list[Path]:
        """Checkpoints along the teacher's training route, oldest first."""
        if self.folder is None:
            return []
        return [self.folder / p for p in self.meta.get("route", [])]

    def check_fits(self, data: Dataset) -> None:
        expected = self.meta.get("input_shape")
        actual = [data.in_channels, data.resolution, data.resolution]
        if expected is not None and list(expected) != actual:
            raise CheckpointError(
                f"teacher expects input {_shape(expected)} but dataset {data.name} has "
                f"{_shape(actual)}; use a teacher trained on this dataset"
            )
        classes = self.meta.get("num_classes")
        if classes is not None and classes != data.num_classes:
            raise CheckpointError(
                f"teacher predicts {classes} classes but dataset {data.name} has "
                f"{data.num_classes}; use a teacher trained on this dataset"
            )


def _shape(shape) -> str:
    return "x".join(str(s) for s in shape)


def resolve_arch(arch: str, space_name: str) -> dict[str, Any]:
    """A canonical member name of the space, or a path to an architecture JSON file."""
    space = get_space(space_name)
    members = space.canonical()
    if arch in members:
        return members[arch]
    path = Path(arch)
    if path.suffix == ".json" or path.exists():
        data = read_json(path, "teacher architecture")
        data = data.get("arch", data) if isinstance(data, dict) else data
        load_architecture(data)
        return data
    raise SearchKDError(
        f"teacher arch {arch!r} is neither a member of the {space_name} space "
        f"({', '.join(members)}) nor an architecture JSON file"
    )


def untrained_teacher(config: TeacherConfig, data: Dataset) -> nn.Module:
    """The teacher's network before training: its MACs, parameters and latency are the
    trained network's, so a search checks its budget on it before minutes of training."""
    space, arch = load_architecture(resolve_arch(config.arch, config.space))
    return space.build(arch, data.in_channels, data.resolution, data.num_classes)


def train_teacher(
    arch: dict[str, Any],
    data: Dataset,
    out_dir: str | Path,
    epochs: int,
    seed: int = 0,
    lr: float = 0.1,
    batch_size: int = 128,
    log: Callable[[str], None] = print,
    device: torch.device | None = None,
) -> Teacher:
    """Train a teacher with :func:`teacher_recipe`.

    Saves a checkpoint after every epoch (the route) and the final weights with
    a metadata file; all writes are atomic, so an interrupted run leaves either
    the previous state or the new one.

    ``device`` (default: the CPU) is where it trains; batches are drawn and shifted on the
    CPU from ``seed`` and copied over. The teacher comes back on the CPU, as a loaded one
    does, and its metadata names the device (``train_device``).
    """
    device = device or torch.device("cpu")
    prepare_device(device)
    space, arch = load_architecture(arch)
    shape = (data.in_channels, data.resolution, data.resolution)
    check_fits_memory(
        space, arch, shape, data.num_classes, batch_size, device, "teacher architecture"
    )
    out = Path(out_dir)
    torch.manual_seed(seed)  # on the CPU: the same initial weights on every device
    model = space.build(arch, data.in_channels, data.resolution, data.num_classes)
    recipe = teacher_recipe(epochs, lr, batch_size)
    objective = build_loss(recipe.loss, recipe.loss_options, {}, {})
    engine = Engine(model, objective, data, recipe, device=device, seed=seed)
    route: list[str] = []
    started = time.perf_counter()

    def keep_route(epoch: int, accuracies: list[float]) -> None:
        name = f"route/epoch_{epoch:03d}.pt"
        save_state_dict(model, out / name)
        route.append(name)
        log(
            f"teacher epoch {epoch}/{epochs}: val accuracy {accuracies[-1]:.4f} "
            f"({time.perf_counter() - started:.0f}s)"
        )

    history = engine.fit(on_epoch=keep_route)
    meta = {
        "arch": arch,
        "input_shape": [data.in_channels, data.resolution, data.resolution],
        "num_classes": data.num_classes,
        "dataset": data.name,
        "seed": seed,
        "epochs": epochs,
        "recipe": _describe(recipe),
        "val_accuracy": history[-1],
        "accuracy_kind": "last_epoch",
        "val_accuracy_per_epoch": history,
        "train_seconds": round(time.perf_counter() - started, 2),
        "train_device": describe_device(device),
        "route": route,
        "taps": space.feature_taps(arch),
    }
    save_state_dict(model, out / CHECKPOINT)
    write_json(meta, out / METADATA)  # written last: its presence means "complete"
    model.eval().to("cpu")
    return Teacher(model=model, taps=space.feature_taps(arch), arch=arch, meta=meta, folder=out)


def teacher_recipe(epochs: int, lr: float, batch_size: int) -> Recipe:
    """Cross-entropy, SGD with Nesterov momentum and a cosine decay per step, and ±2 px
    shifts: cheap augmentation that gives the teacher headroom, whatever the data."""
    return Recipe(
        epochs=epochs,
        lr=lr,
        momentum=0.9,
        weight_decay=5e-4,
        batch_size=batch_size,
        augment="shift",
        loss={"ce": 1.0},
    )


def _describe(recipe: Recipe) -> dict[str, Any]:
    """The recipe as a teacher's metadata states it."""
    return {
        "optimizer": "sgd-nesterov",
        "lr": recipe.learning_rate,
        "batch_size": recipe.batch_size,
        "schedule": recipe.lr_schedule,
        "weight_decay": recipe.decay,
        "shift_pixels": SHIFT_PIXELS,
    }


def teacher_files(path: str | Path) -> tuple[Path, Path, dict[str, Any]]:
    """The checkpoint, folder and metadata of a teacher written by :func:`train_teacher`
    (given its folder or its teacher.pt), checked without loading the weights."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    checkpoint = path if path.is_file() else folder / CHECKPOINT
    if not checkpoint.exists():
        raise CheckpointError(
            f"teacher: no checkpoint at {checkpoint}; train one with "
            "`searchkd teacher train` or pass the right path"
        )
    if not (folder / METADATA).is_file():
        raise CheckpointError(
            f"teacher: no {METADATA} beside {checkpoint.resolve()}; a searchkd teacher is the "
            f"folder `searchkd teacher train` writes ({CHECKPOINT} + {METADATA}); for your own "
            "model use teacher.factory"
        )
    meta = read_json(folder / METADATA, "teacher metadata")
    if not isinstance(meta, dict) or "arch" not in meta:
        raise CheckpointError(f"teacher: {folder / METADATA} has no 'arch'; re-create the teacher")
    return checkpoint, folder, meta


def check_teacher_config(config: TeacherConfig) -> None:
    """What can be wrong with a teacher setting before anything trains: a misspelt
    architecture, a checkpoint without its metadata. (A factory is the user's code and
    is checked when it is called.)"""
    if config.checkpoint and not config.factory:
        teacher_files(config.checkpoint)
    elif not config.factory:
        resolve_arch(config.arch, config.space)


def load_teacher(path: str | Path) -> Teacher:
    """Load a teacher written by :func:`train_teacher` (its folder or its teacher.pt)."""
    checkpoint, folder, meta = teacher_files(path)
    space, arch = load_architecture(meta["arch"])
    shape = meta.get("input_shape") or [1, 40, 40]
    model = space.build(arch, shape[0], shape[1], meta.get("num_classes", 10))
    load_into(model, load_state_dict(checkpoint, "teacher"), checkpoint, "teacher")
    model.eval()
    return Teacher(model=model, taps=space.feature_taps(arch), arch=arch, meta=meta, folder=folder)


def teacher_from_factory(
    spec: str, data: Dataset, checkpoint: str | None = None, taps: list[str] | None = None
) -> Teacher:
    """Build a user's teacher from ``module:function``, called as
    ``function(in_channels=C, num_classes=K)``; optionally load a state dict into it.
    User code is imported only because the user named it here."""
    module_name, _, function_name = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as exc:
        raise SearchKDError(f"teacher factory {spec!r} cannot be imported ({exc})") from None
    model = factory(in_channels=data.in_channels, num_classes=data.num_classes)
    if not isinstance(model, nn.Module):
        raise SearchKDError(
            f"teacher factory {spec!r} returned {type(model).__name__}, not a torch.nn.Module"
        )
    if checkpoint:
        load_into(model, load_state_dict(checkpoint, "teacher"), checkpoint, "teacher")
    model.eval()
    meta = {
        "factory": spec,
        "checkpoint": checkpoint,
        "input_shape": [data.in_channels, data.resolution, data.resolution],
        "num_classes": data.num_classes,
    }
    return Teacher(model=model, taps=list(taps or []), meta=meta)


def default_teacher_dir(
    config: TeacherConfig, data: Dataset, seed: int, run_dir: str | Path
) -> Path:
    """Folder of the teacher for exactly this data, seed, architecture and recipe."""
    arch = resolve_arch(config.arch, config.space)
    key = json.dumps(
        {
            "arch": arch,
            "dataset": data.name,
            "seed": seed,
            "epochs": config.epochs,
            "lr": config.lr,
            "batch_size": config.batch_size,
            "shape": list(data.train_x.shape),
        },
        sort_keys=True,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    return Path(run_dir) / "teachers" / f"{data.name}-{digest}"


def ready_teacher(
    config: TeacherConfig,
    data: Dataset,
    seed: int,
    run_dir: str | Path,
    log: Callable[[str], None] = print,
) -> Teacher | None:
    """The teacher when it needs no training (a named checkpoint, a user factory, or one
    trained before and reused), checked against the data; None when it must be trained.

    A search loads these before it opens its study, so a wrong file or a teacher made for
    other data fails without leaving an empty study behind."""
    seed = seed if config.seed is None else config.seed
    if config.factory:
        teacher = teacher_from_factory(config.factory, data, config.checkpoint, config.taps)
    elif config.checkpoint:
        teacher = load_teacher(config.checkpoint)
    else:
        folder = default_teacher_dir(config, data, seed, run_dir)
        if not (folder / METADATA).exists():
            return None
        teacher = load_teacher(folder)
        log(
            f"teacher: reusing {folder} (val accuracy "
            f"{teacher.meta.get('val_accuracy', float('nan')):.4f})"
        )
    teacher.check_fits(data)
    return teacher


def resolve_teacher(
    config: TeacherConfig,
    data: Dataset,
    seed: int,
    run_dir: str | Path,
    log: Callable[[str], None] = print,
    device: torch.device | None = None,
) -> Teacher:
    """The teacher for a search: named checkpoint, user factory, or trained once and reused.

    ``config.seed``, when set, replaces the search's ``seed`` for training (ensemble members
    of one architecture differ by it). ``device``: where a teacher that must be trained
    trains (a reused one is reused whatever device trained it)."""
    teacher = ready_teacher(config, data, seed, run_dir, log)
    if teacher is not None:
        return teacher
    seed = seed if config.seed is None else config.seed
    folder = default_teacher_dir(config, data, seed, run_dir)
    log(f"teacher: training {config.arch} for {config.epochs} epochs into {folder}")
    arch = resolve_arch(config.arch, config.space)
    teacher = train_teacher(
        arch, data, folder, config.epochs, seed, config.lr, config.batch_size, log, device
    )
    teacher.check_fits(data)
    return teacher
