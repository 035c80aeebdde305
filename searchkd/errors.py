"""User-facing errors.

Anything the user can fix (a path, a config value, a budget, a file) raises
:class:`SearchKDError` with one line that says what is wrong and how to fix it.
The CLI prints that line and exits non-zero; tracebacks only appear with --debug.
"""


class SearchKDError(Exception):
    """An error caused by user input; its message is shown to the user as is."""

    exit_code = 2


class BudgetError(SearchKDError):
    """The budget cannot be met or is malformed."""


class DataError(SearchKDError):
    """A dataset is missing, malformed, or of the wrong shape."""


class ArchitectureError(SearchKDError):
    """An architecture description is malformed or belongs to another space."""


class CheckpointError(SearchKDError):
    """A checkpoint is missing, truncated, or does not fit its architecture."""


class StorageError(SearchKDError):
    """The study's storage cannot be read or written: a damaged journal, a full disk."""

    @classmethod
    def cannot_write(cls, where: str, reason: str) -> "StorageError":
        """A write to the study that failed (a full disk, a failing disk), in the one line
        every storage ends a search with: the journal file and the databases alike, so
        the user reads what was kept and what to do whatever holds the study. Each
        storage makes the claim true before raising this: the journal cuts its partial
        batch off, a database has rolled the failed transaction back."""
        return cls(
            f"cannot write the study to {where} ({reason}); nothing was half-written and "
            "every recorded trial is kept: free space (or fix the disk), then rerun the "
            "same command to resume"
        )


def first_line(error: BaseException, limit: int = 160) -> str:
    """An exception's message as one line of a one-line error: its first line, cut at
    ``limit`` characters, or its type's name when it has no message."""
    text = str(error).strip()
    return text.splitlines()[0][:limit] if text else type(error).__name__
