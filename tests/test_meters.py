"""The meter registry: every meter name is read in one place, one value carries the timing
settings, and a meter registered with one ``MeterKind`` line is usable everywhere a meter
is named (config, ``--latency``, ``profile-device --meter``, inside ``ray:``)."""

from __future__ import annotations

import dataclasses
import inspect
import types

import pytest
import torch

from searchkd.cli import build_parser, main
from searchkd.config import LatencyConfig, build_config
from searchkd.cost import count_params
from searchkd.errors import SearchKDError
from searchkd.latency import LatencyTable, profile_device, random_members
from searchkd.meters import (
    METERS,
    Latency,
    LatencyMeter,
    MeterKind,
    MeterSpec,
    Timing,
    make_meter,
    meter_listing,
    meter_problem,
    parse_meter,
)
from searchkd.onnx_meter import OnnxRuntimeMeter
from searchkd.ray_meter import RayLatencyMeter
from searchkd.search import Search
from searchkd.torch_meter import TorchLatencyMeter


class ToyMeter:
    """A meter as a newcomer would add one: latency = ``scale`` µs per parameter plus
    0.01 ms per call, so whole networks cost exactly the sum of their units."""

    def __init__(self, scale: float, timing: Timing) -> None:
        self.scale, self.timing = scale, timing

    @classmethod
    def from_spec(cls, spec: MeterSpec, timing: Timing) -> ToyMeter:
        return cls(float(spec.argument or 1), timing)

    @property
    def name(self) -> str:
        return f"toy:{self.timing.threads}t"

    def measure(self, model: torch.nn.Module, input_shape: tuple[int, ...]) -> Latency:
        return Latency(self.scale * 1e-3 * count_params(model) + 0.01, 0.0, 1, self.name)


TOY = MeterKind(
    "toy",
    "parameters as microseconds (a test double)",
    f"{__name__}:ToyMeter",
    argument="SCALE",
    optional=True,
)


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(METERS, "toy", TOY)
    return TOY


def test_the_registry_holds_the_built_in_meters_in_listing_order():
    assert list(METERS) == [
        "torch-cpu",
        "torch-cuda",
        "onnxruntime",
        "onnxruntime-int8",
        "lut",
        "ray",
    ]
    assert [kind.usage for kind in METERS.values()] == [
        "torch-cpu",
        "torch-cuda",
        "onnxruntime[:Provider]",
        "onnxruntime-int8[:Provider]",
        "lut:PATH",
        "ray:RESOURCE[:METER]",
    ]
    assert METERS["torch-cpu"].load() is TorchLatencyMeter
    assert METERS["onnxruntime"].load() is OnnxRuntimeMeter
    assert METERS["lut"].load() is LatencyTable
    assert METERS["ray"].load() is RayLatencyMeter
    assert [k.name for k in METERS.values() if k.times_here] == [
        "torch-cpu",
        "torch-cuda",
        "onnxruntime",
        "onnxruntime-int8",
    ]


@pytest.mark.parametrize(
    "name, kind, argument",
    [
        ("torch-cpu", "torch-cpu", ""),
        ("onnxruntime", "onnxruntime", ""),
        ("onnxruntime:CUDAExecutionProvider", "onnxruntime", "CUDAExecutionProvider"),
        ("lut:tables/a:b.json", "lut", "tables/a:b.json"),
        ("ray:edge", "ray", "edge"),
        (
            "ray:edge:onnxruntime:CPUExecutionProvider",
            "ray",
            "edge:onnxruntime:CPUExecutionProvider",
        ),
    ],
)
def test_parse_meter_splits_the_kind_from_its_argument(name, kind, argument):
    spec = parse_meter(name)
    assert (spec.name, spec.kind.name, spec.argument) == (name, kind, argument)
    assert meter_problem(name) is None


