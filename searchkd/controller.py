"""Controllers are Optuna samplers.

The AKD controller (after "Search to Distill", Liu et al. 2019, with MnasNet's
reward) is an autoregressive RNN policy over the space's decisions, trained with
REINFORCE against a moving-average baseline plus an entropy bonus. Writing it as
an Optuna sampler means it shares the study's storage, resume, dashboard and
runners with TPE, NSGA-II and random search, and it keeps no state file: its
policy is a pure function of (seed, the study's completed trials), replayed in
trial-number order whenever it is built.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import optuna
import torch
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState
from torch import nn

from search_spaces.base import uniform_decisions
from searchkd.errors import SearchKDError

RewardFn = Callable[[FrozenTrial], "float | None"]
# Maps one decision vector to log(cost / limit) of its worst budget violation (0 when within
# budget), computed without building anything: the AKD warm-up calls it thousands of times.
PrescreenFn = Callable[[dict[str, Any]], float]

# Bounding logits with c·tanh(x/c) keeps the policy from collapsing onto one
# choice after a handful of lucky rewards (ENAS uses the same device, c = 2.5).
LOGIT_BOUND = 2.5


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run the policy's tiny tensor ops on one thread. With torch's default intra-op pool
    they synchronise threads per op, which cost 20x (1 s per update instead of 44 ms)
    when the cores were busy with other work."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class Policy(nn.Module):
    """LSTM policy: one softmax head per decision, fed the previous choice.

    Batched: the budget warm-up scores a batch of samples per update, at about the cost
    of one, so it can learn where the budget lies in a second or two.

    Sampling walks the decisions one step at a time (each input is the previous draw), but
    scoring known actions need not: every input is known, so the whole sequence goes
    through one fused LSTM call and every head through one batched product. The
    per-decision embeddings and heads live in one table each (row blocks per decision),
    so an optimiser step touches eight tensors instead of about 180. Together they turn
    a REINFORCE update from ~20 ms of per-decision Python into a few ms.
    """

    def __init__(self, choice_counts: Sequence[int], hidden_size: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.start = nn.Parameter(torch.zeros(1, hidden_size))
        self.rnn = nn.LSTM(hidden_size, hidden_size, batch_first=True)
        # Initialised block by block exactly as one nn.Embedding / nn.Linear per decision.
        embeddings = [nn.Embedding(n, hidden_size) for n in choice_counts]
        heads = [nn.Linear(hidden_size, n) for n in choice_counts]
        self.embedding = nn.Parameter(torch.cat([e.weight.detach() for e in embeddings]))
        self.head_weight = nn.Parameter(torch.cat([h.weight.detach() for h in heads]))
        self.head_bias = nn.Parameter(torch.cat([h.bias.detach() for h in heads]))
        counts = torch.tensor(list(choice_counts))
        offsets = torch.cumsum(counts, 0) - counts  # first row of each decision's block
        self._blocks = [(int(o), int(n)) for o, n in zip(offsets, counts, strict=True)]
        slots = torch.arange(int(counts.max()))
        valid = slots < counts[:, None]
        # (decision, slot) -> row of the head tables; padding slots reuse row 0 and are
        # masked out of the softmax.
        rows = torch.where(valid, offsets[:, None] + slots, 0)
        self.register_buffer("_offsets", offsets, persistent=False)
        self.register_buffer("_rows", rows, persistent=False)
        self.register_buffer("_valid", valid, persistent=False)

    def _cell(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]):
        """One LSTM step with the sequence model's own weights (what nn.LSTMCell computes;
        a length-1 call of nn.LSTM costs twice as much per step)."""
        return torch.lstm_cell(x, state, *self.rnn.all_weights[0])

    def _steps(self, batch: int, generator: torch.Generator):
        """Sample the decisions for ``batch`` rows, one step at a time. Yields actions."""
        h = c = torch.zeros(batch, self.hidden_size)
        x = self.start.expand(batch, -1)
        for offset, count in self._blocks:
            h, c = self._cell(x, (h, c))
            weight = self.head_weight[offset : offset + count]
            logits = torch.addmm(self.head_bias[offset : offset + count], h, weight.t())
            logits = LOGIT_BOUND * torch.tanh(logits / LOGIT_BOUND)
            probs = torch.log_softmax(logits, dim=-1).exp()
            action = torch.multinomial(probs, 1, generator=generator)[:, 0]
            yield action
            x = self.embedding[action + offset]

    @torch.no_grad()
    def sample(self, generator: torch.Generator) -> list[int]:
        return self.sample_batch(1, generator)[0]

    @torch.no_grad()
    def sample_batch(self, batch: int, generator: torch.Generator) -> list[list[int]]:
        columns = list(self._steps(batch, generator))
        return torch.stack(columns, dim=1).tolist()

    def log_prob_and_entropy(self, actions: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        log_prob, entropy = self.batch_log_prob_and_entropy([list(actions)])
        return log_prob[0], entropy[0]

    def batch_log_prob_and_entropy(
        self, actions: Sequence[Sequence[int]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-row log-probability of ``actions`` and entropy of the policy along them."""
        chosen = torch.tensor(actions, dtype=torch.long)
        previous = self.embedding[chosen[:, :-1] + self._offsets[:-1]]  # inputs of steps 1..
        inputs = torch.cat([self.start.expand(len(chosen), 1, -1), previous], dim=1)
        outputs, _ = self.rnn(inputs)  # batch x decisions x hidden
        logits = torch.einsum("bsh,sch->bsc", outputs, self.head_weight[self._rows])
        logits = LOGIT_BOUND * torch.tanh((logits + self.head_bias[self._rows]) / LOGIT_BOUND)
        # Padding slots get a finite, hopeless logit rather than -inf: their probability is
        # exactly 0 either way, but 0 * -inf would put NaN into the entropy's gradient.
        log_probs = torch.log_softmax(logits.masked_fill(~self._valid, -1e9), dim=-1)
        log_prob = log_probs.gather(2, chosen[:, :, None])[:, :, 0].sum(dim=1)
        return log_prob, -(log_probs.exp() * log_probs).sum(dim=(1, 2))


