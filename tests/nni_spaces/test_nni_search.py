"""An NNI space searched end to end through the CLI: KD against a teacher under a MACs budget,
resumed, its front reported, the best student exported, rebuilt with ``load_student`` and
retrained; feature KD from taps named in the config; the Ray runner; numbers under TPE."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

pytest.importorskip("nni.nas.nn.pytorch", reason="nni is not installed (searchkd[nni])")

import searchkd  # noqa: E402
from searchkd import cli  # noqa: E402
from searchkd.study import load_existing_study, trained_trials  # noqa: E402
from tests.conftest import tiny_settings  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

TOY = "nni:tests.nni_spaces.toy_space:ToySpace"
BUDGET = 60_000  # MACs: the wider 5x5 members are over it on 8x8 digits


def _config(run_dir: Path, name: str, **changes) -> str:
    base = {
        "space": TOY,
        "space_args": {"in_channels": 1, "num_classes": 10},
        "study": name,
        "controller": "akd",
        "budget": {"max_macs": "60k"},
    }
    settings = tiny_settings(run_dir, **{**base, **changes})
    path = run_dir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(settings))
    return str(path)


def _run(capsys, *argv: str) -> tuple[str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert code == 0, err
    return out, err


@pytest.fixture(scope="module")
def searched(shared_run_dir):
    """One AKD search of the toy space (3 trained students), run once for the module."""
    config = _config(shared_run_dir, "toy", trials=3)
    assert cli.main(["search", "--config", config, "--no-progress"]) == 0
    return shared_run_dir, config


def test_the_search_trains_students_of_the_space_within_budget(searched):
    run_dir, _ = searched
    study = load_existing_study("toy", f"journal:{run_dir / 'study.log'}")
    trained = trained_trials(study)
    assert len(trained) == 3
    for trial in trained:
        assert trial.user_attrs["arch"]["space"] == TOY
        assert trial.user_attrs["macs"] <= BUDGET
        assert "width=" in trial.user_attrs["summary"]
        assert set(trial.params) == {"mix", "width", "block", "read", "dropout"}
    assert study.user_attrs["space"] == TOY


def test_a_rerun_resumes_and_a_changed_space_argument_is_refused(searched, capsys):
    run_dir, config = searched
    _, err = _run(capsys, "search", "--config", config, "--no-progress")
    assert "3 of 3 trials already completed" in err and "(0 now" in err
    changed = _config(run_dir, "toy", trials=3, space_args={"widths": [4, 8]})
    assert cli.main(["search", "--config", changed, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "space_args.widths" in err and "space_fingerprint" in err


def test_the_front_is_reported(searched, capsys, tmp_path):
    run_dir, _ = searched
    out, _ = _run(capsys, "pareto", "--run-dir", str(run_dir), "--study", "toy", "--json")
    front = json.loads(out)
    assert front and all(row["arch"]["space"] == TOY for row in front)
    out, _ = _run(
        capsys, "report", "--run-dir", str(run_dir), "--study", "toy", "--out", str(tmp_path)
    )
    html = Path(out.strip()).read_text()
    assert "width=" in html


def test_the_dashboard_shows_the_front(searched):
    """optuna-dashboard's API gives the study's objectives and its Pareto front (the
    trials its front plot draws), with each member's architecture."""
    import threading
    import urllib.request
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    import optuna_dashboard

    from searchkd.study import make_storage

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args) -> None:
            pass

    run_dir, _ = searched
    app = optuna_dashboard.wsgi(make_storage(f"journal:{run_dir / 'study.log'}"))
    server = make_server("127.0.0.1", 0, app, handler_class=Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_port}/api/studies"
        studies = json.load(urllib.request.urlopen(base, timeout=30))["study_summaries"]
        study_id = next(s["study_id"] for s in studies if s["study_name"] == "toy")
        detail = json.load(urllib.request.urlopen(f"{base}/{study_id}", timeout=30))
    finally:
        server.shutdown()
    assert detail["objective_names"] == ["accuracy", "macs", "latency_ms"]
    assert detail["best_trials"]
    for trial in detail["best_trials"]:
        attrs = {a["key"]: a["value"] for a in trial["user_attrs"]}
        assert TOY in attrs["arch"]


def test_the_exported_student_loads_and_retrains(searched, capsys, tmp_path):
    run_dir, _ = searched
    out, _ = _run(
        capsys, "export", "--run-dir", str(run_dir), "--study", "toy", "--top", "1",
        "--out", str(tmp_path / "exports"),
    )  # fmt: skip
    exported = out.strip().splitlines()[0]
    with pytest.warns(UserWarning, match="architecture only"):
        model = searchkd.load_student(exported)
    import torch

    assert model(torch.zeros(1, 1, 8, 8)).shape == (1, 10)
    out, _ = _run(
        capsys, "retrain", "--arch", exported, "--epochs", "1", "--run-dir", str(run_dir),
        "--out", str(tmp_path / "retrain"), "--no-progress",
    )  # fmt: skip
    student = out.strip().splitlines()[-1]
    retrained = searchkd.load_student(student)  # with its weights: no warning
    record = json.loads(Path(student).read_text())
    assert record["arch"]["space"] == TOY
    assert retrained(torch.zeros(1, 1, 8, 8)).shape == (1, 10)


def test_feature_kd_reads_the_taps_named_in_the_config(shared_run_dir, capsys):
    config = _config(
        shared_run_dir,
        "toy-hint",
        trials=1,
        space_taps=["stem"],
        loss={"weights": {"ce": 0.1, "kd": 0.9, "hint": 1.0}},
    )
    _, err = _run(capsys, "search", "--config", config, "--no-progress")
    assert re.search(r"taps: \S+", err) and "logits only" not in err
    study = load_existing_study("toy-hint", f"journal:{shared_run_dir / 'study.log'}")
    (trial,) = trained_trials(study)
    assert trial.user_attrs["arch"]["taps"] == ["stem"]
    assert "loss_hint" in " ".join(trial.user_attrs)


def test_numbers_are_searched_with_tpe(shared_run_dir, capsys):
    config = _config(
        shared_run_dir,
        "numeric",
        trials=2,
        space="nni:tests.nni_spaces.toy_space:NumericSpace",
        controller="tpe",
    )
    _run(capsys, "search", "--config", config, "--no-progress")
    study = load_existing_study("numeric", f"journal:{shared_run_dir / 'study.log'}")
    assert {type(t.params["dropout"]) for t in trained_trials(study)} == {float}


def test_the_ray_runner_trains_the_space(shared_run_dir, capsys):
    pytest.importorskip("ray", reason="ray[tune] is not installed")
    config = _config(shared_run_dir, "toy-ray", trials=2, runner="ray")
    _run(capsys, "search", "--config", config, "--no-progress")
    study = load_existing_study("toy-ray", f"journal:{shared_run_dir / 'study.log'}")
    assert len(trained_trials(study)) == 2
