"""The Ray runner: trials run on Ray Tune land in the study exactly as the local runner's;
a worker killed mid-trial, a driver killed mid-search and ASHA's early stops are all
recorded, and the search still ends with the requested number of trained trials.

One local Ray (2 CPUs, a small object store) serves the whole module. Without CUDA it
also advertises one GPU that does not exist, so Ray's GPU scheduling runs up to the point
where PyTorch would use the device."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from optuna.trial import TrialState

ray = pytest.importorskip("ray", reason="ray[tune] is not installed")

from runners.local import LocalRunner  # noqa: E402
from runners.ray import (  # noqa: E402
    RayRunner,
    connect,
    share,
    trial_device,
    visible_index,
    warn_shared_cores,
)
from searchkd.config import RayConfig, build_config  # noqa: E402
from searchkd.errors import SearchKDError  # noqa: E402
from searchkd.search import Search  # noqa: E402
from searchkd.study import load_existing_study, trained_trials  # noqa: E402
from tests.conftest import fast_settings  # noqa: E402

pytestmark = pytest.mark.slow  # whole searches, CLI processes or a Ray cluster

ROOT = Path(__file__).resolve().parent.parent
# What differs between two runs of the same trial: where and how fast it ran.
_RUN_SPECIFIC = {"worker", "train_seconds", "samples_per_second", "latency_ms", "latency_spread_ms"}


@pytest.fixture(scope="module")
def ray_cluster():
    fake_gpu = {} if torch.cuda.is_available() else {"num_gpus": 1}
    started = connect(None, lambda m: None, num_cpus=2, object_store_memory=200 * 2**20, **fake_gpu)
    yield ray.get_runtime_context().gcs_address
    if started:
        ray.shutdown()


def _search(run_dir, **extra) -> Search:
    config = build_config(overrides=fast_settings(run_dir, **extra))
    return Search(config, log=lambda message: None)


def _contents(study) -> list[tuple]:
    """A study's trials without what depends on the machine or the clock. The mean loss
    terms are summed in float32 by kernels whose reduction order may differ between two
    processes (they agree to ~1e-5 relative); they are compared to 1e-4."""
    rows = []
    for trial in study.get_trials(deepcopy=False):
        attrs = {k: v for k, v in trial.user_attrs.items() if k not in _RUN_SPECIFIC}
        losses = {k: pytest.approx(attrs.pop(k), rel=1e-4) for k in list(attrs) if "loss_" in k}
        values = trial.values[:2] if trial.values else None
        rows.append(
            (trial.number, trial.state, trial.params, attrs, losses, trial.constraints, values)
        )
    return rows


def _run_both(run_dir, name: str, **settings) -> tuple[Search, Search]:
    """The same seeded search run by the local runner and by the Ray runner (one worker,
    one thread per trial, as the local run here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        local = _search(run_dir, study=f"{name}-local", **settings)
        LocalRunner(progress=False).run(local, settings["trials"])
    finally:
        torch.set_num_threads(threads)
    remote = _search(run_dir, study=f"{name}-ray", **settings)
    RayRunner(RayConfig(workers=1, cpus_per_trial=1), progress=False).run(
        remote, settings["trials"]
    )
    return local, remote


def test_ray_and_local_runners_write_the_same_study(ray_cluster, shared_run_dir):
    local, remote = _run_both(shared_run_dir, "same", trials=3)

    expected, got = _contents(local.study), _contents(remote.study)
    assert any(row[3]["trained"] is False for row in got)  # rejections happened too
    assert [row[:3] for row in got] == [row[:3] for row in expected]  # numbers, states, params
    assert got == expected  # attributes (accuracies, losses), constraints and values too
    # Tune's own record of the run (tuner.pkl) does not carry the dataset: a few KB, not
    # the data and teacher outputs the searcher holds
    (record,) = Path(shared_run_dir, "ray_results").glob("same-ray-*/tuner.pkl")
    assert record.stat().st_size < 100_000 < remote.data.train_x.numel() * 4


def test_ray_trains_the_zero_cost_warm_up_queue_as_the_local_runner_does(
    ray_cluster, shared_run_dir
):
    warmup = {"warmup_pool": 4, "warmup_trials": 2, "batch": 16}
    local, remote = _run_both(shared_run_dir, "warm-up", trials=3, zero_cost=warmup)
    got, expected = _contents(remote.study), _contents(local.study)
    assert [row[3].get("zero_cost_warmup", {}).get("rank") for row in got[:2]] == [1, 2]
    # Numbers, states, architectures and origins; not accuracies: this deep student's
    # 1-epoch accuracy moved by 3 of 359 images between the two processes (float
    # reduction order, as the loss terms above), a difference the warm-up does not cause.
    assert [row[:3] for row in got] == [row[:3] for row in expected]
    origin = [row[3].get("zero_cost_warmup") for row in got]
    assert origin == [row[3].get("zero_cost_warmup") for row in expected]
    assert len(trained_trials(remote.study)) == 3


def test_trials_map_the_data_and_teacher_outputs_from_the_object_store(ray_cluster, shared_run_dir):
    search = _search(shared_run_dir, study="shared", trials=1)
    inputs = share(search)
    (data, teacher), (again, teacher_again) = inputs.fetch(), inputs.fetch()
    # Two reads map the same shared memory: a trial gets a reference, not a copy.
    assert data.train_x.data_ptr() == again.train_x.data_ptr()
    assert teacher.logits.data_ptr() == teacher_again.logits.data_ptr()
    assert torch.equal(data.train_x, search.data.train_x)
    assert data.train_x.is_contiguous(memory_format=torch.channels_last)  # the proxy's layout
    assert torch.equal(teacher.logits, search.teacher_outputs.logits)
    assert torch.equal(data.val_y, search.data.val_y) and data.num_classes == 10


def test_a_worker_killed_mid_trial_fails_that_trial_and_the_search_completes(
    ray_cluster, shared_run_dir
):
    killed: list[tuple[int, int]] = []

    def kill_first_trial(number: int, result: dict) -> None:
        if not killed and result["epoch"] == 1:  # mid-trial: two more epochs to go
            os.kill(result["pid"], signal.SIGKILL)
            killed.append((number, result["pid"]))

    search = _search(shared_run_dir, study="kill-worker", trials=2, proxy={"epochs": 3})
    runner = RayRunner(RayConfig(max_retries=1), progress=False, on_result=kill_first_trial)
    summary = runner.run(search, 2)

    ((number, pid),) = killed
    trials = search.study.get_trials(deepcopy=False)
    victim = trials[number]
    assert victim.state == TrialState.FAIL
    assert victim.user_attrs["fail_reason"].startswith("worker lost: The actor died")
    assert f"pid {pid}" in victim.user_attrs["fail_reason"]
    retry = [t for t in trials if t.user_attrs.get("retry_of") == number]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE
    assert retry[0].params == victim.params and retry[0].user_attrs["attempt"] == 2
    assert len(trained_trials(search.study)) == 2 and summary.failed_now == 1
    assert not any(t.state == TrialState.RUNNING for t in trials)


def test_asha_stops_the_candidates_the_local_runner_stops_and_records_them_pruned(
    ray_cluster, shared_run_dir
):
    prune = {"epochs": 3, "prune": True, "prune_eta": 2}
    local, remote = _run_both(shared_run_dir, "asha", trials=4, proxy=prune)

    pruned = remote.study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
    assert pruned and len(trained_trials(remote.study)) == 4
    for trial in pruned:
        assert len(trial.user_attrs["epoch_accuracies"]) < 3
        assert "ASHA" in trial.user_attrs.pop("pruned_reason")  # the local one names no engine
    for trial in local.study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)):
        trial.user_attrs.pop("pruned_reason")
    assert _contents(remote.study) == _contents(local.study)


