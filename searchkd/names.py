"""Names that become file names or commands: study names, files inside a folder, hints.

A study name ends up in file names (``exports/<study>-trial3.json``, retraining folders),
so it is checked where it enters (the config, ``--study``) against one rule, and every
file a command writes under a folder is checked to resolve inside that folder, whatever
a name stored by another tool holds. Commands printed for the user to copy are quoted
here, so a path with a space or a quote pastes as one argument.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from searchkd.errors import SearchKDError

STUDY_NAME_MAX = 100
_STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
STUDY_NAME_RULE = (
    f"use 1-{STUDY_NAME_MAX} letters, digits, '.', '_' or '-', starting with a letter or "
    "digit, e.g. --study digits-small"
)


def study_name_problem(name: object) -> str | None:
    """What is wrong with ``name`` as a study name (None: nothing), without echoing a long
    name back: the rule exists because the name becomes part of file names."""
    if not isinstance(name, str):
        return f"must be text, got {type(name).__name__}"
    if not name:
        return "is empty"
    if len(name) > STUDY_NAME_MAX:
        return f"is {len(name)} characters long (at most {STUDY_NAME_MAX})"
    if "/" in name or "\\" in name:
        return f"{name!r} holds a path separator"
    if ".." in name:
        return f"{name!r} holds '..'"
    if not _STUDY_NAME.fullmatch(name):
        return f"{name!r} holds a character outside letters, digits, '.', '_' and '-'"
    return None


def check_study_name(name: str, flag: str = "--study") -> str:
    """``name`` if it is a valid study name, else one line saying what is wrong and how
    to fix it (a :class:`SearchKDError` naming ``flag``)."""
    problem = study_name_problem(name)
    if problem is not None:
        raise SearchKDError(f"{flag}: the study name {problem}; {STUDY_NAME_RULE}")
    return name


def inside(folder: str | Path, name: str) -> Path:
    """``folder / name``, refused unless it resolves to a path inside ``folder`` (a name
    holding ``..`` or a separator, or a symlink, would otherwise write elsewhere)."""
    root = Path(folder).resolve()
    path = (root / name).resolve()
    if path == root or root not in path.parents:
        raise SearchKDError(
            f"refusing to write {name!r}: it would land outside {folder}; copy the study "
            "under a name of letters, digits, '.', '_' and '-' (optuna.copy_study) and use that"
        )
    return Path(folder) / name


def shell_command(*parts: object) -> str:
    """A command line to print for copying: every part quoted as the shell needs."""
    return shlex.join(str(part) for part in parts)
