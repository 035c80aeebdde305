"""Proxy training: a short KD run that ranks a candidate.

The teacher is never run here. Its logits (and the tapped features a loss asks
for) are computed once per search over the training set and indexed by the same
batch indices as the student's inputs; on a 2-core CPU that is the difference
between KD at 0.11-0.23x and at ~1x the speed of a cross-entropy-only student.
The proxy trains without augmentation, so one cached teacher pass is exact.

Each candidate runs its *own* short cosine schedule: accuracy read early inside
a long schedule ranks students poorly (Spearman 0.49 vs 0.96 on the cluttered
task). The reported accuracy is the LAST epoch's validation accuracy; the best
epoch is recorded beside it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from searchkd.config import ProxyConfig
from searchkd.data import Dataset
from searchkd.device import describe_device, on_device
from searchkd.distill import CombinedLoss, LossContext, Outputs, build_loss
from searchkd.engine import Engine, every_epoch
from searchkd.errors import SearchKDError
from searchkd.features import FeatureTaps, feature_shapes
from searchkd.recipe import Recipe


@dataclass
class TeacherOutputs:
    """The teacher's outputs on the training set, computed once per search.

    ``features`` holds every cached tap. ``stage_taps`` names the stage taps among them
    (None: every feature not listed in ``preact``); ``preact`` names the pre-ReLU taps, with
    ``bn``, the affine parameters of the batch norm behind each (OFD's margin); a path may be
    both. ``ensemble`` holds the logits of further teachers distilled with this one.
    """

    logits: torch.Tensor  # N x K
    features: dict[str, torch.Tensor] = field(default_factory=dict)  # tap -> N x C x H x W
    seconds: float = 0.0
    stage_taps: list[str] | None = None
    preact: list[str] = field(default_factory=list)
    bn: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    ensemble: list[torch.Tensor] = field(default_factory=list)  # each N x K

    def _shape(self, tap: str) -> torch.Size:
        return torch.Size([1, *self.features[tap].shape[1:]])

    def shapes(self) -> dict[str, torch.Size]:
        """Stage-tap shapes (batch 1), shallow to deep: what the feature losses pair up."""
        taps = self.stage_taps
        if taps is None:
            taps = [tap for tap in self.features if tap not in self.preact]
        return {tap: self._shape(tap) for tap in taps}

    def preact_shapes(self) -> dict[str, torch.Size]:
        """Pre-ReLU tap shapes (batch 1), shallow to deep."""
        return {tap: self._shape(tap) for tap in self.preact}

    def batch(self, idx: torch.Tensor, device: torch.device | None = None) -> Outputs:
        """The rows ``idx`` of every cached tensor, on ``device`` (default: where the cache
        is); a cache left on the CPU is copied over one batch at a time."""
        at = idx.to(self.logits.device)
        device = device or self.logits.device

        def rows(tensor: torch.Tensor) -> torch.Tensor:
            return tensor[at].to(device, non_blocking=True)

        return Outputs(
            logits=rows(self.logits),
            features={k: rows(v) for k, v in self.features.items()},
            indices=idx.to(device),
            ensemble_logits=[rows(z) for z in self.ensemble],
        )


def batchnorm_stats(
    model: nn.Module, bn_paths: Mapping[str, str]
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """tap -> (weight, bias) of the batch norm at ``bn_paths[tap]``, detached copies."""
    stats = {}
    for tap, path in bn_paths.items():
        bn = model.get_submodule(path)
        if not isinstance(bn, nn.BatchNorm2d) or bn.weight is None or bn.bias is None:
            raise SearchKDError(
                f"pre-ReLU tap '{tap}': module '{path}' is {type(bn).__name__}, not an affine "
                "BatchNorm2d; OFD needs its weight and bias"
            )
        stats[tap] = (bn.weight.detach().clone(), bn.bias.detach().clone())
    return stats


@torch.no_grad()
def compute_teacher_outputs(
    teacher: nn.Module,
    x: torch.Tensor,
    taps: list[str],
    batch_size: int = 500,
    *,
    preact: Mapping[str, str] | None = None,
    ensemble: Sequence[nn.Module] = (),
    device: torch.device | None = None,
) -> TeacherOutputs:
    """One teacher pass in eval mode over ``x``, keeping logits and the given taps.

    ``preact`` maps pre-ReLU tap paths to their batch norms' paths (a space's
    ``preact_taps``); those taps are cached too, with the batch norms' statistics.
    ``ensemble``: further teachers whose logits are cached alongside.
    ``device``: where the teachers run (default: the CPU). The cache comes back on the CPU
    either way: that is what the Ray object store shares, and where it stays when a large
    cache does not fit on the GPU (:func:`searchkd.device.stage_on_device` decides).
    """
    device = device or torch.device("cpu")
    started = time.perf_counter()
    preact = dict(preact or {})
    hooked = list(dict.fromkeys([*taps, *preact]))
    logits, features = _eval_in_batches(teacher, x, batch_size, hooked, device)
    return TeacherOutputs(
        logits=logits,
        features=features,
        seconds=time.perf_counter() - started,
        stage_taps=list(taps),
        preact=list(preact),
        bn=batchnorm_stats(teacher, preact),
        ensemble=[_eval_in_batches(model, x, batch_size, [], device)[0] for model in ensemble],
    )


def _eval_in_batches(
    model: nn.Module,
    x: torch.Tensor,
    batch_size: int,
    taps: list[str],
    device: torch.device,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Logits and tapped features (on the CPU) of ``model`` run on ``device`` in eval mode;
    the model goes back where it was, with its training flag, afterwards."""
    was_training = model.training
    model.eval()
    logits, features = [], {tap: [] for tap in taps}
    try:
        with on_device(model, device), FeatureTaps(model, taps, detach=True) as hooks:
            for start in range(0, len(x), batch_size):
                logits.append(model(x[start : start + batch_size].to(device)).cpu())
                for tap in taps:
                    features[tap].append(hooks.features[tap].cpu())
    finally:
        model.train(was_training)
    return torch.cat(logits), {tap: torch.cat(parts) for tap, parts in features.items()}


