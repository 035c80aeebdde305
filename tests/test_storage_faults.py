"""Issue 16, storage half: nothing lost, nothing silently wrong. One test (or group) per case:

1. a damaged end of ``study.log`` plus a rerun made the whole study unreadable;
2. a full disk during a search left half a record (and ``unexpected OSError``); under SQLite
   (or PostgreSQL) it ended with ``unexpected OperationalError: database or disk is full``;
3. searchers started together with other settings both ran;
4. identical searchers trained the same candidate twice;
5. two searchers creating a new SQLite study at once: one died (``alembic_version``).

Each failed before the fix (checked by reverting it) and passes after.
benchmarks/fault_injection.py runs the same faults many times at random moments.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from searchkd import cli
from searchkd.errors import SearchKDError
from searchkd.study import full_disk_reason, make_storage, open_study
from tests.bad_inputs import write_teacher
from tests.faults import DatabaseFull, JournalFaults
from tests.searchers import ROOT, sqlite_integrity, study_facts, write_config

DIRECTIONS = ["maximize", "minimize", "minimize"]


def _plain(path: Path) -> JournalStorage:
    """The journal as plain Optuna reads it (no searchkd in between)."""
    return JournalStorage(JournalFileBackend(str(path)))


def _journal_with_trials(path: Path, trials: int = 5) -> None:
    storage = make_storage(f"journal:{path}")
    study = optuna.create_study(study_name="s", storage=storage, directions=DIRECTIONS)
    for number in range(trials):
        trial = study.ask()
        trial.set_user_attr("arch", {"n": number})
        study.tell(trial, [float(number), 1.0, 1.0])


def _whole_records(path: Path) -> bool:
    """Every line of the file is a complete record: ends in a newline and parses."""
    data = path.read_bytes()
    try:
        return data.endswith(b"\n") and all(json.loads(line) for line in data.splitlines())
    except ValueError:
        return False


def _completed(storage) -> list[float]:
    study = optuna.load_study(study_name="s", storage=storage)
    return [t.values[0] for t in study.get_trials(states=(TrialState.COMPLETE,))]


# --- 1. a damaged end -------------------------------------------------------------------
DAMAGE = {
    "partial last line": lambda data: data + b'{"op_code":5,"x',
    "a line cut in half": lambda data: data + data.splitlines(keepends=True)[-1][:40],
    "garbage ending in a newline": lambda data: data + b"\x00garbage\n",
    "file cut at 50%": lambda data: data[: len(data) // 2],
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_rerun_after_a_damaged_end_loses_no_trial(damage, tmp_path, capsys):
    path = tmp_path / "study.log"
    _journal_with_trials(path)
    whole = path.read_bytes()
    path.write_bytes(DAMAGE[damage](whole))
    damaged = path.read_bytes()
    before = _completed(make_storage(f"journal:{path}"))  # what the damaged file holds

    capsys.readouterr()
    study = open_study("s", f"journal:{path}")  # the rerun: open as a search does, append
    study.tell(study.ask(), [99.0, 1.0, 1.0])

    said = capsys.readouterr().err.strip().splitlines()
    assert len(said) == 1 and "moved those" in said[0], said
    backups = list(tmp_path.glob("study.log.damaged-*"))
    assert len(backups) == 1
    assert damaged.startswith(path.read_bytes()[: len(damaged) - backups[0].stat().st_size])
    assert damaged.endswith(backups[0].read_bytes())  # the bytes moved aside, kept
    assert _completed(_plain(path)) == [*before, 99.0]  # plain Optuna reads every trial
    assert _whole_records(path)


def test_reads_warn_about_a_damaged_end_and_change_nothing(tmp_path, capsys):
    path = tmp_path / "study.log"
    _journal_with_trials(path)
    path.write_bytes(DAMAGE["partial last line"](path.read_bytes()))
    damaged = path.read_bytes()
    assert cli.main(["pareto", "--storage", f"journal:{path}"]) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("searchkd: warning:")]
    assert len(warnings) == 1 and "cut off after 15 bytes" in warnings[0], err
    assert path.read_bytes() == damaged


def test_damage_in_the_middle_is_refused_with_the_repair(tmp_path, capsys):
    path = tmp_path / "study.log"
    _journal_with_trials(path)
    lines = path.read_bytes().splitlines(keepends=True)
    # what appending after a cut-off record did before the fix: the next record glued to it
    lines[4] = b'{"op_code":5,"x' + lines[4]
    lines.insert(7, b"garbage\n")
    path.write_bytes(b"".join(lines))

    assert cli.main(["pareto", "--storage", f"journal:{path}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"searchkd: error: {path} is damaged at line 5 of {len(lines)} (and 1")
    assert f"`searchkd repair-journal {path}`" in err and "\n" not in err
    with pytest.raises(SearchKDError, match="damaged at line 5"):  # a search refuses too
        open_study("s", f"journal:{path}")

    assert cli.main(["repair-journal", str(tmp_path)]) == 0
    assert "dropped line(s) 5, 8" in capsys.readouterr().err
    assert _completed(_plain(path)) == [0.0, 1.0, 2.0, 3.0, 4.0]  # the glued record kept
    assert len(list(tmp_path.glob("study.log.damaged-*"))) == 1


# --- 2. a full disk ---------------------------------------------------------------------
def test_a_full_disk_leaves_no_half_record(tmp_path, monkeypatch):
    path = tmp_path / "study.log"
    _journal_with_trials(path, trials=3)
    study = optuna.load_study(study_name="s", storage=make_storage(f"journal:{path}"))
    trial = study.ask()
    size = path.stat().st_size
    JournalFaults(path, at_write=1, fault="enospc").install(monkeypatch)
    with pytest.raises(SearchKDError, match=r"No space left on device.*nothing was half-written"):
        study.tell(trial, [7.0, 1.0, 1.0])
    assert path.stat().st_size == size and _whole_records(path)
    monkeypatch.undo()  # space freed: the study goes on, and plain Optuna reads it all
    fresh = optuna.load_study(study_name="s", storage=make_storage(f"journal:{path}"))
    fresh.tell(fresh.ask(), [8.0, 1.0, 1.0])
    assert _completed(_plain(path)) == [0.0, 1.0, 2.0, 8.0]


def _tiny_search(
    folder: Path, trials: int, storage: str | None = None, teacher: Path | None = None, **extra
) -> Path:
    """A 1-epoch digits search with a ready (untrained) teacher: seconds per trial."""
    teacher = teacher or folder / "teacher"
    if not teacher.exists():
        write_teacher(teacher)
    extra.setdefault("controller", "random")
    return write_config(folder, trials, storage, teacher={"checkpoint": str(teacher)}, **extra)


def test_a_full_disk_ends_the_search_with_one_line(tmp_path, monkeypatch, capsys):
    config = _tiny_search(tmp_path, trials=2)
    journal = tmp_path / "runs" / "study.log"
    JournalFaults(journal, at_write=16, fault="enospc").install(monkeypatch)
    code = cli.main(["search", "--config", str(config), "--no-progress"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("searchkd: ")]
    assert code == 2 and len(errors) == 1, err
    assert errors[0].startswith(f"searchkd: error: cannot write the study to {journal} (No space")
    assert _whole_records(journal)
    study_facts(_plain(journal))  # readable by plain Optuna


@pytest.mark.slow
def test_a_full_disk_under_sqlite_ends_the_search_with_one_line(tmp_path, capsys):
    """The journal's one line, from a database: SQLite rolls the failed write back, so the
    study stays whole; after space is freed the same command completes it."""
    database = tmp_path / "study.db"
    url = f"sqlite:///{database}"
    config = _tiny_search(tmp_path, trials=2, storage=url)
    search = ["search", "--config", str(config), "--no-progress"]
    with DatabaseFull(database, at_write=80):  # ~75 writes record the first trained trial
        code = cli.main(search)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("searchkd: ")]
    assert code == 2 and len(errors) == 1, err
    assert errors[0].startswith(
        f"searchkd: error: cannot write the study to {url} (database or disk is full); "
        "nothing was half-written and every recorded trial is kept"
    )
    assert sqlite_integrity(database) == "ok"
    before = study_facts(url)  # readable by plain Optuna, the first trained trial in it
    assert before.trained == 1, before

    assert cli.main(search) == 0  # space freed: the same command resumes
    after = study_facts(url)
    assert {n: after.completed.get(n) for n in before.completed} == before.completed
    assert after.trained == 2 and not after.running


def _postgres_error(message: str) -> Exception:
    """What PostgreSQL's driver raises on a full disk: psycopg's DiskFull (SQLSTATE 53100),
    as SQLAlchemy and then Optuna wrap it."""
    import sqlalchemy

    psycopg_errors = pytest.importorskip("psycopg.errors")
    driver = psycopg_errors.DiskFull(message)
    wrapped = sqlalchemy.exc.OperationalError("INSERT INTO trials ...", {}, driver)
    try:
        try:
            raise wrapped
        except sqlalchemy.exc.OperationalError as exc:
            raise optuna.exceptions.StorageInternalError("during the commit") from exc
    except optuna.exceptions.StorageInternalError as exc:
        return exc


def test_a_full_disk_is_told_from_other_database_errors(tmp_path):
    """PostgreSQL's full disk cannot be made here without filling the server's disk: its
    error, as the driver raises it, goes through the same classifier as SQLite's."""
    import sqlite3

    extend = 'could not extend file "base/16384/2619": No space left on device'
    assert full_disk_reason(_postgres_error(extend)) == extend
    # the code decides, whatever the server's language
    assert full_disk_reason(_postgres_error("konnte Datei nicht erweitern")) is not None
    full = sqlite3.OperationalError("database or disk is full")
    assert full_disk_reason(full) == "database or disk is full"
    for other in (
        sqlite3.OperationalError("database is locked"),
        sqlite3.IntegrityError("UNIQUE constraint failed: studies.study_name"),
        OSError(2, "No such file or directory"),
        ValueError("a full moon"),
    ):
        assert full_disk_reason(other) is None, other


