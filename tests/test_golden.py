"""A seeded tiny search must write the study recorded in ``tests/golden/``.

The record pins what a search decides and stores (trial numbers, states, decisions,
user attributes, constraints, objective values), so a change to the trial loop, the
runners or the storage that alters any of it fails here. The Ray runner is held to the
local runner's study by ``tests/test_ray_runner.py``, so this one record covers both.

After a change that is *meant* to alter the study, write the record again and review its
diff: ``SEARCHKD_WRITE_GOLDEN=1 pytest tests/test_golden.py``.
"""

from __future__ import annotations

import json
import math
import os
import platform
from pathlib import Path
from typing import Any

import pytest
import torch

from runners.local import LocalRunner
from searchkd.config import build_config
from searchkd.search import Search
from tests.conftest import fast_settings

GOLDEN = Path(__file__).parent / "golden" / "tiny_search_local.json"
# What depends on the machine or the clock, not on the search's decisions.
MACHINE = {
    "worker", "train_seconds", "samples_per_second", "train_device",
    "latency_ms", "latency_spread_ms", "latency_rounds", "latency_meter",
}  # fmt: skip
# Training floats are bit-equal between runs on CPUs with the same kernels (torch pinned,
# one thread). Kernels of another instruction set sum in another order, and a 1-epoch proxy
# turns that into other accuracies and, through AKD's rewards, other proposals: the record
# is only comparable on the instruction set it was written on.
CPU = f"{platform.machine()}/{torch.backends.cpu.get_cpu_capability()}/torch {torch.__version__}"
ACCURACY_ABS = 1e-6
LOSS_REL = 1e-4  # mean loss terms: float32 sums whose order differs between processes


def study_record(study: Any) -> dict[str, Any]:
    """The study as JSON: study attributes and trials, without the machine-dependent parts
    (the latency objective included)."""
    names = study.user_attrs["constraint_names"]
    trials = []
    for trial in study.get_trials(deepcopy=False):
        attrs = {k: v for k, v in trial.user_attrs.items() if k not in MACHINE}
        trials.append(
            {
                "number": trial.number,
                "state": trial.state.name,
                "params": trial.params,
                "values": None if trial.values is None else _finite(trial.values[:2]),
                "constraints": {
                    names[int(index)]: value if math.isfinite(value) else str(value)
                    for index, value in (trial.constraints or {}).items()
                    if names[int(index)] != "latency_ms"
                },
                "user_attrs": attrs,
            }
        )
    # teacher_cost holds the teacher's measured latency; settings_owner names the process
    skip = {"latency_meter", "teacher_cost", "settings_owner"}
    study_attrs = {k: v for k, v in study.user_attrs.items() if k not in skip}
    return {
        "cpu": CPU,
        "study_attrs": json.loads(json.dumps(study_attrs)),
        "trials": json.loads(json.dumps(trials)),
    }


def _finite(values: list[float]) -> list[float | str]:
    return [v if math.isfinite(v) else str(v) for v in values]


def _approx(expected: Any, key: str = "") -> Any:
    """The expected record with its floats compared within their run-to-run spread."""
    if isinstance(expected, dict):
        return {k: _approx(v, k) for k, v in expected.items()}
    if isinstance(expected, list):
        return [_approx(v, key) for v in expected]
    if isinstance(expected, float):
        if key.startswith("loss_"):
            return pytest.approx(expected, rel=LOSS_REL)
        return pytest.approx(expected, abs=ACCURACY_ABS, rel=1e-9)
    return expected


def _run(run_dir: Path) -> Search:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        config = build_config(overrides=fast_settings(run_dir, study="golden", trials=3))
        search = Search(config, log=lambda message: None)
        LocalRunner(progress=False).run(search, config.trials)
    finally:
        torch.set_num_threads(threads)
    return search


@pytest.mark.slow
@pytest.mark.slow
def test_a_seeded_tiny_search_writes_the_recorded_study(tmp_path):
    got = study_record(_run(tmp_path).study)
    if os.environ.get("SEARCHKD_WRITE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    expected = json.loads(GOLDEN.read_text())
    if expected["cpu"] != CPU:
        pytest.skip(f"the record was written on {expected['cpu']}, this is {CPU}: write one here")
    assert got["study_attrs"] == _approx(expected["study_attrs"])
    assert [(t["number"], t["state"], t["params"]) for t in got["trials"]] == [
        (t["number"], t["state"], t["params"]) for t in expected["trials"]
    ]  # what was proposed and what became of it, before the finer comparison
    assert got["trials"] == _approx(expected["trials"])
    assert any(t["user_attrs"]["trained"] is False for t in got["trials"])  # rejections too
