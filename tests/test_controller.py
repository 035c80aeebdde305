"""The AKD controller learns, is deterministic, and rebuilds itself from the study."""

import warnings

import optuna
import pytest
import torch
from optuna.distributions import CategoricalDistribution

from searchkd.budget import Budget
from searchkd.controller import AKDSampler, EvolutionSampler, make_sampler, mnas_reward
from searchkd.errors import SearchKDError
from searchkd.study import DIRECTIONS, set_constraints

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE = {f"d{i}": CategoricalDistribution([0, 1, 2, 3]) for i in range(8)}
TARGET = [i % 4 for i in range(8)]


def matches(params) -> float:
    """Synthetic reward: the fraction of decisions equal to a hidden target."""
    return sum(params[f"d{i}"] == TARGET[i] for i in range(8)) / 8


def objective(trial: optuna.Trial) -> float:
    for name, dist in SPACE.items():
        trial.suggest_categorical(name, dist.choices)
    return matches(trial.params)


def run(sampler, n: int, study=None) -> optuna.Study:
    study = study or optuna.create_study(sampler=sampler, direction="maximize")
    study.optimize(objective, n_trials=n)
    return study


@pytest.mark.slow
def test_akd_improves_on_a_synthetic_reward():
    sampler = AKDSampler(SPACE, lambda t: t.value, seed=3)
    values = [t.value for t in run(sampler, 150).trials]
    random_mean = 0.25  # one in four choices matches by chance
    assert sum(values[:20]) / 20 < 0.45
    assert sum(values[-30:]) / 30 > random_mean + 0.3


@pytest.mark.slow  # >= 1 s: the full suite runs it
def test_akd_does_not_repeat_an_architecture_it_has_tried():
    """A policy that concentrates would otherwise spend trials re-measuring one member;
    with draws=1 (the old behaviour) the same policy repeats itself. Repeats come back
    only when none of the draws is new."""
    small = {f"d{i}": CategoricalDistribution([0, 1]) for i in range(3)}  # 8 members

    def objective_small(trial):
        return sum(trial.suggest_categorical(n, d.choices) for n, d in small.items()) / 3

    def distinct(draws: int) -> int:
        sampler = AKDSampler(small, lambda t: t.value, seed=0, draws=draws)
        study = optuna.create_study(sampler=sampler, direction="maximize")
        study.optimize(objective_small, n_trials=8)
        return len({tuple(t.params.values()) for t in study.trials})

    assert distinct(draws=64) == 8  # every member once before any repeat
    assert distinct(draws=1) < 8


def test_same_seed_same_choices_and_different_seed_differs():
    first = [t.params for t in run(AKDSampler(SPACE, lambda t: t.value, seed=5), 15).trials]
    again = [t.params for t in run(AKDSampler(SPACE, lambda t: t.value, seed=5), 15).trials]
    other = [t.params for t in run(AKDSampler(SPACE, lambda t: t.value, seed=6), 15).trials]
    assert first == again
    assert first != other


def test_policy_is_rebuilt_from_study_history():
    """A fresh sampler on a resumed study replays the history to the same policy."""
    original = AKDSampler(SPACE, lambda t: t.value, seed=1)
    study = run(original, 25)
    original.learn(study)
    rebuilt = AKDSampler(SPACE, lambda t: t.value, seed=1)
    rebuilt.learn(study)
    for a, b in zip(original.policy.parameters(), rebuilt.policy.parameters(), strict=True):
        assert torch.allclose(a, b)
    assert rebuilt.baseline == pytest.approx(original.baseline)
    # and it keeps sampling what the uninterrupted run would have sampled
    continued = run(original, 5, study)
    resumed_study = optuna.create_study(sampler=rebuilt, direction="maximize")
    for trial in study.trials[:25]:
        resumed_study.add_trial(trial)
    run(rebuilt, 5, resumed_study)
    assert [t.params for t in continued.trials[25:]] == [
        t.params for t in resumed_study.trials[25:]
    ]


def test_trials_from_another_space_and_missing_rewards_are_skipped():
    sampler = AKDSampler(SPACE, lambda t: None if t.number == 0 else t.value, seed=0)
    study = optuna.create_study(sampler=sampler, direction="maximize")
    study.add_trial(
        optuna.trial.create_trial(
            params={"other": 1}, distributions={"other": CategoricalDistribution([1, 2])}, value=1
        )
    )
    run(sampler, 3, study)
    sampler.learn(study)
    assert [number for number, _, _ in sampler.history] == [1, 2, 3]


