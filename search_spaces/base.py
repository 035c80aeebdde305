"""The contract every search space fulfils.

An architecture is *data*: a JSON-serialisable dict
``{"space": <name>, "version": <int>, ...space-specific explicit fields...}``.
Sampling turns Optuna decisions into such a dict; building a module from it is a
pure function of (architecture, input channels, resolution, classes). Exported
students, the study and retraining all speak this one format.

Decisions are a *fixed, ordered* set of categorical choices (the factorised
hierarchical style of MnasNet): every architecture answers every decision. This
lets the AKD controller sample all decisions autoregressively in one relative
sampling step and lets any Optuna sampler see one stable search space.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import optuna
from torch import nn

from searchkd.errors import ArchitectureError

Architecture = dict[str, Any]


@dataclass(frozen=True)
class Unit:
    """One piece of a network that runs on its own: its key, input shape and builder."""

    key: str
    input_shape: tuple[int, int, int]
    build: Callable[[], nn.Module]


class SearchSpace(ABC):
    """A family of student (or teacher) networks that can be searched and built."""

    name: str
    version: int = 1
    # Older versions whose architectures are still members, unchanged (a version that only
    # added choices); empty: only ``version``.
    readable_versions: tuple[int, ...] = ()
    # The space whose architecture format this one produces (a slice of a larger space
    # produces that space's architectures, so its latency tables and exports apply).
    family: str = ""

    @property
    def arch_family(self) -> str:
        return self.family or self.name

    @abstractmethod
    def decisions(self) -> dict[str, optuna.distributions.CategoricalDistribution]:
        """Ordered decision name -> categorical distribution of its choices."""

    @abstractmethod
    def from_decisions(self, decisions: dict[str, Any]) -> Architecture:
        """Turn one value per decision into an explicit architecture dict."""

    @abstractmethod
    def build(
        self, arch: Architecture, in_channels: int, resolution: int, num_classes: int
    ) -> nn.Module:
        """Build a plain ``nn.Module`` (no distillation-specific forward)."""

    @abstractmethod
    def feature_taps(self, arch: Architecture) -> list[str]:
        """Module paths of the stage outputs, shallow to deep, for forward hooks."""

    def preact_taps(self, arch: Architecture) -> dict[str, str]:
        """Pre-activation taps, one per stage, shallow to deep: tap path -> the path of the
        batch norm whose output (plus a residual, if any) the tap is.

        OFD and AB distil the tensor BEFORE the ReLU, where negative responses still carry
        information; OFD also reads that batch norm's affine parameters for its margin.
        The tapped modules exist in the plain ``forward`` (no distillation flag), and their
        outputs are not overwritten in place. Spaces without them return ``{}``.
        """
        return {}

    @abstractmethod
    def canonical(self) -> dict[str, Architecture]:
        """Well-known members of the space (name -> architecture)."""

    def decisions_of(self, arch: Architecture) -> dict[str, Any] | None:
        """The decision vector that builds ``arch``, or None when no vector does (or the
        space cannot invert its decisions). Lets a search queue known members as trials."""
        return None

    @abstractmethod
    def validate(self, arch: Architecture) -> None:
        """Raise ``searchkd.errors.ArchitectureError`` with one clear line if malformed."""

    def sample(self, trial: optuna.trial.BaseTrial) -> Architecture:
        """Define-by-run sampling: ask the trial for every decision, in order."""
        values = {
            name: trial.suggest_categorical(name, dist.choices)
            for name, dist in self.decisions().items()
        }
        return self.from_decisions(values)

    def macs(
        self, arch: Architecture, resolution: int, in_channels: int = 3, num_classes: int = 1000
    ) -> int | None:
        """MACs in closed form, or None when the space has no formula (fvcore counts then)."""
        return None

    def smallest(self) -> Architecture:
        """The member with the first (by convention smallest) choice of every decision."""
        return self.from_decisions({n: d.choices[0] for n, d in self.decisions().items()})

    def members(self) -> Iterator[dict[str, Any]]:
        """Every decision vector, in a fixed order (the first decision varies slowest).
        Only sensible for small spaces: check :meth:`size` first."""
        space = self.decisions()
        for values in itertools.product(*(d.choices for d in space.values())):
            yield dict(zip(space, values, strict=True))

    def size(self) -> int:
        """Number of distinct decision vectors (an upper bound on distinct networks)."""
        return math.prod(len(d.choices) for d in self.decisions().values())


# --- validation helpers shared by the spaces -------------------------------------------------
# Each raises ArchitectureError with one line that names the offending field, so a user who
# hand-edits an architecture JSON sees exactly what to fix.


def uniform_choice(distribution: optuna.distributions.BaseDistribution, rng: random.Random) -> Any:
    """One uniform draw from an Optuna distribution (log-uniform where it is logarithmic)."""
    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        return rng.choice(distribution.choices)
    low, high = distribution.low, distribution.high
    if isinstance(distribution, optuna.distributions.IntDistribution):
        if distribution.log:
            return min(high, max(low, round(math.exp(rng.uniform(math.log(low), math.log(high))))))
        return rng.randrange(low, high + 1, distribution.step)
    if isinstance(distribution, optuna.distributions.FloatDistribution):
        if distribution.log:
            return math.exp(rng.uniform(math.log(low), math.log(high)))
        if distribution.step is not None:
            return low + distribution.step * rng.randrange(
                int(round((high - low) / distribution.step)) + 1
            )
        return rng.uniform(low, high)
    raise TypeError(f"no uniform draw for {type(distribution).__name__}")


def uniform_decisions(
    decisions: dict[str, optuna.distributions.BaseDistribution], rng: random.Random
) -> dict[str, Any]:
    """One value per decision, each drawn uniformly (:func:`uniform_choice`), in order."""
    return {name: uniform_choice(distribution, rng) for name, distribution in decisions.items()}


def decisions_key(decisions: dict[str, Any]) -> str:
    """One string per decision vector, independent of dict order (to find a vector again
    in a pool, a table or a study)."""
    return json.dumps(decisions, sort_keys=True)


def arch_error(where: str, message: str) -> ArchitectureError:
    """The one-line error every check raises: ``<where>: <what is wrong>``."""
    return ArchitectureError(f"{where}: {message}")


def check_fields(
    where: str, obj: Any, required: tuple[str, ...], optional: tuple[str, ...] = ()
) -> None:
    """``obj`` is a dict holding every required key and no key outside required+optional."""
    if not isinstance(obj, dict):
        raise arch_error(where, f"expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in required if k not in obj]
    if missing:
        raise arch_error(where, f"missing key(s) {', '.join(map(repr, missing))}")
    unknown = sorted(str(k) for k in obj if k not in required and k not in optional)
    if unknown:
        raise arch_error(where, f"unknown key(s) {', '.join(map(repr, unknown))}")


# Bounds on what an architecture file may ask for, checked before anything is built: far
# above every member the spaces sample or name (at most 1280 channels, 4 layers a stage,
# 8 stages, kernel 7), far below what would take minutes to build or exhaust memory.
MAX_CHANNELS = 8192
MAX_LAYERS = 64  # blocks in one stage
MAX_STAGES = 32
MAX_KERNEL = 15


def check_int(where: str, value: Any, minimum: int = 1, maximum: int | None = None) -> None:
    """An int (not a bool) of at least ``minimum`` (and at most ``maximum``)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise arch_error(where, f"expected an integer, got {value!r}")
    if value < minimum:
        raise arch_error(where, f"must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise arch_error(
            where, f"must be <= {maximum} (searchkd's bound on an architecture), got {value}"
        )


