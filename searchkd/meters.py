"""Latency meters: what one is, how its name is read, and the registry that builds it.

A meter is named in the config (``latency.meter``), on the command line (``--latency``,
``profile-device --meter``) and inside another meter (``ray:RESOURCE:METER``); all of them
are read here, against :data:`METERS`. Each entry names the class that implements the
meter by import path, so this module stays free of torch, ONNX Runtime and Ray and the
config can check a name without loading any of them. Adding a meter is its own module
(a class with ``name``, ``measure`` and a ``from_spec`` classmethod) plus one
:class:`MeterKind` line below; docs/latency.md walks through it.
"""

from __future__ import annotations

import importlib
import importlib.util
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from searchkd.errors import SearchKDError

if TYPE_CHECKING:
    from torch import nn

    from searchkd.latency import LatencyTable


@dataclass(frozen=True)
class Latency:
    """A latency measurement: median over repeats and the spread around it."""

    median_ms: float
    spread_ms: float  # inter-quartile range of the repeat medians
    repeats: int  # rounds measured (more than asked when the first ones disagreed)
    meter: str
    # A meter that times a quantised model also times the same network in fp32 on the same
    # runtime (the ``onnxruntime-int8`` meter: the ``onnxruntime`` model), so a trial can
    # record both; None for the others.
    fp32_ms: float | None = None


@runtime_checkable
class LatencyMeter(Protocol):
    """Times a network on one device. ``name`` says where and how (``torch-cpu:1t``): it
    is stored with every trial, so two studies' latencies are compared only when it
    matches."""

    @property
    def name(self) -> str: ...

    def measure(self, model: nn.Module, input_shape: tuple[int, ...]) -> Latency: ...


@dataclass(frozen=True)
class Timing:
    """How every meter times: ``warmup`` untimed calls, then rounds of ``runs`` timed
    calls each, ``repeats`` rounds and more while their spread exceeds ``tolerance`` of
    their median (up to ``max_repeats``; :func:`repeat_until_stable`), on ``threads`` CPU
    threads. One value instead of six arguments, so a new meter takes all of them at once
    and a ``ray:`` meter hands them to the node that times."""

    threads: int = 1
    warmup: int = 5
    runs: int = 20
    repeats: int = 3
    tolerance: float | None = None
    max_repeats: int = 10


def _spread(values: list[float]) -> float:
    """Inter-quartile range; 0 for one value."""
    if len(values) < 2:
        return 0.0
    quartiles = statistics.quantiles(values, n=4)
    return float(quartiles[2] - quartiles[0])


def repeat_until_stable(
    one_round: Callable[[], float], repeats: int, max_repeats: int, tolerance: float | None
) -> tuple[float, float, int]:
    """(median, inter-quartile spread, rounds) of round medians (ms).

    ``repeats`` rounds, then more while their spread exceeds ``tolerance`` x median, up to
    ``max_repeats``: a busy machine (another process waking up mid-round) shows as a spread
    round, and more rounds push the median back to the steady value instead of recording
    the noise. ``tolerance`` None, or a single round, keeps the fixed count."""
    rounds = [one_round() for _ in range(repeats)]
    if tolerance is not None and repeats >= 2:
        while len(rounds) < max_repeats and _spread(rounds) > tolerance * statistics.median(rounds):
            rounds.append(one_round())
    return statistics.median(rounds), _spread(rounds), len(rounds)


@dataclass(frozen=True)
class MeterKind:
    """One registered meter: the prefix its names start with, what it does (for
    ``--help``) and where its class is, as ``"module:Class"``, imported only when a meter
    of this kind is built.

    ``argument`` names what may follow ``name:`` (``Provider``, ``PATH``; empty: nothing),
    required unless ``optional``. ``hint`` is said in parentheses where the meters are
    listed in an error. ``times_here``: it times on the machine it is built on, so it may
    run inside a ``ray:`` meter. ``wraps``: its argument is ``ARGUMENT[:METER]``, with
    METER one that times here."""

    name: str
    help: str
    target: str
    argument: str = ""
    optional: bool = False
    hint: str = ""
    times_here: bool = True
    wraps: bool = False

    @property
    def usage(self) -> str:
        """How a name of this kind is written: ``onnxruntime[:Provider]``."""
        if self.wraps:
            return f"{self.name}:{self.argument}[:METER]"
        if not self.argument:
            return self.name
        return f"{self.name}[:{self.argument}]" if self.optional else f"{self.name}:{self.argument}"

    def load(self) -> type:
        """The class that implements the meter (its module imported now)."""
        module, _, attribute = self.target.partition(":")
        return getattr(importlib.import_module(module), attribute)


