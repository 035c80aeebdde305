"""Quantised students: the fake quantiser against hand-computed values and its
straight-through gradient, batch-norm folding, where the quantisers go, the int8 ONNX
export checked against PyTorch, and the bad inputs (an unsupported bit width, a runtime
without int8 kernels), each one line."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import optuna
import pytest
import torch
from torch import nn

import searchkd
from search_spaces import get_space
from searchkd.engine import evaluate
from searchkd.errors import SearchKDError
from searchkd.features import FeatureTaps
from searchkd.quantize import QuantSpec, prepare_qat
from searchkd.quantize.calibrate import calibrate
from searchkd.quantize.fake import ActivationQuantizer, fake_quantize, quantize_weight
from searchkd.quantize.layers import QuantConvBn2d
from searchkd.quantize.prepare import activation_quantizers, float_twin, quant_spec
from searchkd.quantize.ptq import ptq_baseline, ptq_bundle
from searchkd.recipe import Recipe
from searchkd.retrain import StudentSource, retrain_student
from searchkd.schedules import NamedTeacher, ScheduleOptions

onnxruntime = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from searchkd.quantize.onnx_int8 import BOUND, export_int8  # noqa: E402
from tests.conftest import small_digits  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = (1, 8, 8)
STUDENT = get_space("mobilenet").smallest()


def trained_like(space: str = "resnet", arch: dict | None = None) -> nn.Module:
    """A student of ``space`` at 1x8x8 whose batch norms and weights are not at their
    initial values, so folding them is not trivially the identity."""
    torch.manual_seed(0)
    built = get_space(space)
    model = built.build(arch or built.smallest(), *SHAPE[:2], 10).train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(16, *SHAPE))
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return model.eval()


def images(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, *SHAPE, generator=torch.Generator().manual_seed(seed))


# --- the fake quantiser ----------------------------------------------------------------------
def test_fake_quantize_rounds_onto_the_uint8_grid_of_a_hand_computed_case():
    # scale 0.1, zero point 10: the grid is -1.0, -0.9, ..., 24.5
    x = torch.tensor([-1.5, -0.04, 0.26, 7.33, 25.0, 30.0])
    out = fake_quantize(x, torch.tensor(0.1), 10, 0, 255)
    assert out.tolist() == pytest.approx([-1.0, 0.0, 0.3, 7.3, 24.5, 24.5], abs=1e-6)


def test_the_straight_through_gradient_is_one_inside_the_range_and_zero_outside():
    x = torch.tensor([-1.5, -1.0, -0.04, 0.26, 24.5, 25.0, 30.0], requires_grad=True)
    fake_quantize(x, torch.tensor(0.1), 10, 0, 255).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0]


def test_weights_are_symmetric_per_output_channel_in_8_and_4_bits():
    weight = torch.tensor([[0.3, -1.0, 0.6], [2.0, 0.1, -0.9]], requires_grad=True)
    four = quantize_weight(weight, QuantSpec(weight_bits=4), training=False)
    # row scales 1/7 and 2/7: 0.3 -> 2/7, 0.6 -> 4/7; 0.1 -> 0, -0.9 -> -3 * 2/7
    expected = [[2 / 7, -1.0, 4 / 7], [2.0, 0.0, -6 / 7]]
    assert four.tolist() == [pytest.approx(row, abs=1e-6) for row in expected]
    four.sum().backward()
    assert weight.grad.tolist() == [[1.0] * 3] * 2  # the shadow weights get the gradient
    eight = quantize_weight(weight, QuantSpec(), training=False)
    assert (eight - weight).abs().max() <= 2.0 / 127 / 2 + 1e-7  # half a step of row 2
    per_tensor = quantize_weight(weight, QuantSpec(per_channel=False, weight_bits=4), False)
    # one scale, 2/7, for both rows: 0.3 -> 1 step, 0.6 -> 2 steps
    assert per_tensor[0, [0, 2]].tolist() == pytest.approx([2 / 7, 4 / 7], abs=1e-6)


def test_polino_rounds_weights_stochastically_in_training_and_to_nearest_in_evaluation():
    torch.manual_seed(0)
    weight = torch.full((1, 4000), 0.3)
    weight[0, 0] = 1.0  # scale 1/7: 0.3 lies at 2.1 steps
    spec = QuantSpec(weight_bits=4, variant="polino")
    trained = quantize_weight(weight, spec, training=True)[0, 1:] * 7
    assert set(trained.round().tolist()) == {2.0, 3.0}
    assert trained.mean().item() == pytest.approx(2.1, abs=0.05)  # unbiased
    assert set((quantize_weight(weight, spec, False)[0, 1:] * 7).round().tolist()) == {2.0}
    assert torch.equal(
        quantize_weight(weight, QuantSpec(weight_bits=4), True),
        quantize_weight(weight, QuantSpec(weight_bits=4), False),
    )


def test_activation_ranges_follow_an_average_of_the_batches_and_contain_zero():
    quantizer = ActivationQuantizer(momentum=0.5).train()
    assert torch.equal(quantizer(torch.tensor([3.0])), torch.tensor([3.0]))  # first batch
    quantizer(torch.tensor([1.0, 5.0]))
    assert (float(quantizer.low), float(quantizer.high)) == (2.0, 4.0)  # 3 -> 2, 3 -> 4
    scale, zero_point = quantizer.qparams()
    assert (float(scale), float(zero_point)) == (pytest.approx(4 / 255), 0.0)  # [0, 4]


@pytest.mark.parametrize(
    "options, message",
    [
        ({"weight_bits": 3}, "quantisation: 3-bit weights are not supported; use 8 or 4"),
        ({"bits": 4}, "quantisation: 4-bit activations are not supported; activations run in"),
        ({"variant": "lsq"}, "quantisation: unknown variant 'lsq'; use ste or polino"),
    ],
)
def test_an_unsupported_bit_width_or_variant_is_one_line(options, message):
    with pytest.raises(SearchKDError) as error:
        prepare_qat(nn.Sequential(nn.Conv2d(1, 2, 3)), **options)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


# --- preparing a network ---------------------------------------------------------------------
@pytest.mark.parametrize("space", ["mobilenet", "resnet", "compact"])
def test_folding_batch_norms_leaves_the_float_network_as_it_was(space):
    model = trained_like(space)
    prepared = prepare_qat(model).eval()
    batch_norms = {m for m in prepared.modules() if isinstance(m, nn.BatchNorm2d)}
    assert batch_norms and batch_norms == {
        m.bn for m in prepared.modules() if isinstance(m, QuantConvBn2d)
    }  # every batch norm is folded into the convolution before it
    x = images(4)
    with torch.no_grad(), float_twin(prepared):
        folded = prepared(x)
    assert torch.allclose(folded, model(x), atol=1e-5, rtol=1e-4)
    with torch.no_grad():  # quantised: close, not equal
        quantised = calibrate(prepared, images(16, seed=2))(x)
    assert 0 < (quantised - model(x)).abs().max() < 0.25 * model(x).abs().max()


def test_training_a_folded_layer_normalises_with_the_batch_and_updates_running_stats():
    torch.manual_seed(0)
    reference = nn.Sequential(nn.Conv2d(2, 4, 3, bias=False), nn.BatchNorm2d(4)).train()
    layer = QuantConvBn2d(*copy.deepcopy(reference), QuantSpec())
    x = torch.randn(8, 2, 6, 6)
    expected, actual = reference(x), layer.train()(x)
    assert (actual - expected).abs().max() < 0.05 * expected.abs().max()  # weight rounding
    assert torch.allclose(layer.bn.running_mean, reference[1].running_mean, atol=1e-2)
    assert torch.allclose(layer.bn.running_var, reference[1].running_var, rtol=2e-2)


def test_quantisers_sit_where_onnx_runtime_rounds_and_module_paths_survive():
    model = trained_like("resnet")
    prepared = prepare_qat(model)
    names = {name for name, _ in prepared.named_modules()}
    original = {name for name, _ in model.named_modules()}
    assert original <= names  # every path (taps, pre-activation taps) still exists
    block = prepared.get_submodule("stages.0.0")
    # conv1+bn1, relu -> quantise; conv2+bn2 -> quantise; add, preact, relu -> quantise
    assert [n for n, m in block.named_children() if isinstance(m, ActivationQuantizer)] == [
        "relu_quant", "bn2_quant", "relu_1_quant",
    ]  # fmt: skip
    with FeatureTaps(prepared, ["stages.0", "stages.1.0.preact"]) as taps:
        prepared(images(2))
        assert set(taps.features) == {"stages.0", "stages.1.0.preact"}
    assert isinstance(model.get_submodule("stages.0.0.bn1"), nn.BatchNorm2d)  # left as it was


def test_a_prepared_model_round_trips_through_its_state_dict():
    prepared = prepare_qat(trained_like("mobilenet")).train()
    prepared(images(16))
    again = prepare_qat(trained_like("mobilenet"))
    again.load_state_dict(prepared.state_dict())
    x = images(4)
    with torch.no_grad():
        assert torch.equal(again.eval()(x), prepared.eval()(x))
    assert all(bool(q.observed) for q in activation_quantizers(again))


# --- int8 export -----------------------------------------------------------------------------
def int8_ops(path, tmp_path) -> Counter:
    """The op types ONNX Runtime runs for the file after its graph optimisations."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return Counter(n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node)