@pytest.mark.parametrize(
    "name, says",
    [
        ("tflite", "unknown latency meter 'tflite'; use torch-cpu, torch-cuda, "),
        ("", "unknown latency meter ''"),
        ("torch-cpu:2", "latency meter 'torch-cpu:2': write it as torch-cpu"),
        ("onnxruntime:", "write it as onnxruntime[:Provider]"),
        ("lut", "write it as lut:PATH"),
        ("lut:", "write it as lut:PATH"),
        (
            "ray:",
            "write it as ray:RESOURCE[:METER] with METER torch-cpu, torch-cuda, "
            "onnxruntime[:Provider] or onnxruntime-int8[:Provider]",
        ),
        ("ray::torch-cpu", "write it as ray:RESOURCE[:METER]"),
        ("ray:edge:lut:t.json", "write it as ray:RESOURCE[:METER]"),  # a table times nothing
        ("ray:edge:ray:other", "write it as ray:RESOURCE[:METER]"),
        ("ray:edge:onnxruntime:", "write it as ray:RESOURCE[:METER]"),
        ("ray:edge:tflite", "write it as ray:RESOURCE[:METER]"),
    ],
)
def test_a_bad_name_is_one_line_that_says_how_to_write_it(name, says):
    problem = meter_problem(name)
    assert problem is not None and says in problem and "\n" not in problem
    with pytest.raises(SearchKDError) as caught:
        parse_meter(name)
    assert str(caught.value) == problem
    with pytest.raises(SearchKDError):
        make_meter(name)


def test_an_unknown_name_lists_every_registered_meter(toy):
    problem = meter_problem("tflite")
    for kind in METERS.values():
        assert kind.usage in problem
    assert problem.endswith("(timed on the Ray node advertising it) or toy[:SCALE]")


def test_a_meter_whose_module_is_missing_is_unavailable_in_one_line(monkeypatch):
    monkeypatch.setitem(
        METERS, "gone", MeterKind("gone", "not installed", "no_such_package.meter:Meter")
    )
    problem = meter_problem("gone")
    assert problem == (
        "latency meter 'gone' is unavailable: its module no_such_package.meter is not installed"
    )
    assert meter_problem("gone", installed=False) is None
    with pytest.raises(SearchKDError, match="is unavailable"):
        make_meter("gone")
    with pytest.raises(SearchKDError, match="latency.meter: latency meter 'gone' is unavailable"):
        build_config(overrides={"latency": {"meter": "gone"}})


def test_timing_is_one_frozen_value_every_meter_takes():
    timing = Timing()
    with pytest.raises(dataclasses.FrozenInstanceError):
        timing.runs = 1  # type: ignore[misc]
    for meter in (TorchLatencyMeter, OnnxRuntimeMeter, RayLatencyMeter):
        parameters = inspect.signature(meter).parameters
        assert "timing" in parameters, meter  # the settings travel as one value...
        fields = {field.name for field in dataclasses.fields(Timing)}
        assert not fields & set(parameters), meter  # ...not as loose arguments beside it
    assert TorchLatencyMeter().timing == OnnxRuntimeMeter().timing == timing


def test_the_latency_config_gives_its_timing():
    assert LatencyConfig().timing() == Timing(tolerance=0.05)  # the config's own default
    settings = LatencyConfig(threads=2, warmup=0, runs=7, repeats=4, tolerance=None)
    assert settings.timing() == Timing(2, 0, 7, 4, None, 10)


def test_make_meter_hands_the_timing_to_the_meter():
    timing = Timing(threads=2, warmup=0, runs=3, repeats=2, tolerance=0.2, max_repeats=6)
    meter = make_meter("torch-cpu", timing)
    assert isinstance(meter, TorchLatencyMeter) and isinstance(meter, LatencyMeter)
    assert (meter.device.type, meter.name) == ("cpu", "torch-cpu:2t")
    assert meter.timing == timing
    latency = meter.measure(torch.nn.Linear(4, 2), (4,))
    assert latency.meter == "torch-cpu:2t" and latency.median_ms > 0 and latency.repeats >= 2
    assert make_meter("torch-cpu").timing == Timing()  # no timing: the defaults


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_torch_cuda_without_cuda_is_refused_when_built():
    assert meter_problem("torch-cuda") is None  # a well-formed name; the machine decides
    with pytest.raises(SearchKDError, match="^latency meter torch-cuda: this machine has no"):
        make_meter("torch-cuda")


