"""Distillation losses: one formula per module, looked up by name, combined with weights.

Importing this package imports every loss module, which fills the :data:`LOSSES` registry.
"""

from searchkd.distill import (  # noqa: F401  (fills the registry)
    ab,
    attention,
    ce,
    crd,
    dense,
    detection,
    ensemble,
    fsp,
    hint,
    kd,
    nst,
    ofd,
    relational,
)
from searchkd.distill.attention import AttentionTransfer, attention_map, auto_pairs
from searchkd.distill.base import LOSSES, DistillLoss, LossContext, Outputs, make_loss, register
from searchkd.distill.ce import CrossEntropy
from searchkd.distill.combined import CombinedLoss, build_loss
from searchkd.distill.hint import HintLoss
from searchkd.distill.kd import HintonKD

__all__ = [
    "LOSSES",
    "AttentionTransfer",
    "CombinedLoss",
    "CrossEntropy",
    "DistillLoss",
    "HintLoss",
    "HintonKD",
    "LossContext",
    "Outputs",
    "attention_map",
    "auto_pairs",
    "build_loss",
    "make_loss",
    "register",
]