def check_stages(where: str, stages: Any) -> None:
    """A non-empty list of at most :data:`MAX_STAGES` stages."""
    if not isinstance(stages, list) or not stages:
        raise arch_error(where, "'stages' must be a non-empty list")
    if len(stages) > MAX_STAGES:
        raise arch_error(
            f"{where} 'stages'",
            f"must hold <= {MAX_STAGES} stages (searchkd's bound), got {len(stages)}",
        )


def widest_field(arch: Architecture) -> tuple[str, int]:
    """The architecture's largest width or depth field and its value (``stages[2].channels``,
    100000): what to shrink when the network does not fit in memory."""
    found: list[tuple[int, str]] = []
    for key in ("stem", "head", "stem_channels"):
        if type(arch.get(key)) is int:
            found.append((arch[key], key))
    for i, stage in enumerate(arch.get("stages") or []):
        for key in ("channels", "layers", "depth"):
            if isinstance(stage, dict) and type(stage.get(key)) is int:
                found.append((stage[key], f"stages[{i}].{key}"))
    value, name = max(found, key=lambda item: item[0], default=(0, "stages"))  # the first
    return name, value


def check_number(where: str, value: Any, low: float, high: float) -> None:
    """An int or float (not a bool) in the closed range [low, high]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise arch_error(where, f"expected a number, got {value!r}")
    if not low <= value <= high:
        raise arch_error(where, f"must be in [{low}, {high}], got {value}")


def check_choice(where: str, value: Any, choices: tuple[Any, ...]) -> None:
    """One of ``choices``, type-strict: 2.0 or True does not pass for 2, nor 1 for '1'."""
    if not any(type(value) is type(c) and value == c for c in choices):
        listed = ", ".join(repr(c) for c in choices)
        raise arch_error(where, f"must be one of {listed}, got {value!r}")


def check_header(
    space: SearchSpace, arch: Any, required: tuple[str, ...], optional: tuple[str, ...] = ()
) -> None:
    """The dict belongs to ``space`` at its version; then only its own keys are checked."""
    where = f"{space.name} architecture"
    if not isinstance(arch, dict):
        raise arch_error(where, f"expected a JSON object, got {type(arch).__name__}")
    if arch.get("space") != space.name:
        raise arch_error(where, f"'space' must be {space.name!r}, got {arch.get('space')!r}")
    version = arch.get("version")
    readable = space.readable_versions or (space.version,)
    if type(version) is not int or version not in readable:
        allowed = " or ".join(str(v) for v in readable)
        raise arch_error(where, f"'version' must be {allowed}, got {version!r}")
    check_fields(where, arch, ("space", "version", *required), optional)


def check_decisions(space: SearchSpace, decisions: dict[str, Any]) -> None:
    """Check that ``decisions`` answers every decision with one of its choices."""
    where = f"{space.name} decisions"
    if not isinstance(decisions, dict):
        raise arch_error(where, f"expected a dict, got {type(decisions).__name__}")
    for name, dist in space.decisions().items():
        if name not in decisions:
            raise arch_error(where, f"missing decision {name!r}")
        if decisions[name] not in dist.choices:
            listed = ", ".join(repr(c) for c in dist.choices)
            raise arch_error(where, f"{name} must be one of {listed}, got {decisions[name]!r}")
