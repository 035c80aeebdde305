"""Two `searchkd search` processes on one study: journal file storage and PostgreSQL.

Each process counts the trained trials in the study, so together they stop at the requested
total, overshooting by at most one trial (the other process's trial in training when the
total was reached); no trial is lost, duplicated or left running.

PostgreSQL: set SEARCHKD_TEST_POSTGRES to a URL of a database the test may fill (`.ci/run`
starts Debian's server and sets it); without it the PostgreSQL case is skipped.
"""

from __future__ import annotations

import os
import uuid

import pytest
import sqlalchemy

from tests.bad_inputs import write_teacher
from tests.searchers import start_search, study_facts, wait_all, write_config

pytestmark = pytest.mark.slow  # whole searches, CLI processes or a Ray cluster


TRIALS = 4
POSTGRES = os.environ.get("SEARCHKD_TEST_POSTGRES")


def _postgres_url() -> str:
    if not POSTGRES:
        pytest.skip(
            "PostgreSQL case skipped: set SEARCHKD_TEST_POSTGRES=postgresql://user:pw@host/db "
            "(.ci/run starts Debian's postgresql and sets it)"
        )
    pytest.importorskip("psycopg", reason="psycopg is needed: pip install 'searchkd[postgres]'")
    return POSTGRES


@pytest.mark.parametrize("kind", ["journal", "postgresql"])
def test_two_searchers_share_one_study(kind, tmp_path):
    if kind == "journal":
        storage = f"journal:{tmp_path / 'shared.log'}"
        read = storage.removeprefix("journal:")
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        read = JournalStorage(JournalFileBackend(read))
    else:
        storage = read = _postgres_url()
    name = f"shared-{uuid.uuid4().hex[:8]}"  # a fresh study in a database that outlives tests
    write_teacher(tmp_path / "teacher")
    config = write_config(
        tmp_path,
        TRIALS,
        storage,
        study=name,
        controller="random",
        teacher={"checkpoint": str(tmp_path / "teacher")},
    )
    logs = [tmp_path / f"searcher{i}.log" for i in range(2)]
    processes = [start_search(config, log) for log in logs]
    codes = wait_all(processes, timeout=600)
    output = "\n".join(log.read_text() for log in logs)
    assert codes == [0, 0], output

    facts = study_facts(read, name)
    assert TRIALS <= facts.trained <= TRIALS + 1, output
    assert not facts.running
    for reason in facts.failed.values():
        # the trial sampled after the total was reached, or a candidate the other searcher
        # had claimed (both samplers have the same seed, so they propose the same sequence)
        assert reason.startswith(
            ("not trained: the study reached", "not trained: the same architecture")
        ), reason
    # both processes did work, each trial was recorded by one of them, once
    workers = facts.workers_of_trained
    assert len(set(workers)) == 2, workers
    assert len(facts.completed) == len(set(facts.completed))
    trained = facts.architectures_of_trained  # no architecture trained twice (issue 16, 4)
    assert len(trained) == len(set(trained)), output
    if kind == "postgresql":  # the log names the database, never with its password
        password = sqlalchemy.engine.make_url(storage).password
        assert password and "@" in output and f":{password}@" not in output, output


class _OtherSearcherFinishes:
    """A stand-in Search whose study gets its last trained trial from "another searcher"
    while this one samples a candidate."""

    def __init__(self) -> None:
        import optuna

        self.study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
        self.trained_here = 0
        self.log = lambda message: None

    def propose(self):  # no proposal before the trial: sample inside it, like TPE
        return None

    def ask(self):
        return self.study.ask()

    def prepare(self, trial):
        from optuna.trial import create_trial

        from searchkd.trials import Candidate

        other = create_trial(values=[0.5, 1e6, 1.0], user_attrs={"trained": True})
        self.study.add_trial(other)
        return Candidate(trial.number, {"space": "x"}, 1, 1, None)

    def train(self, candidate):
        self.trained_here += 1
        raise AssertionError("must not train once the study has enough trials")


def test_runner_recounts_the_study_before_training():
    from runners.local import LocalRunner

    search = _OtherSearcherFinishes()
    summary = LocalRunner(progress=False).run(search, n_trials=1)
    assert search.trained_here == 0
    assert summary.completed == 1 and summary.trained_now == 0
    failed = [t for t in search.study.trials if t.state.name == "FAIL"]
    assert len(failed) == 1
    assert failed[0].user_attrs["fail_reason"].startswith("not trained: the study reached 1")
