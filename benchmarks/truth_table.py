"""A ground-truth table: every member of a small space trained once or more, looked up
instead of trained, so a search can be replayed many times at the cost of a dictionary
access (the NAS-Bench-201 idea, with our teacher in the loop).

The table is made by ``benchmarks/ground_truth.py``; ``benchmarks/replay_search.py`` searches it.
Accuracies are stored per training setting and seed under keys ``e<epochs>_s<seed>``
(``e2_s0``: the 2-epoch proxy, seed 0); a *setting* is the part before ``_s``.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from searchkd.errors import SearchKDError


def arch_key(arch: dict[str, Any]) -> str:
    return json.dumps(arch, sort_keys=True)


@dataclass
class Member:
    """One architecture's row: costs and accuracy per ``e<epochs>_s<seed>`` key."""

    index: int
    decisions: dict[str, Any]
    macs: int
    params: int
    latency_ms: float | None
    accuracy: dict[str, float]
    zero_cost: dict[str, list[float]] | None = None  # score name -> per init seed

    def runs(self, setting: str) -> list[float]:
        """Accuracies of every recorded seed of ``setting``, in seed order."""
        prefix = setting + "_s"
        keys = sorted(
            (k for k in self.accuracy if k.startswith(prefix) and k[len(prefix) :].isdigit()),
            key=lambda k: int(k[len(prefix) :]),
        )
        return [self.accuracy[k] for k in keys]

    def mean(self, setting: str) -> float | None:
        runs = self.runs(setting)
        return statistics.fmean(runs) if runs else None

    def cost(self, metric: str) -> float | None:
        return {"macs": self.macs, "params": self.params, "latency_ms": self.latency_ms}[metric]


class GroundTruth:
    """The table in memory: members by index and by architecture."""

    def __init__(self, meta: dict[str, Any], members: list[Member]) -> None:
        from search_spaces import get_space

        self.meta = meta
        self.members = members
        self.space = get_space(meta["space"])
        self._by_arch = {arch_key(self.space.from_decisions(m.decisions)): m for m in self.members}

    @classmethod
    def load(cls, path: str | Path) -> GroundTruth:
        try:
            raw = json.loads(Path(path).read_text())
            members = [
                Member(
                    index=row["member"],
                    decisions=row["decisions"],
                    macs=row["macs"],
                    params=row["params"],
                    latency_ms=row["latency_ms"],
                    accuracy=row["accuracy"],
                    zero_cost=row.get("zero_cost"),
                )
                for row in raw["members"]
            ]
        except FileNotFoundError:
            raise SearchKDError(
                f"ground-truth table {path} not found; build it with benchmarks/ground_truth.py"
            ) from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SearchKDError(f"ground-truth table {path} is malformed ({exc})") from None
        meta = {k: v for k, v in raw.items() if k != "members"}
        return cls(meta, members)

    def member(self, arch: dict[str, Any]) -> Member:
        try:
            return self._by_arch[arch_key(arch)]
        except KeyError:
            raise SearchKDError(f"architecture not in the {self.space.name} ground truth") from None

    def settings(self) -> list[str]:
        return sorted({k.rsplit("_s", 1)[0] for m in self.members for k in m.accuracy})

    def noise(self, setting: str) -> float:
        """Seed-to-seed noise: the mean over members of the sample standard deviation of
        their recorded seeds (members with one seed are skipped)."""
        spreads = [statistics.stdev(runs) for m in self.members if len(runs := m.runs(setting)) > 1]
        if not spreads:
            raise SearchKDError(f"setting {setting!r} has no member with two seeds")
        return statistics.fmean(spreads)

    def feasible(self, limits: dict[str, float]) -> list[Member]:
        """Members within every limit (metric -> maximum)."""
        return [
            m
            for m in self.members
            if all((c := m.cost(k)) is not None and c <= v for k, v in limits.items())
        ]
