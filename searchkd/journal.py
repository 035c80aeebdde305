"""The journal file (``study.log``): whole-record appends, and a check of its end on open.

Optuna's ``JournalFileBackend`` reads one record per line. A last line that is not a
complete record it skips without a word (it may be a write in progress), but once any line
follows such a line every read raises. So a record appended after a cut-off end (a process
killed inside a write, a full disk, a file truncated by hand) made the whole study
unreadable, with every trial in it. Hence, in this one module:

* appends are whole records: all lines of a batch go in one ``os.write`` loop under the
  journal's lock, and on any error the file is cut back to its size before the write, so a
  failed write leaves nothing behind and ends the search with one line
  (:class:`~searchkd.errors.StorageError`);
* an append never lands after a damaged end: under the lock, a file that does not end in a
  newline has its partial record moved aside first (a writer died inside its write);
* on open, a search moves a damaged end aside to ``study.log.damaged-<time>`` (nothing is
  deleted: the journal plus that file are the old bytes) and says so in one line; reads
  (``pareto``, ``export``, ``report``, ``dashboard``) warn in one line instead;
* damage followed by good records (not a cut-off end) is never repaired silently: the
  command stops and names the line and ``searchkd repair-journal``, which keeps a copy of
  the file, drops the damaged lines and recovers a record glued to the end of one.

Optuna's journal record kinds (``JournalOperation``) are private to Optuna; this module is
the only place that imports them.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optuna.storages.journal import BaseJournalBackend, JournalFileSymlinkLock

from searchkd.errors import StorageError
from searchkd.optuna_internals import JournalOperation

__all__ = [
    "JournalEnd",
    "SafeJournalFileBackend",
    "check_end",
    "find_damage",
    "repair_journal",
]

_CHUNK = 1 << 16
_OP_CODES = frozenset(int(op) for op in JournalOperation)
_RECORD_START = b'{"op_code":'


def _record(line: bytes) -> dict[str, Any] | None:
    """The journal record on a line: one JSON object with a known ``op_code`` and a writer;
    None for anything else."""
    try:
        record = json.loads(line)
    except ValueError:  # JSONDecodeError, UnicodeDecodeError
        return None
    if (
        isinstance(record, dict)
        and record.get("op_code") in _OP_CODES
        and isinstance(record.get("worker_id"), str)
    ):
        return record
    return None


def is_record(line: bytes) -> bool:
    """A complete journal record (see :func:`_record`)."""
    return _record(line) is not None


@dataclass(frozen=True)
class JournalEnd:
    """What follows the last complete record of a journal file."""

    size: int  # bytes in the file
    good_size: int  # bytes up to and including the newline of the last complete record
    bad_lines: int  # newline-terminated lines after it that are not records
    partial: int  # bytes after the last newline (a record cut off)

    @property
    def damaged(self) -> bool:
        return self.good_size < self.size

    def describe(self) -> str:
        parts = []
        if self.bad_lines:
            parts.append(f"{self.bad_lines} line(s) that are not journal records")
        if self.partial:
            parts.append(f"a record cut off after {self.partial} bytes")
        return " and ".join(parts)


def check_end(path: str | Path) -> JournalEnd:
    """Read the file backwards from its end to its last complete record (cost: the damaged
    part, not the file). A file with no complete record at all is either empty or not a
    journal; ``good_size`` is then 0."""
    with Path(path).open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        consumed = bad_lines = 0
        partial: int | None = None
        for line in _lines_from_end(handle, size):
            if partial is None:  # the file's last line
                partial = 0 if line.endswith(b"\n") else len(line)
                if partial:
                    consumed += partial
                    continue
            if is_record(line):
                return JournalEnd(size, size - consumed, bad_lines, partial)
            bad_lines += 1
            consumed += len(line)
    return JournalEnd(size, 0, bad_lines, partial or 0)


def _lines_from_end(handle, size: int) -> Iterator[bytes]:
    """The file's lines, last first, each with its newline (the last one may have none),
    read in chunks from the end."""
    carry, start = b"", size
    while start > 0:
        step = min(_CHUNK, start)
        start -= step
        handle.seek(start)
        block = handle.read(step) + carry
        if start > 0:  # the block's first line may begin before it: keep it for later
            first = block.find(b"\n")
            if first < 0:
                carry = block
                continue
            carry, block = block[: first + 1], block[first + 1 :]
        else:
            carry = b""
        pieces = block.split(b"\n")
        lines = [piece + b"\n" for piece in pieces[:-1]]
        if pieces[-1]:
            lines.append(pieces[-1])
        yield from reversed(lines)


@dataclass(frozen=True)
class Damage:
    """A line of the journal that is not a record, with records after it."""

    line: int  # 1-based line number
    offset: int
    salvage: bytes | None  # a complete record glued to its end, recovered by the repair


def find_damage(path: str | Path) -> tuple[list[Damage], int]:
    """Every non-record line of the file that good records follow (a damaged end is not
    listed), and the number of lines. Reads the whole file: only called when Optuna could
    not replay it, or by the repair."""
    damage: list[Damage] = []
    pending: list[Damage] = []  # bad lines not yet followed by a record
    offset = number = 0
    with Path(path).open("rb") as handle:
        for number, line in enumerate(handle, 1):
            if line.endswith(b"\n") and is_record(line):
                damage.extend(pending)
                pending = []
            else:
                pending.append(Damage(number, offset, _salvage(line)))
            offset += len(line)
    return damage, number


def _salvage(line: bytes) -> bytes | None:
    """A complete record at the end of a damaged line: what an append wrote after a cut-off
    record, before appends checked the end."""
    if not line.endswith(b"\n"):
        return None
    position = line.rfind(_RECORD_START)
    while position > 0:
        if is_record(line[position:]):
            return line[position:]
        position = line.rfind(_RECORD_START, 0, position)
    return None


def _backup_name(path: Path) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%S")
    candidate = path.with_name(f"{path.name}.damaged-{stamp}")
    number = 1
    while candidate.exists():
        number += 1
        candidate = path.with_name(f"{path.name}.damaged-{stamp}-{number}")
    return candidate


def _move_end_aside(path: Path, fd: int, good_size: int, size: int) -> Path:
    """Copy the bytes after ``good_size`` to a backup file, then cut them off the journal.
    The caller holds the journal's lock."""
    backup = _backup_name(path)
    data = os.pread(fd, size - good_size, good_size)
    with backup.open("xb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.ftruncate(fd, good_size)
    os.fsync(fd)
    return backup


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


@contextlib.contextmanager
def get_lock_file(lock: JournalFileSymlinkLock) -> Iterator[None]:
    """Hold Optuna's journal lock (the one its own appends take) for the block."""
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _warn(message: str) -> None:
    print(f"searchkd: warning: {message}", file=sys.stderr, flush=True)


class SafeJournalFileBackend(BaseJournalBackend):
    """Optuna's journal file format and lock, written whole-record and read up to a damaged
    end (see the module's docstring).

    Optuna's own reader stops silently at a bad last line but fails on some (bytes that are
    not UTF-8), and on a bad line anywhere else raises a bare ``JSONDecodeError``; this one
    reads the same records, stops at a damaged end (which :meth:`warn_end` reported) and
    names damage in the middle with its repair. ``say`` receives the one line that reports
    a damaged end moved aside during a write.
    """

    def __init__(self, file_path: str | Path, say: Callable[[str], None] = _warn) -> None:
        self.path = Path(file_path)
        self.say = say
        self._lock_obj = JournalFileSymlinkLock(str(file_path))
        self.path.touch(exist_ok=True)
        self._offsets: dict[int, int] = {0: 0}  # record number -> where it starts

    def read_logs(self, log_number_from: int) -> Iterator[dict[str, Any]]:
        number = max(n for n in self._offsets if n <= log_number_from)
        with self.path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size  # what is appended later: next read
            offset = self._offsets[number]
            handle.seek(offset)
            damaged = False
            for line in handle:
                if offset + len(line) > size:
                    break
                record = _record(line) if line.endswith(b"\n") else None
                if record is None:
                    damaged = True  # a damaged end, unless a record follows
                    break
                offset += len(line)
                number += 1
                self._offsets[number] = offset
                if number > log_number_from:
                    yield record
            if damaged and any(_record(line) for line in handle):
                raise explain_unreadable(self.path) or StorageError(
                    f"{self.path} is damaged; repair it with `searchkd repair-journal {self.path}`"
                )

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        data = "\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n"
        with get_lock_file(self._lock_obj):
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND)
            try:
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    size = self._cut_partial_end(fd, size)
                try:
                    _write_all(fd, data.encode("utf-8"))
                    os.fsync(fd)
                except OSError as exc:
                    os.ftruncate(fd, size)  # leave no part of the batch behind
                    raise StorageError.cannot_write(
                        str(self.path), exc.strerror or str(exc)
                    ) from None
            finally:
                os.close(fd)

    def _cut_partial_end(self, fd: int, size: int) -> int:
        """A writer died inside its write: its partial record goes aside before this one."""
        end = check_end(self.path)
        _refuse_non_journal(self.path, end)
        good_size = end.good_size
        backup = _move_end_aside(self.path, fd, good_size, size)
        self.say(
            f"{self.path} ended in a record cut off after {size - good_size} bytes (a writer "
            f"died inside its write); moved it to {backup.name} and went on"
        )
        return good_size

    def repair_end(self, say: Callable[[str], None]) -> JournalEnd:
        """Move a damaged end aside, under the lock (no writer is inside a write then)."""
        with get_lock_file(self._lock_obj):
            end = check_end(self.path)
            _refuse_non_journal(self.path, end)
            if end.damaged:
                fd = os.open(self.path, os.O_RDWR)
                try:
                    backup = _move_end_aside(self.path, fd, end.good_size, end.size)
                finally:
                    os.close(fd)
                say(
                    f"{self.path} ended in {end.describe()} (a write cut short: a killed "
                    f"process or a full disk); moved those {end.size - end.good_size} bytes "
                    f"to {backup.name} and resumed after the last complete record"
                )
        return end

    def warn_end(self, say: Callable[[str], None]) -> JournalEnd:
        """Say, without writing, that reads skip a damaged end. A partial last line seen
        without the lock may be a write in progress: checked again under the lock."""
        end = check_end(self.path)
        if end.damaged:
            with get_lock_file(self._lock_obj):
                end = check_end(self.path)
        _refuse_non_journal(self.path, end)
        if end.damaged:
            say(
                f"{self.path} ends in {end.describe()} (a write cut short); read up to the "
                f"last complete record, the {end.size - end.good_size} bytes after it are "
                "ignored (the next `searchkd search` moves them aside to a .damaged- file)"
            )
        return end


