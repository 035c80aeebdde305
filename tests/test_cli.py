"""The `searchkd` command on tiny configs: seconds per run, real subprocess exits."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys

import pytest
import yaml

from search_spaces import SPACES
from tests.conftest import tiny_settings

pytestmark = pytest.mark.slow  # whole searches, CLI processes or a Ray cluster


def searchkd(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "searchkd.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """One tiny search through the CLI, shared by the read-only commands below; its run
    folder's name has a space, as users' folders do."""
    run_dir = tmp_path_factory.mktemp("cli") / "my runs"
    run_dir.mkdir()
    config = run_dir / "tiny.yaml"
    settings = tiny_settings(run_dir)
    settings.pop("trials")
    config.write_text(yaml.safe_dump(settings))
    result = searchkd(
        "search", "--config", str(config), "--trials", "2", "--study", "cli", "--no-progress"
    )
    return run_dir, result


def test_search_runs_and_prints_the_front(searched):
    run_dir, result = searched
    assert result.returncode == 0, result.stderr
    assert "Pareto front of 'cli'" in result.stdout
    assert "done: 2 trained trials" in result.stderr
    assert (run_dir / "study.log").exists()


def test_the_printed_dashboard_command_pastes_as_is(searched):
    run_dir, result = searched
    hint = next(line for line in result.stderr.splitlines() if line.startswith("see it: "))
    command = shlex.split(hint.removeprefix("see it: "))
    assert command == ["searchkd", "dashboard", "--storage", f"journal:{run_dir / 'study.log'}"]


def test_pareto_json_lists_feasible_students(searched):
    run_dir, _ = searched
    result = searchkd("pareto", "--run-dir", str(run_dir), "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert rows and all(row["macs"] <= 6e6 for row in rows)
    assert all(row["arch"]["space"] == "mobilenet" for row in rows)
    assert sum(row["pick"] for row in rows) == 1  # the student retrain and export take first


def test_the_front_table_cuts_long_architectures_between_words(searched):
    run_dir, _ = searched
    table = searchkd("pareto", "--run-dir", str(run_dir)).stdout
    rows = json.loads(searchkd("pareto", "--run-dir", str(run_dir), "--json").stdout)
    for row in rows:
        (line,) = [ln for ln in table.splitlines() if ln.split()[:1] == [str(row["trial"])]]
        shown = line.split("  ")[-1].strip().removesuffix(" …")
        assert row["summary"].startswith(shown)  # a prefix of whole words: c8 is never c80
        assert len(row["summary"]) <= 90 or line.endswith(" …")
        assert row["summary"].split()[: len(shown.split())] == shown.split()


def test_export_writes_loadable_students(searched, tmp_path):
    run_dir, _ = searched
    result = searchkd("export", "--run-dir", str(run_dir), "--top", "1", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    path = result.stdout.strip().splitlines()[0]
    import searchkd as library

    with pytest.warns(UserWarning, match="architecture only"):  # a search's export
        model = library.load_student(path)
    assert sum(p.numel() for p in model.parameters()) > 0


def test_rerun_with_same_study_resumes_without_new_trials(searched):
    run_dir, _ = searched
    settings = tiny_settings(run_dir)
    config = run_dir / "again.yaml"
    settings["trials"] = 2
    config.write_text(yaml.safe_dump(settings))
    result = searchkd("search", "--config", str(config), "--study", "cli", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "2 of 2 trials already completed" in result.stderr
    assert "(0 now" in result.stderr


def test_space_table_lists_canonical_members():
    result = searchkd("space", "mobilenet", "--json")
    assert result.returncode == 0, result.stderr
    table = json.loads(result.stdout)
    members = {row["member"]: row for row in table["canonical"]}
    assert members["mobilenet_v2"]["params"] == 3_504_872
    assert abs(members["mobilenet_v2"]["macs"] - 300e6) / 300e6 < 0.01
    assert table["size"] > 1e20


def test_space_alone_lists_every_space_and_marks_the_default():
    result = searchkd("space", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["space"]: row for row in json.loads(result.stdout)}
    assert set(rows) == set(SPACES)
    assert [name for name, row in rows.items() if row["default"]] == ["compact"]
    assert rows["mobilenet-reduced"]["size"] == 256
    assert all(row["about"] for row in rows.values())


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["search", "--config", "missing.yaml"], "no file at missing.yaml"),
        (["search", "--controller", "bohb"], "controller"),
        (["search", "--trials", "0"], "trials"),
        (["search", "--max-macs", "lots"], "max_macs"),
        (["search", "--dataset", "cifar10"], "cifar10"),
        (["space", "nonsense"], "nonsense"),
        (["space", "mobilenet", "--input", "3x224"], "--input"),
        (["pareto", "--run-dir", "nowhere"], "no study in"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(args, needle, tmp_path):
    result = searchkd(*args, cwd=tmp_path)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("searchkd: error:")
    assert needle in lines[0]


def test_bad_yaml_is_one_line(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("dataset: [unclosed\n")
    result = searchkd("search", "--config", str(config))
    assert result.returncode == 2
    assert "not valid YAML" in result.stderr and "Traceback" not in result.stderr
    config.write_text("datset: digits\n")
    result = searchkd("search", "--config", str(config))
    assert "datset: unknown key" in result.stderr


def test_latency_flags_choose_the_meter_and_its_threads():
    from searchkd import cli
    from searchkd.config import build_config

    parser = cli.build_parser()
    args = parser.parse_args(["search", "--latency", "lut:t.json", "--latency-threads", "2"])
    latency = build_config(overrides=cli._overrides(args)).latency
    assert (latency.meter, latency.threads) == ("lut:t.json", 2)
    latency = build_config(overrides=cli._overrides(parser.parse_args(["search"]))).latency
    assert (latency.meter, latency.threads) == ("onnxruntime", 1)  # the defaults, untouched


def test_progress_bars_written_to_a_log_redraw_seldom():
    import io

    from searchkd.progress import LOG_INTERVAL_S, progress_bar

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    logged = progress_bar(total=3, file=io.StringIO())
    shown = progress_bar(total=3, file=Terminal())
    assert logged.mininterval == LOG_INTERVAL_S and shown.mininterval < 1
    for bar in (logged, shown):
        bar.close()