class _WholeSpaceSampler(optuna.samplers.BaseSampler):
    """What the AKD and evolution controllers share: they sample every categorical decision
    at once from ``self._space``. A numerical decision (a float or int range, as an NNI
    space may have) is drawn uniformly at random by the fallback, inside the trial: the
    controller learns and mutates the categorical choices only, and then proposes no
    architecture before a trial exists (it would be missing those numbers)."""

    _space: dict[str, BaseDistribution]
    _fallback: optuna.samplers.RandomSampler
    _numerical: tuple[str, ...] = ()

    def _categorical(
        self, controller: str, search_space: dict[str, BaseDistribution]
    ) -> dict[str, BaseDistribution]:
        """The categorical decisions, which the controller learns; the others it leaves to
        the fallback (one line when nothing is left to learn)."""
        categorical = {
            name: dist
            for name, dist in search_space.items()
            if isinstance(dist, CategoricalDistribution)
        }
        if search_space and not categorical:
            raise SearchKDError(
                f"{controller} controller: the space has no categorical decision to learn "
                f"(only {', '.join(search_space)}); use --controller tpe, nsga2 or random"
            )
        self._numerical = tuple(name for name in search_space if name not in categorical)
        return categorical

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return dict(self._space)

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self._fallback.sample_independent(study, trial, param_name, param_distribution)

    def reseed_rng(self) -> None:
        self._fallback.reseed_rng()


