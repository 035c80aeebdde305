"""Fault injection: what issue 16's probe did, many times, at random moments, on tiny searches.

* **kills**: `searchkd search` is SIGKILLed at a random moment of its run (0.5-20 s after it
  starts: set-up, sampling, training, recording), or kills itself with half a record written
  into the journal (tests/faults.py, at a random write); the same command is rerun after
  each kill, then once to the end. benchmarks/crash_safety.py's check then holds: no
  completed trial lost or changed, none duplicated, none left RUNNING, every failure an
  orphan of a killed process (or an architecture skipped because the study holds it).
* **damaged journals**: a finished study's `study.log` gets a partial last line, half a line,
  a garbage line ending in a newline, or is cut at a random point; the search is rerun for
  one more trial. Every trial the damaged file held must still be there, readable by plain
  Optuna.
* **full disk**: the N-th journal write (random N) fails half-way with ENOSPC, and every write
  after it; under SQLite, the N-th writing statement and every one after it fails with
  SQLite's "database or disk is full": the search must end with one `searchkd: error:`
  line, leave every line of the journal whole (SQLite: pass its integrity check), and a
  rerun with space must complete the study.
* **races**: two searchers started at the same moment on one study: identical ones (no
  architecture may be trained twice, nothing lost or left running), and ones with other
  seeds or budgets (exactly one refused, and every trained trial made under the settings the
  study records), on a journal file, a new SQLite file (both must create it) and PostgreSQL
  when SEARCHKD_TEST_POSTGRES is set.

    python -m benchmarks.fault_injection [--kills 50] [--races 5] [--damage 2] [--enospc 5]

prints one table row per kind of fault. tests/test_storage_faults.py checks each case once.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import optuna

from benchmarks.crash_safety import CrashRun, Kill, check
from tests.bad_inputs import write_teacher
from tests.searchers import (
    StudyFacts,
    kill_after,
    start_search,
    study_facts,
    wait_all,
    write_config,
)

POSTGRES = os.environ.get("SEARCHKD_TEST_POSTGRES")
STUDY = "crash"
TIMEOUT = 3600  # seconds a tiny search may take: much longer on a loaded machine than alone


@dataclass
class Tally:
    """One row of the table."""

    kind: str
    runs: int = 0  # searches started
    faults: int = 0  # faults that landed (kills, damages, full disks, races)
    lost: int = 0  # completed trials gone or changed
    duplicated: int = 0  # architectures trained twice
    running: int = 0  # trials left RUNNING at the end
    unreadable: int = 0  # studies plain Optuna could not read at the end
    wrong: int = 0  # other checks that failed (settings mixed, a second line, exit codes)
    notes: list[str] = field(default_factory=list)

    def say(self, line: str) -> None:
        """One finished unit of this fault, printed at once: a run cut short still shows
        what it measured."""
        print(f"  [{self.kind}] {line}", flush=True)

    def row(self) -> str:
        notes = "; ".join(self.notes[:4]) + (" ..." if len(self.notes) > 4 else "")
        return (
            f"| {self.kind} | {self.runs} | {self.faults} | {self.lost} | {self.duplicated} | "
            f"{self.running} | {self.unreadable} | {self.wrong} | {notes or '-'} |"
        )


def _plain(url: str):
    """The storage as plain Optuna opens it (no searchkd reader in between)."""
    if url.startswith("journal:"):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        return JournalStorage(JournalFileBackend(url.removeprefix("journal:")))
    return url


def _facts(url: str, name: str = STUDY) -> StudyFacts | None:
    try:
        return study_facts(_plain(url), name)
    except Exception:
        return None


def _lost(before: StudyFacts, after: StudyFacts) -> int:
    return sum(after.completed.get(n) != record for n, record in before.completed.items())


def _duplicated(facts: StudyFacts) -> int:
    trained = facts.architectures_of_trained
    return len(trained) - len(set(trained))


def _config(folder: Path, teacher: Path, trials: int, storage: str, **extra) -> Path:
    return write_config(
        folder,
        trials,
        storage,
        controller=extra.pop("controller", "random"),
        teacher={"checkpoint": str(teacher)},
        **extra,
    )


# --- kills --------------------------------------------------------------------------------
def kill_sequence(
    folder: Path, teacher: Path, rng: random.Random, kills: int, trials: int, tally: Tally
) -> None:
    """``kills`` kill rounds on one study (about a third inside a journal write), then a run
    to the end; benchmarks/crash_safety.py's check on the result."""
    journal = folder / "runs" / "study.log"
    url = f"journal:{journal}"
    config = _config(folder, teacher, trials, url)
    log = folder / "search.log"
    rounds = []
    for _ in range(kills):
        tally.runs += 1
        if rng.random() < 0.35:
            at = rng.randint(1, 30)
            faults = ["--journal", str(journal), "--at-write", str(at), "--fault", "kill"]
            process = start_search(config, log, faults)
            killed = process.wait(timeout=TIMEOUT) == -9
            delay = float(at)  # a whole number marks an in-write kill
        else:
            delay = round(rng.uniform(0.5, 20.0), 1) + 0.05
            process = start_search(config, log)
            killed = kill_after(process, delay)
        tally.faults += killed
        facts = _facts(url) if journal.exists() else None
        how = f"in journal write {delay:.0f}" if delay.is_integer() else f"{delay:.1f} s in"
        state = f"{facts.trained} trained, {len(facts.running)} running" if facts else "no study"
        tally.say(f"{folder.name}: kill {'landed' if killed else 'missed'} ({how}); {state}")
        facts = facts or StudyFacts({}, 0, [], {})
        rounds.append(Kill(round(delay, 2), killed, process.pid, facts))
    tally.runs += 1
    final_exit = start_search(config, log).wait(timeout=TIMEOUT)
    final = _facts(url)
    if final is None:
        tally.unreadable += 1
        tally.notes.append(f"{folder.name}: unreadable after the resume")
        return
    run = CrashRun(rounds, final, final_exit, url, 0, "n/a (journal)", log)
    problems = check(run, trials)
    tally.lost += sum(_lost(kill.facts, final) for kill in rounds)
    tally.duplicated += _duplicated(final)
    tally.running += len(final.running)
    other = [p for p in problems if "lost or changed" not in p and "trained twice" not in p]
    tally.wrong += len(other)
    tally.notes += [f"{folder.name}: {p}" for p in other]
    repaired = len(list(journal.parent.glob("study.log.damaged-*")))
    tally.notes.append(f"{folder.name}: {repaired} cut-off end(s) moved aside")
    landed = sum(kill.killed for kill in rounds)
    tally.say(
        f"{folder.name}: {landed} of {len(rounds)} kills landed, {repaired} cut-off end(s) "
        f"moved aside; final exit {final_exit}, {final.trained} trained; lost "
        f"{sum(_lost(kill.facts, final) for kill in rounds)}, twice {_duplicated(final)}, "
        f"running {len(final.running)}; problems: {'; '.join(problems) or 'none'}"
    )


