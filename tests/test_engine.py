"""The training engine: per-epoch hooks and teachers, stopping, the per-step schedule, resume,
and the one loss that the search and retraining both build.

Data: 128 training and 64 validation images of scikit-learn's 8x8 digits; the model is the
mobilenet space's smallest member, so every test runs in about a second.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from search_spaces import get_space
from searchkd.config import ProxyConfig
from searchkd.distill import build_loss
from searchkd.engine import Engine, evaluate, every_epoch, labels_only, steps_per_epoch
from searchkd.proxy import compute_teacher_outputs, train_proxy
from searchkd.pruning import Pruned
from searchkd.recipe import Recipe, lr_factor
from searchkd.schedules import SCHEDULES, NamedTeacher, ScheduleContext, ScheduleOptions
from searchkd.search import ProxyJob
from tests.conftest import small_digits

pytestmark = pytest.mark.usefixtures("one_thread")

STUDENT = get_space("mobilenet")
ARCH = STUDENT.smallest()
TEACHER = get_space("resnet")
TEACHER_ARCH = TEACHER.smallest()


@pytest.fixture(scope="module")
def data():
    return small_digits(128, 64)


def engine(data, seed: int = 0, **recipe) -> Engine:
    torch.manual_seed(seed)
    model = STUDENT.build(ARCH, data.in_channels, data.resolution, data.num_classes)
    recipe = Recipe(
        **{"epochs": 3, "batch_size": 32, "augment": "none", "loss": {"ce": 1.0}, **recipe}
    )
    objective = build_loss(recipe.loss, {}, {}, {})
    return Engine(model, objective, data, recipe, device=torch.device("cpu"), seed=seed)


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.clone() for key, value in model.state_dict().items()}


def test_on_epoch_sees_each_epochs_accuracy_as_it_is_measured(data):
    trained = engine(data)
    seen = []

    def on_epoch(epoch, accuracies):
        now = evaluate(trained.model, data.val_x, data.val_y)
        seen.append((epoch, list(accuracies), now))

    accuracies = trained.fit(on_epoch=on_epoch)
    assert [epoch for epoch, _, _ in seen] == [1, 2, 3]
    assert [history for _, history, _ in seen] == [accuracies[:1], accuracies[:2], accuracies]
    assert all(history[-1] == now for _, history, now in seen)


def test_an_exception_from_on_epoch_stops_training_after_that_epoch(data):
    trained = engine(data, epochs=4)
    at_stop = {}

    def prune(epoch, accuracies):
        if epoch == 2:
            at_stop.update(weights(trained.model))
            raise Pruned(epoch, accuracies, 1.0)

    with pytest.raises(Pruned):
        trained.fit(on_epoch=prune)
    assert len(trained.accuracies) == 2
    assert trained.scheduler.last_epoch == 2 * steps_per_epoch(128, 32)  # no step after it
    assert all(torch.equal(at_stop[k], v) for k, v in trained.model.state_dict().items())


def test_a_pruned_proxy_run_stops_at_its_rung(data):
    teacher = TEACHER.build(TEACHER_ARCH, data.in_channels, data.resolution, data.num_classes)
    cached = compute_teacher_outputs(teacher, data.train_x, [])
    model = STUDENT.build(ARCH, data.in_channels, data.resolution, data.num_classes)
    calls = []

    def rung(epoch, accuracies):
        calls.append(epoch)
        raise Pruned(epoch, accuracies, 1.0)

    with pytest.raises(Pruned) as pruned:
        train_proxy(
            model, data, cached, [], {"ce": 0.1, "kd": 0.9}, {}, ProxyConfig(epochs=3), 0,
            on_epoch=rung,
        )  # fmt: skip
    assert calls == [1] and len(pruned.value.accuracies) == 1


@pytest.mark.parametrize("schedule", ["cosine", "step"])
def test_the_learning_rate_follows_the_recipe_at_every_step(data, schedule):
    trained = engine(data, epochs=4, lr=0.2, lr_schedule=schedule)
    lrs = []

    def teach(indices, x):  # called once per batch, before the step
        lrs.append(trained.optimizer.param_groups[0]["lr"])
        return labels_only(indices, x)

    trained.fit(every_epoch(teach))
    total = 4 * steps_per_epoch(128, 32)
    expected = [0.2 * lr_factor(trained.recipe, step, total) for step in range(total)]
    assert lrs == pytest.approx(expected, rel=1e-12)
    if schedule == "step":  # x0.1 from half way, x0.01 from three quarters
        assert lrs[total // 2 - 1] == pytest.approx(0.2) and lrs[-1] == pytest.approx(0.002)


def test_each_epochs_teacher_is_entered_for_that_epoch_and_sees_its_batches(data):
    trained = engine(data, epochs=2)
    events, batches = [], []

    @contextlib.contextmanager
    def teacher(epoch):
        events.append(f"enter {epoch}")

        def teach(indices, x):
            batches.append(indices)
            assert torch.equal(x, data.train_x[indices])  # no augmentation asked for
            return labels_only(indices, x)

        yield teach
        events.append(f"leave {epoch}")

    trained.fit(teacher, on_epoch=lambda epoch, _: events.append(f"evaluated {epoch}"))
    assert events == ["enter 1", "leave 1", "evaluated 1", "enter 2", "leave 2", "evaluated 2"]
    first_epoch = torch.cat(batches[:4])
    assert sorted(first_epoch.tolist()) == list(range(128))  # every image once per epoch


def test_a_restored_state_continues_as_if_training_had_never_stopped(data):
    whole = engine(data, augment="shift")  # augmentation: the generator's state matters
    whole.fit()

    def stop(epoch, accuracies):
        raise KeyboardInterrupt

    interrupted = engine(data, augment="shift")
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit(on_epoch=stop)
    state = interrupted.state_dict()
    resumed = engine(data, augment="shift")
    resumed.load_state_dict(state)
    assert resumed.fit() == whole.accuracies
    for key, value in whole.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key


# --- one loss for the search and retraining -------------------------------------------------
class Built(Exception):
    """Carries the engine a trainer built, before any training."""


def built_objective(monkeypatch, train) -> torch.nn.Module:
    def stop(self, *args, **kwargs):
        raise Built(self)

    monkeypatch.setattr(Engine, "fit", stop)
    with pytest.raises(Built) as built:
        train()
    return built.value.args[0].objective


FEATURE_LOSSES = {
    "crd": ({"ce": 0.1, "kd": 0.9, "crd": 0.8}, {"crd": {"negatives": 32, "feature_dim": 16}}),
    "hint": ({"ce": 0.5, "hint": 0.5}, {}),  # FitNets
    "at": ({"ce": 0.5, "at": 0.5}, {}),
    "ofd": ({"ce": 0.5, "ofd": 0.5}, {}),  # pre-ReLU taps and the teacher's BN statistics
}


@pytest.mark.parametrize("name", sorted(FEATURE_LOSSES))
def test_search_and_retraining_build_the_same_loss(data, tmp_path, monkeypatch, name):
    weights, options = FEATURE_LOSSES[name]
    torch.manual_seed(7)
    teacher = TEACHER.build(TEACHER_ARCH, data.in_channels, data.resolution, data.num_classes)
    cache = compute_teacher_outputs(
        teacher,
        data.train_x,
        TEACHER.feature_taps(TEACHER_ARCH),
        preact=TEACHER.preact_taps(TEACHER_ARCH),
    )
    job = ProxyJob(
        "mobilenet", data.in_channels, data.resolution, data.num_classes, weights, options,
        ProxyConfig(epochs=1),
    )  # fmt: skip
    named = NamedTeacher("t", teacher, TEACHER.feature_taps(TEACHER_ARCH), TEACHER_ARCH)
    ctx = ScheduleContext(
        ARCH, data, named, [], Recipe(epochs=1, seed=3, loss=weights, loss_options=options),
        ScheduleOptions(), tmp_path / "runs", tmp_path / "cache", progress=False,
        log=lambda _: None,
    )  # fmt: skip

    search = built_objective(monkeypatch, lambda: job.run(ARCH, 3, data, cache))
    retrain = built_objective(monkeypatch, lambda: SCHEDULES["kd"](ctx))

    assert search.weights == retrain.weights == weights
    assert {k: type(v) for k, v in search.terms.items()} == {
        k: type(v) for k, v in retrain.terms.items()
    }
    space_taps = {*STUDENT.feature_taps(ARCH), *STUDENT.preact_taps(ARCH)}
    assert search.student_taps == retrain.student_taps and search.student_taps
    assert set(search.student_taps) <= space_taps
    assert search.teacher_taps == retrain.teacher_taps
    # the same connectors, memory banks and margins, initialised alike from the same seed
    search_state, retrain_state = search.state_dict(), retrain.state_dict()
    assert search_state.keys() == retrain_state.keys()
    for key, value in search_state.items():
        assert torch.equal(value, retrain_state[key]), key