class AKDSampler(_WholeSpaceSampler):
    """REINFORCE-trained RNN policy as an Optuna sampler.

    ``search_space`` is the space's fixed, ordered decisions; ``reward`` maps a
    completed trial to a scalar (``None`` skips the trial, e.g. one from another
    space). Every completed trial updates the policy exactly once, in trial-number
    order, so a fresh sampler on a resumed study rebuilds the same policy.

    ``prescreen`` enables the budget warm-up: before the first trial the policy is trained
    in memory on cheap closed-form costs alone (batches of ``warmup_batch`` samples, at
    most ``warmup_steps`` updates, stopping once ``warmup_target`` of a batch is within
    budget), with the same reward an over-budget trial gets. Without it, a policy that
    starts uniform over a space whose typical member is far over budget spends most of a
    short search writing rejected trials. The warm-up is a pure function of (seed, budget),
    so rebuilding the sampler on resume repeats it exactly.
    """

    def __init__(
        self,
        search_space: dict[str, BaseDistribution],
        reward: RewardFn,
        *,
        seed: int = 0,
        lr: float = 0.003,
        baseline_decay: float = 0.9,
        entropy_weight: float = 1e-3,
        hidden_size: int = 64,
        prescreen: PrescreenFn | None = None,
        warmup_steps: int = 100,
        warmup_batch: int = 32,
        warmup_target: float = 0.5,
        draws: int = 16,
    ) -> None:
        self._space = self._categorical("akd", search_space)
        self._reward = reward
        self._seed = seed
        self._baseline_decay = baseline_decay
        self._entropy_weight = entropy_weight
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        self.policy = Policy([len(d.choices) for d in self._space.values()], hidden_size)
        torch.random.set_rng_state(generator_state)
        self._optimizer = torch.optim.Adam(self.policy.parameters(), lr=lr)
        self.baseline: float | None = None
        self._consumed: set[int] = set()
        self.history: list[tuple[int, float, float]] = []  # (trial number, reward, baseline)
        self._fallback = optuna.samplers.RandomSampler(seed=seed)
        self._draws = max(1, draws)
        self._tried: set[tuple[int, ...]] = set()  # actions of every finished trial
        # A numerical decision is drawn in the trial: the closed-form pre-screen cannot cost
        # the categorical ones alone.
        self._prescreen = None if self._numerical else prescreen
        self._warmup = (warmup_steps, warmup_batch, warmup_target)
        self.warmup_history: list[float] | None = None  # within-budget fraction per batch

    # --- Optuna sampler interface -------------------------------------------------
    def sample_relative(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        search_space: dict[str, BaseDistribution],
    ) -> dict[str, Any]:
        if not search_space:
            return {}
        self.learn(study)
        proposal = self._sample(trial.number)
        return {name: value for name, value in proposal.items() if name in search_space}

    def propose(self, study: optuna.Study) -> dict[str, Any] | None:
        """The decisions the next trial would get, without creating the trial (None when
        the space has numerical decisions, which are drawn inside the trial).

        Lets the search cost a candidate first and store a rejected one in a single write
        (``study.add_trial``) instead of a running trial plus one write per decision. The
        draw is seeded by the number the next trial will have, as in ``sample_relative``.
        """
        if self._numerical:
            return None
        self.learn(study)
        number = len(study.get_trials(deepcopy=False))
        return self._sample(number)

    def _sample(self, number: int) -> dict[str, Any]:
        """The policy's first draw (of ``draws``) that no finished trial has tried: a
        repeat would spend a trial re-measuring a known architecture, and a policy that
        concentrates early would spend most of a short search that way."""
        generator = torch.Generator().manual_seed(self._seed * 1_000_003 + number)
        with single_thread():
            draws = self.policy.sample_batch(self._draws, generator)
        actions = next((a for a in draws if tuple(a) not in self._tried), draws[0])
        return {
            name: dist.choices[action]
            for (name, dist), action in zip(self._space.items(), actions, strict=True)
        }

    # --- learning -------------------------------------------------------------------
    def learn(self, study: optuna.Study) -> int:
        """Apply one REINFORCE step per completed trial not yet learned from."""
        with single_thread():
            return self._learn(study)

    def _learn(self, study: optuna.Study) -> int:
        self.warm_up()
        finished = (TrialState.COMPLETE, TrialState.PRUNED)  # pruned: stopped at a rung
        trials = study.get_trials(deepcopy=False, states=finished)
        fresh = sorted(
            (t for t in trials if t.number not in self._consumed), key=lambda t: t.number
        )
        for trial in fresh:
            self._consumed.add(trial.number)
            actions = self._actions(trial)
            if actions is not None:
                self._tried.add(tuple(actions))
            reward = self._reward(trial) if actions is not None else None
            if reward is None or not math.isfinite(reward):
                continue
            self.update(actions, reward, trial.number)
        return len(fresh)

    def warm_up(self) -> list[float]:
        """Teach the policy where the budget lies from closed-form costs (runs once)."""
        if self.warmup_history is not None:
            return self.warmup_history
        with single_thread():
            return self._warm_up()

    def _warm_up(self) -> list[float]:
        self.warmup_history = []
        steps, batch, target = self._warmup
        if self._prescreen is None:
            return self.warmup_history
        generator = torch.Generator().manual_seed(self._seed * 1_000_003 - 1)
        dists = list(self._space.items())
        for _ in range(steps):
            samples = self.policy.sample_batch(batch, generator)
            rewards = torch.tensor(
                [
                    overbudget_reward(
                        self._prescreen(
                            {n: d.choices[a] for (n, d), a in zip(dists, row, strict=True)}
                        )
                    )
                    for row in samples
                ]
            )
            within = float((rewards == 0).float().mean())
            self.warmup_history.append(within)
            if within >= target:
                break
            log_prob, entropy = self.policy.batch_log_prob_and_entropy(samples)
            advantage = rewards - rewards.mean()
            loss = -(advantage * log_prob).mean() - self._entropy_weight * entropy.mean()
            self._optimizer.zero_grad()
            loss.backward()
            self._optimizer.step()
        return self.warmup_history

    def update(self, actions: Sequence[int], reward: float, number: int = -1) -> None:
        baseline = reward if self.baseline is None else self.baseline
        log_prob, entropy = self.policy.log_prob_and_entropy(actions)
        loss = -(reward - baseline) * log_prob - self._entropy_weight * entropy
        self._optimizer.zero_grad()
        loss.backward()
        self._optimizer.step()
        decay = self._baseline_decay
        self.baseline = reward if self.baseline is None else decay * baseline + (1 - decay) * reward
        self.history.append((number, reward, self.baseline))

    def _actions(self, trial: FrozenTrial) -> list[int] | None:
        try:
            return [dist.to_internal_repr(trial.params[n]) for n, dist in self._space.items()]
        except (KeyError, ValueError):
            return None  # a trial from another search space: nothing to learn