# --- damaged journals ---------------------------------------------------------------------
DAMAGES = {
    "partial last line": lambda data, rng: data + b'{"op_code":5,"x',
    "half a line": lambda data, rng: data + data.splitlines(keepends=True)[-1][:60],
    "garbage line with newline": lambda data, rng: data + b"\x00\xffgarbage\n",
    "cut at a random point": lambda data, rng: data[: rng.randint(len(data) // 3, len(data))],
}


def damage_rounds(
    finished: Path, teacher: Path, base: Path, rng: random.Random, trials: int, tally: Tally
) -> None:
    """Each damage on a copy of a finished journal, then the search rerun for one more."""
    from searchkd.study import make_storage

    for name, damage in DAMAGES.items():
        folder = base / f"damage-{uuid.uuid4().hex[:6]}"
        folder.mkdir()
        journal = folder / "study.log"
        journal.write_bytes(damage(finished.read_bytes(), rng))
        url = f"journal:{journal}"
        config = _config(folder, teacher, trials + 1, url)
        try:  # what the damaged file holds, read as searchkd reads it (with a warning)
            before = study_facts(make_storage(url, say=lambda message: None), STUDY)
        except Exception as exc:
            tally.unreadable += 1
            tally.notes.append(f"{name}: damaged file unreadable ({exc})")
            continue
        tally.runs += 1
        tally.faults += 1
        code = start_search(config, folder / "search.log").wait(timeout=TIMEOUT)
        after = _facts(url)
        if after is None:
            tally.unreadable += 1
            tally.notes.append(f"{name}: unreadable after the rerun")
            continue
        tally.lost += _lost(before, after)
        tally.duplicated += _duplicated(after)
        tally.running += len(after.running)
        if code != 0 or after.trained < trials + 1:
            tally.wrong += 1
            tally.notes.append(f"{name}: rerun exit {code}, {after.trained} trained")
        tally.say(
            f"{name}: rerun exit {code}, {after.trained} trained, lost {_lost(before, after)} "
            f"of {len(before.completed)} completed, twice {_duplicated(after)}"
        )


# --- a full disk --------------------------------------------------------------------------
def enospc_round(
    folder: Path, teacher: Path, rng: random.Random, trials: int, tally: Tally, kind: str
) -> None:
    """A full disk at a random write: ENOSPC in the journal's, or SQLite's own SQLITE_FULL
    at a random writing statement (tests/faults.py); then a rerun with space."""
    from searchkd.journal import check_end
    from tests.searchers import sqlite_integrity

    if kind == "journal":
        study_file = folder / "runs" / "study.log"
        url, at, fault = f"journal:{study_file}", rng.randint(3, 70), "enospc"
    else:  # ~25-35 writing statements per trial
        study_file = folder / "runs" / "study.db"
        url, at, fault = f"sqlite:///{study_file}", rng.randint(3, 120), "database-full"
    config = _config(folder, teacher, trials, url)
    log = folder / "search.log"
    faults = ["--study-file", str(study_file), "--at-write", str(at), "--fault", fault]
    tally.runs += 1
    code = start_search(config, log, faults).wait(timeout=TIMEOUT)
    lines = [line for line in log.read_text().splitlines() if line.startswith("searchkd: ")]
    if code == 0:
        tally.notes.append(f"write {at}: the search finished first")
        return
    tally.faults += 1
    if code != 2 or len(lines) != 1 or "cannot write the study" not in lines[0]:
        tally.wrong += 1
        tally.notes.append(f"write {at}: exit {code}, {lines[-1:] or 'no line'}")
    if kind == "journal" and check_end(study_file).damaged:
        tally.wrong += 1
        tally.notes.append(f"write {at}: a half-written record left behind")
    if kind == "sqlite" and sqlite_integrity(study_file) != "ok":
        tally.wrong += 1
        tally.notes.append(f"write {at}: SQLite's integrity check failed")
    before = _facts(url)
    if before is None:
        tally.unreadable += 1
        return
    tally.runs += 1
    code = start_search(config, log).wait(timeout=TIMEOUT)  # space freed: rerun
    after = _facts(url)
    if after is None:
        tally.unreadable += 1
        return
    tally.lost += _lost(before, after)
    tally.duplicated += _duplicated(after)
    tally.running += len(after.running)
    if code != 0 or after.trained != trials:
        tally.wrong += 1
        tally.notes.append(f"write {at}: rerun exit {code}, {after.trained} trained")
    tally.say(
        f"{fault} at write {at}: {lines[-1][:90] if lines else 'no line'}; rerun exit {code}, "
        f"{after.trained} trained, lost {_lost(before, after)}"
    )


# --- races --------------------------------------------------------------------------------
RACES = ("identical", "other seed", "other budget")


def race(folder: Path, teacher: Path, storage: str, how: str, trials: int, tally: Tally) -> None:
    """Two searchers started at the same moment on one (new) study."""
    name = f"race-{uuid.uuid4().hex[:8]}"
    second = {"other seed": {"seed": 1}, "other budget": {"budget": {"max_macs": "1.5M"}}}
    configs = [
        _config(folder / "a", teacher, trials, storage, study=name),
        _config(folder / "b", teacher, trials, storage, study=name, **second.get(how, {})),
    ]
    logs = [folder / "a.log", folder / "b.log"]
    processes = [start_search(config, log) for config, log in zip(configs, logs, strict=True)]
    tally.runs += 2
    tally.faults += 1
    codes = wait_all(processes, timeout=TIMEOUT)
    facts = _facts(storage, name)
    if facts is None:
        tally.unreadable += 1
        tally.notes.append(f"{how}: unreadable")
        return
    tally.duplicated += _duplicated(facts)
    tally.running += len(facts.running)
    tally.say(
        f"{storage.split(':')[0]} {how}: exits {codes}, {facts.trained} trained, twice "
        f"{_duplicated(facts)}, running {len(facts.running)}"
    )
    if how == "identical":
        if codes != [0, 0] or not trials <= facts.trained <= trials + 1:
            tally.wrong += 1
            tally.notes.append(f"{how}: exits {codes}, {facts.trained} trained")
        return
    refused = ["other settings" in log.read_text() for log, code in zip(logs, codes, strict=True)]
    if sorted(codes) != [0, 2] or sum(refused) != 1:
        tally.wrong += 1
        tally.notes.append(f"{how}: exits {codes}, refused {refused}")
    tally.wrong += _mixed_settings(storage, name, tally, how)


def _mixed_settings(storage: str, name: str, tally: Tally, how: str) -> int:
    """Trained trials made under other settings than the study records (seed or budget)."""
    study = optuna.load_study(study_name=name, storage=_plain(storage))
    settings = study.user_attrs.get("settings") or {}
    limit = (study.user_attrs.get("budget") or {}).get("macs")
    mixed = 0
    for trial in study.get_trials(deepcopy=False):
        attrs = trial.user_attrs
        if not attrs.get("trained"):
            continue
        if attrs.get("seed") != settings.get("seed", 0) + trial.number:
            mixed += 1
        if limit is not None and attrs.get("macs", 0) > limit:
            mixed += 1
    if mixed:
        tally.notes.append(f"{how}: {mixed} trained trial(s) under other settings")
    return mixed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=50, help="kills that land, at least")
    parser.add_argument("--per-study", type=int, default=10, help="kill rounds per study")
    parser.add_argument("--trials", type=int, default=6, help="trials of a killed search")
    parser.add_argument("--damage", type=int, default=2, help="rounds of the four damages")
    parser.add_argument("--enospc", type=int, default=5)
    parser.add_argument("--races", type=int, default=3, help="races per storage and kind")
    parser.add_argument("--race-trials", type=int, default=1, help="trials of a racer")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=("kills", "damage", "enospc", "races"))
    args = parser.parse_args()
    rng = random.Random(args.seed)
    started = time.perf_counter()
    tallies = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        teacher = base / "teacher"
        write_teacher(teacher)
        finished: list[Path] = []
        if args.only in (None, "kills", "damage"):
            kills = Tally("SIGKILL at random moments / inside a journal write")
            rounds = args.kills if args.only != "damage" else 0
            while kills.faults < rounds and kills.runs < 4 * rounds:
                folder = base / f"kills-{len(finished)}"
                kill_sequence(folder, teacher, rng, args.per_study, args.trials, kills)
                finished.append(folder / "runs" / "study.log")
            if rounds:
                tallies.append(kills)
        if args.only in (None, "damage"):
            if not finished:  # a study to damage
                folder = base / "finished"
                url = f"journal:{folder / 'runs' / 'study.log'}"
                start_search(_config(folder, teacher, 4, url), folder / "log").wait(900)
                finished.append(folder / "runs" / "study.log")
            damaged = Tally("damaged journal end, then a rerun")
            for number in range(args.damage):
                source = finished[number % len(finished)]
                done = _facts(f"journal:{source}")
                trials = done.trained if done else args.trials
                damage_rounds(source, teacher, base, rng, trials, damaged)
            tallies.append(damaged)
        if args.only in (None, "enospc"):
            full = Tally("full disk (ENOSPC at a random journal write), then a rerun")
            for number in range(args.enospc):
                enospc_round(base / f"enospc-{number}", teacher, rng, 4, full, "journal")
            tallies.append(full)
            full = Tally("full disk under SQLite (SQLITE_FULL at a random write), then a rerun")
            for number in range(args.enospc):
                enospc_round(base / f"sqlite-full-{number}", teacher, rng, 4, full, "sqlite")
            tallies.append(full)
        if args.only in (None, "races"):
            storages = {"journal": lambda f: f"journal:{f / 'study.log'}"}
            storages["sqlite"] = lambda f: f"sqlite:///{f / 'study.db'}"
            if POSTGRES:
                storages["postgresql"] = lambda f: POSTGRES
            races = {(k, h): Tally(f"race on {k}: {h} settings") for k in storages for h in RACES}
            tallies += races.values()
            for number in range(args.races):  # round-robin: a run cut short covers every kind
                for (kind, how), tally in races.items():
                    folder = base / f"race-{kind}-{how.replace(' ', '-')}-{number}"
                    folder.mkdir(parents=True)
                    race(folder, teacher, storages[kind](folder), how, args.race_trials, tally)
        print(
            "| fault | searches run | faults landed | trials lost | architectures trained "
            "twice | left RUNNING | studies unreadable | other checks failed | notes |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for tally in tallies:
            print(tally.row())
        total = Tally("total")
        for tally in tallies:
            for key in ("runs", "faults", "lost", "duplicated", "running", "unreadable", "wrong"):
                setattr(total, key, getattr(total, key) + getattr(tally, key))
        print(total.row())
        print(f"\n{time.perf_counter() - started:.0f} s; seed {args.seed}")


if __name__ == "__main__":
    main()
