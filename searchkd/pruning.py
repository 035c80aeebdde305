"""Early stopping of poor candidates: asynchronous successive halving on validation accuracy.

A candidate is checked at its *rungs*, the epochs ``min_epochs · eta^k`` before its last
(ASHA, Li et al. 2020, as Ray Tune's ``ASHAScheduler`` applies it): it goes on only if its
validation accuracy at that epoch reaches the top ``1/eta`` of what earlier candidates
had at the same epoch. With nothing to compare to yet, it goes on.

Optuna's pruners report one objective per step, and ``Trial.report`` is not available
in multi-objective studies; our objectives beyond accuracy (MACs, latency) are known
before training, so the rung comparison reads accuracy alone, from the per-epoch
accuracies every trial of the study records (``epoch_accuracies``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


class Pruned(Exception):
    """Raised from a training loop's epoch callback to stop a candidate at a rung."""

    def __init__(self, epoch: int, accuracies: Sequence[float], cutoff: float) -> None:
        super().__init__(f"stopped after epoch {epoch}: accuracy below the rung's {cutoff:.4f}")
        self.epoch = epoch
        self.accuracies = list(accuracies)
        self.cutoff = cutoff


class SuccessiveHalving:
    """Rungs and the keep-or-stop rule for proxy runs of ``epochs`` epochs."""

    def __init__(self, epochs: int, eta: int = 3, min_epochs: int = 1) -> None:
        if eta < 2 or min_epochs < 1:
            raise ValueError("eta must be >= 2 and min_epochs >= 1")
        self.eta = eta
        self.rungs: list[int] = []
        rung = min_epochs
        while rung < epochs:
            self.rungs.append(rung)
            rung *= eta

    def cutoff(self, epoch: int, history: Iterable[Sequence[float]]) -> float | None:
        """The accuracy a candidate needs at ``epoch`` to go on; None when it need not be
        checked there (not a rung, or no earlier candidate reached this epoch)."""
        if epoch not in self.rungs:
            return None
        recorded = [accuracies[epoch - 1] for accuracies in history if len(accuracies) >= epoch]
        if not recorded:
            return None
        return float(np.percentile(recorded, (1 - 1 / self.eta) * 100))

    def check(
        self, epoch: int, accuracies: Sequence[float], history: Iterable[Sequence[float]]
    ) -> None:
        """Raise :class:`Pruned` when ``accuracies[epoch - 1]`` falls below the rung's cutoff."""
        cutoff = self.cutoff(epoch, history)
        if cutoff is not None and accuracies[epoch - 1] < cutoff:
            raise Pruned(epoch, accuracies, cutoff)


class Skipped(Pruned):
    """Raised before training: a training-free score predicts a poor candidate. Recorded
    like a stopped candidate (not counted as trained), with the score in ``attrs``."""

    def __init__(self, score_name: str, score: float, cutoff: float, quantile: float, n: int):
        Exception.__init__(
            self,
            f"skipped before training: {score_name} score {score:.4g} below {cutoff:.4g}, "
            f"the {quantile:.0%} quantile of {n} earlier candidates",
        )
        self.epoch = 0
        self.accuracies = []
        self.cutoff = cutoff
        self.attrs = {"zero_cost": score, "skipped": True}