class EvolutionSampler(_WholeSpaceSampler):
    """Regularized (aging) evolution as an Optuna sampler (Real et al., AAAI 2019).

    The population is the ``population`` most recent trials with a reward (trained, or
    stopped at a rung), so old members age out whatever their score and one lucky proxy
    result cannot dominate for long. Each proposal picks ``tournament`` members at random,
    mutates the best of them in one decision (more, when a single change keeps landing on
    a tried architecture) and keeps the first child that the closed-
    form ``prescreen`` puts within budget and no finished trial has tried. Until the
    population is full, proposals are uniform draws within budget. Trials queued before
    the first proposal (the space's hand-designed members, a zero-cost warm-up) join the
    population like any other, so evolution starts from them.

    Population 10 and tournaments of 5: on an 8-decision synthetic task (60 trials, 4
    seeds) tournaments of 3 left the population drifting (mean reward of the last 20
    trials 0.49) while 5 climbed (0.66; AKD 0.37), and a short search has few trials to
    spend on a large population.

    Like :class:`AKDSampler` it keeps no state: every proposal is a function of (seed,
    trial number, the study's finished trials), so a resumed search proposes the same.
    """

    def __init__(
        self,
        search_space: dict[str, BaseDistribution],
        reward: RewardFn,
        *,
        seed: int = 0,
        population: int = 10,
        tournament: int = 5,
        prescreen: PrescreenFn | None = None,
        attempts: int = 200,
    ) -> None:
        self._space = self._categorical("evolution", search_space)
        self._reward = reward
        self._seed = seed
        self._population = max(2, population)
        self._tournament = max(1, min(tournament, self._population))
        # A numerical decision is drawn in the trial: the closed-form pre-screen cannot cost
        # the categorical ones alone.
        self._prescreen = None if self._numerical else prescreen
        self._attempts = attempts
        self._fallback = optuna.samplers.RandomSampler(seed=seed)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if not search_space:
            return {}
        proposal = self._propose(study, trial.number)
        return {name: value for name, value in proposal.items() if name in search_space}

    def propose(self, study: optuna.Study) -> dict[str, Any] | None:
        """The decisions the next trial would get, without creating it (see AKDSampler)."""
        if self._numerical:
            return None
        return self._propose(study, len(study.get_trials(deepcopy=False)))

    def _propose(self, study: optuna.Study, number: int) -> dict[str, Any]:
        rng = random.Random(self._seed * 1_000_003 + number)
        finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        tried = {self._key(self._learned(t.params)) for t in finished if t.number != number}
        scored = []
        for trial in sorted(finished, key=lambda t: t.number):
            reward = self._reward(trial) if set(self._space) <= set(trial.params) else None
            if (
                reward is not None
                and math.isfinite(reward)
                and trial.user_attrs.get("trained", True)
            ):
                scored.append((trial, reward))
        population = scored[-self._population :]
        if len(population) < self._population:
            return self._draw(rng, tried, lambda: self._uniform(rng))
        contenders = rng.sample(population, self._tournament)
        parent = self._learned(max(contenders, key=lambda item: item[1])[0].params)
        return self._draw(rng, tried, lambda: self._mutate(rng, parent, tried))

    def _draw(
        self, rng: random.Random, tried: set[str], make: Callable[[], dict[str, Any]]
    ) -> dict[str, Any]:
        """The first candidate from ``make`` within budget and untried; the last one made
        if none is found in ``attempts`` (the search's own cost check then rejects it)."""
        candidate: dict[str, Any] = {}
        for _ in range(self._attempts):
            candidate = make()
            within = self._prescreen is None or self._prescreen(candidate) <= 0
            if within and self._key(candidate) not in tried:
                return candidate
        return candidate

    def _uniform(self, rng: random.Random) -> dict[str, Any]:
        return uniform_decisions(self._space, rng)

    def _mutate(
        self, rng: random.Random, parent: dict[str, Any], tried: set[str]
    ) -> dict[str, Any]:
        """One decision changed; a second, third... while the child repeats a tried one."""
        child = dict(parent)
        names = [n for n, d in self._space.items() if len(d.choices) > 1]
        for _ in range(len(names)):
            name = rng.choice(names)
            child[name] = rng.choice([c for c in self._space[name].choices if c != child[name]])
            if self._key(child) not in tried:
                break
        return child

    def _learned(self, params: dict[str, Any]) -> dict[str, Any]:
        """The categorical decisions of ``params`` (the ones evolution mutates)."""
        return {name: params[name] for name in self._space if name in params}

    @staticmethod
    def _key(params: dict[str, Any]) -> str:
        return repr(sorted(params.items()))