def test_creating_an_sqlite_study_on_a_full_disk_says_so(tmp_path):
    """A full disk already when Optuna creates its tables: the same line, not 'cannot open'."""
    database = tmp_path / "study.db"
    with DatabaseFull(database, at_write=0), pytest.raises(SearchKDError) as raised:
        make_storage(f"sqlite:///{database}")
    assert str(raised.value).startswith(
        f"cannot write the study to sqlite:///{database} (database or disk is full)"
    )


# --- 3. settings recorded atomically ----------------------------------------------------
@pytest.mark.slow
def test_a_searcher_with_other_settings_is_refused_while_the_first_starts(tmp_path, monkeypatch):
    """The second searcher starts while the first is starting: it has opened the study and
    is resolving its budget (before the lock, two searchers could both find the study
    without settings here)."""
    import searchkd.search as search_module

    journal, teacher = tmp_path / "shared.log", tmp_path / "teacher"
    shared = f"journal:{journal}"
    first = _tiny_search(tmp_path / "a", 1, shared, teacher, budget={"max_macs": "1M"})
    second = _tiny_search(tmp_path / "b", 1, shared, teacher, budget={"max_macs": "3M"})
    outcome = {}
    original = search_module.adopt_user_attrs

    def second_searcher_then_budget(*args, **kwargs):
        if not outcome:
            outcome["second"] = subprocess.run(
                [sys.executable, "-m", "searchkd.cli", "search", "--config", str(second)],
                capture_output=True,
                text=True,
                timeout=300,
                cwd=ROOT,
            )
        return original(*args, **kwargs)

    monkeypatch.setattr(search_module, "adopt_user_attrs", second_searcher_then_budget)
    assert cli.main(["search", "--config", str(first), "--no-progress"]) == 0
    second_run = outcome["second"]
    assert second_run.returncode == 2, second_run.stderr
    assert "was run with other settings (budget.max_macs differ)" in second_run.stderr
    study = optuna.load_study(study_name="crash", storage=_plain(journal))
    assert study.user_attrs["settings"]["budget"]["max_macs"] == "1M"
    assert all(t.user_attrs["macs"] <= 1e6 for t in study.trials if t.user_attrs.get("trained"))