def as_written_outputs(path, x: torch.Tensor) -> torch.Tensor:
    """The file evaluated op by op in float: ONNX Runtime with graph optimisations off."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"input": x.numpy()})[0])


@pytest.mark.parametrize("space, weight_bits", [("resnet", 8), ("mobilenet", 4)])
def test_the_int8_export_runs_int8_kernels_and_agrees_with_pytorch(space, weight_bits, tmp_path):
    prepared = calibrate(prepare_qat(trained_like(space), weight_bits=weight_bits), images(32))
    check = export_int8(prepared, SHAPE, tmp_path / "int8.onnx", images(64, seed=3))
    assert check.max_abs_diff <= BOUND["max_abs_diff_relative"] * check.max_abs_logit
    assert check.top1_agreement >= BOUND["top1_agreement"]
    # Evaluated as written (no int8 kernels), the file is the fake-quantised model: only a
    # rounding tie that float summation order decides may differ (a wrong bias, say, shows
    # in nearly every image)
    as_written = as_written_outputs(tmp_path / "int8.onnx", images(64, seed=3))
    with torch.no_grad():
        expected = prepared(images(64, seed=3))
    same = ((as_written - expected).abs().amax(1) <= 1e-5 * check.max_abs_logit).float()
    assert same.mean() >= 0.9
    ops = int8_ops(tmp_path / "int8.onnx", tmp_path)
    assert ops["QLinearConv"] >= 3 and ops["QGemm"] == 1
    assert not {"Conv", "Gemm", "DequantizeLinear"} & set(ops)  # nothing left in float
    graph = onnx.load(str(tmp_path / "int8.onnx")).graph
    stored = Counter((t.data_type, len(t.dims) > 1) for t in graph.initializer)
    assert stored[onnx.TensorProto.FLOAT, True] == 0  # no float weight tensor is left
    assert stored[onnx.TensorProto.INT8, True] >= 4  # the conv and linear weights
    assert stored[onnx.TensorProto.INT32, False] >= 4  # their biases
    weights = [onnx.numpy_helper.to_array(t) for t in graph.initializer if len(t.dims) > 1]
    assert max(abs(int(w.min())) for w in weights) == 2 ** (weight_bits - 1) - 1  # 4 bits: 7


def test_an_uncalibrated_model_is_refused_in_one_line(tmp_path):
    with pytest.raises(SearchKDError, match="never saw data: train it or calibrate it"):
        export_int8(prepare_qat(trained_like()), SHAPE, tmp_path / "int8.onnx")


def test_a_runtime_without_int8_kernels_is_one_line(monkeypatch, tmp_path):
    from onnxruntime.capi.onnxruntime_pybind11_state import NotImplemented as OrtNotImplemented

    import searchkd.onnx_export

    def no_kernels(path, threads=1, provider="CPUExecutionProvider"):
        raise OrtNotImplemented(
            "[ONNXRuntimeError] : 9 : NOT_IMPLEMENTED : Could not find an implementation for "
            "QLinearConv(10) node with name 'conv'\nsecond line"
        )

    monkeypatch.setattr(searchkd.onnx_export, "make_session", no_kernels)
    prepared = calibrate(prepare_qat(trained_like()), images(16))
    with pytest.raises(SearchKDError) as error:
        export_int8(prepared, SHAPE, tmp_path / "int8.onnx")
    assert str(error.value).startswith(
        "ONNX Runtime's CPUExecutionProvider cannot run the int8 model int8.onnx: "
        "NotImplemented: [ONNXRuntimeError] : 9 : NOT_IMPLEMENTED : Could not find an "
        "implementation for QLinearConv"
    )
    assert "\n" not in str(error.value)
    assert not (tmp_path / "int8.onnx").exists()


# --- quantisation-aware retraining and its bundle --------------------------------------------
@pytest.fixture(scope="module")
def digits():
    return small_digits(128, 64)


@pytest.fixture(scope="module")
def int8_bundle(digits, tmp_path_factory):
    """A student retrained quantisation-aware (4-bit weights) for one epoch by KD from a
    full-precision teacher (untrained: the plumbing is under test, not the accuracy)."""
    teacher_arch = get_space("resnet").smallest()
    torch.manual_seed(0)
    teacher = get_space("resnet").build(teacher_arch, 1, 8, 10).eval()
    named = NamedTeacher("teacher@random", teacher, [], teacher_arch)
    source = StudentSource({"format": "searchkd-student", "arch": STUDENT}, "tiny")
    out = tmp_path_factory.mktemp("qat")
    outcome = retrain_student(
        source, "kd", Recipe(epochs=1, batch_size=64), ScheduleOptions(), digits, named, [],
        {"name": "teacher@random"}, out, out / "cache", progress=False, log=lambda _: None,
        quantization=QuantSpec(weight_bits=4),
    )  # fmt: skip
    return outcome.student


def test_quantisation_aware_retraining_ships_an_int8_bundle_load_student_rebuilds(
    int8_bundle, digits
):
    record = json.loads(int8_bundle.read_text())
    assert int8_bundle.name == "tiny-kd-int8-w4.json"
    assert record["quantization"] == QuantSpec(weight_bits=4).to_dict()
    model = searchkd.load_student(int8_bundle)
    assert quant_spec(model) == QuantSpec(weight_bits=4)
    saved = torch.load(int8_bundle.parent / record["weights"], weights_only=True)
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
    session = onnxruntime.InferenceSession(str(int8_bundle.parent / record["onnx"]))
    x = digits.val_x[:64]
    (int8,) = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        fake = model(x).numpy()
    assert abs(int8 - fake).max() <= BOUND["max_abs_diff_relative"] * abs(fake).max()


def test_the_int8_model_card_records_precision_calibration_and_both_latencies(int8_bundle):
    record = json.loads(int8_bundle.read_text())
    card = json.loads((int8_bundle.parent / record["model_card"]).read_text())
    quantization = card["quantization"]
    assert quantization["precision"] == (
        "uint8 activations (asymmetric, per tensor), int4 weights (symmetric, per channel)"
    )
    assert (
        "training batch's min and max, over the 1 epochs on the digits"
        in (quantization["calibration"])
    )
    assert [(m["meter"], m["precision"]) for m in card["latency"]] == [
        ("onnxruntime-cpu:1t", "fp32"),
        ("onnxruntime-cpu:1t", "int8"),
    ]
    assert card["onnx"]["batch"] == 64 and card["onnx"]["top1_agreement"] >= 0.98
    assert card["teacher"]["name"] == "teacher@random"  # full precision, Apprentice's setting
    markdown = (int8_bundle.parent / record["model_card"]).with_suffix(".md").read_text()
    assert "| Precision | uint8 activations" in markdown
    assert "| Latency (onnxruntime-cpu:1t, int8, batch 1) |" in markdown


def test_quantised_retrainings_do_not_compete_with_float_ones_for_export():
    from searchkd.export import retrained_runs

    study = optuna.create_study()
    for key, accuracy, quantization in [("kd:seed0", 0.5, None), ("kd:seed0:int8", 0.9, "int8")]:
        study.set_user_attr(
            f"retrain:trial0:{key}",
            {"schedule": "kd", "accuracy": accuracy, "quantization": quantization},
        )
    assert [run["accuracy"] for run in retrained_runs(study, 0)] == [0.5]


def test_quantisation_flags_without_quantize_are_one_line(capsys):
    from searchkd import cli

    assert cli.main(["retrain", "--arch", "x.json", "--epochs", "1", "--weight-bits", "4"]) == 2
    assert capsys.readouterr().err == (
        "searchkd: error: --weight-bits applies to quantised students; add --quantize int8\n"
    )


@pytest.mark.slow
def test_the_cli_retrains_a_student_quantisation_aware_with_polinos_rounding(tmp_path):
    from tests.bad_inputs import write_teacher

    (tmp_path / "teacher").mkdir()
    write_teacher(tmp_path / "teacher")
    (tmp_path / "student.json").write_text(json.dumps(STUDENT))
    result = subprocess.run(
        [
            sys.executable, "-m", "searchkd.cli", "retrain",
            "--arch", str(tmp_path / "student.json"), "--teacher", str(tmp_path / "teacher"),
            "--dataset", "digits", "--epochs", "1",
            "--batch-size", "64", "--quantize", "int8", "--quant-variant", "polino",
            "--out", str(tmp_path / "out"), "--no-progress",
        ],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    path = Path(result.stdout.strip().splitlines()[-1])
    assert path.name == "student-kd-int8-polino.json"
    assert quant_spec(searchkd.load_student(path)) == QuantSpec(variant="polino")
    card = json.loads(path.with_suffix(".card.json").read_text())
    assert card["quantization"]["variant"] == "polino" and card["onnx"]["top1_agreement"] >= 0.98


# --- post-training quantisation, the baseline ------------------------------------------------
@pytest.fixture(scope="module")
def float_bundle(digits, tmp_path_factory):
    """A float student trained two epochs on the labels, exported as retraining does."""
    source = StudentSource({"format": "searchkd-student", "arch": STUDENT}, "tiny")
    out = tmp_path_factory.mktemp("float")
    teacher = NamedTeacher("labels", nn.Identity(), [], None)
    outcome = retrain_student(
        source, "ce", Recipe(epochs=2, batch_size=64), ScheduleOptions(), digits, teacher, [],
        {"name": "labels"}, out, out / "cache", progress=False, log=lambda _: None,
    )  # fmt: skip
    return outcome.student


@pytest.mark.slow  # >= 1 s: the full suite runs it
def test_post_training_quantisation_measures_pytorch_int8_onnx_and_onnx_runtimes_own(
    float_bundle, digits
):
    model = searchkd.load_student(float_bundle)
    quantized, accuracies = ptq_baseline(model, digits, QuantSpec(), count=64)
    assert accuracies["calibration_images"] == 64 and quant_spec(quantized) == QuantSpec()
    assert accuracies["fp32"] == evaluate(model, digits.val_x, digits.val_y)
    for key in ("fake_quantized", "int8_onnx", "onnxruntime_static"):
        assert abs(accuracies[key] - accuracies["fp32"]) <= 0.1, key  # 8 bits: close
    assert abs(accuracies["int8_onnx"] - accuracies["fake_quantized"]) <= 2 / len(digits.val_x)
    assert all(
        torch.equal(p, q)
        for p, q in zip(
            model.parameters(), searchkd.load_student(float_bundle).parameters(), strict=True
        )
    )  # the float student is left as it was
    _, four = ptq_baseline(model, digits, QuantSpec(weight_bits=4), count=64)
    assert four["onnxruntime_static"] is None  # its static quantiser has no 4-bit weights


@pytest.mark.slow  # >= 1 s: the full suite runs it
def test_the_quantize_command_writes_a_post_training_int8_bundle(float_bundle, tmp_path, capsys):
    from searchkd import cli

    assert cli.main(["quantize", str(float_bundle), "--calibration-images", "64",
                     "--out", str(tmp_path)]) == 0  # fmt: skip
    path = Path(capsys.readouterr().out.strip())
    assert path.name == "tiny-ce-ptq-int8.json"
    assert quant_spec(searchkd.load_student(path)) == QuantSpec()
    card = json.loads(path.with_suffix(".card.json").read_text())
    assert card["accuracy"]["kind"] == "post_training_int8"
    assert card["quantization"]["post_training"]["calibration_images"] == 64
    assert "| Post-training quantisation | fp32 " in path.with_suffix(".card.md").read_text()
    with pytest.raises(SearchKDError, match="is already quantised; post-training"):
        ptq_bundle(path, tmp_path)


class Branchy(nn.Module):
    """A forward whose control flow depends on the data: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) if x.sum() > 0 else self.conv(-x)


