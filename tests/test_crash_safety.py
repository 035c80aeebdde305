"""SIGKILL `searchkd search` three times at random moments and rerun it each time: nothing
completed is lost or duplicated, orphans are failed with the reason, files stay readable.
benchmarks/crash_safety.py runs the same with ten kills and prints the table."""

from __future__ import annotations

import pytest

from benchmarks.crash_safety import crash_and_resume

pytestmark = pytest.mark.slow  # whole searches, CLI processes or a Ray cluster


def test_three_sigkills_lose_and_duplicate_nothing(tmp_path):
    run = crash_and_resume(tmp_path, kills=3, seed=1, trials=3, controller="random")
    assert run.problems == []
    assert run.final.trained == 3 and not run.final.running
    assert run.integrity == "ok"
    assert run.checkpoints_loaded >= 2  # the teacher's final weights and its route
    killed = [kill for kill in run.kills if kill.killed]
    assert len(killed) >= 2, "the kills should land before the search finishes"
    # every trial a killed process left RUNNING was failed on resume, with the reason
    orphans = {n for kill in killed for n in kill.facts.running}
    assert orphans <= set(run.final.failed)
    for number in orphans:
        assert run.final.failed[number].startswith("left running by process")