# --- 4. no architecture trained twice ---------------------------------------------------
@pytest.mark.slow
def test_identical_searchers_do_not_train_one_architecture_twice(tmp_path, capsys):
    """The same seed proposes the same sequence: a second identical searcher (here after
    the first, the limit of "started together") proposes the first one's architectures."""
    config = _tiny_search(tmp_path, trials=1)
    assert cli.main(["search", "--config", str(config), "--no-progress"]) == 0
    config.write_text(config.read_text().replace("trials: 1", "trials: 2"))
    assert cli.main(["search", "--config", str(config), "--no-progress"]) == 0
    capsys.readouterr()
    facts = study_facts(_plain(tmp_path / "runs" / "study.log"))
    trained = facts.architectures_of_trained
    assert facts.trained == 2 and len(set(trained)) == 2
    assert any(r.startswith("not trained: the same architecture") for r in facts.failed.values())


def test_a_claim_is_held_by_a_live_trial_and_released_by_a_dead_one(tmp_path):
    from searchkd.study import claim_architecture
    from searchkd.study_lock import StudyLock

    path = tmp_path / "study.log"
    study = optuna.create_study(study_name="s", storage=make_storage(f"journal:{path}"))
    lock = StudyLock(f"journal:{path}", "s")
    first, second, third = study.ask(), study.ask(), study.ask()
    first.set_user_attr("worker", "elsewhere:1")  # another host: presumed alive
    assert claim_architecture(study, lock, first, {"a": 1}) is None
    assert claim_architecture(study, lock, second, {"a": 1}) == first.number
    assert claim_architecture(study, lock, second, {"a": 2}) is None
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    import socket

    second.set_user_attr("worker", f"{socket.gethostname()}:{dead}")  # its process ended
    assert claim_architecture(study, lock, third, {"a": 2}) is None


