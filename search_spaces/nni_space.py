"""NNI model spaces searched as searchkd spaces: ``nni:package.module:SpaceClass``.

Users of NNI keep their spaces as ``nni.nas.nn.pytorch.ModelSpace`` subclasses (``LayerChoice``,
``InputChoice``, ``nni.choice`` ...). This adapter turns such a class into a
:class:`~search_spaces.base.SearchSpace`, so the study, budgets, meters, proxy KD, every
controller, both runners, retraining and export see one more space and nothing else:

* decisions are the space's simplified mutables (``space.simplify()``), in their order:
  a ``Categorical`` is an Optuna categorical (its values, or their indices when a value is
  not a JSON scalar), a ``CategoricalMultiple`` with ``n_chosen`` a categorical over its
  subsets (each written as a JSON list), a bounded uniform or log-uniform ``Numerical`` an
  Optuna float (int when its bounds and step are whole numbers);
* a candidate is ``freeze(sample)`` of a freshly constructed space: a plain module of its
  own, whose initial weights follow torch's seed;
* the architecture JSON holds the decision values, the import path, the constructor
  arguments and a fingerprint of the mutables, so a stored architecture rebuilds in
  another process (resume, export, ``load_student``, a Ray worker) when the module is
  importable, and one stored before the space's mutables changed is refused.

NNI is optional (``pip install "searchkd[nni]"``) and unmaintained since 3.0: it is imported
here, only when an ``nni:`` space is named, never by the rest of searchkd.
"""

from __future__ import annotations

import hashlib
import importlib
import itertools
import json
import math
import re
import threading
import warnings
from typing import Any

import optuna
import torch
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from torch import nn

from search_spaces.base import Architecture, SearchSpace, arch_error, check_header
from searchkd.errors import ArchitectureError, SearchKDError, first_line

PREFIX = "nni:"
INSTALL = 'pip install "searchkd[nni]"'
FORM = "nni:package.module:SpaceClass"
# A dotted module path and a class name: a name, never a file path, is imported.
_SPEC = re.compile(r"nni:([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):([A-Za-z_]\w*)")
# A CategoricalMultiple becomes one categorical over its subsets; beyond this many the
# controllers' per-decision tables (and a user reading the dashboard) would drown.
MAX_SUBSETS = 1024
_JSON_SCALARS = (type(None), bool, int, float, str)


def is_nni_name(name: Any) -> bool:
    """Whether ``name`` asks for an NNI space (``nni:...``)."""
    return isinstance(name, str) and name.startswith(PREFIX)


def parse_name(name: str) -> tuple[str, str]:
    """``nni:package.module:SpaceClass`` -> (module, class name), or a one-line error."""
    match = _SPEC.fullmatch(name)
    if match is None:
        raise ArchitectureError(
            f"search space {name[:120]!r}: an NNI space is named {FORM} "
            "(a module importable here and a ModelSpace subclass in it)"
        )
    return match.group(1), match.group(2)