def test_mnas_reward():
    assert mnas_reward(0.9, 2e6, 2e6) == pytest.approx(0.9)
    assert mnas_reward(0.9, 4e6, 2e6) == pytest.approx(0.9 * 2**-0.07)
    assert mnas_reward(0.9, 1e6, 2e6) > 0.9  # cheaper than the target earns a little more
    assert mnas_reward(0.0, 4e6, 2e6) == 0.0
    assert mnas_reward(0.8, None, 2e6) == 0.8


@pytest.mark.parametrize("name", ["akd", "evolution", "tpe", "nsga2", "random"])
def test_every_controller_runs(name):
    sampler = make_sampler(name, SPACE, lambda t: t.value, seed=0)
    study = run(sampler, 12)
    assert len(study.trials) == 12


def test_unknown_controller_is_one_line():
    with pytest.raises(SearchKDError, match="choose one of") as info:
        make_sampler("bohb", SPACE, lambda t: t.value, seed=0)
    assert "\n" not in str(info.value)


def budget_run(name: str, store_constraints: bool, seed: int = 0) -> tuple[optuna.Study, int]:
    """80 trials of a 2-decision space under a MACs budget that only ``x < 5`` meets, told the
    way a search tells them; the over-budget members look BETTER on every objective, so only
    the constraints stored by :func:`set_constraints` can steer a sampler away from them.
    Returns the study and how many of the last 40 proposals were within budget."""
    space = {name: CategoricalDistribution(list(range(10))) for name in ("x", "y")}
    sampler = make_sampler(name, space, lambda t: t.values[0], seed=seed)
    study = optuna.create_study(directions=list(DIRECTIONS), sampler=sampler)
    budget, within = Budget(max_macs=5e6), 0
    for i in range(80):
        trial = study.ask()
        x, y = (trial.suggest_categorical(n, d.choices) for n, d in space.items())
        feasible = x < 5
        within += i >= 40 and feasible
        if store_constraints:
            set_constraints(study, trial, budget, {"macs": (x + 1) * 1e6})
        study.tell(trial, [0.5 + y / 100, 10.0, 10.0] if feasible else [0.9, 1.0, 1.0])
    return study, within


@pytest.mark.parametrize("name", ["tpe", "nsga2"])
def test_tpe_and_nsga2_avoid_what_the_stored_constraints_call_over_budget(name):
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # no deprecated constraints_func
        study, aware = budget_run(name, store_constraints=True)
    # Optuna reads the list-form attribute as one constraint per budget name, > 0 = over
    over = next(t for t in study.trials if t.params["x"] == 9)
    assert over.constraints == {"0": pytest.approx(1.0), "1": 0.0, "2": 0.0}
    _, blind = budget_run(name, store_constraints=False)
    assert aware >= 24 and aware >= blind + 10, (aware, blind)


def log_excess_over(limit: float):
    """A prescreen whose 'cost' is the sum of chosen choices: log(cost / limit) when over."""
    import math

    def excess(params) -> float:
        cost = 1 + sum(params.values())
        return max(math.log(cost / limit), 0.0)

    return excess


def within_fraction(sampler: AKDSampler, prescreen, n: int = 400) -> float:
    generator = torch.Generator().manual_seed(123)
    names = list(SPACE)
    rows = sampler.policy.sample_batch(n, generator)
    return sum(prescreen(dict(zip(names, row, strict=True))) == 0 for row in rows) / n


def test_budget_warm_up_moves_the_policy_into_the_budget():
    prescreen = log_excess_over(limit=8)  # uniform choices average a cost of 13
    sampler = AKDSampler(SPACE, lambda t: t.value, seed=0, prescreen=prescreen)
    before = within_fraction(sampler, prescreen)
    history = sampler.warm_up()
    after = within_fraction(sampler, prescreen)
    assert before < 0.3
    assert history[0] < 0.4 and history[-1] >= 0.5  # the default target
    assert len(history) < 100  # reached before the step limit
    assert after > 0.4
    assert sampler.warm_up() is history  # runs once