# --- 5. SQLite created by several searchers at once --------------------------------------
def _started_together(target, argument_lists: list[tuple]) -> list:
    """Run ``target(*arguments, start, results)`` in one forked process per argument list,
    released at one moment; the outcomes they put on ``results``, in arrival order."""
    context = multiprocessing.get_context("fork")
    start, results = context.Event(), context.Queue()
    processes = [
        context.Process(target=target, args=(*arguments, start, results))
        for arguments in argument_lists
    ]
    for process in processes:
        process.start()
    time.sleep(0.3)
    start.set()
    outcomes = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join()
    return outcomes


def _open_at(url: str, start, results) -> None:
    try:
        start.wait()
        storage = make_storage(url)
        optuna.create_study(
            study_name="s", storage=storage, directions=DIRECTIONS, load_if_exists=True
        )
        results.put("ok")
    except BaseException as exc:  # the child reports, the test judges
        results.put(f"{type(exc).__name__}: {exc}")


@pytest.mark.slow
def test_searchers_creating_one_sqlite_study_at_once_all_succeed(tmp_path):
    for round_ in range(2):
        url = f"sqlite:///{tmp_path / f'study{round_}.db'}"
        outcomes = _started_together(_open_at, [(url,)] * 4)
        assert outcomes == ["ok"] * 4, outcomes
        assert len(optuna.get_all_study_summaries(url)) == 1


def test_the_journal_faults_wrapper_counts_only_the_journal(tmp_path, monkeypatch):
    other = tmp_path / "other.txt"
    faults = JournalFaults(tmp_path / "study.log", at_write=1, fault="enospc")
    faults.install(monkeypatch)
    other.write_text(json.dumps({"x": 1}))
    assert faults.writes == 0


# --- the lock on every storage ------------------------------------------------------------
POSTGRES = os.environ.get("SEARCHKD_TEST_POSTGRES")


def _url(kind: str, tmp_path: Path) -> str:
    if kind == "journal":
        return f"journal:{tmp_path / 'study.log'}"
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'study.db'}"
    if not POSTGRES:
        pytest.skip("PostgreSQL case skipped: set SEARCHKD_TEST_POSTGRES=postgresql://...")
    pytest.importorskip("psycopg", reason="psycopg is needed: pip install 'searchkd[postgres]'")
    return POSTGRES


def _settings_then_claim(url: str, name: str, index: int, start, results) -> None:
    """One searcher: open the study and record its settings (index 0 and 1 share theirs),
    then claim one architecture for a new trial."""
    from searchkd.study import claim_architecture, claim_settings
    from searchkd.study_lock import StudyLock

    try:
        start.wait()
        lock = StudyLock(url, name)
        with lock.hold():
            study = open_study(name, url)
            try:
                claim_settings(study, lock, {"seed": 0 if index < 2 else index})
            except SearchKDError:
                results.put(("refused", None))
                return
        trial = study.ask()
        results.put(("ok", claim_architecture(study, lock, trial, {"arch": 1})))
    except BaseException as exc:  # the child reports, the test judges
        results.put((f"{type(exc).__name__}: {exc}", None))


@pytest.mark.slow  # >= 1 s: the full suite runs it
@pytest.mark.parametrize("kind", ["journal", "sqlite", "postgresql"])
def test_racing_searchers_agree_on_settings_and_claims(kind, tmp_path):
    """Four searchers at once on a new study, two sharing their settings: one settings
    wins, the others are refused; of those that run, one trains the architecture."""
    url, name = _url(kind, tmp_path), f"race-{uuid.uuid4().hex[:8]}"
    outcomes = _started_together(_settings_then_claim, [(url, name, i) for i in range(4)])
    ran = [holder for state, holder in outcomes if state == "ok"]
    assert {state for state, _ in outcomes} <= {"ok", "refused"}, outcomes
    assert len(ran) in (1, 2) and len(ran) + sum(s == "refused" for s, _ in outcomes) == 4
    assert ran.count(None) == 1, outcomes  # exactly one claimed the architecture