def build_objective(
    model: nn.Module,
    input_shape: Sequence[int],
    teacher_outputs: TeacherOutputs,
    student_taps: Sequence[str],
    loss_weights: Mapping[str, float],
    loss_options: Mapping[str, Mapping[str, Any]],
    train_targets: torch.Tensor,
    student_preact: Sequence[str] = (),
) -> CombinedLoss:
    """The training objective for ``model`` against the cached teacher.

    Probes the student's stage and pre-ReLU tap shapes (one forward of one dummy input of
    ``input_shape``, batch dim included) and hands the losses everything they may need:
    tap shapes, pre-ReLU taps, the teacher's BN statistics, the training labels (indexed
    like the batches' indices) and the number of teachers. Retraining builds its loss here
    too, so the search and the retraining distil the same way.
    """
    probe = list(dict.fromkeys([*student_taps, *student_preact]))
    shapes = feature_shapes(model, probe, input_shape) if probe else {}
    context = LossContext(
        student_preact={tap: shapes[tap] for tap in student_preact},
        teacher_preact=teacher_outputs.preact_shapes(),
        teacher_bn=teacher_outputs.bn,
        train_targets=train_targets,
        num_teachers=1 + len(teacher_outputs.ensemble),
    )
    return build_loss(
        loss_weights,
        loss_options,
        {tap: shapes[tap] for tap in student_taps},
        teacher_outputs.shapes(),
        context,
    )


@dataclass
class ProxyResult:
    accuracy: float  # validation accuracy after the LAST epoch
    best_accuracy: float
    epoch_accuracies: list[float]
    train_seconds: float
    samples_per_second: float
    loss_terms: dict[str, float]  # mean of each unweighted term over the last epoch
    seed: int
    device: str = "cpu"  # where it trained (describe_device): times differ by device

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def train_proxy(
    model: nn.Module,
    data: Dataset,
    teacher_outputs: TeacherOutputs,
    student_taps: list[str],
    loss_weights: dict[str, float],
    loss_options: dict[str, dict[str, Any]],
    config: ProxyConfig,
    seed: int,
    student_preact: Sequence[str] = (),
    on_epoch: Callable[[int, list[float]], None] | None = None,
    device: torch.device | None = None,
) -> ProxyResult:
    """Train ``model`` for ``config.epochs`` with the configured losses; evaluate each epoch.

    ``student_taps``/``student_preact``: the student's stage and pre-ReLU taps (from its
    space); only those the losses read are hooked. ``on_epoch(epoch, accuracies so far)``
    runs after each evaluation; an exception it raises (e.g.
    :class:`searchkd.pruning.Pruned`) stops training there.

    ``device`` (default: where the model is): the model and the loss's connectors train
    there; the data and ``teacher_outputs`` may be there already (staged) or on the CPU, in
    which case each batch is copied over. Batches are drawn on the CPU from ``seed``, so
    every device sees the same batches in the same order."""
    n = min(config.train_subset or len(data.train_x), len(data.train_x))
    device = device or next(model.parameters()).device
    # The engine trains channels-last; converted here, the validation images match too
    # (a search converts its data once, which makes these no-ops).
    data = dataclasses.replace(
        data,
        train_x=data.train_x.contiguous(memory_format=torch.channels_last),
        val_x=data.val_x.contiguous(memory_format=torch.channels_last),
    )
    objective = build_objective(
        model,
        (1, data.in_channels, data.resolution, data.resolution),
        teacher_outputs,
        student_taps,
        loss_weights,
        loss_options,
        data.train_y[:n].cpu(),  # CRD samples its negatives on the CPU
        student_preact,
    )
    missing = [t for t in objective.teacher_taps if t not in teacher_outputs.features]
    if missing:
        raise ValueError(f"teacher outputs lack taps {missing}; cache them before training")
    engine = Engine(model, objective, data, _recipe(config), device=device, seed=seed, train_size=n)
    accuracies = engine.fit(
        every_epoch(lambda idx, x: teacher_outputs.batch(idx, device)), on_epoch
    )
    return ProxyResult(
        accuracy=accuracies[-1],
        best_accuracy=max(accuracies),
        epoch_accuracies=accuracies,
        train_seconds=round(engine.seconds, 3),
        samples_per_second=round(engine.samples / max(engine.seconds, 1e-9), 1),
        loss_terms=engine.loss_terms,
        seed=seed,
        device=describe_device(device),
    )


def _recipe(config: ProxyConfig) -> Recipe:
    """The proxy's recipe: SGD with its own cosine schedule, and no augmentation, so that the
    one cached teacher pass is exact."""
    return Recipe(
        epochs=config.epochs,
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        batch_size=config.batch_size,
        augment="none",
    )
