"""Where a search starts: the space's hand-designed members, and a zero-cost warm-up.

Hand-designed seeds: before the first trial, the largest member of each hand-designed
family of the space (``SearchSpace.canonical`` members it can express as decisions, e.g.
the compact space's plain and depthwise-separable stacks) that fits the budget is queued,
so the search trains what a practitioner would write first and every controller evolves
or learns from there, instead of rediscovering it (or not) in a short search.

Zero-cost warm-up: start the search from the best of a training-free pool.

After Abdelfattah et al., "Zero-Cost Proxies for Lightweight NAS" (ICLR 2021, Section 5):
before the first trial, draw a pool of distinct candidates within budget, score each at
initialisation (``searchkd/zero_cost.py``, milliseconds to a second each, against seconds
of proxy training), and queue the top-scored ones as the first trials. They go into the
study with ``study.enqueue_trial``, so every controller trains them first and learns from
them as from any trial, and a resumed search finds them there: the warm-up runs once per
study, recorded in the study's user attribute ``zero_cost_warmup`` (the pool's scores,
what was queued, the seconds it took); each queued trial carries its rank and score in
its own ``zero_cost_warmup`` attribute.

Why it helps here: on the ground truth NASWOT ranks students better than a 2-epoch proxy
does (Spearman 0.72 against 10-epoch training), so the top of a pool is a far better first
guess than a uniform draw, while a learning controller needs many noisy trials to find it.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import optuna

from search_spaces.base import decisions_key, uniform_decisions
from searchkd.study import HAND_DESIGNED

if TYPE_CHECKING:
    from searchkd.trials import TrialCore

RECORD = "zero_cost_warmup"  # study user attribute; also each queued trial's origin
DRAWS_PER_MEMBER = 200  # uniform draws allowed per pool member, with a closed-form check
FULL_CHECK_DRAWS_PER_MEMBER = 5  # ... with a check that builds every draw


def sample_pool(
    space: dict[str, optuna.distributions.CategoricalDistribution],
    size: int,
    seed: int,
    over_budget: Callable[[dict[str, Any]], bool],
    max_draws: int,
) -> tuple[list[dict[str, Any]], int]:
    """``size`` distinct decision vectors drawn uniformly, skipping those ``over_budget``
    refuses; fewer when ``max_draws`` run out first. Returns (pool, uniform draws made)."""
    rng = random.Random(f"zero-cost-pool:{seed}")
    pool: dict[str, dict[str, Any]] = {}
    draws = 0
    while len(pool) < size and draws < max_draws:
        draws += 1
        decisions = uniform_decisions(space, rng)
        key = decisions_key(decisions)
        if key not in pool and not over_budget(decisions):
            pool[key] = decisions
    return list(pool.values()), draws


def draw_pool(
    search: TrialCore, excess: Callable[[dict[str, Any]], float] | None, size: int
) -> tuple[list[dict[str, Any]], int]:
    """The warm-up's pool for ``search``: with the cheap closed-form check ``excess`` when
    the space has one (thousands of draws cost milliseconds), otherwise with the search's
    full cost check, which builds each draw (its costs are cached for the trial), so fewer
    draws are allowed. Returns (pool, uniform draws made)."""
    if excess is not None:
        return sample_pool(
            search.space.decisions(),
            size,
            search.config.seed,
            lambda decisions: excess(decisions) > 0,
            DRAWS_PER_MEMBER * size,
        )

    def over(decisions: dict[str, Any]) -> bool:
        return search.cost(search.space.from_decisions(decisions)).rejected

    return sample_pool(
        search.space.decisions(),
        size,
        search.config.seed,
        over,
        FULL_CHECK_DRAWS_PER_MEMBER * size,
    )


def warm_start(
    search: TrialCore, excess: Callable[[dict[str, Any]], float] | None
) -> dict[str, Any] | None:
    """Score the pool (``search.pool_score``) and queue the top ``warmup_trials`` within
    budget, once per study; ``excess`` is the search's cheap budget check, or None.

    A study that already holds trials other than the warm-up's own (one made without it)
    is left alone; one whose warm-up was interrupted after queueing some trials gets only
    the missing ones. Candidates are queued in score order; a top-scored one that the full
    cost check (counted parameters, measured latency) puts over budget is passed over.
    """
    settings = search.config.zero_cost
    if settings.warmup_pool == 0:
        return None
    study = search.study
    record = study.user_attrs.get(RECORD)
    if record is not None:
        search.log(f"zero-cost warm-up: done when the study began ({len(record['queued'])} queued)")
        return record
    trials = study.get_trials(deepcopy=False)
    if any(RECORD not in t.user_attrs for t in trials):
        search.log("zero-cost warm-up skipped: the study already has trials from before it")
        return None
    already = {t.user_attrs[RECORD]["rank"] for t in trials}

    started = time.perf_counter()
    pool, draws = draw_pool(search, excess, settings.warmup_pool)
    scores = [search.pool_score(decisions, i) for i, decisions in enumerate(pool)]
    scored = time.perf_counter()
    order = sorted(range(len(pool)), key=lambda i: -scores[i])  # stable: ties in pool order
    wanted = min(settings.warmup_trials, search.config.trials)
    queued: list[dict[str, Any]] = []
    passed_over = 0
    for rank, i in enumerate(order, 1):
        if len(queued) == wanted:
            break
        if search.cost(search.space.from_decisions(pool[i])).rejected:
            passed_over += 1
            continue
        queued.append({"rank": rank, "score": scores[i], "decisions": pool[i]})
    for entry in queued:
        if entry["rank"] not in already:
            origin = {"rank": entry["rank"], "score": entry["score"], "pool": len(pool)}
            study.enqueue_trial(entry["decisions"], user_attrs={RECORD: origin})
    record = {
        "score": settings.score,
        "pool": len(pool),
        "pool_requested": settings.warmup_pool,
        "uniform_draws": draws,
        "scores": scores,  # in pool order
        "queued": [{"rank": e["rank"], "score": e["score"]} for e in queued],
        "passed_over_budget": passed_over,
        "score_seconds": scored - started,
        "seconds": time.perf_counter() - started,
    }
    study.set_user_attr(RECORD, record)
    short = f" (the space ran out after {draws} draws)" if len(pool) < settings.warmup_pool else ""
    search.log(
        f"zero-cost warm-up: {settings.score} scored {len(pool)} candidates within budget"
        f"{short} in {record['score_seconds']:.1f}s; queued the top {len(queued)} as the first "
        "trials"
    )
    return record


def queue_hand_designed(search: TrialCore) -> list[str] | None:
    """Queue, once per study, the largest member of each hand-designed family within the
    budget (a family: the canonical names without their widths, ``plain24x2`` ->
    ``plainx``); returns their names, or None when off, already done, or the study had
    trials from before."""
    if not search.config.hand_designed_seeds:
        return None
    study = search.study
    if HAND_DESIGNED in study.user_attrs:
        return study.user_attrs[HAND_DESIGNED]
    if any(RECORD not in t.user_attrs for t in study.get_trials(deepcopy=False)):
        return None  # resumed from before seeding existed, or trials made otherwise
    largest: dict[str, tuple[int, str, dict[str, Any]]] = {}
    for name, arch in search.space.canonical().items():
        decisions = search.space.decisions_of(arch)
        if decisions is None:
            continue
        candidate = search.cost(arch)
        family = re.sub(r"\d+", "", name)
        if not candidate.rejected and candidate.macs > largest.get(family, (-1,))[0]:
            largest[family] = (candidate.macs, name, decisions)
    names = []
    for _, name, decisions in sorted(largest.values(), key=lambda item: -item[0]):
        study.enqueue_trial(decisions, user_attrs={HAND_DESIGNED: name})
        names.append(name)
    study.set_user_attr(HAND_DESIGNED, names)
    if names:
        search.log(f"hand-designed members within budget queued first: {', '.join(names)}")
    return names