_DRIVER = """
import sys
from runners.ray import RayRunner, connect
from searchkd.config import RayConfig, build_config
from searchkd.search import Search
from tests.conftest import fast_settings

connect(sys.argv[2])
settings = fast_settings(sys.argv[1], study="driver", trials=4, proxy={"epochs": 3})
config = build_config(overrides=settings)
RayRunner(RayConfig(), progress=False).run(Search(config, log=lambda m: None), 4)
"""


def test_a_killed_driver_resumes_without_duplicating_or_losing_trials(ray_cluster, shared_run_dir):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    driver = subprocess.Popen(
        [sys.executable, "-c", _DRIVER, str(shared_run_dir), ray_cluster],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    storage = f"journal:{Path(shared_run_dir) / 'study.log'}"
    before: dict[int, list[float]] = {}
    running = False
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and driver.poll() is None:
            time.sleep(0.1)
            try:
                study = load_existing_study("driver", storage)  # read only: one writer
            except SearchKDError:  # not created yet
                continue
            before = {t.number: t.values for t in trained_trials(study)}
            running = any(t.state == TrialState.RUNNING for t in study.get_trials())
            if len(before) >= 2 and running:  # mid-trial (3 epochs), with two done
                break
        assert driver.poll() is None, "the driver ended before it could be killed"
        driver.send_signal(signal.SIGKILL)
    finally:
        driver.wait()
    before = {t.number: t.values for t in trained_trials(load_existing_study("driver", storage))}
    assert 2 <= len(before) < 4

    resumed = _search(shared_run_dir, study="driver", trials=4, proxy={"epochs": 3})
    RayRunner(RayConfig(), progress=False).run(resumed, 4)

    trials = resumed.study.get_trials(deepcopy=False)
    after = {t.number: t.values for t in trained_trials(resumed.study)}
    assert len(after) == 4  # none duplicated (nor any missing)
    assert all(after[number] == values for number, values in before.items())  # none lost
    orphans = [
        t for t in trials if "left running by process" in t.user_attrs.get("fail_reason", "")
    ]
    assert orphans and all(t.state == TrialState.FAIL for t in orphans)
    assert not any(t.state == TrialState.RUNNING for t in trials)


# --- GPUs per trial -------------------------------------------------------------------------
def test_more_gpus_per_trial_than_the_cluster_has_is_refused_before_any_trial(
    ray_cluster, shared_run_dir
):
    gpus = ray.cluster_resources().get("GPU", 0)  # one that does not exist, without CUDA
    search = _search(shared_run_dir, study="too-many-gpus", trials=1)
    wanted = gpus + 1  # a whole number: Ray refuses fractions above one
    with pytest.raises(SearchKDError) as err:
        RayRunner(RayConfig(gpus_per_trial=wanted), progress=False).run(search, 1)
    assert str(err.value) == (
        f"--gpus-per-trial {wanted:g}: no node of the Ray cluster has that many GPUs (the "
        f"largest has {gpus:g} of the cluster's {gpus:g}); lower --gpus-per-trial or add GPU "
        "nodes (0: train on CPUs)"
    )
    assert search.study.get_trials() == []  # refused, not left waiting for resources


def test_the_assigned_gpu_is_found_among_the_visible_ones():
    assert visible_index(2, "2") == 0  # Ray set CUDA_VISIBLE_DEVICES to the trial's GPU
    # RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES on a node started with GPUs 2 and 3:
    # PyTorch calls them 0 and 1, Ray keeps calling them 2 and 3.
    assert visible_index(3, "2,3") == 1 and visible_index("2", "2, 3") == 0
    assert visible_index(3, None) == 3 and visible_index(1, "") == 1  # all GPUs visible


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a GPU PyTorch cannot use")
def test_a_gpu_share_pytorch_cannot_use_is_one_line_before_any_trial(ray_cluster, shared_run_dir):
    search = _search(shared_run_dir, study="gpu-without-cuda", trials=1)
    with pytest.raises(SearchKDError) as err:
        RayRunner(RayConfig(gpus_per_trial=0.5), progress=False).run(search, 1)
    message = str(err.value)
    # Ray did hand the probe the (advertised) GPU: the check is PyTorch's, not Ray's.
    assert message.startswith("--gpus-per-trial 0.5: Ray gave GPU(s) ['0'] on node ")
    assert f"sees no CUDA device (torch {torch.__version__})" in message
    assert message.endswith("or run with --gpus-per-trial 0") and "\n" not in message
    assert search.study.get_trials() == []  # nothing written, nothing to clean up


def test_a_trial_without_gpus_trains_on_the_cpu_even_where_cuda_is_seen(ray_cluster, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert trial_device(0) == torch.device("cpu")
    # A process Ray gave no GPU (this driver) asking for one gets a clear line, not cuda:0.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SearchKDError, match="PyTorch here sees no CUDA device"):
        trial_device(0.5)


def test_timing_on_the_cores_that_train_is_flagged_only_with_several_workers(
    ray_cluster, shared_run_dir
):
    lines = []
    search = _search(shared_run_dir, study="shared-cores", trials=1)
    search.log = lines.append
    warn_shared_cores(search, RayConfig(workers=1))
    assert lines == []  # one worker leaves the driver a core of its own on two
    warn_shared_cores(search, RayConfig(workers=2))
    assert len(lines) == 1 and "--latency lut:PATH" in lines[0]
    search.costs.meter = None  # no meter on this machine (e.g. a latency table): nothing to say
    lines.clear()
    warn_shared_cores(search, RayConfig(workers=2))
    assert lines == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_two_trials_share_a_gpu_and_record_it(ray_cluster, shared_run_dir):
    if ray.cluster_resources().get("GPU", 0) < 1:
        pytest.skip("PyTorch sees a GPU but the local Ray advertises none")
    search = _search(shared_run_dir, study="gpu-share", trials=2)
    settings = RayConfig(workers=2, cpus_per_trial=1, gpus_per_trial=0.5)
    summary = RayRunner(settings, progress=False).run(search, 2)
    trials = trained_trials(search.study)
    assert summary.completed == 2 and summary.failed_now == 0
    assert all(t.user_attrs["train_device"].startswith("cuda:") for t in trials)
    assert search.study.user_attrs["train_devices"][0].startswith("cuda:")
