"""The training device: the setting resolved once, flags reaching it, what the study and
checkpoints record, and data left on the CPU when it does not fit a GPU.

The tests marked ``needs a CUDA device`` run a real search, every distillation loss and
every retraining schedule on the GPU; they skip here and in CI (no GPU), and
``benchmarks/gpu_check.sh`` runs them on a machine that has one."""

from __future__ import annotations

import json
import math

import pytest
import torch

from search_spaces import get_space
from searchkd import cli
from searchkd.checkpoint import load_object, on_cpu, save_object, save_state_dict
from searchkd.config import ProxyConfig, build_config
from searchkd.data import load_dataset
from searchkd.device import describe_device, resolve_device, stage_on_device
from searchkd.distill import LOSSES
from searchkd.errors import SearchKDError
from searchkd.proxy import compute_teacher_outputs, train_proxy
from tests.conftest import fast_settings

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]


@pytest.fixture
def no_cuda(monkeypatch):
    """This machine as one without CUDA, whatever it has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


# --- resolving the setting ----------------------------------------------------------------
def test_auto_is_the_cpu_without_cuda_and_cpu_is_the_cpu(no_cuda):
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert describe_device(resolve_device("auto")) == "cpu"


@pytest.mark.parametrize("spec", ["cuda", "cuda:0"])
def test_cuda_without_cuda_says_how_to_fix_it_in_one_line(no_cuda, spec):
    with pytest.raises(SearchKDError) as err:
        resolve_device(spec)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"device '{spec}': PyTorch sees no CUDA")
    assert "install a CUDA build of PyTorch" in message and "--device cpu" in message


def test_a_cuda_index_beyond_the_devices_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(SearchKDError, match=r"has 2 CUDA device\(s\), cuda:0\.\.cuda:1"):
        resolve_device("cuda:2")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)


@pytest.mark.parametrize("spec", ["gpu", "cpu:0", "cuda:x", "cuda:", "", "mps", "auto:1"])
def test_a_device_that_is_not_one_of_the_forms_is_refused(spec):
    with pytest.raises(SearchKDError, match="use auto, cpu, cuda or cuda:N"):
        resolve_device(spec)
    with pytest.raises(SearchKDError, match="config: device: must be auto, cpu, cuda or cuda:N"):
        build_config(overrides={"device": spec})


# --- the flags reach the setting ----------------------------------------------------------
def test_search_device_flag_reaches_the_config_and_defaults_to_auto():
    parser = cli.build_parser()
    args = parser.parse_args(["search", "--device", "cuda:1"])
    assert build_config(overrides=cli._overrides(args)).device == "cuda:1"
    args = parser.parse_args(["search"])
    assert build_config(overrides=cli._overrides(args)).device == "auto"


def test_gpus_per_trial_flag_reaches_the_ray_config_and_fractions_pass():
    args = cli.build_parser().parse_args(["search", "--runner", "ray", "--gpus-per-trial", "0.5"])
    assert build_config(overrides=cli._overrides(args)).ray.gpus_per_trial == 0.5
    on_ray = {"runner": "ray"}
    assert build_config(overrides={**on_ray, "ray": {"gpus_per_trial": 2}}).ray.gpus_per_trial == 2
    with pytest.raises(SearchKDError, match="ray.gpus_per_trial: must be a fraction"):
        build_config(overrides={**on_ray, "ray": {"gpus_per_trial": 1.5}})
    with pytest.raises(SearchKDError, match="the local runner does not use it"):
        build_config(overrides={"ray": {"gpus_per_trial": 2}})


def test_retrain_device_flag_defaults_to_auto():
    parser = cli.build_parser()
    assert parser.parse_args(["retrain", "--epochs", "1"]).device == "auto"
    assert parser.parse_args(["retrain", "--epochs", "1", "--device", "cpu"]).device == "cpu"


def test_teacher_train_device_flag_reaches_the_trainer(monkeypatch, tmp_path):
    seen = {}

    def fake_train_teacher(*args, **kwargs):
        seen["device"] = args[-1]
        raise SearchKDError("stopped here by the test")

    monkeypatch.setattr("searchkd.teacher.train_teacher", fake_train_teacher)
    code = cli.main(
        ["teacher", "train", "--dataset", "digits", "--device", "cpu", "--out", str(tmp_path)]
    )
    assert code == 2 and seen["device"] == torch.device("cpu")


# --- what is recorded, and where checkpoints' tensors live -----------------------------------
@pytest.mark.slow
def test_each_trained_trial_and_the_study_record_the_training_device(small_study):
    study, _ = small_study
    trained = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("trained")]
    assert trained and all(t.user_attrs["train_device"] == "cpu" for t in trained)
    assert study.user_attrs["train_devices"] == ["cpu"]
    rejected = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("trained") is False]
    assert all("train_device" not in t.user_attrs for t in rejected)  # never trained


def test_checkpoints_are_written_as_cpu_state_dicts_with_their_metadata(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    save_state_dict(model, tmp_path / "w.pt")
    state = torch.load(tmp_path / "w.pt", weights_only=True)  # no map_location
    assert all(t.device.type == "cpu" for t in state.values())
    assert state._metadata == model.state_dict()._metadata  # BN version info kept
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 1, 5, 5)).sum().backward()
    optimizer.step()
    save_object({"optimizer": optimizer.state_dict(), "history": [1.0]}, tmp_path / "s.pt")
    loaded = load_object(tmp_path / "s.pt", "state")
    momentum = [v["momentum_buffer"] for v in loaded["optimizer"]["state"].values()]
    assert momentum and all(t.device.type == "cpu" for t in momentum)
    assert loaded["history"] == [1.0]
    nested = on_cpu({"a": [torch.ones(1), (torch.zeros(1), "x")], "b": 3})
    assert nested["a"][1][1] == "x" and nested["b"] == 3 and isinstance(nested["a"][1], tuple)


@pytest.mark.slow
def test_a_teacher_records_its_training_device_and_comes_back_on_the_cpu(tmp_path):
    from searchkd.teacher import train_teacher

    data = load_dataset("digits", None, 0, None)
    arch = get_space("resnet").canonical()["resnet20"]
    teacher = train_teacher(arch, data, tmp_path, 1, batch_size=256, log=lambda m: None)
    assert teacher.meta["train_device"] == "cpu"
    assert json.loads((tmp_path / "teacher.json").read_text())["train_device"] == "cpu"
    assert next(teacher.model.parameters()).device.type == "cpu"


def test_data_that_does_not_fit_the_gpu_stays_on_the_cpu(monkeypatch):
    """Staging asks the GPU for its free memory first; here it 'has' 1 KiB free, so the
    tensors must come back untouched (the trainers then copy each batch over)."""
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1024, 2048))
    data = load_dataset("digits", None, 0, None)
    staged = stage_on_device(data, torch.device("cuda"))
    assert staged is data
    on_host = stage_on_device(data, torch.device("cpu"))
    assert on_host.train_x.data_ptr() == data.train_x.data_ptr()  # no copy on the CPU


def test_a_cpu_cache_is_read_batch_by_batch_on_the_training_device():
    data = load_dataset("digits", None, 0, None)
    teacher = get_space("resnet").build(get_space("resnet").smallest(), 1, 8, 10)
    cached = compute_teacher_outputs(teacher, data.train_x[:32], ["stages.0"])
    idx = torch.tensor([3, 1])
    batch = cached.batch(idx, torch.device("cpu"))
    assert torch.equal(batch.logits, cached.logits[idx]) and torch.equal(batch.indices, idx)
    assert torch.equal(batch.features["stages.0"], cached.features["stages.0"][idx])


# --- on a GPU: every path end to end ---------------------------------------------------------
# Losses for other heads than a classifier's logits: regression targets, dense N x C x H x W
# outputs. The classifiers searched here cannot use them.
NOT_FOR_CLASSIFIERS = {"bounded_regression", "pixel_kd"}


# Losses that hold state besides the student: memory banks and negatives drawn on the CPU
# (crd), a margin buffer from the teacher's BN (ofd), class weights (weighted_kd),
# connectors (hint, fsp), several teachers (ensemble_kd). The CPU run of the test below
# trains these only, to stay fast in CI; on a GPU it trains every loss (all of them also
# passed on the CPU when the test was written).
STATEFUL = ["crd", "ofd", "weighted_kd", "hint", "fsp", "ensemble_kd"]


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_every_loss_trains_the_proxy_on_the_device(device):
    """Each registered loss, alone beside CE, for one short proxy epoch with the teacher
    outputs (stage and pre-ReLU taps, BN statistics, an ensemble member) computed on
    ``device``: connectors, memory banks, margins and class weights all follow the model."""
    names = STATEFUL if device == "cpu" else sorted(set(LOSSES) - NOT_FOR_CLASSIFIERS)
    device = torch.device(device)
    data = load_dataset("digits", None, 0, None)
    resnet, mobile = get_space("resnet"), get_space("mobilenet")
    t_arch = resnet.canonical()["resnet20"]
    torch.manual_seed(0)
    teacher = resnet.build(t_arch, data.in_channels, data.resolution, data.num_classes)
    cached = compute_teacher_outputs(
        teacher,
        data.train_x[:128],  # what the proxy below reads (train_subset)
        resnet.feature_taps(t_arch),
        preact=resnet.preact_taps(t_arch),
        ensemble=[teacher],
        device=device,
    )
    assert cached.logits.device.type == "cpu"  # the cache's home, whatever computed it
    assert next(teacher.parameters()).device.type == "cpu"  # the teacher went back
    arch = mobile.smallest()
    options = {"crd": {"negatives": 32, "feature_dim": 16}, "fsp": {"connector": True}}
    for name in names:
        torch.manual_seed(0)
        student = mobile.build(arch, data.in_channels, data.resolution, data.num_classes)
        result = train_proxy(
            student,
            data,
            cached,
            mobile.feature_taps(arch),
            {"ce": 0.1, name: 1.0} if name != "ce" else {"ce": 1.0},
            {k: v for k, v in options.items() if k == name},
            ProxyConfig(epochs=1, batch_size=64, train_subset=128),
            seed=0,
            student_preact=list(mobile.preact_taps(arch)),
            device=device,
        )
        assert math.isfinite(result.loss_terms[name]), name
        assert result.device.startswith(device.type), name
        assert next(student.parameters()).device.type == device.type


# On the CPU this takes minutes (the search and four schedules); the CPU paths are covered
# by tests/test_search.py and tests/test_retrain.py. It passed on the CPU when written.
@pytest.mark.parametrize("device", [pytest.param("cuda", marks=CUDA)])
def test_a_search_and_every_retraining_schedule_run_on_the_device(device, tmp_path):
    """A tiny search with --device, then kd, rco, takd and ban retraining there: trials
    and model cards record the device, checkpoints hold CPU tensors, bundles load on the
    CPU."""
    import searchkd
    from searchkd.study import default_storage, load_existing_study, trained_trials

    run_dir = tmp_path / "runs"
    config = tmp_path / "tiny.yaml"
    config.write_text(json.dumps(fast_settings(run_dir, trials=2, study="dev")))
    assert cli.main(["search", "--config", str(config), "--device", device, "--no-progress"]) == 0
    study = load_existing_study("dev", default_storage(run_dir))
    trials = trained_trials(study)
    assert len(trials) == 2
    assert all(t.user_attrs["train_device"].startswith(device) for t in trials)
    assert [d.split(":")[0] for d in study.user_attrs["train_devices"]] == [device]
    (folder,) = (run_dir / "teachers").iterdir()
    assert json.loads((folder / "teacher.json").read_text())["train_device"].startswith(device)
    for checkpoint in [folder / "teacher.pt", *folder.glob("route/*.pt")]:
        state = torch.load(checkpoint, weights_only=True)  # no map_location: as written
        assert all(t.device.type == "cpu" for t in state.values())
    for schedule in ("kd", "rco", "takd", "ban"):
        argv = ["retrain", "--run-dir", str(run_dir), "--study", "dev", "--device", device]
        argv += ["--trial", str(trials[0].number), "--schedule", schedule, "--epochs", "1"]
        argv += ["--generations", "2", "--ensemble", "--anchors", "2", "--no-progress"]
        assert cli.main(argv) == 0, schedule
    cards = list((run_dir / "retrain").rglob("*.card.json"))
    assert len(cards) == 4
    for card in cards:
        assert json.loads(card.read_text())["train_device"].startswith(device)
        weights_file = card.parent / card.name.replace(".card.json", ".pt")
        weights = torch.load(weights_file, weights_only=True)
        assert all(t.device.type == "cpu" for t in weights.values())
    exported = next((run_dir / "retrain").rglob("*-kd.json"))
    assert searchkd.load_student(exported) is not None  # builds and loads on the CPU
