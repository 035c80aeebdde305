"""The Optuna study: the single record of truth of a search.

Objectives are (accuracy ↑, MACs ↓, latency ↓) with their names set, so
optuna-dashboard labels its axes and draws the Pareto front. Budget constraints
are stored in the list-form ``constraints`` system attribute: ``FrozenTrial.constraints``
reads it, and through it Optuna's TPE and NSGA-II samplers (which rank over-budget trials
below feasible ones, by their violation) and ``study.best_trials``; it is also the form
optuna-dashboard shows as infeasible (it ignores the per-name ``constraints:<name>`` keys).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import socket
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.distributions import BaseDistribution, distribution_to_json
from optuna.trial import FrozenTrial, TrialState

from searchkd.budget import Budget
from searchkd.errors import SearchKDError, StorageError, first_line
from searchkd.journal import SafeJournalFileBackend
from searchkd.optuna_internals import (
    JournalOperation,
    append_journal_records,
    journal_worker,
    keep_cached_user_attrs,
    set_system_attr,
    set_user_attr,
    trial_id,
)
from searchkd.study_lock import StudyLock, shown_url

OBJECTIVES = ("accuracy", "macs", "latency_ms")
DIRECTIONS = (
    optuna.study.StudyDirection.MAXIMIZE,
    optuna.study.StudyDirection.MINIMIZE,
    optuna.study.StudyDirection.MINIMIZE,
)
CONSTRAINTS_KEY = "constraints"
# study user attribute (the queued names) and each queued member's user attribute (its name)
HAND_DESIGNED = "hand_designed"
# How many validation images each proxy accuracy was measured on: it sizes the pick's band.
VALIDATION_IMAGES = "validation_images"


def default_storage(run_dir: str | Path, must_exist: bool = False) -> str:
    """The run folder's study: Optuna's journal file ``study.log`` (one append per write,
    safe for several searchers on one machine), or the SQLite ``study.db`` of a run folder
    made before the journal became the default."""
    run_dir = Path(run_dir).resolve()
    journal, database = run_dir / "study.log", run_dir / "study.db"
    if database.exists() and not journal.exists():
        return f"sqlite:///{database}"
    if must_exist and not journal.exists():
        raise SearchKDError(
            f"no study in {run_dir} (no study.log); run `searchkd search` first or pass "
            "--storage / --run-dir"
        )
    return f"journal:{journal}"


def make_storage(
    url: str, repair: bool = False, say: Callable[[str], None] | None = None
) -> optuna.storages.BaseStorage:
    """An Optuna storage for a URL: any SQLAlchemy URL, or ``journal:PATH`` / a ``.log``
    path for Optuna's append-only journal file.

    A journal's end is checked first (searchkd/journal.py): with ``repair`` (a search, which
    will append) a damaged end is moved aside, otherwise (a read) it is reported; ``say``
    receives that one line (default: a warning on stderr). A journal Optuna cannot replay is
    explained with the line that is damaged and the repair.

    SQLite runs in WAL mode with ``synchronous=NORMAL``: a committed trial survives the
    process being killed (only a power loss can drop the last commits), and each write
    costs about half as much as with SQLite's defaults. The journal file is cheaper still
    per write (benchmarks/orchestration.py), hence the default. A new SQLite or PostgreSQL
    schema is created under the searchers' lock (searchkd/study_lock.py): two searchers
    creating it at once would both stamp Optuna's schema version, and one would fail. A
    database that is full (its disk, or a quota) fails any write with the journal's one
    line (:func:`full_disk_reason`, hooked on the engine), not Optuna's wrapped error.
    """
    say = say or _warn
    try:
        if url.startswith("journal:") or url.endswith(".log"):
            path = url.removeprefix("journal:")
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            backend = SafeJournalFileBackend(path, say)
            (backend.repair_end if repair else backend.warn_end)(say)
            return BatchingJournalStorage(backend)  # damage in the middle: StorageError
        with StudyLock(url).hold():  # two searchers creating the schema: one at a time
            storage = optuna.storages.RDBStorage(url)
    except StorageError:
        raise
    except Exception as exc:
        full = full_disk_reason(exc)  # creating the schema on a full disk
        if full:
            raise StorageError.cannot_write(shown_url(url), full) from None
        raise SearchKDError(f"cannot open storage {shown_url(url)}: {first_line(exc)}") from None
    if url.startswith("sqlite"):
        sqlalchemy.event.listen(storage.engine, "connect", _sqlite_pragmas)
        storage.engine.dispose()  # reconnect with the pragmas
    sqlalchemy.event.listen(storage.engine, "handle_error", _full_disk_in_one_line(url))
    return storage


# What a database says when its disk (or its own size limit) is full. SQLite: SQLITE_FULL,
# "database or disk is full"; PostgreSQL: SQLSTATE 53100 (disk_full, psycopg's DiskFull),
# "could not extend file ...: No space left on device"; MySQL: "Disk full".
_FULL_SQLSTATES = frozenset({"53100"})
_SQLITE_FULL = 13
_FULL_WORDS = (
    "database or disk is full",
    "no space left on device",
    "could not extend file",
    "disk quota exceeded",
    "disk full",
)


def full_disk_reason(exc: BaseException) -> str | None:
    """The database's own words (first line) when ``exc``, or an exception it wraps, says the
    disk or the database is full; None for any other error.

    SQLAlchemy wraps the driver's error (``.orig``) and Optuna wraps SQLAlchemy's in a
    ``StorageInternalError`` (``__cause__``), so the whole chain is looked at: a full disk
    must read the same however deep it was raised. Codes are trusted first (they do not
    depend on the server's language), the message words after."""
    seen: set[int] = set()
    chain: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        error = todo.pop()
        if error is None or id(error) in seen:
            continue
        seen.add(id(error))
        chain.append(error)
        todo += [getattr(error, "orig", None), error.__cause__, error.__context__]
    for error in chain:
        code = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
        if code in _FULL_SQLSTATES or getattr(error, "sqlite_errorcode", None) == _SQLITE_FULL:
            return first_line(error)
    for error in chain:
        if any(words in str(error).lower() for words in _FULL_WORDS):
            return first_line(getattr(error, "orig", None) or error)
    return None


def _full_disk_in_one_line(url: str) -> Callable[[Any], BaseException | None]:
    """A SQLAlchemy ``handle_error`` hook that turns a full disk into the same one line a full
    journal gives (:meth:`StorageError.cannot_write`).

    It sits on the engine, where every statement and commit of Optuna's storage fails, so
    one place covers every write (a trial, its attributes, the study's settings), however
    Optuna wraps the error afterwards. The claim of that line holds: the database rolls the
    failed transaction back (Optuna's session does too), so nothing is half-written."""
    where = shown_url(url)

    def handle_error(context: sqlalchemy.engine.ExceptionContext) -> BaseException | None:
        reason = full_disk_reason(context.original_exception)
        return StorageError.cannot_write(where, reason) if reason else None

    return handle_error


def _warn(message: str) -> None:
    print(f"searchkd: warning: {message}", file=sys.stderr, flush=True)


class BatchingJournalStorage(optuna.storages.JournalStorage):
    """Optuna's journal storage, plus two ways to write many records of one trial in a
    single append: :meth:`set_trial_user_attrs` and :meth:`params_in_one_append`.

    A trained trial ends with about eight attributes (accuracy per epoch, time, seed,
    loss terms...), and an Optuna sampler (random, TPE, NSGA-II) sets the mobilenet
    space's 43 decisions one ``suggest`` at a time. Optuna appends each as its own record
    under its own lock and fsync, ~0.5 ms each here: a random search proposing 13
    candidates per accepted one spent 0.3 s of driver CPU per trained trial on it, CPU
    the trainers beside it needed. The batch holds exactly the records Optuna writes one
    by one, so the file stays an ordinary Optuna journal that any reader replays; one
    fsync covers them all, so a crash keeps all of them or none.
    """

    def __init__(self, log_storage: optuna.storages.journal.BaseJournalBackend) -> None:
        super().__init__(log_storage)
        self._pending_params: dict[int, list[dict[str, Any]]] = {}  # thread -> records

    def set_trial_param(
        self,
        trial_id: int,
        param_name: str,
        param_value_internal: float,
        distribution: BaseDistribution,
    ) -> None:
        pending = self._pending_params.get(threading.get_ident())
        if pending is None:
            super().set_trial_param(trial_id, param_name, param_value_internal, distribution)
            return
        pending.append(
            {
                "op_code": JournalOperation.SET_TRIAL_PARAM,
                "worker_id": journal_worker(self),
                "trial_id": trial_id,
                "param_name": param_name,
                "param_value_internal": param_value_internal,
                "distribution": distribution_to_json(distribution),
            }
        )

    @contextlib.contextmanager
    def params_in_one_append(self) -> Iterator[None]:
        """Hold this thread's ``set_trial_param`` records and append them together on
        leaving (also when sampling failed part-way: what was set is kept, as unbatched).
        Optuna's ``Trial`` keeps the values it suggested in its own cache, so sampling
        inside the block reads them back as usual; the journal has them once it ends."""
        thread = threading.get_ident()
        self._pending_params[thread] = []
        try:
            yield
        finally:
            logs = self._pending_params.pop(thread)
            if logs:
                append_journal_records(self, logs)

    def set_trial_user_attrs(self, trial_id: int, attrs: dict[str, Any]) -> None:
        worker = journal_worker(self)
        logs = [
            {
                "op_code": JournalOperation.SET_TRIAL_USER_ATTR,
                "worker_id": worker,
                "trial_id": trial_id,
                "user_attr": {key: value},
            }
            for key, value in attrs.items()
        ]
        append_journal_records(self, logs)


def set_user_attrs(trial: optuna.Trial, attrs: dict[str, Any]) -> None:
    """Write several user attributes of a running trial: one append on the journal file,
    one write each on other storages."""
    if not attrs:
        return
    batched = getattr(trial.storage, "set_trial_user_attrs", None)
    if batched is None:
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        return
    batched(trial_id(trial), attrs)
    keep_cached_user_attrs(trial, attrs)


@contextlib.contextmanager
def params_in_one_write(storage: optuna.storages.BaseStorage) -> Iterator[None]:
    """Sampling inside this block writes the trial's decisions in one journal append; on
    other storages, one write each, as Optuna does."""
    batched = getattr(storage, "params_in_one_append", None)
    with batched() if batched is not None else contextlib.nullcontext():
        yield


def _sqlite_pragmas(connection, record) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def open_study(
    name: str,
    storage: str,
    sampler: optuna.samplers.BaseSampler | None = None,
    log: Callable[[str], None] | None = None,
) -> optuna.Study:
    """Create the study, or load it to resume when it exists with the same objectives. A
    journal's damaged end is moved aside first (``log`` says so), as this will append."""
    backend = make_storage(storage, repair=True, say=log)
    try:
        study = optuna.create_study(
            study_name=name,
            storage=backend,
            sampler=sampler,
            directions=[d.name.lower() for d in DIRECTIONS],
            load_if_exists=True,
        )
    except ValueError as exc:  # directions of an existing study differ
        raise SearchKDError(
            f"study {name!r} in {shown_url(storage)} exists with other objectives ({exc}); "
            "pass another --study name"
        ) from None
    except SearchKDError:  # a journal that cannot be written (a full disk) says so itself
        raise
    except Exception as exc:  # unreachable or unwritable storage
        raise SearchKDError(
            f"cannot open storage {shown_url(storage)}: {first_line(exc)}"
        ) from None
    if tuple(study.directions) != DIRECTIONS:
        raise SearchKDError(
            f"study {name!r} in {shown_url(storage)} was created with other objectives; "
            "pass another --study name"
        )
    if study.metric_names != list(OBJECTIVES):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(OBJECTIVES))
    return study


