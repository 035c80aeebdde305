"""Reading and writing checkpoints safely.

Writes go to a temporary file in the same folder and are renamed into place,
so a crash or a full disk never leaves a half-written checkpoint behind. Every
tensor is written as a CPU tensor, whatever device trained it, so a checkpoint
loads on any machine. Reads use ``weights_only=True``: a checkpoint is data,
never code.
"""

from __future__ import annotations

import errno
import json
import os
import reprlib
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import torch
from torch import nn

from searchkd.device import map_tensors
from searchkd.errors import CheckpointError


def _atomic(path: Path, write) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise _write_error(path, exc) from None
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)  # mkstemp's 0600 would hide results from the team
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _write_error(path, exc) from None
        raise


def _write_error(path: Path, exc: OSError) -> CheckpointError:
    """A failed write (full disk, no permission) as one line; the old file, if any, is intact."""
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free some space or choose another folder"
    else:
        fix = "choose a folder you can write"
    return CheckpointError(f"cannot write {path} ({reason}); {fix}")


def on_cpu(value: Any) -> Any:
    """``value`` with every tensor inside (dicts, lists, tuples) copied to the CPU."""
    return map_tensors(value, lambda tensor: tensor.detach().cpu())


def save_state_dict(module_or_state: nn.Module | dict[str, Any], path: str | Path) -> None:
    state = (
        module_or_state.state_dict() if isinstance(module_or_state, nn.Module) else module_or_state
    )
    state = on_cpu(state)
    _atomic(Path(path), lambda handle: torch.save(state, handle))


def write_json(data: Any, path: str | Path) -> None:
    text = json.dumps(data, indent=2, sort_keys=True).encode()
    _atomic(Path(path), lambda handle: handle.write(text))


def read_json(path: str | Path, what: str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what}: no file at {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{what}: {path} is not valid JSON ({exc}); re-export it") from None


def check_format_version(record: dict[str, Any], path: str | Path, what: str, current: int) -> None:
    """Refuse a file whose ``format_version`` this searchkd cannot read, in one line: a
    newer one (written by a later searchkd), a missing, non-integer or unknown one. A file
    read in a format it is not in gives wrong numbers, not an error."""
    version = record.get("format_version")
    if "format_version" not in record:
        problem = "has no format_version"
        fix = "re-export it with this searchkd"
    elif type(version) is not int:
        problem = f"has format_version {reprlib.repr(version)}, not an integer"
        fix = "re-export it with this searchkd"
    elif version > current:
        problem = f"is format_version {version}, newer than this searchkd reads ({current})"
        fix = "upgrade searchkd to read it, or re-export it with this version"
    elif version < 1:
        problem = f"has format_version {version}, which no searchkd wrote"
        fix = "re-export it with this searchkd"
    else:
        return
    raise CheckpointError(f"{what}: {path} {problem}; {fix}")


def _load_failure(exc: Exception) -> str:
    """Why ``torch.load`` failed, in a few words. For a file that is not a weights-only
    checkpoint PyTorch's first lines advise loading with ``weights_only=False``, which
    would run code from the file: the unpickler's own reason is kept instead."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        after = text.split("WeightsUnpickler error:", 1)[1]
        text = next((part for part in after.split("\n\n") if part.strip()), after)
    words = " ".join(text.split())
    return textwrap.shorten(words, 120, placeholder=" …") if words else type(exc).__name__


def load_state_dict(path: str | Path, what: str = "checkpoint") -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what}: no file at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickle of code, random bytes...
        reason = _load_failure(exc)
        raise CheckpointError(
            f"{what}: cannot read {path} ({reason}); the file is corrupt or not a "
            "PyTorch state dict — re-create it"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{what}: {path} does not hold a state dict of tensors")
    return state


def load_into(
    model: nn.Module, state: dict[str, torch.Tensor], path: str | Path, what: str
) -> None:
    """Load weights strictly, turning key or shape mismatches into one clear line."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        detail = (
            f"{len(missing)} missing, {len(unexpected)} unexpected, {len(wrong)} mis-shaped tensors"
        )
        example = (wrong or missing or unexpected)[0]
        raise CheckpointError(
            f"{what}: {path} does not fit this architecture ({detail}, e.g. {example!r}); "
            "pass the architecture the checkpoint was trained with"
        )
    model.load_state_dict(state)


def save_object(obj: dict[str, Any], path: str | Path) -> None:
    """Atomically save a nested dict of tensors and plain values (a training state)."""
    obj = on_cpu(obj)
    _atomic(Path(path), lambda handle: torch.save(obj, handle))


def load_object(path: str | Path, what: str) -> dict[str, Any]:
    """Load what :func:`save_object` wrote, data only; a bad file is one clear line."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = _load_failure(exc)
        raise CheckpointError(
            f"{what}: cannot read {path} ({reason}); delete it to start that run afresh"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{what}: {path} does not hold a training state; delete it")
    return state
