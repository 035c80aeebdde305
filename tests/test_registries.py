"""Controllers, datasets and spaces are looked up by name in one registry each; the CLI's
help names every registered one, and each entry builds."""

from __future__ import annotations

import optuna
import pytest

from search_spaces import SPACES
from searchkd.cli import build_parser
from searchkd.config import build_config
from searchkd.controller import CONTROLLERS, make_sampler
from searchkd.data import DATASET_KINDS, DATASETS, DEFAULT_DATASET
from searchkd.errors import SearchKDError
from searchkd.recipe import Recipe, augmentation_for


def _search_help() -> str:
    parser = build_parser()
    search = next(
        action for action in parser._subparsers._group_actions if "search" in action.choices
    ).choices["search"]
    return " ".join(search.format_help().split())


@pytest.mark.parametrize(
    "registry", [CONTROLLERS, DATASET_KINDS, SPACES], ids=["controllers", "datasets", "spaces"]
)
def test_cli_help_names_every_registered_entry(registry):
    text = _search_help()
    missing = [name for name in registry if name not in text]
    assert not missing, f"searchkd search --help does not mention {missing}"


@pytest.mark.parametrize("name", sorted(CONTROLLERS))
def test_every_controller_builds_and_the_config_accepts_it(name):
    space = {"x": optuna.distributions.CategoricalDistribution([0, 1])}
    sampler = make_sampler(name, space, lambda trial: 0.0, seed=0)
    assert isinstance(sampler, optuna.samplers.BaseSampler)
    assert build_config(overrides={"controller": name}).controller == name


def test_an_unknown_controller_is_refused_by_name():
    with pytest.raises(SearchKDError, match="unknown controller 'bohb'; choose one of akd"):
        make_sampler("bohb", {}, lambda trial: 0.0, seed=0)
    with pytest.raises(SearchKDError, match="unknown controller 'bohb'"):
        build_config(overrides={"controller": "bohb"})


def test_datasets_come_from_the_registry_with_their_augmentation():
    assert DATASETS == tuple(DATASET_KINDS) and DATASETS[0] == DEFAULT_DATASET
    auto = Recipe(epochs=1)
    assert augmentation_for(auto, "mnist5k") == "shift"
    assert augmentation_for(auto, "cifar10") == "cropflip"
    assert augmentation_for(auto, "a-folder-it-does-not-know") == "cropflip"
    assert augmentation_for(Recipe(epochs=1, augment="none"), "mnist5k") == "none"
