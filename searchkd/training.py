"""The teacher's optimizer and schedule."""

from __future__ import annotations

import math

import torch


def sgd_with_cosine(
    params, lr: float, momentum: float, weight_decay: float, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """SGD (Nesterov) whose learning rate follows a cosine from ``lr`` to 0 per step."""
    optimizer = torch.optim.SGD(
        params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=momentum > 0
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
    )
    return optimizer, scheduler