def import_nni() -> Any:
    """``nni.nas.nn.pytorch``, or one line saying how to install it. NNI 3.0 warns about every
    torch class newer than itself on import; those warnings say nothing to act on."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return importlib.import_module("nni.nas.nn.pytorch")
    except ImportError as exc:
        missing = (getattr(exc, "name", None) or "nni").split(".")[0]
        raise SearchKDError(
            f"NNI spaces need nni and pytorch-lightning ({missing} is not installed); "
            f"install the extra: {INSTALL}"
        ) from None


def _stable_repr(values: list[Any]) -> str:
    """``repr`` without memory addresses (``<function f at 0x7f...>``), which differ between
    processes: the fingerprint must not."""
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(values))


def _plain(values: list[Any]) -> bool:
    return all(type(v) in _JSON_SCALARS for v in values)


class _Decision:
    """One simplified mutable as an Optuna distribution, and back to NNI's sample value."""

    def __init__(self, label: str, mutable: Any, space_name: str) -> None:
        self.label = label
        kind = type(mutable).__name__
        if kind == "Categorical":
            values = list(mutable.values)
            self.by_choice = None if _plain(values) else dict(enumerate(values))
            choices = values if self.by_choice is None else list(range(len(values)))
            self.distribution: BaseDistribution = CategoricalDistribution(choices)
            self.describe = ["categorical", _stable_repr(values)]
        elif kind == "CategoricalMultiple":
            self._subsets(mutable, space_name)
        elif kind == "Numerical":
            self._numerical(mutable, space_name)
        else:
            raise unsupported(space_name, label, kind)

    def _subsets(self, mutable: Any, space_name: str) -> None:
        values = list(mutable.values)
        n = mutable.n_chosen
        sizes = range(len(values) + 1) if n is None else [n]
        count = sum(math.comb(len(values), k) for k in sizes)
        if count > MAX_SUBSETS:
            raise unsupported(
                space_name,
                self.label,
                f"CategoricalMultiple with {count} subsets (at most {MAX_SUBSETS})",
            )
        keys = list(range(len(values))) if not _plain(values) else values
        subsets = [list(c) for k in sizes for c in itertools.combinations(keys, k)]
        self.by_choice = {
            json.dumps(s): [values[i] for i in s] if keys is not values else s for s in subsets
        }
        self.distribution = CategoricalDistribution(list(self.by_choice))
        self.describe = ["subsets", _stable_repr(values), n]

    def _numerical(self, mutable: Any, space_name: str) -> None:
        low, high, q, log = mutable.low, mutable.high, mutable.quantize, mutable.log_distributed
        bounded = math.isfinite(low) and math.isfinite(high) and low < high
        dist = getattr(mutable, "distribution", None)
        family = getattr(getattr(dist, "dist", None), "name", "")
        if mutable.mu is not None or mutable.sigma is not None:
            raise unsupported(space_name, self.label, "normally distributed Numerical")
        if not bounded:
            raise unsupported(space_name, self.label, "Numerical without finite low < high")
        if family not in ("uniform", "loguniform", "reciprocal"):
            raise unsupported(space_name, self.label, f"Numerical of a {family} distribution")
        self.by_choice = None
        whole = all(float(v).is_integer() for v in (low, high, q or 1))
        if q is not None and log:
            raise unsupported(space_name, self.label, "quantised log-uniform Numerical")
        if q is not None and whole:
            self.distribution = IntDistribution(int(low), int(high), step=int(q))
        else:
            self.distribution = FloatDistribution(low, high, log=log, step=q)
        self.describe = ["numerical", low, high, q, log]

    def nni_value(self, value: Any) -> Any:
        """The value NNI's ``freeze`` takes for this decision's Optuna value."""
        if self.by_choice is not None:
            return self.by_choice[value]
        if isinstance(self.distribution, IntDistribution):
            return float(value)  # NNI's quantised numbers are floats
        return value

    def contains(self, value: Any) -> bool:
        dist = self.distribution
        if isinstance(dist, CategoricalDistribution):
            return any(type(value) is type(c) and value == c for c in dist.choices)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if isinstance(dist, IntDistribution) and not isinstance(value, int):
            return False
        if not dist.low <= value <= dist.high:
            return False
        if dist.step is None:
            return True
        steps = (value - dist.low) / dist.step  # on the grid, to float rounding
        return abs(steps - round(steps)) < 1e-8

    def smallest(self) -> Any:
        """The first choice (numbers: the least), searchkd's guess at the cheapest member."""
        dist = self.distribution
        if isinstance(dist, CategoricalDistribution):
            numbers = [c for c in dist.choices if type(c) in (int, float)]
            if self.by_choice is None and len(numbers) == len(dist.choices):
                return min(numbers)
            return dist.choices[0]
        return dist.low


def unsupported(space_name: str, label: str, kind: str) -> ArchitectureError:
    return ArchitectureError(
        f"{space_name}: mutable {label!r} is a {kind}, which searchkd cannot search; it "
        "searches Categorical, CategoricalMultiple with n_chosen and bounded uniform or "
        "log-uniform Numerical mutables"
    )