def load_existing_study(name: str | None, storage: str) -> optuna.Study:
    """Load a study for reading (pareto, export); a missing name lists what exists."""
    backend = make_storage(storage)
    try:
        summaries = optuna.get_all_study_summaries(backend)
    except Exception as exc:
        raise SearchKDError(
            f"cannot open storage {shown_url(storage)}: {first_line(exc)}"
        ) from None
    names = [s.study_name for s in summaries]
    if name is None:
        # A study without any trial (left by a start that failed) is no candidate when
        # another study has trials: it must not make --study necessary.
        with_trials = [s.study_name for s in summaries if s.n_trials > 0]
        if len(names) != 1 and len(with_trials) != 1:
            listing = ", ".join(names) or "none"
            raise SearchKDError(f"pass --study; studies in {shown_url(storage)}: {listing}")
        name = names[0] if len(names) == 1 else with_trials[0]
    if name not in names:
        listing = ", ".join(names) or "none"
        raise SearchKDError(f"no study {name!r} in {shown_url(storage)}; studies there: {listing}")
    return optuna.load_study(study_name=name, storage=backend)


SETTINGS_KEY = "settings"
SETTINGS_OWNER_KEY = "settings_owner"  # host:pid of the searcher that recorded them
DERIVED_KEYS = ("budget", "teacher_cost")  # resolved from the settings by their first searcher