def test_budget_warm_up_is_deterministic_and_optional():
    prescreen = log_excess_over(limit=8)
    first = AKDSampler(SPACE, lambda t: t.value, seed=4, prescreen=prescreen)
    again = AKDSampler(SPACE, lambda t: t.value, seed=4, prescreen=prescreen)
    assert first.warm_up() == again.warm_up()
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert first.policy.sample_batch(5, g1) == again.policy.sample_batch(5, g2)
    plain = AKDSampler(SPACE, lambda t: t.value, seed=4)
    assert plain.warm_up() == []
    off = AKDSampler(SPACE, lambda t: t.value, seed=4, prescreen=prescreen, warmup_steps=0)
    assert off.warm_up() == []


# --- regularized evolution ------------------------------------------------------------------
def test_evolution_improves_on_a_synthetic_reward():
    values = [t.value for t in run(EvolutionSampler(SPACE, lambda t: t.value, seed=3), 150).trials]
    assert sum(values[:10]) / 10 < 0.45  # the first population is uniform
    assert sum(values[-30:]) / 30 > 0.25 + 0.2  # random search stays at 0.25


def test_evolution_children_differ_from_a_population_member_in_few_decisions():
    sampler = EvolutionSampler(SPACE, lambda t: t.value, seed=0, population=10)
    study = run(sampler, 40)
    trials = study.trials
    for trial in trials[10:]:
        earlier = [t.params for t in trials[: trial.number]]
        nearest = min(sum(p[k] != trial.params[k] for k in SPACE) for p in earlier)
        assert 1 <= nearest <= 2  # a mutation, and never a repeat


def test_evolution_is_a_function_of_seed_and_history():
    first = [t.params for t in run(EvolutionSampler(SPACE, lambda t: t.value, seed=5), 30).trials]
    again = [t.params for t in run(EvolutionSampler(SPACE, lambda t: t.value, seed=5), 30).trials]
    other = [t.params for t in run(EvolutionSampler(SPACE, lambda t: t.value, seed=6), 30).trials]
    assert first == again and first != other
    # a sampler built afresh on a finished study proposes what the first one would
    study = run(EvolutionSampler(SPACE, lambda t: t.value, seed=5), 20)
    fresh = EvolutionSampler(SPACE, lambda t: t.value, seed=5)
    assert fresh.propose(study) == study.sampler.propose(study)


def test_evolution_proposes_within_the_prescreened_budget():
    prescreen = log_excess_over(12)  # cost = 1 + sum of choices
    sampler = EvolutionSampler(SPACE, lambda t: t.value, seed=1, prescreen=prescreen)
    study = run(sampler, 40)
    assert all(prescreen(t.params) == 0 for t in study.trials)


def test_evolution_starts_from_queued_trials():
    """Queued members (the hand-designed seeds) train first and become parents."""
    study = optuna.create_study(
        sampler=EvolutionSampler(SPACE, lambda t: t.value, seed=0, population=4),
        direction="maximize",
    )
    best = {f"d{i}": TARGET[i] for i in range(8)}
    best["d0"] = (TARGET[0] + 1) % 4  # 7 of 8 right
    for _ in range(4):
        study.enqueue_trial(best, skip_if_exists=False)
    study.optimize(objective, n_trials=5)
    child = study.trials[4].params
    assert sum(child[k] != best[k] for k in SPACE) == 1


@pytest.mark.parametrize("name", ["akd", "evolution"])
def test_learning_controllers_draw_numerical_decisions_at_random(name):
    """A space with a float range beside categorical choices (an NNI space may have one):
    the controller learns the categorical decisions, the number is drawn uniformly in the
    trial, and nothing is proposed before a trial exists (it would lack the number)."""
    from optuna.distributions import FloatDistribution

    space = {"x": CategoricalDistribution([0, 1, 2]), "rate": FloatDistribution(0.0, 0.5)}
    sampler = make_sampler(name, space, lambda t: t.values[0] if t.values else None, 0)
    study = optuna.create_study(sampler=sampler, direction="maximize")
    assert sampler.propose(study) is None

    def objective(trial):
        return trial.suggest_categorical("x", [0, 1, 2]) + trial.suggest_float("rate", 0.0, 0.5)

    study.optimize(objective, n_trials=15)
    rates = [t.params["rate"] for t in study.trials]
    assert len(set(rates)) == 15 and all(0.0 <= r <= 0.5 for r in rates)
    assert {t.params["x"] for t in study.trials} <= {0, 1, 2}
