"""Shared fixtures: a tiny, fast search configuration on scikit-learn's digits."""

from __future__ import annotations

import warnings

import optuna
import pytest

optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def tiny_settings(run_dir, **extra) -> dict:
    """Settings for a search that takes seconds: 8x8 digits, a 2-epoch teacher."""
    settings = {
        "dataset": "digits",
        "run_dir": str(run_dir),
        "trials": 3,
        "seed": 0,
        "teacher": {"arch": "resnet20", "epochs": 2, "batch_size": 64},
        "budget": {"max_macs": "6M"},
        "proxy": {"epochs": 1, "batch_size": 64},
        "latency": {"warmup": 1, "runs": 3, "repeats": 1},
    }
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(settings.get(key), dict):
            settings[key] = {**settings[key], **value}
        else:
            settings[key] = value
    return settings


@pytest.fixture(scope="session")
def shared_run_dir(tmp_path_factory):
    """A run folder whose teacher cache is shared by the tests that use it."""
    return tmp_path_factory.mktemp("runs")