def _refuse_non_journal(path: Path, end: JournalEnd) -> None:
    if end.size and not end.good_size:
        raise StorageError(
            f"{path} is not an Optuna journal (it holds no complete journal record); pass "
            "the study.log a search wrote, or another --storage"
        )


def explain_unreadable(path: str | Path) -> StorageError | None:
    """Why Optuna could not replay a journal, as one line with the repair; None when the
    file shows no damage (the failure is something else)."""
    damage, lines = find_damage(path)
    if not damage:
        return None
    first = damage[0]
    more = f" (and {len(damage) - 1} more)" if len(damage) > 1 else ""
    return StorageError(
        f"{path} is damaged at line {first.line} of {lines}{more}: not a journal record, with "
        "complete records after it (not a cut-off end), so it was left as it is; repair it "
        f"with `searchkd repair-journal {path}` (it keeps the original as a .damaged- file)"
    )


@dataclass(frozen=True)
class Repair:
    kept: int  # records kept
    dropped: list[int]  # line numbers dropped
    recovered: int  # records recovered from the end of a damaged line
    backup: Path | None


def repair_journal(path: str | Path) -> Repair:
    """Copy the journal aside, then rewrite it without its damaged lines (a record glued
    to the end of one is kept), under the journal's lock. Run it with no searcher running:
    the file is replaced, not appended to."""
    path = Path(path)
    if not path.is_file():
        raise StorageError(f"no journal file at {path}; pass the study.log of a run folder")
    lock = JournalFileSymlinkLock(str(path))
    with get_lock_file(lock):
        damage, _ = find_damage(path)
        end = check_end(path)
        _refuse_non_journal(path, end)
        bad = {d.line: d for d in damage}
        if not bad and not end.damaged:
            return Repair(0, [], 0, None)
        backup = _backup_name(path)
        shutil.copy2(path, backup)
        kept = recovered = 0
        dropped = []
        staging = path.with_name(f"{path.name}.repair-{os.getpid()}")
        with path.open("rb") as source, staging.open("wb") as out:
            read = 0
            for number, line in enumerate(source, 1):
                read += len(line)
                if read > end.good_size:
                    dropped.append(number)
                    continue
                if number in bad:
                    dropped.append(number)
                    if bad[number].salvage is not None:
                        out.write(bad[number].salvage)
                        recovered += 1
                    continue
                out.write(line)
                kept += 1
            out.flush()
            os.fsync(out.fileno())
        os.replace(staging, path)
    return Repair(kept, dropped, recovered, backup)
