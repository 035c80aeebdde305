"""Per-block latency tables: decomposition, enumeration, prediction, files, search, CLI."""

from __future__ import annotations

import json
import random

import pytest
import torch
from scipy.stats import kendalltau

from runners.local import LocalRunner
from search_spaces import get_space
from search_spaces.mobilenet_units import mobilenet_unit_space, mobilenet_units
from searchkd.cli import main
from searchkd.config import build_config
from searchkd.cost import Latency, count_macs, count_params
from searchkd.errors import SearchKDError
from searchkd.latency import (
    LatencyTable,
    fit_line,
    kendall_tau,
    profile_device,
    random_members,
    validate_table,
)
from searchkd.search import Search
from tests.conftest import tiny_settings

SPACE = get_space("mobilenet")


class ParamMeter:
    """A deterministic stand-in for a device: latency = 1 µs per parameter + 0.01 ms per
    call. Whole networks then cost exactly the sum of their units minus the extra calls,
    so the table's arithmetic can be checked exactly."""

    name = "fake:params"

    def measure(self, model: torch.nn.Module, input_shape) -> Latency:
        return Latency(1e-3 * count_params(model) + 0.01, 0.0, 1, self.name)


@pytest.mark.parametrize("shape", [(1, 40, 40), (3, 32, 32), (1, 8, 8)])
def test_the_enumeration_holds_every_unit_of_random_members(shape):
    keys = {unit.key for unit in mobilenet_unit_space(shape[0], shape[1], 10)}
    for arch in random_members("mobilenet", 100, seed=1):
        for unit in mobilenet_units(arch, shape[0], shape[1], 10):
            assert unit.key in keys


@pytest.mark.slow
def test_units_compose_the_network_exactly():
    arch = random_members("mobilenet", 1, seed=4)[0]
    units = mobilenet_units(arch, 1, 40, 10)
    assert len(units) == 2 + sum(stage["layers"] for stage in arch["stages"])
    x = torch.zeros(1, 1, 40, 40)
    for unit in units:
        assert tuple(x.shape[1:]) == unit.input_shape
        x = unit.build().eval()(x)
    assert tuple(x.shape) == (1, 10)
    unit_macs = sum(count_macs(u.build(), u.input_shape) for u in units)
    assert unit_macs == SPACE.macs(arch, 40, 1, 10)
    unit_params = sum(count_params(u.build()) for u in units)
    assert unit_params == count_params(SPACE.build(arch, 1, 40, 10))


@pytest.mark.slow
def test_a_table_predicts_the_sum_of_its_units_and_validates():
    archs = random_members("mobilenet", 6, seed=2)
    table = profile_device("mobilenet", (1, 40, 40), 10, ParamMeter(), only_for=archs)
    for arch in archs:
        whole = ParamMeter().measure(SPACE.build(arch, 1, 40, 10), (1, 40, 40)).median_ms
        assert table.predict(arch).median_ms == pytest.approx(whole, rel=1e-9)
    assert table.predict(archs[0]).meter == "lut:fake:params"
    result = validate_table(table, ParamMeter(), n=6, seed=2)  # the same six members
    assert result.kendall_tau == pytest.approx(1.0)
    assert result.mape_percent == pytest.approx(0.0, abs=1e-6)
    assert (result.scale, result.offset_ms) == pytest.approx((1.0, 0.0), abs=1e-6)


@pytest.mark.slow
def test_validation_passes_keep_a_slow_phase_from_shifting_one_member():
    archs = random_members("mobilenet", 6, seed=2)
    table = profile_device("mobilenet", (1, 40, 40), 10, ParamMeter(), only_for=archs)

    class SlowPhase(ParamMeter):
        """The device, but the 4th measurement falls in a phase three times slower."""

        calls = 0

        def measure(self, model, input_shape):
            SlowPhase.calls += 1
            steady = super().measure(model, input_shape)
            slow = 3.0 if SlowPhase.calls == 4 else 1.0
            return Latency(steady.median_ms * slow, 0.0, 1, self.name)

    once = validate_table(table, SlowPhase(), n=6, seed=2)
    assert once.mape_percent > 5  # one member measured 3x: the plain sum looks wrong
    SlowPhase.calls = 0
    thrice = validate_table(table, SlowPhase(), n=6, seed=2, passes=3)
    assert SlowPhase.calls == 18  # every member in every pass
    assert thrice.kendall_tau == pytest.approx(1.0)
    assert thrice.mape_percent == pytest.approx(0.0, abs=1e-6)


