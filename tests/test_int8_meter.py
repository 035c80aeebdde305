"""The int8 ONNX Runtime meter: built by the registry, it times the statically quantised
model (which really holds QDQ nodes), is selectable from the config and the CLI, and a
candidate it cannot quantise or run fails that trial in one line, not the search."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from runners.local import LocalRunner
from searchkd.cli import _overrides, build_parser
from searchkd.config import build_config
from searchkd.errors import SearchKDError
from searchkd.meters import Timing, make_meter, meter_problem, parse_meter
from searchkd.search import Search
from tests.conftest import tiny_settings

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from searchkd.int8_meter import OnnxRuntimeInt8Meter, quantize_onnx  # noqa: E402
from searchkd.onnx_export import export_onnx, make_session  # noqa: E402

QUICK = Timing(warmup=1, runs=3, repeats=2)


def tiny_net() -> nn.Module:
    """Two conv-BN-ReLU layers whose folded biases are equal (fresh batch norms), which
    torch.onnx stores once and feeds through an Identity node, as in the spaces' nets."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    )


def test_the_registry_builds_the_int8_meter_and_names_it():
    meter = make_meter("onnxruntime-int8", QUICK)
    assert isinstance(meter, OnnxRuntimeInt8Meter)
    assert meter.name == "onnxruntime-int8-cpu:1t"
    assert make_meter("onnxruntime-int8:CPUExecutionProvider", Timing(threads=2)).name == (
        "onnxruntime-int8-cpu:2t"
    )
    assert make_meter("onnxruntime", QUICK).name == "onnxruntime-cpu:1t"  # unchanged
    spec = parse_meter("onnxruntime-int8:CPUExecutionProvider")
    assert (spec.kind.name, spec.argument) == ("onnxruntime-int8", "CPUExecutionProvider")


def test_measuring_a_tiny_conv_net_times_the_int8_model():
    model = tiny_net().train()
    latency = make_meter("onnxruntime-int8", QUICK).measure(model, (1, 16, 16))
    assert latency.meter == "onnxruntime-int8-cpu:1t"
    assert 0 < latency.median_ms < 1000 and latency.spread_ms >= 0
    assert latency.repeats >= 2
    assert model.training  # measuring leaves the candidate as it was


def test_the_int8_meter_times_the_fp32_model_too_and_the_trial_records_both(monkeypatch):
    import searchkd.onnx_export
    from searchkd.meters import Latency
    from searchkd.trials import Candidate, TrialCore

    real, made, timed = searchkd.onnx_export.make_session, {}, []

    def spy(path, threads=1, provider="CPUExecutionProvider"):
        session = real(path, threads, provider)
        made[id(session)] = path.name
        return session

    monkeypatch.setattr(searchkd.onnx_export, "make_session", spy)
    meter = make_meter("onnxruntime-int8", QUICK)
    time_session = meter.time_session

    def spy_time(session, shape):
        latency = time_session(session, shape)
        timed.append((made[id(session)], latency.median_ms))
        return latency

    monkeypatch.setattr(meter, "time_session", spy_time)
    latency = meter.measure(tiny_net(), (1, 16, 16))
    # the int8 model is the latency; the fp32 one it was quantised from is fp32_ms
    assert timed == [
        ("candidate-int8.onnx", latency.median_ms),
        ("candidate.onnx", latency.fp32_ms),
    ]
    assert make_meter("onnxruntime", QUICK).measure(tiny_net(), (1, 16, 16)).fp32_ms is None

    arch = {"stages": []}
    both = TrialCore._attrs(Candidate(0, arch, 1, 1, latency), None)
    assert (both["latency_ms"], both["latency_fp32_ms"]) == (latency.median_ms, latency.fp32_ms)
    fp32_only = TrialCore._attrs(Candidate(0, arch, 1, 1, Latency(0.1, 0.0, 3, "x")), None)
    assert "latency_fp32_ms" not in fp32_only  # the default meter's trials are unchanged


