"""Which trained student a search hands on: the largest of those the proxy cannot separate."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.trial import create_trial

from searchkd import cli
from searchkd.export import select_trials
from searchkd.study import VALIDATION_IMAGES, pick_band, pick_explained, ranked_students


def _study(students: list[tuple[float, float]], validation_images: int | None):
    """Trained, feasible students as (proxy accuracy, MACs), in trial order."""
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    if validation_images:
        study.set_user_attr(VALIDATION_IMAGES, validation_images)
    for accuracy, macs in students:
        study.add_trial(
            create_trial(
                values=[accuracy, macs, 0.1],
                user_attrs={"trained": True, "summary": f"net of {macs / 1e6:.1f}M"},
                system_attrs={"constraints": [0.0, 0.0, 0.0]},
            )
        )
    return study


# trial 0 scores best; trial 1 is 0.005 below with more MACs; trial 2 is 0.04 below, largest
STUDENTS = [(0.840, 2.0e6), (0.835, 3.0e6), (0.800, 3.9e6), (0.838, 1.0e6)]


def test_the_pick_is_the_largest_student_within_one_standard_error_of_the_best():
    study = _study(STUDENTS, validation_images=1000)
    assert pick_band(0.84, 1000) == pytest.approx(math.sqrt(0.84 * 0.16 / 1000))  # 0.0116
    ranked = ranked_students(study)
    assert ranked[0].number == 1  # 0.835 is within 0.0116 of 0.840; 0.800 is not
    assert sorted(t.number for t in ranked) == [0, 1, 2, 3]  # the pick first, nothing lost
    assert [t.number for t in select_trials(study, top=2)] == [1, 0]
    # measured on 100x more images the band is 0.0012: only the best itself is inside
    assert ranked_students(study, validation_images=100_000)[0].number == 0


def test_without_the_validation_size_the_pick_stays_the_highest_proxy_score():
    study = _study(STUDENTS, validation_images=None)  # a study written before it was recorded
    assert ranked_students(study)[0].number == 0
    assert pick_explained(study, ranked_students(study)) == []
    tied = _study([(0.84, 3e6), (0.84, 2e6)], validation_images=None)
    assert ranked_students(tied)[0].number == 1  # an exact tie: the fewer MACs


def test_the_search_output_says_why_the_pick_is_not_the_highest_score(capsys):
    study = _study(STUDENTS, validation_images=1000)
    cli._print_front(study)
    out = capsys.readouterr().out
    assert "The pick is trial 1 (net of 3.0M; proxy accuracy 0.835, 3.00M MACs)" in out
    assert "not trial 0 (0.840, 2.00M)" in out
    assert "of the 3 students within one standard error (0.012 on 1000 validation images)" in out
    clear_winner = _study([(0.90, 2e6), (0.80, 3e6)], validation_images=1000)
    assert pick_explained(clear_winner, ranked_students(clear_winner)) == []


def test_pareto_lists_the_pick_even_off_the_front(capsys):
    # trial 1 (0.835, 3M) is dominated by trial 0 (0.840, 2M) yet is the pick
    study = _study(STUDENTS, validation_images=1000)
    cli._print_front(study)
    out = capsys.readouterr().out
    assert "then the pick, which is off the front:" in out
    table = [line for line in out.splitlines() if line.startswith("  ")][1:]  # no header
    assert [line.split()[0] for line in table] == ["0", "3", "1"]  # front, then the pick
    assert table[-1].endswith("net of 3.0M")
