"""Calibration: activation ranges from data without training, the heart of post-training
quantisation (and the check that a prepared float network still computes what it did)."""

from __future__ import annotations

import torch
from torch import nn

from searchkd.quantize.prepare import activation_quantizers

CALIBRATION_IMAGES = 512
CALIBRATION_BATCH = 64


@torch.no_grad()
def calibrate(
    model: nn.Module, images: torch.Tensor, batch_size: int = CALIBRATION_BATCH
) -> nn.Module:
    """Set every activation range of the prepared ``model`` to the min and max it sees on
    ``images`` (in evaluation mode: batch norms keep their running statistics, weights are
    untouched). Returns ``model``, in evaluation mode."""
    quantizers = list(activation_quantizers(model))
    model.eval()
    for quantizer in quantizers:
        quantizer.reset()
        quantizer.calibrating = True
    try:
        for start in range(0, len(images), batch_size):
            model(images[start : start + batch_size])
    finally:
        for quantizer in quantizers:
            quantizer.calibrating = False
    return model