def test_the_quantised_model_holds_int8_qdq_nodes_and_still_classifies(tmp_path):
    model = tiny_net().eval()
    fp32 = tmp_path / "fp32.onnx"
    export_onnx(model, (1, 16, 16), fp32, check_batch=1)
    int8 = quantize_onnx(fp32, tmp_path / "int8.onnx", (1, 16, 16))

    graph = onnx.load(str(int8)).graph
    ops = [node.op_type for node in graph.node]
    assert ops.count("QuantizeLinear") >= 3 and ops.count("DequantizeLinear") >= 5
    assert ops.count("Conv") == 2  # QDQ keeps the float op between Q/DQ pairs
    produced_by = {out: node.op_type for node in graph.node for out in node.output}
    assert "Identity" in [n.op_type for n in onnx.load(str(fp32)).graph.node]
    for conv in (node for node in graph.node if node.op_type == "Conv"):
        assert produced_by.get(conv.input[0]) == "DequantizeLinear"  # activations
        assert produced_by.get(conv.input[1]) == "DequantizeLinear"  # weights
        # int32 biases, so ONNX Runtime fuses the conv into an int8 kernel; a bias left in
        # float (fed by an Identity when not pre-processed) would keep it in fp32
        assert produced_by.get(conv.input[2]) == "DequantizeLinear"
    initializers = {t.name: t for t in graph.initializer}
    weights = [t for t in initializers.values() if t.data_type == onnx.TensorProto.INT8]
    assert len(weights) >= 3  # both convolutions' and the linear layer's weights
    activation_zero_points = [
        initializers[node.input[2]].data_type
        for node in graph.node
        if node.op_type == "QuantizeLinear"
    ]
    assert set(activation_zero_points) == {onnx.TensorProto.UINT8}  # x86's fast u8 x s8 path
    scales = [
        initializers[node.input[1]]
        for node in graph.node
        if node.op_type == "DequantizeLinear" and node.input[1] in initializers
    ]
    assert scales and all(int(np.prod(scale.dims)) == 1 for scale in scales)  # per-tensor

    # Deterministic calibration: the same file twice, so a meter's numbers are repeatable.
    again = quantize_onnx(fp32, tmp_path / "again.onnx", (1, 16, 16))
    assert again.read_bytes() == int8.read_bytes()

    x = np.random.default_rng(1).standard_normal((8, 1, 16, 16)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    session = make_session(int8)
    actual = session.run(None, {session.get_inputs()[0].name: x})[0]
    assert actual.shape == expected.shape
    error = np.abs(actual - expected).max() / np.abs(expected).max()
    assert 0 < error < 0.1  # quantised (not bit-equal) yet the same function


def test_a_search_config_and_the_cli_select_the_int8_meter():
    config = build_config(
        overrides={"latency": {"meter": "onnxruntime-int8"}, "budget": {"max_latency_ms": "2"}}
    )
    assert config.latency.meter == "onnxruntime-int8"
    assert meter_problem("onnxruntime-int8:CUDAExecutionProvider", installed=False) is None

    parser = build_parser()
    args = parser.parse_args(
        ["search", "--latency", "onnxruntime-int8", "--max-latency-ms", "0.5x"]
    )
    config = build_config(overrides=_overrides(args))
    assert (config.latency.meter, config.budget.max_latency_ms) == ("onnxruntime-int8", "0.5x")
    subparsers = next(a for a in parser._actions if a.choices and "search" in a.choices)
    latency_help = next(
        a.help for a in subparsers.choices["search"]._actions if "--latency" in a.option_strings
    )
    assert "onnxruntime-int8[:Provider]: as onnxruntime, after static int8" in latency_help


def test_bad_int8_meter_names_are_refused_in_one_line():
    with pytest.raises(SearchKDError) as error:
        make_meter("onnxruntime-int8:NoSuchExecutionProvider")
    assert str(error.value).startswith(
        "ONNX Runtime here has no NoSuchExecutionProvider; available:"
    )
    assert "\n" not in str(error.value)
    with pytest.raises(SearchKDError, match="write it as onnxruntime-int8\\[:Provider\\]"):
        make_meter("onnxruntime-int8:")
    with pytest.raises(SearchKDError, match="latency.meter: must be .*onnxruntime-int8"):
        build_config(overrides={"latency": {"meter": "onnxruntime-int8:"}})


def test_a_candidate_the_quantiser_rejects_is_a_one_line_runtime_error(monkeypatch):
    import onnxruntime.quantization

    def broken(*args, **kwargs):
        raise ValueError("unsupported op Foo\n  (a long trace of the quantiser's state)")

    monkeypatch.setattr(onnxruntime.quantization, "quantize_static", broken)
    with pytest.raises(RuntimeError) as error:
        make_meter("onnxruntime-int8", QUICK).measure(tiny_net(), (1, 16, 16))
    assert str(error.value) == (
        "int8 quantisation of the candidate failed: ValueError: unsupported op Foo"
    )


def test_a_provider_without_int8_kernels_is_a_one_line_runtime_error(monkeypatch):
    from onnxruntime.capi.onnxruntime_pybind11_state import NotImplemented as OrtNotImplemented

    import searchkd.onnx_export

    real = searchkd.onnx_export.make_session

    def no_kernels(path, threads=1, provider="CPUExecutionProvider"):
        if "int8" not in str(path):  # the fp32 export is checked as usual
            return real(path, threads, provider)
        raise OrtNotImplemented(
            "[ONNXRuntimeError] : 9 : NOT_IMPLEMENTED : Could not find an implementation for "
            "QLinearConv(10) node with name 'conv'\nsecond line"
        )

    meter = make_meter("onnxruntime-int8", QUICK)
    monkeypatch.setattr(searchkd.onnx_export, "make_session", no_kernels)
    with pytest.raises(RuntimeError) as error:
        meter.measure(tiny_net(), (1, 16, 16))
    message = str(error.value)
    assert message.startswith(
        "ONNX Runtime's CPUExecutionProvider cannot run the int8 model: NotImplemented: "
        "[ONNXRuntimeError] : 9 : NOT_IMPLEMENTED : Could not find an implementation for "
        "QLinearConv"
    )
    assert "\n" not in message


@pytest.mark.slow
def test_a_search_under_the_int8_meter_records_it_and_survives_one_odd_candidate(
    shared_run_dir, monkeypatch
):
    import searchkd.int8_meter

    seen, odd = [], set()
    real = searchkd.int8_meter.quantize_onnx

    def signature(path) -> tuple:
        graph = onnx.load(str(path)).graph
        return tuple(n.op_type for n in graph.node), tuple(tuple(t.dims) for t in graph.initializer)

    def odd_one_fails(fp32_path, *args, **kwargs):
        # The teacher is quantised first; the first candidate's architecture is the odd one,
        # every time it is costed (a failed proposal is costed again inside its trial).
        seen.append(signature(fp32_path))
        if len(seen) == 2:
            odd.add(seen[1])
        if seen[-1] in odd:
            raise ValueError("odd candidate")
        return real(fp32_path, *args, **kwargs)

    monkeypatch.setattr(searchkd.int8_meter, "quantize_onnx", odd_one_fails)
    settings = tiny_settings(shared_run_dir, study="int8", latency={"meter": "onnxruntime-int8"})
    search = Search(build_config(overrides=settings), log=lambda m: None)
    LocalRunner(progress=False).run(search, 1)
    assert search.study.user_attrs["latency_meter"] == "onnxruntime-int8-cpu:1t"
    assert search.study.user_attrs["teacher_cost"]["latency_ms"] > 0
    failed = [t for t in search.study.trials if t.state.name == "FAIL"]
    assert [t.user_attrs["fail_reason"] for t in failed] == [
        "RuntimeError: int8 quantisation of the candidate failed: ValueError: odd candidate"
    ]
    (trained,) = [t for t in search.study.trials if t.user_attrs.get("trained")]
    assert trained.user_attrs["latency_meter"] == "onnxruntime-int8-cpu:1t"
    assert 0 < trained.values[2] < float("inf")
    assert trained.user_attrs["latency_fp32_ms"] > 0  # beside the int8 latency
