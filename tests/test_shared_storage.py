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

from tests.bad_inputs import write_teacher
from tests.searchers import start_search, study_facts, wait_all, write_config

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
    for reason in facts.failed.values():  # only the trial sampled after the total was reached
        assert reason.startswith("not trained: the study reached"), reason
    # both processes did work, each trial was recorded by one of them, once
    workers = facts.workers_of_trained
    assert len(set(workers)) == 2, workers
    assert len(facts.completed) == len(set(facts.completed))