class NNISpace(SearchSpace):
    """An NNI ``ModelSpace`` subclass with constructor ``args``, as a searchkd space: one
    instance gives the mutables; each member is frozen from an instance of its own."""

    version = 1

    def __init__(
        self, name: str, args: dict[str, Any] | None = None, taps: list[str] | None = None
    ) -> None:
        module_name, class_name = parse_name(name)
        nni_pytorch = import_nni()
        self.name = name
        self.args = dict(args or {})
        self.taps = list(taps or [])
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ArchitectureError(
                f"{name}: module {module_name!r} cannot be imported ({exc}); put it on "
                "PYTHONPATH or install its package"
            ) from None
        cls = getattr(module, class_name, None)
        if not (isinstance(cls, type) and issubclass(cls, nni_pytorch.ModelSpace)):
            what = type(cls).__name__ if not isinstance(cls, type) else f"class {cls.__name__}"
            found = "nothing" if cls is None else f"a {what}"
            raise ArchitectureError(
                f"{name}: {module_name}.{class_name} is {found}, not a subclass of "
                "nni.nas.nn.pytorch.ModelSpace"
            )
        try:
            # Its weights are never used: the caller's random state is left as it was.
            with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
                warnings.simplefilter("ignore", RuntimeWarning)
                self.space_class = cls
                self.model_space = cls(**self.args)
                mutables = self.model_space.simplify()
        except Exception as exc:  # the user's constructor: any failure is theirs to fix
            raise ArchitectureError(
                f"{name}: constructing it with space_args {self.args} failed "
                f"({type(exc).__name__}: {first_line(exc)})"
            ) from None
        if not mutables:
            raise ArchitectureError(f"{name}: the space has no mutables; nothing to search")
        self._decisions = {label: _Decision(label, m, name) for label, m in mutables.items()}
        self.fingerprint = hashlib.sha256(
            json.dumps(
                [[label, *d.describe] for label, d in self._decisions.items()], default=repr
            ).encode()
        ).hexdigest()[:16]
        self._checked: set[tuple[int, int, int]] = set()
        self._lock = threading.Lock()

    # --- decisions --------------------------------------------------------------------
    def decisions(self) -> dict[str, BaseDistribution]:  # type: ignore[override]
        """Categorical, float or int distributions, one per mutable, in ``simplify()``'s
        order. The AKD and evolution controllers need every one categorical."""
        return {label: d.distribution for label, d in self._decisions.items()}

    def sample(self, trial: optuna.trial.BaseTrial) -> Architecture:
        values = {}
        for label, dist in self.decisions().items():
            if isinstance(dist, CategoricalDistribution):
                values[label] = trial.suggest_categorical(label, dist.choices)
            elif isinstance(dist, IntDistribution):
                values[label] = trial.suggest_int(label, dist.low, dist.high, step=dist.step)
            else:
                values[label] = trial.suggest_float(
                    label, dist.low, dist.high, step=dist.step, log=dist.log
                )
        return self.from_decisions(values)

    def from_decisions(self, decisions: dict[str, Any]) -> Architecture:
        arch: Architecture = {
            "space": self.name,
            "version": self.version,
            "args": dict(self.args),
            "sample": {label: decisions.get(label) for label in self._decisions},
            "fingerprint": self.fingerprint,
        }
        if self.taps:
            arch["taps"] = list(self.taps)
        self.validate(arch)
        return arch

    def decisions_of(self, arch: Architecture) -> dict[str, Any] | None:
        try:
            self.validate(arch)
        except ArchitectureError:
            return None
        return dict(arch["sample"])

    def smallest(self) -> Architecture:
        return self.from_decisions({label: d.smallest() for label, d in self._decisions.items()})

    def canonical(self) -> dict[str, Architecture]:
        """No hand-designed members: an NNI space names none."""
        return {}

    def size(self) -> int:
        """Distinct decision vectors; a float decision makes them uncountable (inf)."""
        total = 1
        for d in self._decisions.values():
            dist = d.distribution
            if isinstance(dist, CategoricalDistribution):
                total *= len(dist.choices)
            elif isinstance(dist, IntDistribution):
                total *= (dist.high - dist.low) // dist.step + 1
            else:
                return math.inf  # type: ignore[return-value]
        return total

    # --- building -----------------------------------------------------------------------
    def build(
        self, arch: Architecture, in_channels: int, resolution: int, num_classes: int
    ) -> nn.Module:
        """``freeze`` the space at the architecture's sample. The first build for an input
        shape checks that the network takes it and gives ``num_classes`` logits, since an
        NNI space fixes its own input channels and classes (``space_args`` may set them)."""
        self.validate(arch)
        sample = {
            label: self._decisions[label].nni_value(value)
            for label, value in arch["sample"].items()
        }
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            # From a space constructed afresh: NNI's freeze hands out the space's own
            # modules where a choice's candidates are plain modules (NAS-Bench-201's are),
            # so members frozen from one space object would share (and train) weights,
            # and their initial weights would not follow the seed.
            model = self.space_class(**self.args).freeze(sample)
        key = (in_channels, resolution, num_classes)
        on_meta = any(p.is_meta for p in model.parameters())  # counted, not run: no check
        if key not in self._checked and not on_meta:
            with self._lock:
                self._check_shape(model, key)
                self._checked.add(key)
        return model

    def _check_shape(self, model: nn.Module, key: tuple[int, int, int]) -> None:
        in_channels, resolution, num_classes = key
        shape = f"{in_channels}x{resolution}x{resolution}"
        mode = model.training
        model.eval()
        try:
            with torch.no_grad(), torch.random.fork_rng(devices=[]):
                out = model(torch.zeros(1, in_channels, resolution, resolution))
        except Exception as exc:
            raise ArchitectureError(
                f"{self.name}: a member fails on {shape} inputs ({type(exc).__name__}: "
                f"{first_line(exc, 100)}); make the space take the dataset's channels and "
                "size (e.g. through space_args)"
            ) from None
        finally:
            model.train(mode)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (1, num_classes):
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ArchitectureError(
                f"{self.name}: a member gives {got} for one {shape} input, not (1, "
                f"{num_classes}) logits; make the space output the dataset's {num_classes} "
                "classes (e.g. through space_args)"
            )

    def feature_taps(self, arch: Architecture) -> list[str]:
        """The module paths named in the config's ``space_taps`` (stored with the
        architecture): an NNI space marks no stages itself, so KD is on logits only
        unless taps are named."""
        return list(arch.get("taps", []))

    # --- validation -----------------------------------------------------------------------
    def validate(self, arch: Architecture) -> None:
        check_header(self, arch, ("args", "sample", "fingerprint"), ("taps",))
        where = f"{self.name} architecture"
        if arch["fingerprint"] != self.fingerprint:
            raise arch_error(
                where,
                f"stored for space fingerprint {str(arch['fingerprint'])[:32]!r}, but the "
                f"space's mutables now give {self.fingerprint!r}: the space changed since; "
                "restore its code, or search it again",
            )
        if arch["args"] != self.args:
            raise arch_error(where, f"built with space_args {arch['args']}, not {self.args}")
        if arch.get("taps", []) != self.taps:
            raise arch_error(where, f"taps {arch.get('taps')} differ from {self.taps}")
        sample = arch["sample"]
        if not isinstance(sample, dict):
            raise arch_error(f"{where} 'sample'", f"expected an object, got {sample!r:.60}")
        unknown = sorted(str(k) for k in sample if k not in self._decisions)
        if unknown:
            raise arch_error(f"{where} 'sample'", f"unknown mutable(s) {', '.join(unknown)}")
        for label, decision in self._decisions.items():
            if label not in sample:
                raise arch_error(f"{where} 'sample'", f"missing mutable {label!r}")
            if not decision.contains(sample[label]):
                raise arch_error(
                    f"{where} 'sample'.{label}",
                    f"{sample[label]!r:.60} is not in {decision.distribution}",
                )


_CACHE: dict[str, NNISpace] = {}
_CACHE_LOCK = threading.Lock()


def nni_space(name: str, args: Any = None, taps: Any = None) -> NNISpace:
    """The space ``name`` constructed with ``args`` (and ``taps`` for feature losses), made
    once per process for each (name, args, taps)."""
    if args is not None and not isinstance(args, dict):
        raise ArchitectureError(f"{name}: space_args must be a mapping, got {args!r:.60}")
    if taps is not None and not (isinstance(taps, list) and all(isinstance(t, str) for t in taps)):
        raise ArchitectureError(f"{name}: taps must be a list of module paths, got {taps!r:.60}")
    key = json.dumps([name, args or {}, taps or []], sort_keys=True, default=repr)
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = NNISpace(name, args, taps)
        return _CACHE[key]
