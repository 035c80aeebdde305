"""Crash safety: SIGKILL `searchkd search` at random moments, rerun the same command each time.

Each round starts the search, kills it with SIGKILL at a random moment (seeded): the
first while the teacher trains (between its checkpoint writes), the others 0-2 s after
1-3 more trials completed, i.e. among running trials. Then it reads the study from outside.
After the last kill the command runs to the end. Then:
no completed trial was lost or changed, none was duplicated (the study holds exactly
the requested number of trained trials), nothing is left RUNNING, every trial a dead
process left running is FAILED with the reason, the SQLite file passes its integrity
check, and every checkpoint the teacher wrote loads.

    python -m benchmarks.crash_safety [--kills 10] [--seed 0] [--trials 8] [--storage journal]

tests/test_crash_safety.py runs the same with 3 kills.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from searchkd.checkpoint import load_state_dict
from searchkd.teacher import load_teacher
from tests.searchers import (
    StudyFacts,
    completed_grew,
    kill_after,
    log_shows,
    sqlite_integrity,
    start_search,
    study_facts,
    write_config,
)


@dataclass
class Kill:
    after_s: float
    killed: bool  # False: the search had already finished
    pid: int
    facts: StudyFacts  # the study as the killed process left it


@dataclass
class CrashRun:
    kills: list[Kill]
    final: StudyFacts
    final_exit: int
    storage: str
    checkpoints_loaded: int
    integrity: str
    log: Path
    problems: list[str] = field(default_factory=list)


def crash_and_resume(
    folder: Path,
    kills: int,
    seed: int = 0,
    trials: int = 8,
    journal: bool = False,
    controller: str = "akd",
) -> CrashRun:
    journal_file, database = folder / "runs" / "study.log", folder / "runs" / "study.db"
    storage = f"journal:{journal_file}" if journal else f"sqlite:///{database}"
    config = write_config(folder, trials, storage, controller=controller)
    url = str(journal_file) if journal else storage
    read_url = _readable(url)
    log = folder / "search.log"
    rng = random.Random(seed)
    rounds = []
    for number in range(kills):
        process = start_search(config, log)
        if number == 0:  # while the teacher trains and writes its route checkpoints
            ready, delay = log_shows(log, "teacher epoch 1/"), rng.uniform(0, 2)
        else:  # among running trials: 1-3 more trials completed, then 0-2 s more
            ready = completed_grew(read_url, "crash", rng.randint(1, 3))
            delay = rng.uniform(0, 2)
        killed = kill_after(process, delay, ready)
        facts = study_facts(read_url) if _has_study(read_url) else StudyFacts({}, 0, [], {})
        rounds.append(Kill(round(delay, 2), killed, process.pid, facts))
    final_process = start_search(config, log)
    final_exit = final_process.wait(timeout=600)
    final = study_facts(read_url)
    run = CrashRun(
        kills=rounds,
        final=final,
        final_exit=final_exit,
        storage=url,
        checkpoints_loaded=_load_checkpoints(folder / "runs"),
        integrity="n/a (journal)" if journal else sqlite_integrity(database),
        log=log,
    )
    run.problems = check(run, trials)
    return run


def _readable(url: str):
    if url.endswith(".log"):
        Path(url).parent.mkdir(parents=True, exist_ok=True)
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        return JournalStorage(JournalFileBackend(url))
    return url


def _has_study(storage) -> bool:
    import optuna

    try:
        return any(s.study_name == "crash" for s in optuna.get_all_study_summaries(storage))
    except Exception:  # the storage file does not exist yet
        return False


def _load_checkpoints(run_dir: Path) -> int:
    """Every .pt under the run folder loads; every finished teacher folder loads as a teacher."""
    loaded = 0
    for path in sorted(run_dir.rglob("*.pt")):
        load_state_dict(path, "checkpoint")
        loaded += 1
    for meta in run_dir.rglob("teacher.json"):
        load_teacher(meta.parent)
    return loaded


def check(run: CrashRun, trials: int) -> list[str]:
    """Everything that would be wrong; empty when the crash safety holds."""
    problems = []
    final = run.final
    if run.final_exit != 0:
        problems.append(f"the resumed search exited {run.final_exit} (see {run.log})")
    for number, kill in enumerate(run.kills, 1):
        for trial, record in kill.facts.completed.items():
            if final.completed.get(trial) != record:
                problems.append(f"kill {number}: completed trial {trial} lost or changed")
    if final.trained != trials:
        problems.append(f"{final.trained} trained trials in the study, expected {trials}")
    if final.running:
        problems.append(f"trials still RUNNING after the resume: {final.running}")
    architectures = final.architectures_of_trained
    if len(architectures) != len(set(architectures)):
        problems.append("an architecture was trained twice")
    dead = {str(kill.pid) for kill in run.kills if kill.killed}
    for trial, reason in final.failed.items():
        if reason.startswith("not trained: the same architecture"):  # a resumed controller
            continue  # re-proposed what the study already holds: skipped untrained
        pid = reason.removeprefix("left running by process ").split(",")[0]
        if not reason.startswith("left running by process") or pid not in dead:
            problems.append(
                f"failed trial {trial} has no orphan reason of a killed pid: {reason!r}"
            )
    if run.integrity != "ok" and not run.integrity.startswith("n/a"):
        problems.append(f"sqlite integrity check: {run.integrity}")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--storage", choices=("sqlite", "journal"), default="sqlite")
    parser.add_argument("--controller", default="akd")
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        run = crash_and_resume(
            Path(tmp),
            args.kills,
            args.seed,
            args.trials,
            journal=args.storage == "journal",
            controller=args.controller,
        )
        print(
            f"storage: {args.storage}; controller {args.controller}; seed {args.seed}; "
            f"{args.trials} trials requested"
        )
        print(
            "| kill | kill delay (s after its trigger) | killed | trained trials in study "
            "| RUNNING left behind |"
        )
        print("|---|---|---|---|---|")
        for number, kill in enumerate(run.kills, 1):
            print(
                f"| {number} | {kill.after_s} | {'yes' if kill.killed else 'finished'} | "
                f"{kill.facts.trained} | {len(kill.facts.running)} |"
            )
        final = run.final
        print(
            f"\nafter the resume: {final.trained} trained, "
            f"{len(final.completed) - final.trained} rejected over budget, "
            f"{len(final.failed)} failed (orphans of killed processes, reason recorded), "
            f"{len(final.running)} running; {run.checkpoints_loaded} checkpoints load; "
            f"integrity: {run.integrity}; total {time.perf_counter() - started:.0f}s"
        )
        print("problems: " + ("; ".join(run.problems) if run.problems else "none"))


if __name__ == "__main__":
    main()