def claim_settings(study: optuna.Study, lock: StudyLock, settings: dict[str, Any]) -> None:
    """Record the settings of a new study, or check those of a resumed one, in one step
    under the searchers' lock: two searchers started together with other budgets or seeds
    cannot both find the study without settings, so the second is refused.

    Settings recorded by a start that failed before any trial (its process is gone, on this
    host) may be replaced: a rerun with a fixed budget resumes the name it chose."""
    with lock.hold():
        attrs = study.user_attrs
        stored = attrs.get(SETTINGS_KEY)
        if stored == settings:
            return
        if stored is not None and not _abandoned(study, attrs):
            from searchkd.config import differing_settings

            changed = differing_settings(stored, settings)
            raise SearchKDError(
                f"study {study.study_name!r} was run with other settings "
                f"({', '.join(changed)} differ); rerun with the original settings to resume, "
                "or pass a new --study name"
            )
        for key in DERIVED_KEYS:
            if attrs.get(key) is not None:
                study.set_user_attr(key, None)
        study.set_user_attr(SETTINGS_OWNER_KEY, worker_id())
        study.set_user_attr(SETTINGS_KEY, settings)


def _abandoned(study: optuna.Study, attrs: dict[str, Any]) -> bool:
    """No trial yet, and the process that recorded the settings is gone (this process is
    not: a study it opened with other settings is still its own, to be refused)."""
    owner = attrs.get(SETTINGS_OWNER_KEY)
    if owner is None or study.get_trials(deepcopy=False):
        return False
    return _dead_here(str(owner), mine_is_dead=False)


