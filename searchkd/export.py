"""Exported students: one self-describing JSON file per student.

The file carries the architecture (the same data format the study and the
spaces speak), the input shape and classes it was searched for, and the
metrics the search measured, so :func:`load_student` can rebuild the module
without the study. When a weights file sits beside it (``weights`` key),
it is loaded with ``weights_only=True`` and checked against the architecture.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial
from torch import nn

from search_spaces import load_architecture
from searchkd.checkpoint import load_into, load_state_dict, read_json, write_json
from searchkd.errors import ArchitectureError, SearchKDError
from searchkd.study import is_feasible, is_trained, ranked_students

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
                    "see `searchkd pareto` for the trials you can export"
                )
            if not is_feasible(trial):
                raise SearchKDError(f"trial {number} is over budget; export a feasible trial")
            chosen.append(trial)
        return chosen
    if top is not None and top < 1:
        raise SearchKDError(f"--top {top}: export at least one student (--top 1 or more)")
    ranked = ranked_students(study)
    if not ranked:
        raise SearchKDError(f"study {study.study_name!r} has no trained feasible trial yet")
    return ranked[: top or 1]


def export_students(
    study: optuna.Study,
    out_dir: str | Path,
    top: int | None = None,
    numbers: list[int] | None = None,
) -> list[Path]:
    out = Path(out_dir)
    paths = []
    for trial in select_trials(study, top, numbers):
        path = out / f"{study.study_name}-trial{trial.number}.json"
        write_json(student_record(study, trial), path)
        paths.append(path)
    return paths


def load_student(path: str | Path, weights: bool = True) -> nn.Module:
    """Rebuild an exported student (with its weights when the file names them).

    Raises a one-line :class:`SearchKDError` for a corrupt file, an architecture
    from an unknown space or of the wrong form, or weights that do not fit.
    """
    path = Path(path)
    record = read_json(path, "student file")
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ArchitectureError(f"{path} is not a searchkd student file (no format: {FORMAT})")
    for key in ("arch", "input_shape", "num_classes"):
        if record.get(key) is None:
            raise ArchitectureError(f"{path} lacks {key!r}; re-export the student")
    space, arch = load_architecture(record["arch"])
    channels, resolution = record["input_shape"][0], record["input_shape"][1]
    model = space.build(arch, channels, resolution, record["num_classes"])
    if weights and record.get("weights"):
        weights_path = path.parent / record["weights"]
        load_into(
            model, load_state_dict(weights_path, "student weights"), weights_path, "student weights"
        )
    model.eval()
    return model
