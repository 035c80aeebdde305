"""Budgets: what a student may cost, absolute or relative to the teacher.

A value is either absolute (``4e6``, ``"4M"``, ``"1.5G"`` for MACs and params;
milliseconds for latency) or relative to the teacher (``"0.25x"``). Relative
values are resolved once, against the teacher's own cost measured on the same
input shape and meter, so a budget means the same thing in every trial.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from searchkd.errors import BudgetError

_SUFFIX = {"": 1.0, "k": 1e3, "K": 1e3, "m": 1e6, "M": 1e6, "g": 1e9, "G": 1e9}
_ABSOLUTE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([kKmMgG]?)\s*$")
_RELATIVE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*[xX]\s*$")


@dataclass(frozen=True)
class Limit:
    """One unresolved budget value: a number, or a fraction of the teacher's cost."""

    value: float
    relative: bool

    def resolve(self, teacher_value: float | None) -> float:
        if not self.relative:
            return self.value
        if teacher_value is None:
            raise BudgetError(
                "a relative budget needs the teacher's cost, which is unknown here; "
                "give an absolute value instead"
            )
        return self.value * teacher_value

    def __str__(self) -> str:
        return f"{self.value:g}x" if self.relative else f"{self.value:g}"


def parse_limit(raw: Any, what: str) -> Limit | None:
    """Parse one budget value; ``None``/empty means 'no limit'."""
    if raw is None or (isinstance(raw, str) and raw.strip().lower() in ("", "none")):
        return None
    if isinstance(raw, bool):
        raise BudgetError(f"{what}: {raw!r} is not a budget; use a number like 4M or 0.25x")
    if isinstance(raw, int | float):
        value, relative = float(raw), False
    else:
        text = str(raw)
        if match := _RELATIVE.match(text):
            value, relative = float(match.group(1)), True
        elif match := _ABSOLUTE.match(text):
            value, relative = float(match.group(1)) * _SUFFIX[match.group(2)], False
        else:
            raise BudgetError(
                f"{what}: cannot read {text!r}; use a number (4000000, 4M, 1.5G) "
                "or a fraction of the teacher (0.25x)"
            )
    if not math.isfinite(value) or value <= 0:
        raise BudgetError(f"{what}: {raw!r} must be a positive number")
    return Limit(value, relative)


@dataclass(frozen=True)
class Budget:
    """Resolved, absolute limits. ``None`` means unconstrained."""

    max_macs: float | None = None
    max_params: float | None = None
    max_latency_ms: float | None = None

    NAMES = ("macs", "params", "latency_ms")

    @property
    def limits(self) -> dict[str, float | None]:
        return {
            "macs": self.max_macs,
            "params": self.max_params,
            "latency_ms": self.max_latency_ms,
        }

    def constraints(self, measured: dict[str, float | None]) -> list[float]:
        """Optuna constraint values, one per budget name: > 0 means over budget.

        Expressed relative to the limit (0.1 = 10 % over) so the size of a
        violation is comparable across metrics for constraint-aware samplers. An
        unmeasured metric (latency of a candidate rejected on MACs) counts as met.
        """
        values = []
        for name in self.NAMES:
            limit, value = self.limits[name], measured.get(name)
            if limit is None or value is None or not math.isfinite(value):
                values.append(0.0 if limit is None or value is None else 1.0)
            else:
                values.append(value / limit - 1.0)
        return values

    def violations(self, measured: dict[str, float | None]) -> list[str]:
        """Human-readable reasons a cost is over budget (empty when within)."""
        reasons = []
        for name in self.NAMES:
            limit, value = self.limits[name], measured.get(name)
            if limit is not None and value is not None and value > limit:
                reasons.append(f"{name} {_fmt(name, value)} > {_fmt(name, limit)}")
        return reasons

    def describe(self) -> str:
        parts = [f"{n} <= {_fmt(n, v)}" for n, v in self.limits.items() if v is not None]
        return ", ".join(parts) if parts else "no budget"


def _fmt(name: str, value: float) -> str:
    if name == "latency_ms":
        return f"{value:.3g} ms"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g}{unit}"
    return f"{value:.0f}"


def resolve_budget(
    max_macs: Any = None,
    max_params: Any = None,
    max_latency_ms: Any = None,
    teacher: dict[str, float | None] | None = None,
) -> Budget:
    """Parse and resolve budget values against the teacher's cost."""
    teacher = teacher or {}
    macs = parse_limit(max_macs, "max_macs")
    params = parse_limit(max_params, "max_params")
    latency = parse_limit(max_latency_ms, "max_latency_ms")
    return Budget(
        max_macs=macs.resolve(teacher.get("macs")) if macs else None,
        max_params=params.resolve(teacher.get("params")) if params else None,
        max_latency_ms=latency.resolve(teacher.get("latency_ms")) if latency else None,
    )
