"""The distillation-loss contract and the name -> class registry.

A loss is a small ``nn.Module`` with one formula. It owns its connectors (regressors), so
their parameters train with the student simply by handing the loss's parameters to the
optimizer, and it declares the taps it reads, so the trainer knows which features to hook on
the student and which to precompute on the teacher. Teacher outputs arrive as cached tensors
(:class:`Outputs`), never as the teacher module: the teacher runs once per search, not once
per trial.

Losses are looked up by name through :data:`LOSSES` (filled by :func:`register`), so adding a
loss is one new module with a decorator, with no if/elif dispatch to extend.
"""

from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from searchkd.errors import SearchKDError

Shapes = Mapping[str, torch.Size]


@dataclass
class Outputs:
    """What a network produced for one batch: its logits and its tapped features by path.

    ``indices`` are the batch's positions in the training set: losses that keep per-sample
    memory (CRD's memory bank) read them, so the trainer sets them on the outputs it builds.
    ``ensemble_logits`` holds the logits of the additional teachers of an ensemble (one
    tensor per teacher, same shape as ``logits``); it stays empty for a single teacher.
    """

    logits: Tensor
    features: dict[str, Tensor] = field(default_factory=dict)
    indices: Tensor | None = None
    ensemble_logits: list[Tensor] = field(default_factory=list)


@dataclass(frozen=True)
class LossContext:
    """What some losses need beyond the stage-tap shapes; the trainer builds it once.

    * ``student_preact``/``teacher_preact``: pre-ReLU taps (path -> shape, shallow to deep,
      one per stage) for the losses that read features before the activation (OFD, AB);
    * ``teacher_bn``: per teacher pre-ReLU tap, the (weight, bias) of the batch norm that
      produces it; OFD derives its margin from them;
    * ``train_targets``: the training labels, indexed like :attr:`Outputs.indices` (CRD's
      memory bank size and its negatives from other classes; class-balanced weights);
    * ``num_teachers``: how many teachers the cached outputs hold (1 + ensemble members).

    Losses that need it take a keyword-only ``context`` argument; :func:`make_loss` passes
    it and does not list it among the options.
    """

    student_preact: Shapes = field(default_factory=dict)
    teacher_preact: Shapes = field(default_factory=dict)
    teacher_bn: Mapping[str, tuple[Tensor, Tensor]] = field(default_factory=dict)
    train_targets: Tensor | None = None
    num_teachers: int = 1


class DistillLoss(nn.Module, ABC):
    """One distillation formula. Subclasses set ``name`` via :func:`register`.

    Constructors take ``student_shapes`` and ``teacher_shapes`` (tap path -> feature shape,
    shallow to deep, batch dim included, as from :func:`searchkd.features.feature_shapes`) and
    keyword-only options. ``student_taps``/``teacher_taps`` list the paths ``forward`` reads;
    they stay empty for logit losses.

    ``forward`` must treat teacher tensors as constants (detach them): the teacher is fixed,
    and a cached teacher tensor that happens to require grad must not collect gradients.
    """

    name: str = ""
    student_taps: list[str]
    teacher_taps: list[str]

    def __init__(self) -> None:
        super().__init__()
        self.student_taps = []
        self.teacher_taps = []

    @abstractmethod
    def forward(self, student: Outputs, teacher: Outputs, targets: Tensor) -> Tensor:
        """The unweighted loss value (a scalar) for one batch."""


def feature(outputs: Outputs, tap: str, side: str) -> Tensor:
    """``outputs.features[tap]``, or a one-line error naming the taps that were captured."""
    try:
        return outputs.features[tap]
    except KeyError:
        have = ", ".join(outputs.features) or "(none)"
        raise SearchKDError(f"{side} features lack tap '{tap}'; captured taps: {have}") from None


def check_tap(tap: str, shapes: Shapes, side: str, loss: str) -> str:
    """Validate that ``tap`` is one of the model's taps; the error lists the ones it has."""
    if tap not in shapes:
        have = ", ".join(shapes) or "(none)"
        raise SearchKDError(
            f"loss '{loss}' needs {side} tap '{tap}', which is not among the {side} taps: {have}"
        )
    return tap