def test_calibration_recovers_a_line_and_is_applied():
    rows = [(x, 2.0 * x + 0.5) for x in (1.0, 2.0, 3.0, 5.0, 8.0)]
    assert fit_line(rows) == pytest.approx((2.0, 0.5))
    assert fit_line([(1.0, 1.0)]) == (1.0, 0.0)  # too few points: identity
    arch = random_members("mobilenet", 1, seed=7)[0]
    table = profile_device("mobilenet", (1, 40, 40), 10, ParamMeter(), only_for=[arch])
    plain = table.predict(arch).median_ms
    table.scale, table.offset_ms = 2.0, 0.5
    assert table.predict(arch).median_ms == pytest.approx(2.0 * plain + 0.5)


def test_a_missing_unit_names_the_command_that_adds_it():
    archs = random_members("mobilenet", 2, seed=3)
    table = profile_device("mobilenet", (1, 40, 40), 10, ParamMeter(), only_for=archs[:1])
    with pytest.raises(SearchKDError, match="profile-device --space mobilenet --input 1x40x40"):
        table.predict(archs[1])


def test_table_files_round_trip_and_bad_ones_are_refused(tmp_path):
    arch = random_members("mobilenet", 1, seed=5)[0]
    table = profile_device("mobilenet", (1, 40, 40), 10, ParamMeter(), only_for=[arch])
    path = tmp_path / "lut.json"
    table.save(path)
    loaded = LatencyTable.load(path)
    assert loaded == table
    with pytest.raises(SearchKDError, match="space mobilenet, input 1x32x32"):
        loaded.check_matches("mobilenet", (1, 32, 32), 10)
    (tmp_path / "other.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(SearchKDError, match="is not a latency table"):
        LatencyTable.load(tmp_path / "other.json")
    newer = json.loads(path.read_text())
    assert newer["format_version"] == 1
    newer["format_version"] = 2
    (tmp_path / "newer.json").write_text(json.dumps(newer))
    with pytest.raises(SearchKDError, match="newer.json is format_version 2, newer than"):
        LatencyTable.load(tmp_path / "newer.json")
    del newer["format_version"]  # tables made before the version was written
    (tmp_path / "older.json").write_text(json.dumps(newer))
    assert LatencyTable.load(tmp_path / "older.json") == table
    broken = json.loads(path.read_text())
    broken["entries"] = {"x": -1}
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    with pytest.raises(SearchKDError, match="malformed"):
        LatencyTable.load(tmp_path / "broken.json")
    # JSON allows NaN; a NaN offset would make every candidate's latency NaN, inside any
    # budget, and every trained trial a failure.
    broken = json.loads(path.read_text())
    broken["offset_ms"] = float("nan")
    (tmp_path / "nan.json").write_text(json.dumps(broken))
    with pytest.raises(SearchKDError, match="malformed"):
        LatencyTable.load(tmp_path / "nan.json")


def test_kendall_tau_matches_scipy_with_ties():
    rng = random.Random(0)
    pairs = [(rng.randint(0, 5), rng.randint(0, 5)) for _ in range(40)]
    expected = kendalltau([a for a, _ in pairs], [b for _, b in pairs]).statistic
    assert kendall_tau(pairs) == pytest.approx(expected)
    assert kendall_tau([(1, 3), (2, 2), (3, 1)]) == pytest.approx(-1.0)


@pytest.mark.slow
def test_a_search_budgets_latency_from_a_table(tmp_path, shared_run_dir):
    table = profile_device("mobilenet", (1, 8, 8), 10, ParamMeter())
    path = tmp_path / "lut.json"
    table.save(path)
    predictions = sorted(table.predict(a).median_ms for a in random_members("mobilenet", 51, 0))
    limit = predictions[10]  # a fifth of uniformly random members fit
    settings = tiny_settings(
        shared_run_dir,
        study="lut",
        latency={"meter": f"lut:{path}"},
        budget={"max_macs": None, "max_latency_ms": limit},
    )
    search = Search(build_config(overrides=settings), log=lambda m: None)
    LocalRunner(progress=False).run(search, 2)
    trials = [t for t in search.study.trials if t.user_attrs.get("trained")]
    assert len(trials) == 2
    for trial in trials:
        assert trial.user_attrs["latency_meter"] == f"lut:{ParamMeter.name}"
        predicted = table.predict(trial.user_attrs["arch"]).median_ms
        assert trial.values[2] == pytest.approx(predicted) and predicted <= limit
    history = search.study.sampler.warmup_history  # empty when nothing could pre-screen
    assert history and history[-1] >= search.config.akd.warmup_target  # it used the table
    relative = tiny_settings(
        shared_run_dir,
        study="lut-rel",
        latency={"meter": f"lut:{path}"},
        budget={"max_latency_ms": "0.5x"},
    )
    with pytest.raises(SearchKDError, match="relative budget needs the teacher"):
        Search(build_config(overrides=relative), log=lambda m: None)


def test_a_table_for_another_input_is_refused_by_the_search(tmp_path, shared_run_dir):
    arch = random_members("mobilenet", 1, seed=6)[0]
    path = tmp_path / "lut.json"
    profile_device("mobilenet", (1, 40, 40), 10, ParamMeter(), only_for=[arch]).save(path)
    settings = tiny_settings(shared_run_dir, study="lut-bad", latency={"meter": f"lut:{path}"})
    with pytest.raises(SearchKDError, match="input 1x40x40.*input 1x8x8"):
        Search(build_config(overrides=settings), log=lambda m: None)


def test_profile_device_cli_rejects_bad_input_in_one_line(tmp_path, capsys):
    code = main(["profile-device", "--input", "3x224", "--out", str(tmp_path / "t.json")])
    assert code == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
    (tmp_path / "not.json").write_text("{}")
    code = main(["profile-device", "--validate", "--out", str(tmp_path / "not.json")])
    err = capsys.readouterr().err
    assert code == 2 and "not a latency table" in err
    code = main(
        [
            "profile-device",
            "--space",
            "resnet",
            "--input",
            "1x8x8",
            "--out",
            str(tmp_path / "r.json"),
            "--no-progress",
        ]
    )
    assert code == 2 and "supports mobilenet" in capsys.readouterr().err
    code = main(["profile-device", "--tolerance", "-1", "--out", str(tmp_path / "t.json")])
    assert code == 2 and "--tolerance must be >= 0" in capsys.readouterr().err


def test_validating_a_table_with_another_meter_is_refused_and_leaves_it_alone(tmp_path, capsys):
    arch = random_members("mobilenet", 1, seed=7)[0]
    path = tmp_path / "lut.json"
    profile_device("mobilenet", (1, 40, 40), 10, ParamMeter(), only_for=[arch]).save(path)
    before = path.read_text()
    code = main(["profile-device", "--validate", "--out", str(path), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "was measured with fake:params, this run would validate it with torch-cpu:1t" in err
    assert path.read_text() == before  # its calibration is not rewritten from the wrong meter


@pytest.mark.slow
def test_onnxruntime_meter_times_an_exported_candidate():
    pytest.importorskip("onnxruntime")
    from searchkd.meters import Timing, make_meter

    meter = make_meter("onnxruntime", Timing(warmup=1, runs=3, repeats=2))
    arch = SPACE.smallest()
    latency = meter.measure(SPACE.build(arch, 1, 8, 10), (1, 8, 8))
    assert latency.meter == "onnxruntime-cpu:1t" and latency.median_ms > 0
    with pytest.raises(SearchKDError, match="no NoSuchExecutionProvider; available: "):
        make_meter("onnxruntime:NoSuchExecutionProvider")
    with pytest.raises(SearchKDError, match="unknown latency meter"):
        make_meter("tflite")


@pytest.mark.slow
def test_a_search_times_candidates_in_onnxruntime(shared_run_dir):
    pytest.importorskip("onnxruntime")
    settings = tiny_settings(shared_run_dir, study="ort", latency={"meter": "onnxruntime"})
    search = Search(build_config(overrides=settings), log=lambda m: None)
    LocalRunner(progress=False).run(search, 1)
    (trial,) = [t for t in search.study.trials if t.user_attrs.get("trained")]
    assert trial.user_attrs["latency_meter"] == "onnxruntime-cpu:1t"
    assert 0 < trial.values[2] < float("inf")
    assert search.study.user_attrs["teacher_cost"]["latency_ms"] > 0
