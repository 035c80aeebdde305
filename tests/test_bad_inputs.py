"""Every row of the bad-input catalog (tests/bad_inputs.py, docs/bad_inputs.md) is checked
here through the real CLI entry: the exit code, the one line, and no traceback."""

from __future__ import annotations

import errno
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from searchkd import cli
from tests.bad_inputs import CASES, Case, by_id, prepare, render_doc
from tests.faults import free_space

DOC = Path(__file__).parent.parent / "docs" / "bad_inputs.md"


def expand(text: str, tmp: Path) -> str:
    return text.replace("{tmp}", str(tmp)).replace("{tiny}", str(tmp / "tiny.yaml"))


def message_pattern(case: Case, tmp: Path) -> re.Pattern:
    parts = [re.escape(expand(part, tmp)) for part in case.message.split("...")]
    return re.compile("searchkd: error: " + ".+".join(parts))


def arrange(case: Case, tmp: Path, monkeypatch) -> list[str]:
    if case.needs == "no-cuda":
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA, so a CUDA latency meter is not a bad input")
    if case.needs == "no-nni" and importlib.util.find_spec("nni") is not None:
        pytest.skip("nni is installed here (tests/nni_spaces checks this error without it)")
    prepare(tmp)
    if case.setup:
        case.setup(tmp)
    monkeypatch.chdir(tmp)
    monkeypatch.syspath_prepend(str(tmp))  # where a case's user module (a factory) lives
    if case.fault == "ENOSPC":
        inject_full_disk(monkeypatch)
    if case.fault == "ENOSPC in study.log":  # the first write of the journal fails half-way
        from tests.faults import JournalFaults

        JournalFaults(tmp / "runs" / "study.log", 1, "enospc").install(monkeypatch)
    if case.fault == "full SQLite database":  # its first write fails (SQLITE_FULL)
        from tests.faults import DatabaseFull

        DatabaseFull(tmp / "runs" / "study.db", 1).install(monkeypatch)
    if case.fault == "100 MB of memory":
        monkeypatch.setattr("searchkd.device.available_memory", lambda device: 100_000_000)
    return [expand(arg, tmp) for arg in case.argv]


def studies_in(tmp: Path) -> set[str]:
    """The studies in the run folder's journal or database (none when neither exists)."""
    import optuna

    names: set[str] = set()
    runs = tmp / "runs"
    for url in (f"journal:{runs / 'study.log'}", f"sqlite:///{runs / 'study.db'}"):
        path = runs / url.rpartition("/")[2]
        if path.is_file():
            from searchkd.study import make_storage

            names |= {s.study_name for s in optuna.get_all_study_summaries(make_storage(url))}
    return names


def inject_full_disk(monkeypatch) -> None:
    """Every checkpoint write fails as a full disk does, after the temp file was opened."""
    import os

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("searchkd.checkpoint.os.fsync", full)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("searchkd:")]


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_gives_one_line(case: Case, tmp_path, monkeypatch, capsys):
    argv = arrange(case, tmp_path, monkeypatch)
    searches = case.argv[0] == "search"
    studies = studies_in(tmp_path) if searches else set()
    code = cli.main(argv)
    free_space()  # a filled database takes writes again: the checks below open the study
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = error_lines(err)
    assert len(lines) == 1, err
    assert message_pattern(case, tmp_path).fullmatch(lines[0]), lines[0]
    assert err.rstrip().endswith(lines[0]), "the error must be the last thing printed"
    assert code == case.exit_code
    # a refused start leaves no empty study behind (a later command would need --study)
    assert not searches or studies_in(tmp_path) == studies
    if case.fault == "ENOSPC":  # the failed write left no half-written or temporary file
        assert not [
            p for p in tmp_path.rglob("*") if p.suffix in (".tmp", ".json") and "out" in p.parts
        ]


@pytest.mark.slow
@pytest.mark.parametrize("case_id", ["yaml-malformed", "teacher-truncated"])
def test_bad_input_through_a_real_process(case_id, tmp_path, monkeypatch):
    case = by_id()[case_id]
    argv = arrange(case, tmp_path, monkeypatch)
    result = subprocess.run(
        [sys.executable, "-m", "searchkd.cli", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == case.exit_code
    assert "Traceback" not in result.stderr
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and message_pattern(case, tmp_path).fullmatch(lines[0]), result.stderr


def test_debug_shows_the_traceback(tmp_path, monkeypatch):
    argv = arrange(by_id()["teacher-truncated"], tmp_path, monkeypatch)
    with pytest.raises(Exception, match="cannot read"):
        cli.main(["--debug", *argv])


def test_catalog_has_thirty_distinct_rows():
    assert len(CASES) >= 30
    assert len({case.id for case in CASES}) == len(CASES)


def test_doc_table_matches_the_catalog():
    assert DOC.read_text() == render_doc(), (
        "docs/bad_inputs.md is stale: run `python -m tests.bad_inputs > docs/bad_inputs.md`"
    )
