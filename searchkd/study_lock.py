"""One searcher at a time through a study's check-then-write steps.

Several searchers may share a study (a journal file, SQLite, PostgreSQL). Optuna makes each
write atomic, but not a read followed by a write: two searchers that start together both
find a new study without settings and both record theirs (the study then holds results of
two budgets under one), and two identical searchers both find an architecture untrained
and both train it. The steps that read and then write (creating the storage and the study,
recording its settings and resolved budget, claiming an architecture before training) run
inside :meth:`StudyLock.hold`, which excludes the other searchers on the same storage:

* journal file and SQLite: an ``fcntl`` lock on ``<storage file>.searchkd-lock`` beside it
  (POSIX locks also hold over NFS; the kernel drops them when the process dies, so a
  killed searcher never leaves the study locked);
* PostgreSQL: a session advisory lock keyed by the study name, on a connection of its own
  (the server drops it with the connection);
* other databases: this process only (the search says so in one line).

The lock is re-entrant within a process and guards a few milliseconds of work at a time.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy

from searchkd.errors import SearchKDError


class _Local:
    """This process's share of one storage's lock: the thread that holds it, how deep."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.depth = 0


_LOCAL: dict[str, _Local] = {}
_REGISTRY_LOCK = threading.Lock()


def lock_file_for(url: str) -> Path | None:
    """The file beside a journal or SQLite storage that searchers lock; None for servers
    and in-memory SQLite."""
    if url.startswith("journal:") or url.endswith(".log"):
        return Path(url.removeprefix("journal:") + ".searchkd-lock")
    if url.startswith("sqlite"):
        path = sqlalchemy.engine.make_url(url).database
        if not path or path == ":memory:" or path.startswith("file:"):
            return None
        return Path(path + ".searchkd-lock")
    return None


def shown_url(url: str) -> str:
    """The storage URL as messages show it: a database password hidden."""
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # not an SQLAlchemy URL: shown as given
        return url


class StudyLock:
    """An exclusive lock over one study, shared by every searcher on its storage."""

    def __init__(self, url: str, study_name: str = "") -> None:
        self.url = url
        self.file = lock_file_for(url)
        self._server = url.startswith("postgresql")
        self._key = int.from_bytes(
            hashlib.sha256(f"searchkd:{study_name}".encode()).digest()[:8], "big", signed=True
        )
        self._engine: sqlalchemy.Engine | None = None
        # POSIX locks do not exclude threads of one process, and closing any descriptor of
        # the file drops them all: one in-process lock per lock file (per study on a server).
        with _REGISTRY_LOCK:
            name = str(self.file) if self.file is not None else f"{url}|{self._key}"
            self._local = _LOCAL.setdefault(name, _Local())

    @property
    def across_processes(self) -> bool:
        """Whether the lock excludes other processes (not on other databases, nor on an
        in-memory SQLite, which no other process sees anyway)."""
        return self.file is not None or self._server or self.url.startswith("sqlite")

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Hold the lock (blocking) for the block; re-entrant within this process."""
        local = self._local
        with local.lock:
            if local.depth:
                local.depth += 1
                try:
                    yield
                finally:
                    local.depth -= 1
                return
            with self._acquire():
                local.depth = 1
                try:
                    yield
                finally:
                    local.depth = 0

    @contextlib.contextmanager
    def _acquire(self) -> Iterator[None]:
        if self.file is not None:
            if self.url.startswith("journal:") or self.url.endswith(".log"):
                self.file.parent.mkdir(parents=True, exist_ok=True)  # the journal's, too
            with _file_lock(self.file):
                yield
        elif self._server:
            if self._engine is None:
                self._engine = sqlalchemy.create_engine(
                    self.url, poolclass=sqlalchemy.pool.NullPool
                )
            try:
                connection = self._engine.connect()
            except sqlalchemy.exc.SQLAlchemyError as exc:  # the server is not there
                reason = str(exc).splitlines()[0][:160]
                raise SearchKDError(
                    f"cannot open storage {shown_url(self.url)}: {reason}"
                ) from None
            with connection:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": self._key})
                try:
                    yield
                finally:
                    connection.execute(
                        sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": self._key}
                    )
        else:
            yield


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """``lockf`` on ``path``. A folder that does not exist or cannot be written (a study read
    from read-only media) has no writers to exclude: nothing is locked then."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        yield
        return
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