def adopt_user_attrs(study: optuna.Study, lock: StudyLock, attrs: dict[str, Any]) -> dict[str, Any]:
    """The study's value of each attribute, recording ours where it has none, under the
    searchers' lock: the first searcher's resolved budget is every searcher's (each
    measuring the teacher itself would give each its own relative latency budget)."""
    with lock.hold():
        stored = study.user_attrs
        adopted = {}
        for key, value in attrs.items():
            if stored.get(key) is None:
                study.set_user_attr(key, value)
                adopted[key] = value
            else:
                adopted[key] = stored[key]
    return adopted


CLAIM_KEY = "claimed_arch"  # on a running trial: it trains this architecture


def arch_key(arch: dict[str, Any] | None) -> str | None:
    if arch is None:
        return None
    return hashlib.sha256(json.dumps(arch, sort_keys=True).encode()).hexdigest()[:24]


def claim_architecture(
    study: optuna.Study, lock: StudyLock, trial: optuna.Trial, arch: dict[str, Any]
) -> int | None:
    """Claim ``arch`` for ``trial`` before it trains; the number of the trial that already
    holds it instead (trained, stopped early, or training in a live process), when one does.

    Checked and recorded under the searchers' lock, so of two searchers that propose the
    same architecture at once (identical searchers propose the same sequence) one trains it.
    A study trains an architecture once: another training would only measure its seed noise.
    """
    key = arch_key(arch)
    with lock.hold():
        for other in study.get_trials(deepcopy=False):
            if other.number != trial.number and _holds(other, key):
                return other.number
        trial.set_user_attr(CLAIM_KEY, key)
    return None


def held_architectures(study: optuna.Study) -> set[str]:
    """The architecture keys (:func:`arch_key`) the study holds: trained, stopped early,
    or training in a live process."""
    return {key for t in study.get_trials(deepcopy=False) if (key := _held_key(t)) is not None}


def _holds(trial: FrozenTrial, key: str | None) -> bool:
    return key is not None and _held_key(trial) == key


def _held_key(trial: FrozenTrial) -> str | None:
    """The key of the architecture ``trial`` holds, or None when it holds none (rejected
    over budget, failed, or running in a process that died)."""
    attrs = trial.user_attrs
    if trial.state == TrialState.RUNNING:
        owner = str(attrs.get("worker", ""))
        return None if _dead_here(owner, mine_is_dead=False) else attrs.get(CLAIM_KEY)
    if trial.state == TrialState.COMPLETE and not attrs.get("trained"):
        return None
    if trial.state not in (TrialState.COMPLETE, TrialState.PRUNED):
        return None
    return attrs.get(CLAIM_KEY) or arch_key(attrs.get("arch"))


def storage_file(url: str) -> Path | None:
    """The local file a storage URL keeps its study in (a journal file or an SQLite
    database), or None for a server or an in-memory database."""
    if url.startswith("journal:") or url.endswith(".log"):
        return Path(url.removeprefix("journal:"))
    if url.startswith("sqlite:"):
        try:
            database = sqlalchemy.engine.make_url(url).database
        except Exception:  # a malformed URL: make_storage says so in its own words
            return None
        return Path(database) if database and database != ":memory:" else None
    return None


