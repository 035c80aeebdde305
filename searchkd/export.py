"""Exported students: one self-describing JSON file per student, with its files beside it.

The file carries the architecture (the same data format the study and the
spaces speak), the input shape and classes it was searched for, and the
metrics the search measured, so :func:`load_student` can rebuild the module
without the study. When a weights file sits beside it (``weights`` key),
it is loaded with ``weights_only=True`` and checked against the architecture.

A trained student (see :mod:`searchkd.retrain`) is exported as a bundle: that JSON, the
weights, an ONNX file verified against PyTorch with ONNX Runtime, and a model card in JSON
and Markdown. A study trial that was never retrained has no weights to ship; exporting it
writes the architecture JSON only and says how to train it.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial
from torch import nn

from search_spaces import load_architecture
from searchkd.checkpoint import (
    check_format_version,
    load_into,
    load_state_dict,
    read_json,
    save_state_dict,
    write_json,
)
from searchkd.errors import ArchitectureError, SearchKDError
from searchkd.names import inside, shell_command
from searchkd.study import is_feasible, is_trained, ranked_students

RETRAIN_PREFIX = "retrain:"  # study user attributes that record retrained students

FORMAT = "searchkd-student"
FORMAT_VERSION = 1


def student_record(study: optuna.Study, trial: FrozenTrial) -> dict[str, Any]:
    attrs = trial.user_attrs
    info = study.user_attrs
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "arch": attrs["arch"],
        "input_shape": info.get("input_shape"),
        "num_classes": info.get("num_classes"),
        "dataset": info.get("dataset"),
        "study": study.study_name,
        "trial": trial.number,
        "data_seed": (info.get("settings") or {}).get("seed", 0),
        "metrics": {
            "accuracy": trial.values[0],
            "accuracy_kind": attrs.get("accuracy_kind", "last_epoch"),
            "best_accuracy": attrs.get("best_accuracy"),
            "macs": attrs.get("macs"),
            "params": attrs.get("params"),
            "latency_ms": attrs.get("latency_ms"),
            "latency_spread_ms": attrs.get("latency_spread_ms"),
            "latency_meter": attrs.get("latency_meter"),
            "proxy_seed": attrs.get("seed"),
            "teacher_val_accuracy": info.get("teacher_val_accuracy"),
        },
    }


def select_trials(
    study: optuna.Study, top: int | None = None, numbers: list[int] | None = None
) -> list[FrozenTrial]:
    """The top-k students (front first, then accuracy), or the named trial numbers."""
    if numbers:
        by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
        chosen = []
        for number in numbers:
            trial = by_number.get(number)
            if trial is None or not is_trained(trial):
                raise SearchKDError(
                    f"trial {number} of study {study.study_name!r} is not a trained candidate; "
                    "see `searchkd pareto` for the trained trials"
                )
            if not is_feasible(trial):
                raise SearchKDError(f"trial {number} is over budget; export a feasible trial")
            chosen.append(trial)
        return chosen
    if top is not None and top < 1:
        raise SearchKDError(f"--top {top}: choose at least one student (--top 1 or more)")
    ranked = ranked_students(study)
    if not ranked:
        raise SearchKDError(f"study {study.study_name!r} has no trained feasible trial yet")
    return ranked[: top or 1]


def retrained_runs(
    study: optuna.Study, trial_number: int, schedule: str | None = None
) -> list[dict[str, Any]]:
    """The float retrainings recorded for a trial (by ``searchkd retrain``; of ``schedule``
    only when given), best accuracy first. Quantised retrainings are recorded too but not
    listed: their int8 bundle is in the retraining folder, and an int8 accuracy must not
    compete with float ones for "best".

    They live in study user attributes because Optuna refuses to change a finished trial.
    """
    prefix = f"{RETRAIN_PREFIX}trial{trial_number}:"
    runs = [
        v
        for k, v in study.user_attrs.items()
        if k.startswith(prefix)
        and schedule in (None, v.get("schedule"))
        and not v.get("quantization")
    ]
    return sorted(runs, key=lambda r: -r["accuracy"])


def export_students(
    study: optuna.Study,
    out_dir: str | Path,
    top: int | None = None,
    numbers: list[int] | None = None,
    schedule: str | None = None,
    log=print,
) -> list[Path]:
    """Export the chosen trials: a full bundle from their best retraining (of ``schedule``
    when given), or the architecture JSON alone when they were never retrained.

    A ``schedule`` that does not exist, or that was never run on a chosen trial, is refused
    before anything is written: exporting the architecture alone instead would hand over
    an untrained student as if it were the retrained one asked for."""
    out = Path(out_dir)
    chosen = select_trials(study, top, numbers)
    plans = [(trial, _retraining_to_export(study, trial, schedule)) for trial in chosen]
    paths = []
    for trial, run in plans:
        stem = f"{study.study_name}-trial{trial.number}"
        if run is not None and Path(run["student"]).is_file():
            count = len(retrained_runs(study, trial.number, schedule))
            selection = (
                f"the most accurate of {count} retrainings of trial {trial.number} by "
                "last-epoch validation accuracy: optimistic, since that accuracy chose it"
                if count > 1
                else f"the only retraining of trial {trial.number}"
            )
            paths.append(rebundle(run["student"], out, f"{stem}-{run['schedule']}", selection))
            continue
        path = inside(out, f"{stem}.json")
        write_json(student_record(study, trial), path)
        retrain = shell_command(
            "searchkd", "retrain", "--study", study.study_name, "--trial", trial.number,
            "--schedule", schedule or "kd", "--epochs", "E",
        )  # fmt: skip
        why = (
            "no retrained weights yet"
            if run is None
            else f"its retrained bundle {run['student']} is gone"
        )
        log(
            f"trial {trial.number}: {why}, wrote its architecture only; train it with "
            f"`{retrain}`, then export again"
        )
        paths.append(path)
    return paths


def _retraining_to_export(
    study: optuna.Study, trial: FrozenTrial, schedule: str | None
) -> dict[str, Any] | None:
    """The best retraining of ``trial`` (by ``schedule`` when given), None when it has none;
    an unknown schedule, or one never run on this trial, is one line naming it."""
    from searchkd.schedules import SCHEDULES

    if schedule is not None and schedule not in SCHEDULES:
        raise SearchKDError(
            f"--schedule {schedule!r}: no such schedule; known schedules: {', '.join(SCHEDULES)}"
        )
    runs = retrained_runs(study, trial.number, schedule)
    if schedule is None or runs:
        return runs[0] if runs else None
    done = sorted({run["schedule"] for run in retrained_runs(study, trial.number)})
    retrain = shell_command(
        "searchkd", "retrain", "--study", study.study_name, "--trial", trial.number,
        "--schedule", schedule, "--epochs", "E",
    )  # fmt: skip
    ran = f"its retrainings: {', '.join(done)}" if done else "it was never retrained"
    raise SearchKDError(
        f"--schedule {schedule}: trial {trial.number} was never retrained with {schedule} "
        f"({ran}); export another schedule, or run `{retrain}` first"
    )


def write_bundle(
    model: nn.Module,
    record: dict[str, Any],
    card: dict[str, Any],
    out_dir: str | Path,
    stem: str,
    images: torch.Tensor | None = None,
) -> Path:
    """Write weights, ONNX (checked), model card and the student JSON; return the JSON path.

    ``record`` is a student record without files; ``card`` a model card without costs,
    latency and ONNX check, which are measured here on the module being shipped. A
    quantised student (:mod:`searchkd.quantize`) ships its int8 ONNX model, checked on
    ``images`` when given, and the record says how to rebuild it.
    """
    from searchkd.model_card import FORMAT as CARD_FORMAT
    from searchkd.model_card import card_markdown
    from searchkd.quantize import quant_spec

    out = Path(out_dir)
    inside(out, f"{stem}.json")  # every file below shares the stem: none lands elsewhere
    shape = tuple(record["input_shape"])
    model = model.eval().to(memory_format=torch.contiguous_format)
    save_state_dict(model, out / f"{stem}.pt")
    spec = quant_spec(model)
    if spec is None:
        measured = _float_measurements(model, shape, out / f"{stem}.onnx")
    else:
        from searchkd.quantize.bundle import int8_measurements

        measured = int8_measurements(model, shape, out / f"{stem}.onnx", images)
        record = {**record, "quantization": spec.to_dict()}
    card = {
        **card,
        "format": CARD_FORMAT,
        "format_version": FORMAT_VERSION,
        "name": stem,
        **measured,
    }
    write_json(card, out / f"{stem}.card.json")
    (out / f"{stem}.card.md").write_text(card_markdown(card))
    accuracy = card["accuracy"]
    record = {
        **record,
        "format": FORMAT,  # whatever the source was, this file is written in this format
        "format_version": FORMAT_VERSION,
        "weights": f"{stem}.pt",
        "onnx": f"{stem}.onnx",
        "model_card": f"{stem}.card.json",
        # the shipped weights' numbers only: the search's 2-epoch proxy accuracy and its
        # latency meter are kept apart, so nobody reads a proxy number as the model's
        "metrics": {
            "accuracy": accuracy["value"],
            "accuracy_kind": accuracy["kind"],
            "split": accuracy["split"],
            "best_accuracy": accuracy["best_epoch_accuracy"],
            "best_epoch": accuracy["best_epoch"],
            "epochs": accuracy["epochs"],
            "ensemble_accuracy": accuracy.get("ensemble_accuracy"),
            "macs": card["macs"],
            "params": card["params"],
        },
        "search_metrics": search_metrics(record),
    }
    path = out / f"{stem}.json"
    write_json(record, path)
    return path


def _float_measurements(model: nn.Module, shape: tuple[int, ...], onnx_path: Path) -> dict:
    """The card's size, latency and ONNX check of a float student."""
    from searchkd.cost import count_macs, count_params
    from searchkd.meters import Timing
    from searchkd.onnx_export import export_onnx, onnx_latency_ms
    from searchkd.torch_meter import TorchLatencyMeter

    check = export_onnx(model, shape, onnx_path)
    meter = TorchLatencyMeter(timing=Timing(threads=1, warmup=5, runs=20, repeats=3))
    torch_latency = meter.measure(model, shape)
    return {
        "params": count_params(model),
        "macs": count_macs(model, shape),
        "latency": [
            {
                "meter": torch_latency.meter,
                "median_ms": round(torch_latency.median_ms, 4),
                "spread_ms": round(torch_latency.spread_ms, 4),
                "runs": meter.timing.runs * meter.timing.repeats,
            },
            {
                "meter": "onnxruntime-cpu:1t",
                "median_ms": round(onnx_latency_ms(onnx_path, shape), 4),
                "runs": 50,
            },
        ],
        "onnx": check.to_dict(),
    }


