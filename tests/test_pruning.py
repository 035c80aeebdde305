"""Successive halving: rungs, cutoffs by hand, and the keep-or-stop rule."""

from __future__ import annotations

import pytest

from searchkd.pruning import Pruned, SuccessiveHalving


def test_rungs_are_geometric_and_before_the_last_epoch():
    assert SuccessiveHalving(epochs=2).rungs == [1]
    assert SuccessiveHalving(epochs=10, eta=3).rungs == [1, 3, 9]
    assert SuccessiveHalving(epochs=10, eta=2, min_epochs=2).rungs == [2, 4, 8]
    assert SuccessiveHalving(epochs=1).rungs == []  # nothing to stop early
    with pytest.raises(ValueError):
        SuccessiveHalving(epochs=4, eta=1)


def test_cutoff_is_the_top_third_of_earlier_candidates_at_that_epoch():
    rule = SuccessiveHalving(epochs=4, eta=3)  # rungs 1 and 3
    history = [[0.1, 0.5], [0.4, 0.6], [0.7], [0.9, 0.9, 0.9, 0.9]]
    # epoch-1 accuracies 0.1, 0.4, 0.7, 0.9 -> 66.7th percentile by linear interpolation:
    # position 0.667 * 3 = 2.0 -> 0.7
    assert rule.cutoff(1, history) == pytest.approx(0.7)
    assert rule.cutoff(2, history) is None  # not a rung
    assert rule.cutoff(3, history) == pytest.approx(0.9)  # only one candidate got there
    assert rule.cutoff(1, []) is None  # the first candidate always goes on


def test_check_stops_below_the_cutoff_and_keeps_at_or_above():
    rule = SuccessiveHalving(epochs=2, eta=2)
    history = [[0.2, 0.3], [0.6, 0.7]]  # median of epoch 1: 0.4
    rule.check(1, [0.4], history)  # at the cutoff: goes on
    with pytest.raises(Pruned) as stopped:
        rule.check(1, [0.39], history)
    assert stopped.value.epoch == 1 and stopped.value.accuracies == [0.39]
    assert stopped.value.cutoff == pytest.approx(0.4)
    rule.check(2, [0.1, 0.1], history)  # the last epoch is never a rung


@pytest.mark.slow
def test_a_search_stops_poor_candidates_and_records_them_pruned(shared_run_dir):
    from optuna.trial import TrialState

    from runners.local import LocalRunner
    from searchkd.config import build_config
    from searchkd.search import Search
    from tests.conftest import tiny_settings

    settings = tiny_settings(
        shared_run_dir,
        study="prune",
        proxy={"epochs": 2, "prune": True, "prune_eta": 2},
    )
    search = Search(build_config(overrides=settings), log=lambda m: None)
    # An earlier candidate that reached 0.99 at epoch 1 sets the first rung's bar high, so
    # the first new candidates are stopped whatever this machine's arithmetic gives.
    from optuna.trial import create_trial

    search.study.add_trial(
        create_trial(
            values=[0.99, 1e6, 1.0],
            user_attrs={"trained": True, "epoch_accuracies": [0.99, 0.99]},
        )
    )
    summary = LocalRunner(progress=False).run(search, 4)
    study = search.study
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    trained = [t for t in study.trials if t.user_attrs.get("trained")]
    assert summary.completed == len(trained) == 4  # stopped candidates do not count
    assert summary.pruned_now == len(pruned) > 0
    for trial in pruned:
        (epoch1,) = trial.user_attrs["epoch_accuracies"]  # stopped after the rung epoch
        earlier = [
            t.user_attrs["epoch_accuracies"][0]
            for t in study.trials
            if t.number < trial.number and t.user_attrs.get("epoch_accuracies")
        ]
        assert earlier and epoch1 < max(earlier)
        assert "stopped after epoch 1" in trial.user_attrs["pruned_reason"]
        assert search.reward(trial) is not None  # the controller learns from it
    for trial in trained:
        assert len(trial.user_attrs["epoch_accuracies"]) == 2
