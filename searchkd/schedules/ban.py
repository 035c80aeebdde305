"""Born-again networks (Furlanello et al. 2018): generations of one architecture.

Generation 1 distils from the teacher (it is the KD student, and reuses a finished KD run
of the same recipe); generation k distils from generation k−1, with the same recipe and a
new seed (``seed + k − 1``), so each generation starts from other weights.
The exported student is the last generation; with ``ensemble`` the accuracy of averaging the
generations' softmax outputs is reported beside it (the paper's BAN ensemble), since a
single deployable module cannot carry several networks.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from searchkd.data import Dataset
from searchkd.errors import SearchKDError
from searchkd.schedules.base import ScheduleContext, ScheduleResult, fingerprint
from searchkd.trainer import FixedTeacher


@torch.no_grad()
def ensemble_accuracy(models: list[nn.Module], data: Dataset, batch_size: int = 500) -> float:
    """Validation accuracy of the mean of the models' softmax outputs, each model run on
    its own device (a generation that taught the next one was moved to the GPU, the last
    one comes back on the CPU)."""
    for model in models:
        model.eval()
    correct = 0
    for start in range(0, len(data.val_x), batch_size):
        x = data.val_x[start : start + batch_size]
        probs = torch.stack([_probabilities(model, x) for model in models]).mean(dim=0)
        correct += int((probs.argmax(dim=1) == data.val_y[start : start + batch_size]).sum())
    return correct / max(1, len(data.val_x))


def _probabilities(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    device = next(model.parameters()).device
    return model(x.to(device)).softmax(dim=1).cpu()


def run_ban(ctx: ScheduleContext) -> ScheduleResult:
    generations = ctx.options.generations
    if generations < 1:
        raise SearchKDError(f"ban: {generations} generations; use at least one")
    name, teacher = ctx.teacher.name, ctx.teacher.model
    taps, preact = ctx.teacher.taps, ctx.teacher.preact
    models, rows = [], []
    for k in range(1, generations + 1):
        recipe = replace(ctx.recipe, seed=ctx.recipe.seed + k - 1)
        guide = FixedTeacher(name, teacher, taps, preact)
        # generation 1 is exactly the KD student: share its run folder, so it is reused
        folder = ctx.folder / ("kd" if k == 1 else f"ban_generation_{k}")
        trained = ctx.train(ctx.arch, guide, recipe, folder, f"generation {k}/{generations}")
        models.append(trained.model)
        name = f"generation_{k}@{fingerprint(trained.model)}"
        teacher, taps, preact = trained.model, ctx.taps(ctx.arch), ctx.preact(ctx.arch)
        rows.append(
            {
                "generation": k,
                "teacher": trained.result.teachers[-1],
                "name": name,
                "accuracy": trained.result.accuracy,
                "seed": recipe.seed,
                "train_seconds": trained.result.train_seconds,
            }
        )
    details = {"teacher": ctx.teacher.name, "generations": rows}
    if ctx.options.ensemble:
        details["ensemble_accuracy"] = ensemble_accuracy(models, ctx.data)
    return ScheduleResult(models[-1], trained.result, details)
