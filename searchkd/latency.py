"""Latency on the target device from a per-block lookup table (FBNet, Once-for-All).

A student's latency only means something on the device that will run it, and the search
rarely runs there. So the target profiles, once, every block configuration the space can
produce at the deployment input size (`searchkd profile-device`); the search then predicts
a candidate's latency as the sum of its blocks' entries, in microseconds, on any machine.

A network is cut into *units* that run one after another: the stem, every block of every
stage, and the tail (1x1 head, pooling, classifier). A unit's key names everything its
latency depends on (block kind, kernel, expansion, SE, activation, channels in and out,
stride and input size), so two architectures that share a block share its entry.
Summing ignores what runs between units (a Python call per module, which the units' own
timings include) and cache effects across units; `--validate` measures how much that
costs in rank correlation and percentage error on random members.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from search_spaces import get_space
from search_spaces.base import uniform_decisions
from search_spaces.mobilenet_units import LATENCY_UNITS
from searchkd.checkpoint import check_format_version, read_json, write_json
from searchkd.errors import SearchKDError
from searchkd.meters import Latency, LatencyMeter, MeterSpec, Timing

# The ONNX Runtime meter has its own module; scripts and benchmarks import it from here too.
from searchkd.onnx_meter import OnnxRuntimeMeter as OnnxRuntimeMeter

TABLE_FORMAT = "searchkd-latency-table"
# Tables made before the version was written have none and read as version 1.
TABLE_FORMAT_VERSION = 1


def _decomposition(space: str):
    if space not in LATENCY_UNITS:
        raise SearchKDError(
            f"no latency table for the {space!r} space: profile-device supports "
            f"{', '.join(LATENCY_UNITS)} (whose table also serves mobilenet-reduced); time "
            "this space's students as the search goes (--latency onnxruntime, the default, "
            "or torch-cpu)"
        )
    return LATENCY_UNITS[space]


@dataclass
class LatencyTable:
    """Milliseconds per unit key, measured on one device for one input size."""

    space: str
    input_shape: tuple[int, int, int]
    num_classes: int
    meter: str
    entries: dict[str, float]
    # What timing an empty module costs: every entry includes it once, a whole network
    # once in all, so a prediction subtracts it for all units but one.
    call_overhead_ms: float = 0.0
    # measured ≈ scale × (sum of units) + offset, fitted by `profile-device --validate`:
    # whole networks miss caches their units alone do not, which a plain sum ignores.
    scale: float = 1.0
    offset_ms: float = 0.0

    @classmethod
    def from_spec(cls, spec: MeterSpec, timing: Timing) -> LatencyTable:
        """The table a ``lut:PATH`` meter names; it predicts, so ``timing`` is unused."""
        return cls.load(spec.argument)

    @property
    def name(self) -> str:
        return f"lut:{self.meter}"

    def predict(self, arch: dict[str, Any]) -> Latency:
        """The architecture's latency: the calibrated sum of its units' entries."""
        total = self.scale * self.unit_sum(arch) + self.offset_ms
        return Latency(median_ms=max(total, 0.0), spread_ms=0.0, repeats=1, meter=self.name)

    def unit_sum(self, arch: dict[str, Any]) -> float:
        """The plain sum of the architecture's units (one call overhead in all)."""
        units_of, _ = _decomposition(self.space)
        c, h, _ = self.input_shape
        units = units_of(arch, c, h, self.num_classes)
        total = -self.call_overhead_ms * (len(units) - 1)
        for unit in units:
            if unit.key not in self.entries:
                raise SearchKDError(
                    f"the latency table lacks unit {unit.key}; profile again with "
                    f"`searchkd profile-device --space {self.space} --input "
                    f"{'x'.join(map(str, self.input_shape))}` for this architecture family"
                )
            total += self.entries[unit.key]
        return total

    def check_matches(self, space: str, input_shape: tuple[int, ...], num_classes: int) -> None:
        """Refuse a table made for another space, input size or class count."""
        want = (space, tuple(input_shape), num_classes)
        have = (self.space, self.input_shape, self.num_classes)
        if want != have:
            raise SearchKDError(
                f"latency table is for space {have[0]}, input {'x'.join(map(str, have[1]))}, "
                f"{have[2]} classes, but this search has space {want[0]}, input "
                f"{'x'.join(map(str, want[1]))}, {want[2]} classes; profile the target again"
            )

    def save(self, path: str | Path) -> None:
        write_json(
            {
                "format": TABLE_FORMAT,
                "format_version": TABLE_FORMAT_VERSION,
                "space": self.space,
                "input_shape": list(self.input_shape),
                "num_classes": self.num_classes,
                "meter": self.meter,
                "call_overhead_ms": self.call_overhead_ms,
                "scale": self.scale,
                "offset_ms": self.offset_ms,
                "entries": self.entries,
            },
            path,
        )

    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        data = read_json(path, "latency table")
        if not isinstance(data, dict) or data.get("format") != TABLE_FORMAT:
            raise SearchKDError(
                f"{path} is not a latency table (no 'format: {TABLE_FORMAT}'); make one with "
                "`searchkd profile-device`"
            )
        if "format_version" in data:
            check_format_version(data, path, "latency table", TABLE_FORMAT_VERSION)
        try:
            shape = tuple(int(v) for v in data["input_shape"])
            entries = {str(k): float(v) for k, v in data["entries"].items()}
            table = cls(
                data["space"],
                shape,
                int(data["num_classes"]),
                str(data["meter"]),
                entries,
                float(data.get("call_overhead_ms", 0.0)),
                float(data.get("scale", 1.0)),
                float(data.get("offset_ms", 0.0)),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SearchKDError(
                f"latency table {path} is malformed ({exc}); profile again"
            ) from None
        values = [*entries.values(), table.call_overhead_ms, table.scale]
        if (
            len(shape) != 3
            or not all(math.isfinite(v) and v >= 0 for v in values)
            or not math.isfinite(table.offset_ms)  # JSON allows NaN; it would pass any budget
        ):
            raise SearchKDError(f"latency table {path} is malformed; profile again")
        return table


def profile_device(
    space: str,
    input_shape: tuple[int, int, int],
    num_classes: int,
    meter: LatencyMeter,
    only_for: list[dict[str, Any]] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> LatencyTable:
    """Measure every unit the space can produce (or only those of ``only_for``)."""
    units_of, all_units = _decomposition(space)
    c, h, w = input_shape
    if h != w:
        raise SearchKDError(f"input {c}x{h}x{w}: the spaces take square inputs")
    if only_for is None:
        units = list(all_units(c, h, num_classes))
    else:
        unique = {u.key: u for arch in only_for for u in units_of(arch, c, h, num_classes)}
        units = list(unique.values())
    overhead = meter.measure(nn.Identity(), input_shape).median_ms
    entries = {}
    for done, unit in enumerate(units):
        entries[unit.key] = meter.measure(unit.build(), unit.input_shape).median_ms
        if progress is not None:
            progress(done + 1, len(units))
    return LatencyTable(space, (c, h, w), num_classes, meter.name, entries, overhead)


@dataclass
class Validation:
    """How well a table ranks and predicts directly measured networks."""

    n: int
    kendall_tau: float
    mape_percent: float  # of the plain sum of units
    calibrated_mape_percent: float  # of the fitted line, two-fold cross-validated
    scale: float  # the line fitted on all n, for the table to keep
    offset_ms: float
    rows: list[tuple[float, float]]  # (sum of units ms, measured ms)


def random_members(space: str, n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` architectures with every decision drawn uniformly."""
    target = get_space(space)
    rng = random.Random(seed)
    return [target.from_decisions(uniform_decisions(target.decisions(), rng)) for _ in range(n)]


def time_in_passes(
    table: LatencyTable, meter: LatencyMeter, archs: list[dict[str, Any]], passes: int
) -> list[list[float]]:
    """Median latency (ms) of each member, once per pass, the passes one after another
    (``[pass][member]``), at the table's input. Each model is built anew for its timing,
    so one model is in memory at a time."""
    space = get_space(table.space)
    c, h, _ = table.input_shape

    def timed(arch: dict[str, Any]) -> float:
        model = space.build(arch, c, h, table.num_classes)
        return meter.measure(model, table.input_shape).median_ms

    return [[timed(arch) for arch in archs] for _ in range(max(1, passes))]


def validate_table(
    table: LatencyTable, meter: LatencyMeter, n: int = 50, seed: int = 0, passes: int = 1
) -> Validation:
    """Compare the table with direct measurements of ``n`` random members, and fit the
    line that calibrates its sums (its error is reported on held-out halves).

    With ``passes`` > 1 every member is timed once per pass, the passes one after another,
    and its median taken: a slow phase of the machine that outlasts one member's rounds
    then hits each member in one pass at most, instead of shifting that member alone
    (``benchmarks/latency_drift.py`` shows the size of such phases)."""
    archs = random_members(table.space, n, seed)
    timings = time_in_passes(table, meter, archs, passes)
    rows = [
        (table.unit_sum(arch), statistics.median(timing[i] for timing in timings))
        for i, arch in enumerate(archs)
    ]
    halves = (rows[0::2], rows[1::2])
    held_out = [
        _mape(test, *fit_line(train)) for train, test in (halves, halves[::-1]) if train and test
    ]
    scale, offset = fit_line(rows)
    return Validation(
        n=len(rows),
        kendall_tau=kendall_tau(rows),
        mape_percent=_mape(rows, 1.0, 0.0),
        calibrated_mape_percent=sum(held_out) / len(held_out) if held_out else float("nan"),
        scale=scale,
        offset_ms=offset,
        rows=rows,
    )


def fit_line(rows: list[tuple[float, float]]) -> tuple[float, float]:
    """(scale, offset) minimising the squared *relative* error of scale·x + offset against
    y, so fast and slow networks weigh alike; the identity when it cannot be fitted."""
    sw = sx = sy = sxx = sxy = 0.0
    for x, y in rows:
        w = 1.0 / (y * y) if y > 0 else 0.0
        sw, sx, sy = sw + w, sx + w * x, sy + w * y
        sxx, sxy = sxx + w * x * x, sxy + w * x * y
    determinant = sw * sxx - sx * sx
    if len(rows) < 2 or determinant <= 1e-12 * max(sw * sxx, 1e-300):
        return 1.0, 0.0
    scale = (sw * sxy - sx * sy) / determinant
    offset = (sy - scale * sx) / sw
    return (scale, offset) if scale > 0 else (1.0, 0.0)


def _mape(rows: list[tuple[float, float]], scale: float, offset: float) -> float:
    return 100 * sum(abs(scale * x + offset - y) / y for x, y in rows) / len(rows)


def kendall_tau(pairs: list[tuple[float, float]]) -> float:
    """Kendall's tau-b between the two columns (ties in either column handled)."""
    concordant = discordant = ties_a = ties_b = 0
    for i in range(len(pairs)):
        for j in range(i + 1, len(pairs)):
            da = pairs[i][0] - pairs[j][0]
            db = pairs[i][1] - pairs[j][1]
            if da == 0 and db == 0:
                continue
            if da == 0:
                ties_a += 1
            elif db == 0:
                ties_b += 1
            elif (da > 0) == (db > 0):
                concordant += 1
            else:
                discordant += 1
    denominator = math.sqrt((concordant + discordant + ties_a) * (concordant + discordant + ties_b))
    return (concordant - discordant) / denominator if denominator else 0.0