def _table(tmp_path, meter, n: int = 3):
    archs = random_members("mobilenet", n, seed=0)
    path = tmp_path / "lut.json"
    profile_device("mobilenet", (1, 8, 8), 10, meter, only_for=archs).save(path)
    return path


def test_a_lut_name_loads_the_table_and_the_search_uses_it_instead_of_a_meter(tmp_path):
    path = _table(tmp_path, ToyMeter(1.0, Timing()))
    table = make_meter(f"lut:{path}")
    assert isinstance(table, LatencyTable) and table.name == "lut:toy:1t"
    assert not isinstance(table, LatencyMeter)  # it predicts, it does not time
    config = build_config(overrides={"latency": {"meter": f"lut:{path}"}})
    owner = types.SimpleNamespace(
        config=config,
        space=types.SimpleNamespace(arch_family="mobilenet"),
        data=types.SimpleNamespace(num_classes=10),
    )
    meter, found = Search._latency_meter(owner, (1, 8, 8))
    assert meter is None and found.entries == table.entries
    with pytest.raises(SearchKDError, match="latency table is for space mobilenet, input 1x8x8"):
        Search._latency_meter(owner, (1, 16, 16))


def test_a_registered_toy_meter_is_a_meter_everywhere_one_is_named(toy):
    assert meter_problem("toy") is None and meter_problem("ray:edge:toy") is None
    assert meter_problem("toy:") is not None
    config = build_config(overrides={"latency": {"meter": "toy:3", "threads": 2}})
    owner = types.SimpleNamespace(config=config)
    meter, table = Search._latency_meter(owner, (1, 8, 8))  # what the search builds
    assert isinstance(meter, ToyMeter) and table is None
    assert (meter.scale, meter.name, meter.timing) == (3.0, "toy:2t", config.latency.timing())
    with pytest.raises(SearchKDError, match="latency.meter: must be .* or toy\\[:SCALE\\]"):
        build_config(overrides={"latency": {"meter": "toy:"}})


def test_the_cli_offers_and_accepts_a_registered_meter(toy, tmp_path, capsys):
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.choices and "search" in a.choices)
    search, profile = subparsers.choices["search"], subparsers.choices["profile-device"]
    latency_help = next(a.help for a in search._actions if "--latency" in a.option_strings)
    meter_help = next(a.help for a in profile._actions if "--meter" in a.option_strings)
    assert "toy[:SCALE]: parameters as microseconds" in latency_help
    assert (
        "torch-cpu, torch-cuda, onnxruntime[:Provider], onnxruntime-int8[:Provider] or toy[:SCALE]"
        == meter_help
    )
    assert meter_help == meter_listing(times_here=True)

    args = parser.parse_args(["search", "--latency", "toy:2"])
    from searchkd.cli import _overrides

    assert build_config(overrides=_overrides(args)).latency.meter == "toy:2"

    # profile-device validates a table with the toy meter, timing flags and all.
    path = _table(tmp_path, ToyMeter(1.0, Timing(threads=2)))
    code = main(
        [
            "profile-device",
            "--meter",
            "toy",
            "--threads",
            "2",
            "--validate",
            "--validate-n",
            "3",
            "--validate-passes",
            "1",
            "--seed",
            "0",
            "--out",
            str(path),
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "validated on 3 random mobilenet members (toy:2t" in out
    validated = LatencyTable.load(path)
    # Units sum to the whole network exactly for this meter: the fitted line is the identity.
    assert validated.scale == pytest.approx(1.0) and validated.offset_ms == pytest.approx(0.0)


def test_the_cli_refuses_an_unregistered_or_non_timing_meter_in_one_line(tmp_path, capsys):
    out = str(tmp_path / "t.json")
    assert main(["profile-device", "--meter", "toy", "--out", out]) == 2
    err = capsys.readouterr().err
    assert "unknown latency meter 'toy'" in err and err.count("\n") == 1
    assert main(["profile-device", "--meter", f"lut:{out}", "--out", out]) == 2
    err = capsys.readouterr().err
    assert "profile-device times on this machine with torch-cpu, torch-cuda, onnx" in err
    assert err.count("\n") == 1
