"""Real `searchkd search` processes on a tiny config, for the crash-safety and shared-storage
tests and for benchmarks/crash_safety.py: start them, kill them, and read what the study
holds afterwards."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import yaml
from optuna.trial import TrialState

from search_spaces import get_space
from tests.conftest import fast_settings

ROOT = Path(__file__).resolve().parent.parent


def write_config(folder: Path, trials: int, storage: str | None = None, **extra) -> Path:
    """A config whose whole search takes seconds: digits, the smallest ResNet as a 3-epoch
    teacher (so early kills land inside teacher training and its checkpoint writes), the
    resnet space under 2M MACs, a 1-epoch proxy on 512 images."""
    folder.mkdir(parents=True, exist_ok=True)
    arch = folder / "teacher_arch.json"
    arch.write_text(json.dumps(get_space("resnet").smallest()))
    defaults = {"trials": trials, "study": "crash", "teacher": {"arch": str(arch), "epochs": 3}}
    settings = fast_settings(folder / "runs", **{**defaults, **extra})
    if storage:
        settings["storage"] = storage
    path = folder / "search.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def start_search(config: Path, log: Path, faults: list[str] | None = None) -> subprocess.Popen:
    """`searchkd search --config CONFIG` in its own process, output to a log file; with
    ``faults`` (tests/faults.py's options), under that fault-injecting wrapper."""
    handle = log.open("ab")
    command = ["-m", "tests.faults", *faults, "--"] if faults else ["-m", "searchkd.cli"]
    return subprocess.Popen(
        [sys.executable, *command, "search", "--config", str(config), "--no-progress"],
        stdout=handle,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )


def kill_after(
    process: subprocess.Popen, seconds: float, ready: Callable[[], bool] | None = None
) -> bool:
    """SIGKILL the process ``seconds`` after ``ready()`` first holds (polled); False when it
    finished first. Waiting for a condition puts the kill where the work is (a training
    teacher, running trials), not in Python's start-up."""
    while ready is not None and process.poll() is None and not ready():
        time.sleep(0.2)
    try:
        process.wait(timeout=seconds)
        return False
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait()
        return True


def log_shows(log: Path, marker: str) -> Callable[[], bool]:
    """True once ``marker`` appears in the part of ``log`` written from now on."""
    start = log.stat().st_size if log.exists() else 0

    def ready() -> bool:
        with log.open("rb") as handle:
            handle.seek(start)
            return marker.encode() in handle.read()

    return ready


def completed_grew(storage, name: str, by: int) -> Callable[[], bool]:
    """True once the study holds ``by`` more COMPLETE trials than now."""

    def count() -> int:
        try:
            study = optuna.load_study(study_name=name, storage=storage)
        except KeyError:  # not created yet
            return 0
        return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))

    target = count() + by
    return lambda: count() >= target


@dataclass
class StudyFacts:
    """What a study holds, read from outside the searchers."""

    completed: dict[int, tuple]  # trial number -> (values, arch JSON, trained)
    trained: int
    running: list[int]
    failed: dict[int, str]  # trial number -> fail_reason
    workers_of_trained: list[str] = field(default_factory=list)  # host:pid per trained trial

    @property
    def architectures_of_trained(self) -> list[str]:
        return [arch for _, arch, trained in self.completed.values() if trained]


def study_facts(storage, name: str = "crash") -> StudyFacts:
    """Read the study as a fresh process would (no caches), with no sampler side effects."""
    study = optuna.load_study(study_name=name, storage=storage)
    completed, running, failed = {}, [], {}
    for trial in study.get_trials(deepcopy=False):
        if trial.state == TrialState.COMPLETE:
            arch = json.dumps(trial.user_attrs.get("arch"), sort_keys=True)
            completed[trial.number] = (
                tuple(trial.values),
                arch,
                bool(trial.user_attrs.get("trained")),
            )
        elif trial.state == TrialState.RUNNING:
            running.append(trial.number)
        elif trial.state == TrialState.FAIL:
            failed[trial.number] = str(trial.user_attrs.get("fail_reason", ""))
    trained = sum(1 for *_, t in completed.values() if t)
    workers = [
        str(t.user_attrs.get("worker"))
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.user_attrs.get("trained")
    ]
    return StudyFacts(completed, trained, running, failed, workers)


def sqlite_integrity(db: Path) -> str:
    with sqlite3.connect(db) as connection:
        return connection.execute("PRAGMA integrity_check").fetchone()[0]


def wait_all(processes: list[subprocess.Popen], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    return [p.wait(timeout=max(1.0, deadline - time.monotonic())) for p in processes]
