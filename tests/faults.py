"""Faults injected into a `searchkd` process at the study journal's writes: a full disk, or a
SIGKILL with half a record written. For tests/test_storage_faults.py and
benchmarks/fault_injection.py.

    python -m tests.faults --journal RUN/study.log --at-write 30 --fault enospc -- search ...

runs `searchkd ...` in this process with its 30th write to the journal file cut in half:
``enospc`` reports the half as a short write and fails that write's rest, and every later
write to the file, with ENOSPC (the disk stays full, as a real one does); ``kill`` sends
the process SIGKILL with the half on disk. The wrapper sits where bytes leave the process:
``os.write`` (searchkd's journal backend) and the file objects Optuna's own journal backend
opens (what searchkd appended with before issue 16), so a test can show a fault on both.

    python -m tests.faults --study-file RUN/study.db --at-write 30 --fault database-full -- ...

fills an SQLite study instead (:class:`DatabaseFull`): its 30th writing statement, and every
one after it, fails with SQLite's "database or disk is full", as on a full disk.
"""

from __future__ import annotations

import argparse
import builtins
import errno
import os
import signal
import sqlite3
import sys
from pathlib import Path
from typing import Any

_REAL_WRITE = os.write
_REAL_OPEN = builtins.open


class JournalFaults:
    """Counts the writes to one file and faults the ``at_write``-th (1-based)."""

    def __init__(self, journal: str | Path, at_write: int, fault: str) -> None:
        if fault not in ("enospc", "kill"):
            raise ValueError(f"fault must be enospc or kill, not {fault!r}")
        self.path = os.path.realpath(journal)
        self.at_write = at_write
        self.fault = fault
        self.writes = 0
        self.full = False

    def install(self, monkeypatch: Any = None) -> None:
        """Wrap ``os.write`` and Optuna's journal ``open`` (with pytest's monkeypatch when
        given, so the test undoes it)."""
        import optuna.storages.journal._file as optuna_file

        if monkeypatch is not None:
            monkeypatch.setattr(os, "write", self.os_write)
            monkeypatch.setattr(optuna_file, "open", self.open, raising=False)
        else:
            os.write = self.os_write
            optuna_file.open = self.open

    def _is_journal(self, fd: int) -> bool:
        try:
            return os.readlink(f"/proc/self/fd/{fd}") == self.path
        except OSError:
            return False

    def _fault_due(self) -> bool:
        if self.full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.writes += 1
        return self.writes >= self.at_write

    def _after_half(self) -> None:
        if self.fault == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        self.full = True

    def os_write(self, fd: int, data) -> int:
        if not self._is_journal(fd) or not self._fault_due():
            return _REAL_WRITE(fd, data)
        half = bytes(data[: max(1, len(data) // 2)])
        written = _REAL_WRITE(fd, half)
        self._after_half()
        return written  # a short write; the rest fails with ENOSPC

    def open(self, file, mode="r", *args, **kwargs):
        handle = _REAL_OPEN(file, mode, *args, **kwargs)
        if "a" in mode and os.path.realpath(file) == self.path:
            return _FaultyFile(handle, self)
        return handle


class _FaultyFile:
    """A file object whose writes go through :class:`JournalFaults`."""

    def __init__(self, handle, faults: JournalFaults) -> None:
        self._handle, self._faults = handle, faults

    def write(self, data) -> int:
        if not self._faults._fault_due():
            return self._handle.write(data)
        self._handle.write(data[: max(1, len(data) // 2)])
        self._handle.flush()
        self._faults._after_half()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name: str):
        return getattr(self._handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._handle.close()


class DatabaseFull:
    """A full disk under an SQLite study, without filling a disk: from the ``at_write``-th
    writing statement (1-based) on the database file ``path``, the database may not grow
    (``PRAGMA max_page_count`` at its current size, on every connection: it belongs to a
    connection, and the pool opens new ones), and every writing statement fails with
    SQLite's own SQLITE_FULL, "database or disk is full"; reads go on. A full disk stays
    full, so does this.

    Why both: the page limit alone fails only a write that needs a new page, and the study's
    pages have room left for a trial or two, so when a search would fail would depend on
    the data; a real full disk fails the next append to SQLite's WAL file at once, and the
    raised error does too, at a chosen write (as :class:`JournalFaults` does for the
    journal). The limit makes SQLite itself refuse what is not counted as a write (creating
    the tables). Use as a context manager (a test), or :meth:`install` for the process.
    """

    def __init__(self, path: str | Path, at_write: int) -> None:
        self.path = os.path.realpath(path)
        self.at_write = at_write
        self.writes = 0

    def install(self, monkeypatch: Any = None) -> None:
        """Fill the database from now on: until :meth:`remove`, or, given pytest's
        monkeypatch, until the test ends (as :meth:`JournalFaults.install`)."""
        global _database_full
        import sqlalchemy

        if not sqlalchemy.event.contains(sqlalchemy.Engine, "before_cursor_execute", _before):
            sqlalchemy.event.listen(sqlalchemy.Engine, "before_cursor_execute", _before)
        if monkeypatch is not None:
            monkeypatch.setattr(sys.modules[__name__], "_database_full", self)
        else:
            _database_full = self

    def remove(self) -> None:
        free_space()

    def __enter__(self) -> DatabaseFull:
        self.install()
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def _before(self, connection, cursor, statement: str) -> None:
        database = connection.engine.url.database
        if not database or os.path.realpath(database) != self.path:
            return
        writes = statement.lstrip().split(None, 1)[0].upper() in ("INSERT", "UPDATE", "DELETE")
        if writes:
            self.writes += 1
        if self.writes < self.at_write:
            return
        # 1 means "no larger than now": SQLite never sets the limit below the current size
        connection.connection.dbapi_connection.execute("PRAGMA max_page_count = 1")
        if writes:
            error = sqlite3.OperationalError("database or disk is full")
            error.sqlite_errorcode, error.sqlite_errorname = 13, "SQLITE_FULL"
            raise error


_database_full: DatabaseFull | None = None  # the one in force; the listener stays, idle


def free_space() -> None:
    """Space is freed: the database filled by :class:`DatabaseFull` takes writes again (a
    test's checks after the fault open the study, which may write)."""
    global _database_full
    _database_full = None


def _before(connection, cursor, statement: str, *args: Any) -> None:
    if _database_full is not None:
        _database_full._before(connection, cursor, statement)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--journal", "--study-file", dest="journal", required=True)
    parser.add_argument("--at-write", type=int, required=True)
    parser.add_argument("--fault", choices=("enospc", "kill", "database-full"), required=True)
    parser.add_argument("argv", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if args.fault == "database-full":
        DatabaseFull(args.journal, args.at_write).install()
    else:
        JournalFaults(args.journal, args.at_write, args.fault).install()
    from searchkd.cli import main as searchkd

    return searchkd(argv)


if __name__ == "__main__":
    sys.exit(main())