def require_existing_storage(url: str) -> str:
    """``url``, refused in one line when its journal or SQLite file does not exist: a
    command that only reads a study must not create an empty one (and its folder)."""
    path = storage_file(url)
    if path is not None and not path.is_file():
        raise SearchKDError(
            f"--storage {url}: no study file at {path}; check the path (this command reads "
            "a study, it does not create one; `searchkd search` does)"
        )
    return url


def set_constraints(
    study: optuna.Study, trial: optuna.Trial, budget: Budget, measured: dict[str, float | None]
) -> None:
    """Store ``budget.constraints(measured)`` on ``trial`` before it is told, so the sampler
    sees whether it was within budget when it next samples."""
    values = budget.constraints(measured)
    set_system_attr(study, trial, CONSTRAINTS_KEY, values)


def is_feasible(trial: FrozenTrial) -> bool:
    return all(v <= 0 for v in trial.constraints.values())


def is_trained(trial: FrozenTrial) -> bool:
    """A completed candidate that was trained (not rejected over budget)."""
    return trial.state == TrialState.COMPLETE and bool(trial.user_attrs.get("trained"))


def trained_trials(study: optuna.Study) -> list[FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False) if is_trained(t)]


def pareto_front(study: optuna.Study) -> list[FrozenTrial]:
    """Trained, feasible trials that no other such trial dominates, best accuracy first."""
    candidates = [t for t in trained_trials(study) if is_feasible(t)]
    front = []
    for trial in candidates:
        if not any(_dominates(other, trial) for other in candidates if other is not trial):
            front.append(trial)
    return sorted(front, key=lambda t: (-t.values[0], t.values[1]))


def _dominates(a: FrozenTrial, b: FrozenTrial) -> bool:
    pairs = [(-a.values[0], -b.values[0])] + list(zip(a.values[1:], b.values[1:], strict=True))
    return all(x <= y for x, y in pairs) and any(x < y for x, y in pairs)


def ranked_students(study: optuna.Study, validation_images: int | None = None) -> list[FrozenTrial]:
    """Feasible trained trials, the search's pick first (``pick_student``), then Pareto-front
    members, then by accuracy, then MACs.

    ``validation_images`` sizes the pick's band; by default the study's own record of it
    (a study written before it was recorded has a band of zero: the highest proxy score)."""
    front = {t.number for t in pareto_front(study)}
    feasible = [t for t in trained_trials(study) if is_feasible(t)]
    ranked = sorted(feasible, key=lambda t: (t.number not in front, -t.values[0], t.values[1]))
    if not ranked:
        return ranked
    images = validation_images or study.user_attrs.get(VALIDATION_IMAGES)
    best = max(t.values[0] for t in ranked)
    pick = pick_student(ranked, pick_band(best, images))
    return [pick] + [t for t in ranked if t is not pick]


def pareto_listing(
    front: list[FrozenTrial], ranked: list[FrozenTrial]
) -> list[tuple[FrozenTrial, bool, bool]]:
    """What ``searchkd pareto`` lists, as (trial, on the front, is the pick), from the
    study's ``pareto_front`` and ``ranked_students``: the front, then the pick when it is
    off the front (a few more MACs for a proxy score a hair lower)."""
    pick = ranked[0].number if ranked else None
    listing = [(t, True, t.number == pick) for t in front]
    if ranked and not any(is_pick for _, _, is_pick in listing):
        listing.append((ranked[0], False, True))
    return listing


def pick_band(best_accuracy: float, validation_images: int | None) -> float:
    """One binomial standard error of the best proxy accuracy: students this close to it
    cannot be told apart by one proxy run on ``validation_images`` images."""
    if not validation_images:
        return 0.0
    return math.sqrt(best_accuracy * (1 - best_accuracy) / validation_images)


def pick_student(students: list[FrozenTrial], band: float) -> FrozenTrial:
    """Of the students whose proxy accuracy is within ``band`` of the best, the one with the
    most MACs (then the more accurate).

    A two-epoch proxy under-rates larger students: taking the largest of those it cannot
    separate ended more accurate after full training than taking the highest proxy score,
    replayed on ground truth (0.2-0.7 pp), on a uniform sample of the compact space
    (0.04-0.17 pp) and on the picks of stored searches (``benchmarks/tie_break.py``,
    docs/baselines.md). With ``band`` 0 it is the highest score, fewest MACs on a tie."""
    tied = within_band(students, band)
    if band == 0:
        return min(tied, key=lambda t: t.values[1])
    return max(tied, key=lambda t: (t.values[1], t.values[0]))


