"""Retraining schedules, resumable training, export bundles: a tiny setup that runs in seconds.

Data: 128 training and 128 validation images of scikit-learn's 8x8 digits. Teacher: a
one-block-per-stage CIFAR ResNet trained 3 epochs (so it has a 3-checkpoint route).
Student: the mobilenet space's smallest member.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import optuna
import pytest
import torch

import searchkd
from search_spaces import get_space
from searchkd.config import differing_settings
from searchkd.data import load_dataset
from searchkd.errors import SearchKDError
from searchkd.recipe import Recipe, augment, lr_factor
from searchkd.schedules import SCHEDULES, NamedTeacher, ScheduleContext, ScheduleOptions
from searchkd.schedules.base import fingerprint
from searchkd.schedules.rco import interval_anchors
from searchkd.schedules.takd import arch_macs, pick_assistants, target_costs
from searchkd.teacher import train_teacher
from searchkd.trainer import FixedTeacher, train_run
from tests.conftest import small_digits

pytestmark = pytest.mark.usefixtures("one_thread")

TEACHER_ARCH = {
    "space": "resnet",
    "version": 1,
    "block": "basic",
    "stem": "cifar",
    "stem_channels": 64,
    "preact": False,
    "stages": [
        {"depth": 1, "channels": 64, "stride": 1},
        {"depth": 1, "channels": 128, "stride": 2},
        {"depth": 1, "channels": 256, "stride": 2},
    ],
}
STUDENT_ARCH = get_space("mobilenet").smallest()
WIDER_ARCH = get_space("mobilenet").from_decisions(  # the smallest at twice the width
    {
        name: 0.5 if name.endswith("_width") else dist.choices[0]
        for name, dist in get_space("mobilenet").decisions().items()
    }
)


@pytest.fixture(scope="module")
def data():
    return small_digits(128, 128)


@pytest.fixture(scope="module")
def teacher_folder(data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("teacher")
    train_teacher(TEACHER_ARCH, data, folder, epochs=3, batch_size=64, log=lambda _: None)
    return folder


@pytest.fixture(scope="module")
def teacher(teacher_folder):
    return searchkd.teacher.load_teacher(teacher_folder)


def context(
    data, teacher, tmp_path, schedule_options=None, epochs=2, route=True, cache=None,
    arch=STUDENT_ARCH, **recipe,
):  # fmt: skip
    named = NamedTeacher(
        f"teacher@{fingerprint(teacher.model)}", teacher.model, teacher.taps, teacher.arch
    )
    return ScheduleContext(
        arch,
        data,
        named,
        teacher.route if route else [],
        Recipe(epochs=epochs, batch_size=64, **recipe),
        schedule_options or ScheduleOptions(),
        tmp_path / "runs",
        cache or tmp_path / "cache",
        progress=False,
        log=lambda _: None,
    )


# --- the recipe -----------------------------------------------------------------------------
def test_lr_decay_follows_the_recipe():
    cosine, step = Recipe(epochs=4), Recipe(epochs=4, lr_schedule="step")
    assert lr_factor(cosine, 0, 100) == 1.0 and lr_factor(cosine, 100, 100) == pytest.approx(0)
    assert lr_factor(cosine, 50, 100) == pytest.approx(0.5)
    assert [lr_factor(step, s, 100) for s in (49, 50, 75)] == pytest.approx([1, 0.1, 0.01])


def test_recipe_rejects_bad_values_in_one_line():
    with pytest.raises(SearchKDError, match="optimizer 'adam'"):
        Recipe(epochs=1, optimizer="adam")
    with pytest.raises(SearchKDError, match="label smoothing"):
        Recipe(epochs=1, label_smoothing=1.5)


def test_label_smoothing_reaches_the_cross_entropy_term(data):
    from searchkd.trainer import _objective

    model = get_space("mobilenet").build(STUDENT_ARCH, 1, 8, 10)
    recipe = Recipe(epochs=1, label_smoothing=0.2, loss={"ce": 1.0})
    objective = _objective(model, data, recipe, FixedTeacher("labels", None))
    assert objective.terms["ce"].label_smoothing == 0.2
    with pytest.raises(SearchKDError, match="needs a teacher"):
        _objective(model, data, Recipe(epochs=1), FixedTeacher("labels", None))


def test_loss_override_keeps_the_search_options_only_for_losses_it_weights(data):
    from searchkd.retrain import StudentSource, recipe_from
    from searchkd.trainer import _objective

    loss = {"weights": {"ce": 0.1, "kd": 0.9}, "options": {"kd": {"temperature": 2.0}}}
    source = StudentSource({"arch": STUDENT_ARCH}, "s", settings={"loss": loss})
    assert recipe_from(source, epochs=1).loss_options == {"kd": {"temperature": 2.0}}
    kept = recipe_from(source, epochs=1, loss={"ce": 0.5, "kd": 0.5})
    assert kept.loss_options == {"kd": {"temperature": 2.0}}
    labels_only = recipe_from(source, epochs=1, loss={"ce": 1.0})  # --loss ce=1
    model = get_space("mobilenet").build(STUDENT_ARCH, 1, 8, 10)
    objective = _objective(model, data, labels_only, FixedTeacher("labels", None))
    assert set(objective.terms) == {"ce"}


def test_cropflip_flips_some_images_and_is_replayable():
    x = torch.arange(2 * 8 * 8, dtype=torch.float32).reshape(2, 1, 8, 8).repeat(16, 1, 1, 1)
    a = augment(x, "cropflip", torch.Generator().manual_seed(3))
    b = augment(x, "cropflip", torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == x.shape and not torch.equal(a, x)


# --- resumable training ---------------------------------------------------------------------
def test_interrupted_run_resumes_to_the_same_weights(data, teacher, tmp_path):
    ctx = context(data, teacher, tmp_path)
    guide = FixedTeacher("t", teacher.model, teacher.taps)
    settings = {"case": "resume"}
    whole = train_run(
        ctx.build(STUDENT_ARCH, 0), data, ctx.recipe, guide, tmp_path / "a", settings,
        progress=False, log=lambda _: None,
    )  # fmt: skip

    def stop(epoch):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_run(
            ctx.build(STUDENT_ARCH, 0), data, ctx.recipe, guide, tmp_path / "b", settings,
            progress=False, log=lambda _: None, on_epoch_end=stop,
        )  # fmt: skip
    assert (tmp_path / "b" / "state.pt").exists() and not (tmp_path / "b" / "result.json").exists()
    resumed = train_run(
        ctx.build(STUDENT_ARCH, 0), data, ctx.recipe, guide, tmp_path / "b", settings,
        progress=False, log=lambda _: None,
    )  # fmt: skip
    assert resumed.result.epoch_accuracies == whole.result.epoch_accuracies
    for key, value in whole.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    with pytest.raises(SearchKDError, match="other settings"):
        train_run(
            ctx.build(STUDENT_ARCH, 0), data, ctx.recipe, guide, tmp_path / "b", {"case": "x"},
            progress=False, log=lambda _: None,
        )  # fmt: skip


def test_a_refused_resume_names_the_option_inside_the_recipe():
    stored = {"recipe": {"epochs": 30, "lr": 0.1}, "seed": 0, "schedule": "kd"}
    current = {"recipe": {"epochs": 40, "lr": 0.1}, "seed": 0, "ensemble": ["a"]}
    assert differing_settings(stored, current) == ["ensemble", "recipe.epochs", "schedule"]
    assert differing_settings(stored, stored) == []


def test_a_run_of_another_split_of_the_same_dataset_is_refused_not_reused(data, teacher, tmp_path):
    SCHEDULES["ce"](context(data, teacher, tmp_path, epochs=1))
    full = load_dataset("digits", seed=1)  # same name and shapes, other train/val split
    other = dataclasses.replace(
        data, train_x=full.train_x[:128], train_y=full.train_y[:128],
        val_x=full.val_x[:128], val_y=full.val_y[:128],
    )  # fmt: skip
    with pytest.raises(SearchKDError, match="data_key differ"):
        SCHEDULES["ce"](context(other, teacher, tmp_path, epochs=1))


def test_a_damaged_state_or_result_is_one_clear_error(data, teacher, tmp_path):
    from searchkd.checkpoint import save_object

    ctx = context(data, teacher, tmp_path)
    guide = FixedTeacher("labels", None)
    recipe = ctx.recipe.with_loss({"ce": 1.0})

    def run(folder):
        return train_run(
            ctx.build(STUDENT_ARCH, 0), data, recipe, guide, folder, {}, progress=False,
            log=lambda _: None,
        )  # fmt: skip

    save_object({"model": {"no.such.key": torch.zeros(1)}}, tmp_path / "a" / "state.pt")
    with pytest.raises(SearchKDError, match="not a state of this run"):
        run(tmp_path / "a")
    finished = run(tmp_path / "b")
    (tmp_path / "b" / "result.json").write_text("[1, 2]")
    with pytest.raises(SearchKDError, match="not a run result"):
        run(tmp_path / "b")
    assert finished.result.epoch_accuracies


# --- schedules ------------------------------------------------------------------------------
def test_ce_and_kd_learn_from_the_labels_and_from_the_teacher(data, teacher, tmp_path):
    ctx = context(data, teacher, tmp_path)
    ce = SCHEDULES["ce"](ctx)
    kd = SCHEDULES["kd"](ctx)
    assert set(ce.result.teachers) == {"labels"}
    assert set(kd.result.teachers) == {ctx.teacher.name}
    assert set(ce.result.loss_terms) == {"ce"} and set(kd.result.loss_terms) == {"ce", "kd"}


# Small CRD banks and embeddings: the authors' 16384 negatives cost seconds per batch here.
SMALL_CRD = {"negatives": 64, "feature_dim": 16}
# Every loss of the zoo a one-teacher classification search can train with, with options
# that keep one epoch short. Not here: ensemble_kd (needs an ensemble of teachers, which
# retraining does not have) and bounded_regression (regression targets, not class labels).
ZOO = {
    "hint": {}, "at": {}, "ab": {}, "ofd": {}, "fsp": {"connector": True}, "nst": {},
    "pairwise": {}, "pixel_kd": {}, "rkd": {}, "darkrank": {}, "weighted_kd": {},
    "crd": SMALL_CRD,
}  # fmt: skip


def test_retraining_with_crd_gets_the_training_labels_and_batch_indices(data, teacher, tmp_path):
    # `searchkd retrain --loss ce=0.1,kd=0.9,crd=0.8` takes this path (the kd schedule)
    loss = {"ce": 0.1, "kd": 0.9, "crd": 0.8}
    ctx = context(data, teacher, tmp_path, epochs=1, loss=loss, loss_options={"crd": SMALL_CRD})
    kd = SCHEDULES["kd"](ctx)
    assert set(kd.result.loss_terms) == {"ce", "kd", "crd"}
    assert all(math.isfinite(v) for v in kd.result.loss_terms.values())
    assert len(kd.result.epoch_accuracies) == 1


@pytest.mark.parametrize("name", sorted(ZOO))
def test_every_loss_of_the_search_trains_in_retraining(data, teacher, tmp_path, name):
    options = {name: ZOO[name]} if ZOO[name] else {}
    ctx = context(
        data, teacher, tmp_path, epochs=1, loss={"ce": 0.5, name: 0.5}, loss_options=options
    )
    trained = SCHEDULES["kd"](ctx)
    assert set(trained.result.loss_terms) == {"ce", name}
    assert math.isfinite(trained.result.loss_terms[name])


def test_retraining_hooks_the_taps_of_the_students_space(data, teacher, tmp_path, monkeypatch):
    import searchkd.engine

    space = get_space("compact")
    arch = space.canonical()["plain8"]  # its first stage is empty: no `stages.0` tap
    assert arch["stages"][0]["layers"] == 0
    assert space.feature_taps(arch) == ["stages.1", "stages.2", "stages.3"]
    hooked = []

    class Recording(searchkd.engine.FeatureTaps):
        def __init__(self, model, paths, detach=False):
            if not detach:  # the student's hooks (the teacher's are detached)
                hooked.append(list(paths))
            super().__init__(model, paths, detach)

    monkeypatch.setattr(searchkd.engine, "FeatureTaps", Recording)
    ctx = context(data, teacher, tmp_path, epochs=1, arch=arch, loss={"ce": 0.5, "at": 0.5})
    trained = SCHEDULES["kd"](ctx)
    assert set(trained.result.loss_terms) == {"ce", "at"}
    # three student taps against the teacher's three stages: AT pairs every one of them
    assert hooked == [space.feature_taps(arch)]


def test_assistant_is_picked_between_student_and_teacher_cost(data, teacher):
    student_macs = arch_macs(STUDENT_ARCH, data)
    teacher_macs = arch_macs(TEACHER_ARCH, data)
    (assistant,) = pick_assistants(STUDENT_ARCH, teacher_macs, data, samples=100)
    macs = arch_macs(assistant, data)
    assert student_macs < macs < teacher_macs
    target = math.sqrt(student_macs * teacher_macs)
    assert target_costs(student_macs, teacher_macs, 1) == [pytest.approx(target)]
    # the closest candidate: no canonical member between the two costs is closer
    space = get_space("mobilenet")
    for other in space.canonical().values():
        other_macs = arch_macs(other, data)
        if student_macs < other_macs < teacher_macs:
            assert abs(math.log(macs / target)) <= abs(math.log(other_macs / target))
    two = pick_assistants(STUDENT_ARCH, teacher_macs, data, count=2, samples=100)
    assert arch_macs(two[0], data) > arch_macs(two[1], data)
    with pytest.raises(SearchKDError, match="not larger than the student"):
        pick_assistants(STUDENT_ARCH, student_macs, data, samples=5)


def test_assistant_chain_shrinks_even_where_the_space_is_sparse(data, monkeypatch):
    from searchkd.schedules import takd
    from searchkd.schedules.base import key_of

    canonical = get_space("mobilenet").canonical()
    fake = {key_of(STUDENT_ARCH): 100}
    fake[key_of(canonical["mobilenet_v2"])] = 1_500  # nearest to both targets (2154, 464)
    fake[key_of(canonical["mnasnet_a1"])] = 5_000
    monkeypatch.setattr(takd, "arch_macs", lambda arch, _: fake.get(key_of(arch), 10**9))
    chain = pick_assistants(STUDENT_ARCH, 10_000, data, count=2, samples=20)
    assert [fake[key_of(a)] for a in chain] == [5_000, 1_500]  # teacher > 5000 > 1500 > student


def test_takd_chains_through_a_cached_assistant(data, teacher, tmp_path):
    options = ScheduleOptions(assistants=[WIDER_ARCH])
    cache = tmp_path / "cache"
    first = SCHEDULES["takd"](context(data, teacher, tmp_path / "s0", options, 1, cache=cache))
    (link,) = first.details["assistants"]
    assert set(first.result.teachers) == {link["name"]}  # the student learns from the assistant
    # another student seed, same cache: the assistant is reused, not trained again
    stamp = (cache / link["folder"].rsplit("/", 1)[1] / "student.pt").stat().st_mtime_ns
    reused = SCHEDULES["takd"](
        context(data, teacher, tmp_path / "s1", options, 1, cache=cache, seed=1)
    )
    assert reused.details["assistants"][0]["name"] == link["name"]
    assert len(list(cache.iterdir())) == 1
    assert (cache / link["folder"].rsplit("/", 1)[1] / "student.pt").stat().st_mtime_ns == stamp


def test_rco_walks_its_anchors_in_order(data, teacher, tmp_path):
    assert interval_anchors(20, 4) == [4, 9, 14, 19]
    interval = SCHEDULES["rco"](
        context(data, teacher, tmp_path / "i", ScheduleOptions(anchors=3), epochs=3)
    )
    assert interval.result.teachers == ["route:epoch_001", "route:epoch_002", "route:epoch_003"]
    greedy = SCHEDULES["rco"](
        context(
            data,
            teacher,
            tmp_path / "g",
            ScheduleOptions(anchors=3, anchor_selection="greedy"),
            epochs=3,
        )  # fmt: skip
    )
    epochs = [int(name.rsplit("_", 1)[1]) for name in greedy.result.teachers]
    assert epochs == sorted(epochs) and epochs[-1] == 3


def test_greedy_rco_skips_ahead_within_tolerance_and_never_goes_back(
    data, teacher, tmp_path, monkeypatch
):
    from searchkd.schedules import rco

    route = []
    for epoch in range(1, 7):  # a 6-checkpoint route (copies of one checkpoint, named apart)
        route.append(tmp_path / f"epoch_{epoch:03d}.pt")
        shutil.copy(teacher.route[0], route[-1])
    losses = [1.0, 1.2, 1.4, 1.6, 3.0, 9.0]  # mimic loss of the student to each checkpoint
    build = lambda: get_space("resnet").build(TEACHER_ARCH, 1, 8, 10)  # noqa: E731
    guide = rco.RouteGuide("t", route, build, [], 3, 3, "greedy", data.train_x[:8], 1.5)
    index_of = lambda module: next(i for i, m in guide._loaded.items() if m is module)  # noqa: E731
    monkeypatch.setattr(rco, "mimic_loss", lambda s, t, x, temperature: losses[index_of(t)])
    student = get_space("mobilenet").build(STUDENT_ARCH, 1, 8, 10)
    names = [guide.teacher(epoch, student)[0] for epoch in (1, 2, 3)]
    # stage 1: latest with loss <= 1.5 x 1.0 -> epoch 3; stage 2: from epoch 4 on, <= 1.5 x 1.6
    # -> epoch 4 (epoch 5's 3.0 is too hard); last stage: the final teacher
    assert names == ["route:epoch_003", "route:epoch_004", "route:epoch_006"]
    other_probe = rco.RouteGuide("t", route, build, [], 3, 3, "greedy", data.train_x[:16], 1.5)
    assert other_probe.describe() != guide.describe()  # part of the run's settings


def test_greedy_rco_measures_the_mimic_loss_at_the_recipes_kd_temperature(data, teacher, tmp_path):
    options = ScheduleOptions(anchors=2, anchor_selection="greedy", probe_size=16)
    kd = {"kd": {"temperature": 2.0}}
    ctx = context(data, teacher, tmp_path, options, epochs=2, loss_options=kd)
    assert SCHEDULES["rco"](ctx).details["temperature"] == 2.0


def test_rco_without_route_says_how_to_make_one(data, teacher, tmp_path):
    with pytest.raises(SearchKDError, match="searchkd teacher train"):
        SCHEDULES["rco"](context(data, teacher, tmp_path, route=False))


def test_ban_generation_k_learns_from_generation_k_minus_1(data, teacher, tmp_path):
    ctx = context(data, teacher, tmp_path, ScheduleOptions(generations=3, ensemble=True), epochs=1)
    result = SCHEDULES["ban"](ctx)
    rows = result.details["generations"]
    assert rows[0]["teacher"] == ctx.teacher.name
    for previous, row in zip(rows, rows[1:], strict=False):
        assert row["teacher"] == previous["name"]
    # the names carry a hash of the weights: generation 2's teacher IS generation 1's model
    gen1 = ctx.build(STUDENT_ARCH, 0)
    gen1.load_state_dict(torch.load(tmp_path / "runs" / "kd" / "student.pt", weights_only=True))
    assert rows[1]["teacher"].endswith(fingerprint(gen1))
    assert 0 <= result.details["ensemble_accuracy"] <= 1


def test_early_stopped_teacher_is_the_route_checkpoint_and_cuts_the_route(data, teacher_folder):
    from searchkd.retrain import StudentSource, load_retrain_teacher

    source = StudentSource({"arch": STUDENT_ARCH}, "s")
    named, route, info = load_retrain_teacher(
        source, data, teacher_folder, str(teacher_folder), 2, log=lambda _: None
    )
    saved = torch.load(teacher_folder / "route" / "epoch_002.pt", weights_only=True)
    assert all(torch.equal(v, saved[k]) for k, v in named.model.state_dict().items())
    assert [p.name for p in route] == ["epoch_001.pt", "epoch_002.pt"]
    assert info["epoch"] == 2 and info["accuracy_kind"] == "epoch 2"
    full, _, _ = load_retrain_teacher(source, data, teacher_folder, str(teacher_folder))
    assert full.name != named.name  # another teacher, so other run folders


# --- export ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bundle(data, teacher, tmp_path_factory):
    from searchkd.retrain import StudentSource, retrain_student

    out = tmp_path_factory.mktemp("bundle")
    named = NamedTeacher("teacher@x", teacher.model, teacher.taps, teacher.arch)
    source = StudentSource({"format": "searchkd-student", "arch": STUDENT_ARCH}, "tiny")
    outcome = retrain_student(
        source, "kd", Recipe(epochs=1, batch_size=64), ScheduleOptions(), data, named,
        teacher.route, {"name": "teacher@x"}, out, out / "cache", progress=False,
        log=lambda _: None,
    )  # fmt: skip
    return outcome.student


def test_onnx_export_matches_pytorch_in_onnx_runtime(bundle):
    import onnxruntime as ort

    record = json.loads(bundle.read_text())
    model = searchkd.load_student(bundle)
    x = torch.randn(3, *record["input_shape"], generator=torch.Generator().manual_seed(7))
    session = ort.InferenceSession(str(bundle.parent / record["onnx"]))
    (onnx_out,) = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(onnx_out, model(x).numpy(), atol=1e-4, rtol=1e-3)


def test_onnx_check_refuses_and_removes_a_file_that_disagrees(monkeypatch, tmp_path):
    from searchkd import onnx_export

    model = get_space("mobilenet").build(STUDENT_ARCH, 1, 8, 10).eval()
    run = onnx_export._run
    monkeypatch.setattr(onnx_export, "_run", lambda path, x: run(path, x) + 1e-6)
    check = onnx_export.export_onnx(model, (1, 8, 8), tmp_path / "ok.onnx")
    assert 5e-7 < check.max_abs_diff < 1e-4 and (tmp_path / "ok.onnx").is_file()
    monkeypatch.setattr(onnx_export, "_run", lambda path, x: run(path, x) + 1e-2)
    with pytest.raises(SearchKDError, match="differs from PyTorch"):
        onnx_export.export_onnx(model, (1, 8, 8), tmp_path / "bad.onnx")
    assert not (tmp_path / "bad.onnx").exists()


def test_model_card_states_what_it_measured(bundle):
    record = json.loads(bundle.read_text())
    card = json.loads((bundle.parent / record["model_card"]).read_text())
    assert card["accuracy"]["kind"] == "last_epoch" and card["schedule"]["name"] == "kd"
    assert card["params"] == sum(p.numel() for p in searchkd.load_student(bundle).parameters())
    assert {m["meter"] for m in card["latency"]} == {"torch-cpu:1t", "onnxruntime-cpu:1t"}
    assert card["seeds"]["training"] == 0 and card["teacher"]["name"] == "teacher@x"
    markdown = (bundle.parent / record["model_card"].replace(".json", ".md")).read_text()
    assert f"{card['accuracy']['value']:.4f}" in markdown


def test_load_student_round_trip_restores_the_trained_weights(bundle):
    record = json.loads(bundle.read_text())
    model = searchkd.load_student(bundle)
    saved = torch.load(bundle.parent / record["weights"], weights_only=True)
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())


def test_load_student_rejects_corrupt_weights_and_another_architecture(bundle, tmp_path):
    record = json.loads(bundle.read_text())
    weights = (bundle.parent / record["weights"]).read_bytes()
    (tmp_path / "w.pt").write_bytes(weights[: len(weights) // 2])
    (tmp_path / "s.json").write_text(json.dumps({**record, "weights": "w.pt"}))
    with pytest.raises(SearchKDError, match="corrupt"):
        searchkd.load_student(tmp_path / "s.json")
    (tmp_path / "w.pt").write_bytes(weights)
    (tmp_path / "s.json").write_text(json.dumps({**record, "arch": WIDER_ARCH, "weights": "w.pt"}))
    with pytest.raises(SearchKDError, match="does not fit this architecture"):
        searchkd.load_student(tmp_path / "s.json")
    for field, value in [("input_shape", "1x8x8"), ("input_shape", [1]), ("num_classes", "10"),
                         ("weights", 5)]:  # fmt: skip
        (tmp_path / "s.json").write_text(json.dumps({**record, "weights": "w.pt", field: value}))
        with pytest.raises(SearchKDError, match=field):
            searchkd.load_student(tmp_path / "s.json")


# --- the command line -----------------------------------------------------------------------
def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "searchkd.cli", *args],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip


@pytest.fixture(scope="module")
def study_dir(data, teacher_folder, tmp_path_factory):
    """A study holding one trained candidate, as a search leaves it."""
    from searchkd.study import open_study

    run_dir = tmp_path_factory.mktemp("study")
    study = open_study("tiny", f"sqlite:///{run_dir / 'study.db'}")
    settings = {"dataset": "digits", "seed": 0, "teacher": {"checkpoint": str(teacher_folder)}}
    for key, value in {
        "settings": settings,
        "dataset": "digits",
        "input_shape": [1, 8, 8],
        "num_classes": 10,
    }.items():
        study.set_user_attr(key, value)
    study.add_trial(
        optuna.trial.create_trial(
            values=[0.5, float(arch_macs(STUDENT_ARCH, data)), 1.0],
            user_attrs={"arch": STUDENT_ARCH, "trained": True, "seed": 0},
        )
    )
    return run_dir


@pytest.mark.slow
def test_cli_retrains_a_study_trial_records_it_and_exports_the_bundle(study_dir, tmp_path):
    common = ("--run-dir", str(study_dir), "--epochs", "1", "--batch-size", "64")
    result = cli("retrain", *common, "--trial", "0", "--schedule", "kd", "--no-progress")
    assert result.returncode == 0, result.stderr
    from searchkd.study import load_existing_study

    study = load_existing_study("tiny", f"sqlite:///{study_dir / 'study.db'}")
    recorded = study.user_attrs["retrain:trial0:kd:seed0"]
    assert recorded["accuracy_kind"] == "last_epoch" and recorded["epochs"] == 1
    exported = cli("export", "--run-dir", str(study_dir), "--trial", "0", "--out", str(tmp_path))
    assert exported.returncode == 0, exported.stderr
    path = exported.stdout.strip().splitlines()[0]
    record = json.loads(open(path).read())
    assert record["onnx"].endswith(".onnx") and record["metrics"]["accuracy_kind"] == "last_epoch"
    # the shipped model's accuracy, not the search proxy's 0.5 recorded on the trial
    assert record["metrics"]["accuracy"] == recorded["accuracy"]
    assert record["metrics"]["epochs"] == 1 and record["search_metrics"]["accuracy"] == 0.5
    assert record["selection"] == "the only retraining of trial 0"
    searchkd.load_student(path)
    # A second retraining: the export now says the accuracy also chose the bundle.
    again = cli("retrain", *common, "--trial", "0", "--schedule", "ce", "--no-progress")
    assert again.returncode == 0, again.stderr
    exported = cli("export", "--run-dir", str(study_dir), "--trial", "0", "--out", str(tmp_path))
    record = json.loads(open(exported.stdout.strip().splitlines()[0]).read())
    assert record["selection"].startswith("the most accurate of 2 retrainings of trial 0")
    card = (tmp_path / record["model_card"]).with_suffix(".md").read_text()
    assert "optimistic" in card


@pytest.mark.slow
def test_cli_retrains_from_an_exported_file_with_an_early_stopped_teacher(
    bundle, teacher_folder, tmp_path
):
    result = cli(
        "retrain", "--arch", str(bundle), "--teacher", str(teacher_folder), "--teacher-epoch",
        "2", "--dataset", "digits", "--schedule", "ban", "--generations", "2", "--epochs", "1",
        "--batch-size", "64", "--out", str(tmp_path), "--no-progress",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    card = json.loads(next(tmp_path.glob("*/ban/*.card.json")).read_text())
    assert card["teacher"]["epoch"] == 2 and card["schedule"]["name"] == "ban"
    assert len(card["schedule"]["details"]["generations"]) == 2


@pytest.mark.slow
def test_cli_refuses_rco_without_a_route_in_one_line(teacher_folder, bundle, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(teacher_folder / "teacher.pt", bare / "teacher.pt")
    meta = json.loads((teacher_folder / "teacher.json").read_text())
    (bare / "teacher.json").write_text(json.dumps({**meta, "route": []}))
    common = ("--arch", str(bundle), "--dataset", "digits", "--epochs", "1", "--out", str(tmp_path))
    result = cli("retrain", *common, "--teacher", str(bare), "--schedule", "rco")
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("searchkd: error: rco:") and "searchkd teacher train" in last
    assert "Traceback" not in result.stderr
    late = cli("retrain", *common, "--teacher", str(teacher_folder), "--teacher-epoch", "9")
    assert late.returncode == 2 and "route has epochs 1..3" in late.stderr


def test_greedy_route_choices_are_replayed_after_a_resume(data, teacher):
    from searchkd.schedules.rco import RouteGuide

    space = get_space("resnet")

    def guide() -> RouteGuide:
        build = lambda: space.build(TEACHER_ARCH, 1, 8, 10)  # noqa: E731
        return RouteGuide("t", teacher.route, build, [], 4, 3, "greedy", data.train_x[:64], 1.5)

    student = get_space("mobilenet").build(STUDENT_ARCH, 1, 8, 10)
    first = guide()
    names = [first.teacher(epoch, student)[0] for epoch in range(1, 5)]
    resumed = guide()
    resumed.restore(names[:2])  # interrupted after epoch 2
    student_changed = get_space("mobilenet").build(WIDER_ARCH, 1, 8, 10)
    assert resumed.teacher(2, student_changed)[0] == names[1]  # decided stages are not re-picked
    assert [resumed.teacher(e, student)[0] for e in (3, 4)] == names[2:]


def test_a_misspelt_loss_is_named_before_any_run_folder_is_compared():
    """Rerunning into a folder of an earlier run, a typo must not read as 'other settings'."""
    from searchkd.retrain import StudentSource, recipe_from

    source = StudentSource(record={"arch": get_space("compact").smallest()}, stem="s")
    with pytest.raises(SearchKDError, match="unknown distillation loss 'cee'; known losses"):
        recipe_from(source, epochs=1, loss={"kd": 0.9, "cee": 0.1})
    assert recipe_from(source, epochs=1, loss={"kd": 0.9, "ce": 0.1}).loss == {"kd": 0.9, "ce": 0.1}
