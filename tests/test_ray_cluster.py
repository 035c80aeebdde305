"""A two-node Ray cluster on loopback: a head that trains (``cpu_node``) and a device node
that only measures (``edge_device``, no CPUs for trials). With ``latency.meter:
ray:edge_device`` every latency measurement runs on the device node, while the trials
train on the head. Each node also advertises one GPU (real or not: Ray takes the count it
is given), so the cluster has two GPUs but no node has two.

Both nodes are started with ``ray start --block`` and stopped through those processes
(never ``ray stop``, which would stop every Ray of this user on the machine)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

ray = pytest.importorskip("ray", reason="ray[tune] is not installed")

from runners.ray import RayRunner, connect  # noqa: E402
from search_spaces import get_space  # noqa: E402
from searchkd.config import RayConfig, build_config  # noqa: E402
from searchkd.errors import SearchKDError  # noqa: E402
from searchkd.meters import Timing, make_meter  # noqa: E402
from searchkd.search import Search  # noqa: E402
from searchkd.study import trained_trials  # noqa: E402
from tests.conftest import fast_settings  # noqa: E402

pytestmark = pytest.mark.slow  # whole searches, CLI processes or a Ray cluster

RAY_CLI = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start(args: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [RAY_CLI, "start", "--block", "--object-store-memory", str(100 * 2**20), *args],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: what it started, and only that
    )


def _stop(node: subprocess.Popen) -> None:
    """SIGTERM to `ray start --block` stops the processes it started; what is left after
    30 s is killed by process group (its own, from start_new_session)."""
    if node.poll() is None:
        node.terminate()
        try:
            node.wait(timeout=30)
        except subprocess.TimeoutExpired:
            node.kill()
            node.wait()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(node.pid, signal.SIGKILL)


def _wait_for(resource: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ray.cluster_resources().get(resource, 0) > 0:
            return
        time.sleep(0.5)
    raise TimeoutError(f"no node advertised {resource} within {timeout:.0f}s")


def _reload_ray_auth() -> None:
    """Ray reads RAY_AUTH_MODE once per process; make it read it again."""
    try:
        from ray._private.authentication_test_utils import reset_auth_token_state
    except ImportError:
        pytest.skip("this Ray version has no reset_auth_token_state; cannot switch auth mode")
    reset_auth_token_state()


@pytest.fixture(scope="module")
def two_nodes():
    if RAY_CLI is None:
        pytest.skip("the `ray` command is not installed (pip install 'ray[tune]')")
    if ray.is_initialized():
        ray.shutdown()
    folder = Path(tempfile.mkdtemp(prefix="skdray", dir="/tmp"))  # short: socket paths
    # `ray start` clusters require Ray's token authentication from every client: a token
    # of this test's own, handed to both nodes and to this driver through the environment.
    previous = {key: os.environ.get(key) for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    _reload_ray_auth()
    port = _free_port()
    address = f"127.0.0.1:{port}"
    head = _start(
        ["--head", "--port", str(port), "--node-ip-address", "127.0.0.1", "--num-cpus", "2",
         "--include-dashboard", "false", "--temp-dir", str(folder), "--num-gpus", "1",
         "--resources", json.dumps({"cpu_node": 1})],
        folder / "head.log",
    )  # fmt: skip
    nodes = [head]
    try:
        try:
            connect(address, lambda m: None)
        except SearchKDError as exc:
            time.sleep(5)  # the head may still be starting
            try:
                connect(address, lambda m: None)
            except SearchKDError:
                log = (folder / "head.log").read_text()[-500:]
                pytest.skip(f"`ray start --head` did not come up ({exc}): {log}")
        nodes.append(
            _start(
                [
                    "--address",
                    address,
                    "--node-ip-address",
                    "127.0.0.1",
                    "--num-cpus",
                    "0",
                    "--num-gpus",
                    "1",
                    "--resources",
                    json.dumps({"edge_device": 1}),
                ],
                folder / "device.log",
            )  # fmt: skip
        )
        _wait_for("edge_device")
        yield address
    finally:
        ray.shutdown()
        for node in reversed(nodes):
            _stop(node)
        shutil.rmtree(folder, ignore_errors=True)
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        _reload_ray_auth()


def _node_with(resource: str) -> str:
    (node,) = [n["NodeID"] for n in ray.nodes() if n["Alive"] and resource in n["Resources"]]
    return node


def test_latency_is_measured_only_on_the_device_node(two_nodes, shared_run_dir):
    settings = fast_settings(
        shared_run_dir, study="edge", trials=2, latency={"meter": "ray:edge_device"}
    )
    search = Search(build_config(overrides=settings), log=lambda m: None)
    RayRunner(RayConfig(address=two_nodes), progress=False).run(search, 2)

    meter = search.costs.meter
    device, head = _node_with("edge_device"), _node_with("cpu_node")
    assert device != head
    assert len(meter.placements) >= 2  # the teacher and at least one candidate
    assert {node for node, _ in meter.placements} == {device}
    assert all(pid != os.getpid() for _, pid in meter.placements)
    trained = trained_trials(search.study)
    assert len(trained) == 2
    assert {t.user_attrs["latency_meter"] for t in trained} == {"ray:edge_device/torch-cpu:1t"}
    assert search.study.user_attrs["latency_meter"] == "ray:edge_device/torch-cpu:1t"


def test_a_resource_no_node_advertises_is_one_clear_line(two_nodes):
    with pytest.raises(SearchKDError, match="no node of the Ray cluster advertises") as caught:
        make_meter("ray:jetson_orin")
    assert "\n" not in str(caught.value) and "edge_device" in str(caught.value)


def test_a_trial_larger_than_every_node_is_refused_though_the_cluster_could_add_it_up(
    two_nodes, shared_run_dir
):
    assert ray.cluster_resources().get("GPU") == 2  # one per node
    search = Search(
        build_config(overrides=fast_settings(shared_run_dir, study="two-gpu-trial", trials=1)),
        log=lambda m: None,
    )
    with pytest.raises(SearchKDError) as caught:
        RayRunner(RayConfig(address=two_nodes, gpus_per_trial=2), progress=False).run(search, 1)
    assert str(caught.value) == (
        "--gpus-per-trial 2: no node of the Ray cluster has that many GPUs (the largest has 1 "
        "of the cluster's 2); lower --gpus-per-trial or add GPU nodes (0: train on CPUs)"
    )
    assert search.study.get_trials() == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a device node without CUDA")
def test_an_error_on_the_device_node_comes_back_as_its_own_line(two_nodes):
    meter = make_meter("ray:edge_device:torch-cuda", Timing(warmup=0, runs=1, repeats=1))
    space = get_space("mobilenet")
    with pytest.raises(SearchKDError) as caught:
        meter.measure(space.build(space.smallest(), 1, 8, 10), (1, 8, 8))
    message = str(caught.value)  # not Ray's traceback around it, with its colour codes
    assert message.startswith("latency meter torch-cuda: this machine has no CUDA device")
    assert "\n" not in message and "\x1b" not in message
