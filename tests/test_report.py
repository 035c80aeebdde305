"""`searchkd report`: a self-contained HTML page and its PNG figures from a real study."""

from __future__ import annotations

import base64
import re

import pytest
from optuna.trial import TrialState, create_trial

from searchkd import cli
from searchkd.errors import SearchKDError
from searchkd.report import best_feasible_so_far, write_report
from searchkd.study import is_feasible, is_trained, pareto_front

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow  # >= 1 s: the full suite runs it
def test_report_of_a_real_study(small_study, tmp_path, capsys):
    study, storage = small_study
    code = cli.main(["report", "small", "--storage", storage, "--out", str(tmp_path), "--top", "2"])
    assert code == 0
    page = tmp_path / "index.html"
    assert capsys.readouterr().out.strip() == str(page)
    names = {p.name for p in tmp_path.glob("*.png")}
    students = sorted(n for n in names if n.startswith("student_"))
    assert {"pareto_macs.png", "pareto_latency.png", "progress.png"} <= names
    assert len(students) == 2
    text = page.read_text()
    # self-contained: every figure is embedded, byte for byte the PNG beside the page
    embedded = re.findall(r'src="data:image/png;base64,([^"]+)"', text)
    assert len(embedded) == 3 + 2
    for png in tmp_path.glob("*.png"):
        assert png.read_bytes().startswith(PNG)
        assert base64.b64encode(png.read_bytes()).decode() in embedded
    assert 'src="http' not in text and "<script" not in text
    # the table has one row per trained student within budget, front members marked
    feasible = [t for t in study.trials if is_trained(t) and is_feasible(t)]
    rows = re.findall(r"<tr><td>(\d+)</td><td>(yes)?</td><td>([0-9.]+)</td>", text)
    assert sorted(int(r[0]) for r in rows) == sorted(t.number for t in feasible)
    front = {t.number for t in pareto_front(study)}
    assert {int(r[0]) for r in rows if r[1]} == front
    for number, _, accuracy in rows:
        assert float(accuracy) == pytest.approx(study.trials[int(number)].values[0], abs=1e-4)
    assert "macs &le; 2.00 M" in text
    assert "last-epoch" in text


def test_report_takes_the_study_as_the_other_commands_do(small_study, tmp_path, capsys):
    _, storage = small_study
    code = cli.main(["report", "--study", "small", "--storage", storage, "--out", str(tmp_path)])
    assert code == 0 and (tmp_path / "index.html").is_file()
    code = cli.main(["report", "small", "--study", "other", "--storage", storage])
    assert code == 2 and "two studies named" in capsys.readouterr().err


def _trial(number: int, accuracy: float, trained: bool, feasible: bool = True):
    trial = create_trial(
        values=[accuracy, 1e6, 1.0],
        user_attrs={"trained": trained},
        system_attrs={"constraints": [0.0 if feasible else 0.5, 0.0, 0.0]},
    )
    trial.number = number
    return trial


def test_progress_curve_counts_only_trained_feasible_students():
    trials = [
        _trial(0, 0.0, trained=False, feasible=False),  # rejected: no curve yet
        _trial(1, 0.40, trained=True),
        _trial(2, 0.90, trained=True, feasible=False),  # trained but over budget: ignored
        _trial(3, 0.0, trained=False, feasible=False),
        _trial(4, 0.55, trained=True),
        _trial(5, 0.50, trained=True),
    ]
    failed = create_trial(state=TrialState.FAIL)
    failed.number = 6
    curve = best_feasible_so_far(trials + [failed])
    assert curve == [(1, 0.40), (2, 0.40), (3, 0.40), (4, 0.55), (5, 0.55)]


def test_report_refuses_a_study_without_trained_students(tmp_path):
    import optuna

    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    study.add_trial(_trial(0, 0.0, trained=False, feasible=False))
    with pytest.raises(SearchKDError, match="no trained feasible trial"):
        write_report(study, tmp_path)
    assert not list(tmp_path.iterdir())


def test_an_int8_study_shows_the_fp32_latency_beside_the_int8_one(tmp_path):
    import optuna

    from search_spaces import get_space

    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    arch = get_space("compact").canonical()["plain8"]
    for number, (accuracy, int8_ms, fp32_ms) in enumerate(((0.9, 0.061, 0.083), (0.8, 0.05, 0.07))):
        trial = _trial(number, accuracy, trained=True)
        trial.values = [accuracy, 1e6, int8_ms]
        trial.user_attrs.update(arch=arch, latency_fp32_ms=fp32_ms)
        study.add_trial(trial)
    text = write_report(study, tmp_path, top=1).html.read_text()
    assert "<th>int8 latency ms</th><th>fp32 latency ms</th>" in text
    assert "<td>0.061</td><td>0.083</td>" in text


def _hand_designed_study():
    """Two trained students: the hand-designed ``res12`` (queued first) and, scoring
    ``top_accuracy``, one a controller proposed."""
    import optuna

    from search_spaces import get_space

    def study_with(top_accuracy: float):
        study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
        members = get_space("compact").canonical()
        for number, (accuracy, name) in enumerate(((0.84, "res12"), (top_accuracy, None))):
            trial = _trial(number, accuracy, trained=True)
            trial.values = [accuracy, 2e6 + number, 0.08]
            arch = members["res12" if name else "plain12x2"]
            trial.user_attrs.update(arch=arch, summary=f"summary {number}")
            if name:
                trial.user_attrs["hand_designed"] = name
            study.add_trial(trial)
        return study

    return study_with


def test_output_names_a_hand_designed_student_and_says_when_it_is_the_best(tmp_path, capsys):
    study_with = _hand_designed_study()
    best_is_hand_designed = study_with(top_accuracy=0.80)
    cli._print_front(best_is_hand_designed)
    out = capsys.readouterr().out
    assert "[res12] summary 0" in out
    assert "The pick (trial 0) is res12, a hand-designed member" in out
    text = write_report(best_is_hand_designed, tmp_path, top=1).html.read_text()
    assert "res12 (hand-designed): <code>" in text

    searched_is_best = study_with(top_accuracy=0.90)
    cli._print_front(searched_is_best)
    out = capsys.readouterr().out
    assert "summary 1" in out and "[res12]" in out and "The pick" not in out