def overbudget_reward(excess: float) -> float:
    """The reward of a candidate over budget by ``excess`` = log(cost / limit) (0 when within
    budget): in (-1, 0], growing with the log-excess, so 16x over still ranks below 4x and a
    policy whose samples are all over budget still learns which way the budget lies."""
    excess = min(max(excess, 0.0), math.log(1e6))
    return -excess / (1.0 + excess)


def mnas_reward(
    accuracy: float, cost: float | None, target: float | None, exponent: float = -0.07
) -> float:
    """MnasNet's soft reward: accuracy × (cost / target)^w, with w < 0.

    Costs below the target are rewarded mildly, costs above penalised mildly; the
    hard budget is enforced separately (over-budget candidates score 0).
    """
    if cost is None or target is None or not math.isfinite(cost) or cost <= 0:
        return accuracy
    return accuracy * (cost / target) ** exponent


Factory = Callable[..., optuna.samplers.BaseSampler]

# The controllers, by the name a config or ``--controller`` gives. Each factory takes the
# keyword arguments of :func:`make_sampler` (``search_space``, ``reward``, ``seed``,
# ``akd_options``, ``prescreen``) and uses those it needs. TPE and NSGA-II get no
# ``constraints_func``: they read each trial's budget constraints from
# ``FrozenTrial.constraints``, which the search stores on every trial before telling it
# (:func:`searchkd.study.set_constraints`); ``constraints_func`` would only recompute and
# rewrite the same values, and Optuna deprecates it in favour of that attribute (since
# 5.0). ``tests/test_optuna_internals.py`` checks that both samplers steer away from a
# choice the stored constraints call over budget, and towards it without them.
CONTROLLERS: dict[str, Factory] = {
    "akd": lambda search_space, reward, seed, akd_options, prescreen: AKDSampler(
        search_space, reward, seed=seed, prescreen=prescreen, **(akd_options or {})
    ),
    "evolution": lambda search_space, reward, seed, akd_options, prescreen: EvolutionSampler(
        search_space, reward, seed=seed, prescreen=prescreen
    ),
    "tpe": lambda seed, **_: optuna.samplers.TPESampler(
        seed=seed, multivariate=True, n_startup_trials=10
    ),
    "nsga2": lambda seed, **_: optuna.samplers.NSGAIISampler(seed=seed, population_size=10),
    "random": lambda seed, **_: optuna.samplers.RandomSampler(seed=seed),
}


def make_sampler(
    name: str,
    search_space: dict[str, BaseDistribution],
    reward: RewardFn,
    seed: int,
    akd_options: dict[str, Any] | None = None,
    prescreen: PrescreenFn | None = None,
) -> optuna.samplers.BaseSampler:
    """Build the controller named in the config (``prescreen``: see :class:`AKDSampler`)."""
    factory = CONTROLLERS.get(name)
    if factory is None:
        raise SearchKDError(f"unknown controller {name!r}; choose one of {', '.join(CONTROLLERS)}")
    return factory(
        search_space=search_space,
        reward=reward,
        seed=seed,
        akd_options=akd_options,
        prescreen=prescreen,
    )