def test_a_forward_that_does_not_trace_and_a_disagreeing_file_are_one_line(tmp_path, monkeypatch):
    with pytest.raises(SearchKDError) as error:
        prepare_qat(nn.Sequential(Branchy()))
    assert str(error.value).startswith(
        "cannot prepare Sequential.0 for quantisation-aware training: its forward does not trace"
    )
    assert "\n" not in str(error.value)
    import searchkd.quantize.onnx_int8 as onnx_int8

    monkeypatch.setitem(onnx_int8.BOUND, "max_abs_diff_relative", -1.0)
    prepared = calibrate(prepare_qat(trained_like()), images(16))
    with pytest.raises(SearchKDError, match="differs from the fake-quantised PyTorch model by"):
        export_int8(prepared, SHAPE, tmp_path / "int8.onnx")
    assert not (tmp_path / "int8.onnx").exists()


def test_a_module_called_twice_is_prepared_once():
    block = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU())

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.block = nn.Conv2d(1, 2, 3, padding=1), block

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.block(self.block(self.stem(x)))

    prepared = prepare_qat(Twice())
    inner = [m for m in prepared.block.modules() if isinstance(m, ActivationQuantizer)]
    assert len(inner) == 1 and isinstance(prepared.block.get_submodule("0"), QuantConvBn2d)
    assert prepared(images(2)).shape == (2, 2, 8, 8)


