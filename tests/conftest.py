"""Shared fixtures: a tiny, fast search configuration on scikit-learn's digits."""

from __future__ import annotations

import warnings

import optuna
import pytest

optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def small_digits(train: int = 128, val: int = 64):
    """The digits dataset cut to two batches of training images, for tests that train."""
    import dataclasses

    from searchkd.data import load_dataset

    full = load_dataset("digits")
    return dataclasses.replace(
        full,
        train_x=full.train_x[:train],
        train_y=full.train_y[:train],
        val_x=full.val_x[:val],
        val_y=full.val_y[:val],
    )


@pytest.fixture(scope="module")
def one_thread():
    """One thread: tiny batches gain nothing from two, and a loaded CI machine loses a lot.
    Modules that train use it with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_settings(run_dir, **extra) -> dict:
    """Settings for a search that takes seconds: 8x8 digits, a 2-epoch teacher."""
    settings = {
        "dataset": "digits",
        "space": "mobilenet",  # the suite's searches were written for it; compact has its own
        "run_dir": str(run_dir),
        "trials": 3,
        "seed": 0,
        "teacher": {"arch": "resnet20", "epochs": 2, "batch_size": 64},
        "budget": {"max_macs": "6M"},
        "proxy": {"epochs": 1, "batch_size": 64},
        "latency": {"warmup": 1, "runs": 3, "repeats": 1},
        # The suite compares runs with each other and with CPU numbers: it trains on the CPU
        # also where a GPU is seen (tests/test_device.py asks for the GPU explicitly).
        "device": "cpu",
    }
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(settings.get(key), dict):
            settings[key] = {**settings[key], **value}
        else:
            settings[key] = value
    return settings


def fast_settings(run_dir, **extra) -> dict:
    """Tiny settings whose trained trials take about a second: the resnet space under a 2M
    MACs budget (about half its members are over it, so rejections show too) and a proxy on
    512 images."""
    fast = {"space": "resnet", "budget": {"max_macs": "2M"}, "proxy": {"train_subset": 512}}
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(fast.get(key), dict):
            fast[key] = {**fast[key], **value}
        else:
            fast[key] = value
    return tiny_settings(run_dir, **fast)


@pytest.fixture(scope="session")
def shared_run_dir(tmp_path_factory):
    """A run folder whose teacher cache is shared by the tests that use it."""
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="session")
def small_study(shared_run_dir):
    """A real finished tiny search (3 trained students, some rejected over budget), shared by
    the tests that only read a study: report and dashboard."""
    from runners.local import LocalRunner
    from searchkd.config import build_config
    from searchkd.search import Search

    config = build_config(overrides=fast_settings(shared_run_dir, study="small"))
    search = Search(config, log=lambda message: None)
    LocalRunner(progress=False).run(search, config.trials)
    return search.study, config.storage_url
