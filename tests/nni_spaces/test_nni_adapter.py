"""The NNI adapter on the small spaces of ``toy_space.py``: the mapping of mutables to
Optuna distributions, sampled and frozen builds, the architecture JSON's round trip, the
fingerprint, the refusals, and every controller sampling the space."""

from __future__ import annotations

import json
import sys
import textwrap

import optuna
import pytest
import torch

pytest.importorskip("nni.nas.nn.pytorch", reason="nni is not installed (searchkd[nni])")

from optuna.distributions import (  # noqa: E402
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from search_spaces import get_space, load_architecture  # noqa: E402
from search_spaces.nni_space import NNISpace  # noqa: E402
from searchkd.controller import CONTROLLERS, make_sampler  # noqa: E402
from searchkd.errors import ArchitectureError, SearchKDError  # noqa: E402

TOY = "nni:tests.nni_spaces.toy_space:ToySpace"
NUMERIC = "nni:tests.nni_spaces.toy_space:NumericSpace"


def _random_archs(space, count: int, seed: int = 0) -> list[dict]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    return [space.sample(study.ask()) for _ in range(count)]


def test_mutables_map_to_optuna_distributions_in_their_order():
    space = get_space(TOY)
    assert space.decisions() == {
        "mix": CategoricalDistribution(["none", "conv1"]),  # LayerChoice of a dict: its keys
        "width": CategoricalDistribution([4, 8, 16]),
        "block": CategoricalDistribution(["conv3", "conv5", "skip"]),
        "read": CategoricalDistribution(["[0]", "[1]"]),  # InputChoice: subsets as JSON
        "dropout": CategoricalDistribution([0.0, 0.25]),
    }
    assert list(space.decisions()) == ["mix", "width", "block", "read", "dropout"]
    assert space.size() == 72
    numeric = get_space(NUMERIC)
    assert numeric.decisions() == {
        "width": IntDistribution(4, 12, step=4),  # quniform with whole bounds and step
        "dropout": FloatDistribution(0.0, 0.5),
    }


def test_sampled_members_build_plain_modules_that_take_the_data():
    from nni.mutable import Mutable

    for name in (TOY, NUMERIC):
        space = get_space(name)
        for arch in _random_archs(space, 6):
            model = space.build(arch, 1, 8, 10)
            assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
            assert not any(isinstance(m, Mutable) for m in model.modules() if m is not model)
    wide = get_space(TOY).from_decisions(
        {"mix": "conv1", "width": 16, "block": "conv5", "read": "[1]", "dropout": 0.25}
    )
    model = get_space(TOY).build(wide, 1, 8, 10)
    assert model.block[0].kernel_size == (5, 5) and model.head.in_features == 16


def test_the_json_round_trip_rebuilds_the_same_network():
    space = get_space(TOY, {"widths": [4, 8]}, ["stem"])
    for arch in _random_archs(space, 4, seed=1):
        text = json.dumps(arch)
        loaded_space, loaded = load_architecture(json.loads(text))
        assert loaded_space is space and loaded == arch
        assert loaded["args"] == {"widths": [4, 8]} and loaded_space.feature_taps(loaded) == [
            "stem"
        ]
        torch.manual_seed(3)
        first = space.build(arch, 1, 8, 10).state_dict()
        torch.manual_seed(3)
        again = loaded_space.build(loaded, 1, 8, 10).state_dict()
        assert first.keys() == again.keys()
        assert all(torch.equal(first[k], again[k]) for k in first)
    assert space.decisions_of(arch) == arch["sample"]


def test_members_own_their_weights_and_start_from_the_seed():
    """NNI's freeze hands out a LayerChoice's plain candidates uncopied; the adapter freezes
    a fresh space each time, so no two builds share a tensor and the seed sets them all."""
    space = get_space(TOY)
    arch = space.from_decisions(
        {"mix": "conv1", "width": 8, "block": "conv3", "read": "[1]", "dropout": 0.0}
    )
    built = []
    for seed in (0, 1, 0):
        torch.manual_seed(seed)
        built.append(dict(space.build(arch, 1, 8, 10).named_parameters()))
    first, other, again = built
    assert "mix.weight" in first
    assert not {p.data_ptr() for p in first.values()} & {p.data_ptr() for p in again.values()}
    assert all(torch.equal(first[k], again[k]) for k in first)
    for name in ("mix.weight", "stem.0.weight", "head.weight"):  # BN starts at 1 and 0
        assert not torch.equal(first[name], other[name])
    spaces = {p.data_ptr() for p in space.model_space.parameters()}
    assert not spaces & {p.data_ptr() for p in first.values()}


def test_a_numerical_sample_round_trips_and_an_off_grid_one_is_refused():
    space = get_space(NUMERIC)
    arch = space.from_decisions({"width": 8, "dropout": 0.125})
    assert space.build(arch, 1, 8, 10).conv.out_channels == 8
    with pytest.raises(ArchitectureError, match=r"'sample'.width: 6 is not in"):
        space.from_decisions({"width": 6, "dropout": 0.125})
    with pytest.raises(ArchitectureError, match=r"'sample'.dropout: 0.9 is not in"):
        space.from_decisions({"width": 8, "dropout": 0.9})


def test_a_stored_architecture_of_a_changed_space_is_refused(tmp_path, monkeypatch):
    """The space's module gains a width after an architecture was stored: the stored
    fingerprint no longer matches, and loading it says so in one line."""
    source = textwrap.dedent(
        """
        import nni
        from nni.nas.nn.pytorch import ModelSpace, MutableConv2d, MutableLinear
        class Evolving(ModelSpace):
            def __init__(self):
                super().__init__()
                width = nni.choice("width", WIDTHS)
                self.conv = MutableConv2d(1, width, 3)
                self.head = MutableLinear(width, 10)
            def forward(self, x):
                return self.head(self.conv(x).mean((2, 3)))
        """
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "evolving_space.py").write_text(source.replace("WIDTHS", "[4, 8]"))
    stored = get_space("nni:evolving_space:Evolving").smallest()
    (tmp_path / "evolving_space.py").write_text(source.replace("WIDTHS", "[4, 8, 16]"))
    monkeypatch.delitem(sys.modules, "evolving_space")
    monkeypatch.setattr("search_spaces.nni_space._CACHE", {})
    with pytest.raises(ArchitectureError) as refused:
        load_architecture(json.loads(json.dumps(stored)))
    message = str(refused.value)
    assert message.startswith("nni:evolving_space:Evolving architecture: stored for space ")
    assert "the space changed since" in message and "\n" not in message


def test_a_stored_architecture_must_answer_every_mutable():
    arch = get_space(TOY).smallest()
    with pytest.raises(ArchitectureError, match="missing mutable 'read'"):
        load_architecture(
            {**arch, "sample": {k: v for k, v in arch["sample"].items() if k != "read"}}
        )
    with pytest.raises(ArchitectureError, match="unknown mutable"):
        load_architecture({**arch, "sample": {**arch["sample"], "depth": 2}})
    with pytest.raises(ArchitectureError, match="space_args must be a mapping"):
        load_architecture({**arch, "args": [1]})


def test_a_class_that_is_not_a_model_space_is_refused_by_name():
    with pytest.raises(ArchitectureError) as refused:
        get_space("nni:tests.nni_spaces.toy_space:NotASpace")
    assert str(refused.value) == (
        "nni:tests.nni_spaces.toy_space:NotASpace: tests.nni_spaces.toy_space.NotASpace is a "
        "class NotASpace, not a subclass of nni.nas.nn.pytorch.ModelSpace"
    )
    with pytest.raises(ArchitectureError, match="is nothing, not a subclass"):
        get_space("nni:tests.nni_spaces.toy_space:Missing")
    with pytest.raises(ArchitectureError, match="module 'tests.no_such_module' cannot be imported"):
        get_space("nni:tests.no_such_module:Space")


def test_an_unsupported_mutable_kind_is_named():
    with pytest.raises(ArchitectureError) as refused:
        get_space("nni:tests.nni_spaces.toy_space:NormalSpace")
    assert str(refused.value).startswith(
        "nni:tests.nni_spaces.toy_space:NormalSpace: mutable 'rate' is a normally distributed "
        "Numerical, which searchkd cannot search"
    )


def test_a_space_for_other_inputs_or_classes_is_refused_on_its_first_build():
    space = get_space(TOY, {"in_channels": 3})
    with pytest.raises(ArchitectureError, match=r"a member fails on 1x8x8 inputs"):
        space.build(space.smallest(), 1, 8, 10)
    space = get_space(TOY, {"num_classes": 4})
    with pytest.raises(
        ArchitectureError, match=r"gives \(1, 4\) for one 1x8x8 input, not \(1, 10\)"
    ):
        space.build(space.smallest(), 1, 8, 10)
    with pytest.raises(ArchitectureError, match="constructing it with space_args"):
        get_space(TOY, {"no_such_argument": 1})


def test_the_smallest_member_takes_the_least_of_each_number():
    assert get_space(TOY).smallest()["sample"] == {
        "mix": "none",
        "width": 4,
        "block": "conv3",
        "read": "[0]",
        "dropout": 0.0,
    }
    assert get_space(NUMERIC).smallest()["sample"] == {"width": 4, "dropout": 0.0}


@pytest.mark.parametrize("controller", sorted(CONTROLLERS))
def test_every_controller_samples_the_space(controller):
    space = get_space(TOY)
    sampler = make_sampler(
        controller, space.decisions(), lambda trial: trial.values[0] if trial.values else None, 0
    )
    study = optuna.create_study(sampler=sampler, direction="maximize")
    archs = []

    def objective(trial):
        archs.append(space.sample(trial))
        return archs[-1]["sample"]["width"] / 16

    study.optimize(objective, n_trials=6)
    assert len(archs) == 6
    for arch in archs:
        load_architecture(arch)


@pytest.mark.parametrize("controller", ["tpe", "nsga2", "random"])
def test_numbers_are_searched_by_the_optuna_controllers(controller):
    space = get_space(NUMERIC)
    study = optuna.create_study(sampler=make_sampler(controller, space.decisions(), None, 0))
    study.optimize(lambda trial: space.sample(trial)["sample"]["dropout"], n_trials=4)
    assert {t.params["width"] for t in study.trials} <= {4, 8, 12}


@pytest.mark.parametrize("controller", ["akd", "evolution"])
def test_a_space_of_numbers_only_under_a_learning_controller_is_one_line(controller):
    """AKD and evolution learn categorical decisions and draw numbers at random
    (tests/test_controller.py); with nothing categorical they have nothing to learn."""
    with pytest.raises(SearchKDError, match=f"{controller} controller: the space has no categ"):
        make_sampler(controller, get_space(NUMERIC).decisions(), lambda t: 0.0, 0)


def test_one_space_object_per_name_args_and_taps():
    assert get_space(TOY) is get_space(TOY, {})
    assert get_space(TOY, {"widths": [4]}) is not get_space(TOY)
    assert isinstance(get_space(TOY), NNISpace)


@pytest.mark.parametrize("meter", ["torch-cpu", "onnxruntime"])
def test_the_latency_meters_time_a_member(meter):
    from searchkd.meters import Timing, make_meter

    space = get_space(TOY)
    arch = space.from_decisions(
        {"mix": "none", "width": 8, "block": "conv5", "read": "[1]", "dropout": 0.25}
    )
    timing = Timing(warmup=1, runs=2, repeats=1)
    assert make_meter(meter, timing).measure(space.build(arch, 1, 8, 10), (1, 8, 8)).median_ms > 0


def test_costs_count_what_the_member_computes():
    from searchkd.cost import count_macs, count_params

    space = get_space(TOY)
    sample = {"mix": "none", "width": 8, "block": "conv5", "read": "[1]", "dropout": 0.0}
    model = space.build(space.from_decisions(sample), 1, 8, 10)
    conv5 = 5 * 5 * 8 * 8 * 8 * 8  # the 5x5 block on an 8x8 map
    assert count_macs(model, (1, 8, 8)) >= conv5
    assert count_params(model) == sum(p.numel() for p in model.parameters())


def test_making_the_space_leaves_the_random_state_alone():
    state = torch.random.get_rng_state()
    get_space(TOY, {"widths": [4, 12]})
    assert torch.equal(torch.random.get_rng_state(), state)