# The order is the order meters are listed in help and errors.
METERS: dict[str, MeterKind] = {
    kind.name: kind
    for kind in (
        MeterKind(
            "torch-cpu",
            "PyTorch eager on this machine's CPU, batch 1",
            "searchkd.torch_meter:TorchLatencyMeter",
        ),
        MeterKind(
            "torch-cuda",
            "PyTorch eager on the GPU, timed with CUDA events",
            "searchkd.torch_meter:TorchLatencyMeter",
        ),
        MeterKind(
            "onnxruntime",
            "exported, timed in ONNX Runtime on that execution provider (default: the CPU)",
            "searchkd.onnx_meter:OnnxRuntimeMeter",
            argument="Provider",
            optional=True,
        ),
        MeterKind(
            "onnxruntime-int8",
            "as onnxruntime, after static int8 quantisation (QDQ, per-tensor)",
            "searchkd.int8_meter:OnnxRuntimeInt8Meter",
            argument="Provider",
            optional=True,
        ),
        MeterKind(
            "lut",
            "a per-block table profiled on the target by profile-device",
            "searchkd.latency:LatencyTable",
            argument="PATH",
            hint="see profile-device",
            times_here=False,
        ),
        MeterKind(
            "ray",
            "timed on the Ray node advertising RESOURCE, by METER (default torch-cpu)",
            "searchkd.ray_meter:RayLatencyMeter",
            argument="RESOURCE",
            hint="timed on the Ray node advertising it",
            times_here=False,
            wraps=True,
        ),
    )
}


@dataclass(frozen=True)
class MeterSpec:
    """A meter name read against the registry: ``onnxruntime:CUDAExecutionProvider`` is
    kind ``onnxruntime`` with argument ``CUDAExecutionProvider``."""

    name: str
    kind: MeterKind
    argument: str  # what follows "kind:", "" when nothing does


def _listing(parts: list[str]) -> str:
    return ", ".join(parts[:-1]) + f" or {parts[-1]}" if len(parts) > 1 else "".join(parts)


def meter_listing(times_here: bool = False) -> str:
    """The meter names one may write, for help and errors: ``torch-cpu, ... or
    ray:RESOURCE[:METER] (timed on the Ray node advertising it)``; with ``times_here``
    only those that time on the machine they are built on, without hints."""
    if times_here:
        return _listing([kind.usage for kind in METERS.values() if kind.times_here])
    return _listing(
        [kind.usage + (f" ({kind.hint})" if kind.hint else "") for kind in METERS.values()]
    )


def meter_help() -> str:
    """Every meter with what it does, for ``--help``."""
    return "; ".join(f"{kind.usage}: {kind.help}" for kind in METERS.values())


def _read(name: str, installed: bool = True) -> tuple[MeterSpec | None, str | None]:
    """(the spec, None) for a well-formed name of a registered meter (whose module is
    there, with ``installed``), else (None, why)."""
    prefix, colon, argument = name.partition(":")
    kind = METERS.get(prefix)
    if kind is None:
        return None, f"unknown latency meter {name!r}; use {meter_listing()}"
    if kind.wraps:
        place, _, inner = argument.partition(":")
        inner_kind = METERS.get(inner.partition(":")[0]) if inner else None
        inner_ok = not inner or (
            inner_kind is not None and inner_kind.times_here and _read(inner)[1] is None
        )
        well_formed = bool(place) and inner_ok
    elif not kind.argument:
        well_formed = not colon
    else:
        well_formed = bool(argument) if (colon or not kind.optional) else True
    if not well_formed:
        extra = f" with METER {meter_listing(times_here=True)}" if kind.wraps else ""
        return None, f"latency meter {name!r}: write it as {kind.usage}{extra}"
    module = kind.target.partition(":")[0]
    if not installed:
        return MeterSpec(name, kind, argument), None
    try:
        found = importlib.util.find_spec(module) is not None
    except ImportError:  # a parent package that is missing
        found = False
    if not found:
        return None, f"latency meter {name!r} is unavailable: its module {module} is not installed"
    return MeterSpec(name, kind, argument), None


def meter_problem(name: str, installed: bool = True) -> str | None:
    """What is wrong with a meter name, in one line: unknown, malformed, or (with
    ``installed``) its module missing. None when a meter of that name can be built, as
    far as can be told without importing it."""
    return _read(name, installed)[1]


def parse_meter(name: str) -> MeterSpec:
    """The name read against the registry; a :class:`SearchKDError` saying what is
    wrong, in one line, when it cannot be."""
    spec, problem = _read(name)
    if spec is None:
        raise SearchKDError(problem)
    return spec


def make_meter(name: str, timing: Timing | None = None) -> LatencyMeter | LatencyTable:
    """The meter called ``name``, timing with ``timing`` (defaults: :class:`Timing`).

    Built by its kind's class, ``from_spec(spec, timing)``, which checks what only it can
    (is CUDA there, is the provider installed, does the Ray cluster have the resource).
    A ``lut:PATH`` name gives the loaded :class:`~searchkd.latency.LatencyTable`, which
    predicts from the architecture instead of timing a network."""
    spec = parse_meter(name)
    return spec.kind.load().from_spec(spec, timing if timing is not None else Timing())