# --- quantisation-aware training from the trained float student ------------------------------
@pytest.mark.slow  # >= 1 s (a trained bundle): the full suite runs it
def test_qat_from_a_float_student_starts_from_its_weights(float_bundle, digits, tmp_path):
    from searchkd.retrain import QuantizedContext, float_init

    init = float_init(float_bundle, STUDENT)
    common = (STUDENT, digits, None, [], Recipe(epochs=1), ScheduleOptions(), tmp_path, tmp_path)
    common += (False, print, torch.device("cpu"), QuantSpec())
    fresh = QuantizedContext(*common).build(STUDENT, 0).eval()
    started = QuantizedContext(*common, init).build(STUDENT, 0).eval()
    float_model = searchkd.load_student(float_bundle).eval()
    x = digits.val_x[:32]
    with torch.no_grad(), float_twin(started), float_twin(fresh):
        assert torch.allclose(started(x), float_model(x), atol=1e-5)
        assert not torch.allclose(fresh(x), float_model(x), atol=1e-3)


@pytest.mark.slow  # >= 1 s: the full suite runs it
def test_qat_from_a_float_student_runs_in_folders_of_its_own(float_bundle, digits, tmp_path):
    source = StudentSource({"format": "searchkd-student", "arch": STUDENT}, "tiny")
    teacher = NamedTeacher("labels", nn.Identity(), [], None)
    outcome = retrain_student(
        source, "ce", Recipe(epochs=1, batch_size=64), ScheduleOptions(), digits, teacher, [],
        {"name": "labels"}, tmp_path, tmp_path / "cache", progress=False, log=lambda _: None,
        quantization=QuantSpec(), init_from=float_bundle,
    )  # fmt: skip
    assert outcome.student.name.startswith("tiny-ce-int8-from")  # not QAT from scratch's
    card = json.loads(outcome.student.with_suffix(".card.json").read_text())
    assert card["quantization"]["init_from"] == str(float_bundle)
    assert card["quantization"]["method"].endswith(
        "started from the trained float student's weights"
    )


def test_init_from_without_quantize_is_one_line(capsys):
    from searchkd import cli

    assert cli.main(["retrain", "--arch", "x.json", "--epochs", "1", "--init-from", "f.json"]) == 2
    assert capsys.readouterr().err == (
        "searchkd: error: --init-from applies to quantised students; add --quantize int8\n"
    )


@pytest.mark.slow  # >= 1 s (two trained bundles): the full suite runs it
def test_a_bad_init_from_is_one_line(float_bundle, int8_bundle, tmp_path):
    from searchkd.retrain import float_init

    with pytest.raises(SearchKDError, match="is quantised already; start from a float student"):
        float_init(int8_bundle, STUDENT)
    bare = tmp_path / "arch.json"
    bare.write_text(json.dumps(STUDENT))
    with pytest.raises(SearchKDError, match="no trained weights there"):
        float_init(bare, STUDENT)
    other = get_space("resnet").smallest()
    with pytest.raises(SearchKDError, match="is another architecture") as error:
        float_init(float_bundle, other)
    assert "\n" not in str(error.value)