def within_band(students: list[FrozenTrial], band: float) -> list[FrozenTrial]:
    """The students whose proxy accuracy is within ``band`` of the best one's."""
    best = max(t.values[0] for t in students)
    return [t for t in students if t.values[0] >= best - band - 1e-12]


def hand_designed_name(trial: FrozenTrial) -> str | None:
    """The space's name for a trial that is one of its hand-designed members queued first
    (``res12``), so output can say when the search's best is a network a user would write."""
    name = trial.user_attrs.get(HAND_DESIGNED)
    return str(name) if name else None


def pick_explained(study: optuna.Study, ranked: list[FrozenTrial]) -> list[str]:
    """Sentences for the output of a search, given its ``ranked_students``: why the pick is
    not the highest proxy score, and that it is a hand-designed member when it is one
    (none when neither holds)."""
    if not ranked:
        return []
    pick, top = ranked[0], pick_student(ranked, 0.0)
    lines = []
    if pick is not top:
        images = study.user_attrs.get(VALIDATION_IMAGES)
        band = pick_band(top.values[0], images)
        close = len(within_band(ranked, band))
        lines.append(
            f"The pick is trial {pick.number} ({TrialRow.from_trial(pick).described}; proxy "
            f"accuracy {pick.values[0]:.3f}, {pick.values[1] / 1e6:.2f}M MACs), not trial "
            f"{top.number} ({top.values[0]:.3f}, {top.values[1] / 1e6:.2f}M): of the {close} "
            f"students within one standard error ({band:.3f} on {images} validation images) "
            "of the best proxy accuracy it has the most MACs, and two proxy epochs under-rate "
            "larger students."
        )
    if name := hand_designed_name(pick):
        alone = ": nothing else the search trained scored higher" if pick is top else ""
        lines.append(
            f"The pick (trial {pick.number}) is {name}, a hand-designed member of the space "
            f"trained first{alone}."
        )
    return lines


def best_feasible_accuracy(study: optuna.Study) -> float | None:
    values = [t.values[0] for t in trained_trials(study) if is_feasible(t)]
    return max(values) if values else None


# --- crash and interrupt bookkeeping ----------------------------------------------------
def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _dead_here(owner: str, mine_is_dead: bool = True) -> bool:
    """``owner`` (host:pid) is a process of this host that has ended. With ``mine_is_dead``,
    our own pid counts as ended: at resume, a running trial under it can only belong to an
    earlier process (a restarted container); while claiming, it is this process's own."""
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return mine_is_dead
    return not _alive(int(pid))


def fail_orphaned_trials(study: optuna.Study) -> list[int]:
    """Mark RUNNING trials whose process on this host is gone as FAILED, with the reason.

    Trials of live processes (another searcher on the same study) and of other hosts
    are left alone.
    """
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = str(trial.user_attrs.get("worker", ""))
        if not _dead_here(owner):
            continue
        pid = owner.rpartition(":")[2]
        reason = f"left running by process {pid}, which ended before the trial finished"
        mark_failed(study, trial, reason)
        failed.append(trial.number)
    return failed


def mark_failed(study: optuna.Study, trial: FrozenTrial | optuna.Trial, reason: str) -> None:
    """Record why a trial failed (a user attribute the dashboard shows), then fail it."""
    set_user_attr(study, trial, "fail_reason", reason)
    study.tell(trial.number, state=TrialState.FAIL)


@dataclass(frozen=True)
class TrialRow:
    number: int
    accuracy: float
    macs: int
    params: int
    latency_ms: float | None
    summary: str
    hand_designed: str | None = None

    @classmethod
    def from_trial(cls, trial: FrozenTrial) -> TrialRow:
        latency = trial.values[2]
        return cls(
            number=trial.number,
            accuracy=trial.values[0],
            macs=int(trial.values[1]),
            params=int(trial.user_attrs.get("params", 0)),
            latency_ms=latency if math.isfinite(latency) else None,
            summary=str(trial.user_attrs.get("summary", "")),
            hand_designed=hand_designed_name(trial),
        )

    @property
    def described(self) -> str:
        """The architecture, after the member's name when it is a hand-designed one."""
        return f"[{self.hand_designed}] {self.summary}" if self.hand_designed else self.summary