def search_metrics(record: dict[str, Any]) -> dict[str, Any]:
    """What the search measured for this architecture: a study record's ``metrics``, or the
    ``search_metrics`` an already trained bundle carries them under."""
    if "search_metrics" in record:
        return record["search_metrics"] or {}
    return record.get("metrics") or {}


def rebundle(
    student_json: str | Path, out_dir: str | Path, stem: str, selection: str | None = None
) -> Path:
    """Export an already trained bundle again under ``out_dir`` (weights checked on load).

    ``selection`` says how this bundle was chosen among several (the model card and the
    student record keep it), so a reader knows when the accuracy reported also chose it."""
    record = read_json(student_json, "student file")
    card = read_json(Path(student_json).parent / record["model_card"], "model card")
    model = load_student(student_json)
    record = {k: v for k, v in record.items() if k not in ("weights", "onnx", "model_card")}
    card = {k: v for k, v in card.items() if k not in ("latency", "onnx", "params", "macs")}
    if selection is not None:
        record["selection"] = card["selection"] = selection
    return write_bundle(model, record, card, out_dir, stem)


def load_student(path: str | Path, weights: bool = True) -> nn.Module:
    """Rebuild an exported student (with its weights when the file names them).

    Raises a one-line :class:`SearchKDError` for a corrupt file, an architecture
    from an unknown space or of the wrong form, or weights that do not fit.
    """
    path = Path(path)
    record = read_json(path, "student file")
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ArchitectureError(f"{path} is not a searchkd student file (no format: {FORMAT})")
    check_format_version(record, path, "student file", FORMAT_VERSION)
    for key in ("arch", "input_shape", "num_classes"):
        if record.get(key) is None:
            raise ArchitectureError(f"{path} lacks {key!r}; re-export the student")
    shape, classes, weights_name = (
        record["input_shape"],
        record["num_classes"],
        record.get("weights"),
    )
    if not (isinstance(shape, list) and len(shape) == 3 and all(_positive_int(v) for v in shape)):
        raise ArchitectureError(f"{path}: input_shape {shape!r} is not [C, H, W]; re-export it")
    if not _positive_int(classes):
        raise ArchitectureError(f"{path}: num_classes {classes!r} is not a count; re-export it")
    if weights_name is not None and not isinstance(weights_name, str):
        raise ArchitectureError(f"{path}: weights {weights_name!r} is not a file name; re-export")
    space, arch = load_architecture(record["arch"])
    model = space.build(arch, shape[0], shape[1], classes)
    if record.get("quantization") is not None:  # rebuilt as trained: fake-quantised
        from searchkd.quantize import QuantSpec, quantize_for_training

        spec = QuantSpec.from_dict(record["quantization"], f"{path}: quantization")
        model = quantize_for_training(model, spec)
    if weights and record.get("weights"):
        weights_path = path.parent / record["weights"]
        load_into(
            model, load_state_dict(weights_path, "student weights"), weights_path, "student weights"
        )
    elif weights:  # a search exports architectures; a user may expect a trained model
        warnings.warn(
            f"{path} holds an architecture only: the model has fresh random weights; train "
            f"it with `{shell_command('searchkd', 'retrain', '--arch', path, '--epochs', 'E')}` "
            "(or pass weights=False)",
            stacklevel=3,  # the caller of searchkd.load_student, the public entry
        )
    model.eval()
    return model


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