def check_positive(value: float, option: str, loss: str) -> float:
    """Options such as temperatures and scales must be finite and > 0."""
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise SearchKDError(f"loss '{loss}' option {option} must be a number, got {value!r}")
    if value <= 0:
        raise SearchKDError(f"loss '{loss}' option {option} must be > 0, got {value}")
    return float(value)


def last_tap(shapes: Shapes, side: str, loss: str) -> str:
    """The deepest tap: taps are listed shallow to deep, so the last entry."""
    if not shapes:
        raise SearchKDError(f"loss '{loss}' needs a {side} tap but no {side} taps are given")
    return list(shapes)[-1]


def pool_to_common_size(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Adaptive-average-pool the larger of two (N, C, H, W) maps down to the smaller's size.

    Why pooling down rather than upsampling: the smaller map is the coarser one and has no
    information at the finer scale, so upsampling it would ask the other map to match detail
    that was invented by interpolation. Averaging the finer map over each coarse cell compares
    the two at the resolution both actually have, has no parameters, and works for sizes that
    are not integer multiples. Height and width are handled independently (non-square maps).
    """
    size = (min(a.shape[-2], b.shape[-2]), min(a.shape[-1], b.shape[-1]))
    if tuple(a.shape[-2:]) != size:
        a = F.adaptive_avg_pool2d(a, size)
    if tuple(b.shape[-2:]) != size:
        b = F.adaptive_avg_pool2d(b, size)
    return a, b


LOSSES: dict[str, type[DistillLoss]] = {}

L = TypeVar("L", bound=type[DistillLoss])


def register(name: str) -> Callable[[L], L]:
    """Class decorator: file a :class:`DistillLoss` subclass under ``name`` and set its ``name``."""

    def decorate(cls: L) -> L:
        if not (isinstance(cls, type) and issubclass(cls, DistillLoss)):
            raise TypeError(f"@register({name!r}) expects a DistillLoss subclass, got {cls!r}")
        previous = LOSSES.get(name)
        # A reloaded module re-registers "the same" class; a different class is a clash.
        if previous is not None and (previous.__module__, previous.__qualname__) != (
            cls.__module__,
            cls.__qualname__,
        ):
            raise ValueError(f"loss name {name!r} is already registered to {previous!r}")
        cls.name = name
        LOSSES[name] = cls
        return cls

    return decorate


def _takes_context(name: str) -> bool:
    return "context" in inspect.signature(LOSSES[name].__init__).parameters


def loss_options(name: str) -> list[str]:
    """The option names ``make_loss`` accepts for loss ``name`` (its keyword-only arguments,
    except ``context``, which the trainer supplies)."""
    params = inspect.signature(LOSSES[name].__init__).parameters.values()
    return [
        p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name != "context"
    ]


def make_loss(
    name: str,
    student_shapes: Shapes,
    teacher_shapes: Shapes,
    context: LossContext | None = None,
    **options: Any,
) -> DistillLoss:
    """Build the registered loss ``name`` for models with these tap shapes.

    Unknown names and unknown options raise :class:`SearchKDError` listing the valid ones,
    because both come straight from the user's config. ``context`` reaches only the losses
    that declare it.
    """
    cls = LOSSES.get(name)
    if cls is None:
        known = ", ".join(sorted(LOSSES)) or "(none)"
        raise SearchKDError(f"unknown distillation loss '{name}'; known losses: {known}")
    accepted = loss_options(name)
    unknown = [key for key in options if key not in accepted]
    if unknown:
        raise SearchKDError(
            f"loss '{name}' has no option {', '.join(unknown)}; "
            f"its options: {', '.join(accepted) or '(none)'}"
        )
    if _takes_context(name):
        options["context"] = context or LossContext()
    return cls(student_shapes, teacher_shapes, **options)


def as_pairs(value: Sequence[Sequence[str]], loss: str) -> list[tuple[str, str]]:
    """Coerce a config list of ``[student_tap, teacher_tap]`` items (YAML gives lists)."""
    pairs = []
    for item in value:
        if isinstance(item, str) or len(item) != 2:
            raise SearchKDError(
                f"loss '{loss}' option pairs must be [student_tap, teacher_tap] items, got {item!r}"
            )
        pairs.append((str(item[0]), str(item[1])))
    if not pairs:
        raise SearchKDError(f"loss '{loss}' option pairs is empty; give pairs or 'auto'")
    return pairs


def spatial(shape: torch.Size, side: str, tap: str, loss: str) -> torch.Size:
    """Check that a tap is an (N, C, H, W) map; the error says which tap is not."""
    if len(shape) != 4:
        raise SearchKDError(
            f"loss '{loss}' needs (N, C, H, W) maps but {side} tap '{tap}' has shape "
            f"{tuple(shape)}; tap convolutional stages"
        )
    return shape


def resolve_pairs(
    pairs: str | Sequence[Sequence[str]],
    student_shapes: Shapes,
    teacher_shapes: Shapes,
    loss: str,
    pairing: Callable[[list[str], list[str]], list[tuple[str, str]]],
) -> list[tuple[str, str]]:
    """``"auto"`` -> ``pairing(student taps, teacher taps)``; else validated explicit pairs.

    Every tap of every pair is checked against the model's taps and must be a spatial map.
    """
    if isinstance(pairs, str):
        if pairs != "auto":
            raise SearchKDError(
                f"loss '{loss}' option pairs must be 'auto' or [student_tap, teacher_tap] "
                f"items, got {pairs!r}"
            )
        if not student_shapes or not teacher_shapes:
            raise SearchKDError(
                f"loss '{loss}' needs at least one student tap and one teacher tap; "
                f"got {len(student_shapes)} student and {len(teacher_shapes)} teacher taps"
            )
        resolved = pairing(list(student_shapes), list(teacher_shapes))
    else:
        resolved = as_pairs(pairs, loss)
    for s_tap, t_tap in resolved:
        spatial(
            student_shapes[check_tap(s_tap, student_shapes, "student", loss)],
            "student",
            s_tap,
            loss,
        )
        spatial(
            teacher_shapes[check_tap(t_tap, teacher_shapes, "teacher", loss)],
            "teacher",
            t_tap,
            loss,
        )
    return resolved


def pooled(f: Tensor) -> Tensor:
    """Global-average-pool an (N, C, H, W) map to (N, C); flatten anything else to (N, -1).

    The relational and contrastive losses compare one vector per sample. Taken from the
    deepest stage this is exactly the penultimate feature of a ResNet (stages -> pool -> fc),
    the vector the published code (RepDistiller's ``feat[-1]``) uses.
    """
    return f.mean(dim=(2, 3)) if f.dim() == 4 else f.flatten(1)


def embedding_tap(tap: str, shapes: Shapes, side: str, loss: str) -> str:
    """``"auto"`` -> the deepest tap; otherwise the named tap, checked."""
    return last_tap(shapes, side, loss) if tap == "auto" else check_tap(tap, shapes, side, loss)


def channel_connector(c_in: int, c_out: int) -> nn.Sequential:
    """1x1 conv + BN mapping student channels to teacher channels (FitNets/OFD connectors).

    He-normal init of the conv and BN (1, 0), as in the OFD authors' ``build_feature_connector``.
    """
    conv = nn.Conv2d(c_in, c_out, kernel_size=1, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return nn.Sequential(conv, nn.BatchNorm2d(c_out))


def depth_weights(count: int) -> list[float]:
    """``2^-(count-1-i)``: the deepest pair weighs 1, each shallower one half the next.

    OFD and AB (Heo et al.) weight their feature levels this way in the authors' code.
    """
    return [2.0 ** (i - count + 1) for i in range(count)]
