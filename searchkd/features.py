"""Capture intermediate features of an unmodified model with forward hooks.

Distillation needs feature maps from inside the student and the teacher, but the models'
``forward`` stays untouched: we hook named module paths (``model.get_submodule(path)``) and
record each module's OUTPUT. That keeps every architecture in the search space usable as is,
and lets the teacher's taps be captured once, cached, and replayed as tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from searchkd.errors import SearchKDError

_MAX_LISTED = 20


def _listing(names: Sequence[str]) -> str:
    """Comma-separated names, capped so the error stays one readable line."""
    if not names:
        return "(none)"
    shown = ", ".join(names[:_MAX_LISTED])
    if len(names) > _MAX_LISTED:
        shown += f", ... ({len(names) - _MAX_LISTED} more)"
    return shown


def resolve_tap(model: nn.Module, path: str) -> nn.Module:
    """Return ``model.get_submodule(path)``, or raise a one-line error that lists what exists.

    The listing names the children of the deepest prefix of ``path`` that does exist (for a
    top-level typo: the model's stage-like top-level modules), which is what a user needs to
    correct a tap name in the config.
    """
    try:
        return model.get_submodule(path)
    except AttributeError:
        pass
    parent, parent_path = model, ""
    for part in path.split("."):
        child = dict(parent.named_children()).get(part)
        if child is None:
            break
        parent = child
        parent_path = f"{parent_path}.{part}" if parent_path else part
    children = [name for name, _ in parent.named_children()]
    where = f"'{parent_path}' has" if parent_path else "available top-level modules:"
    raise SearchKDError(
        f"{type(model).__name__} has no module '{path}'; {where} {_listing(children)}"
    )


class FeatureTaps:
    """Forward hooks on named module paths; ``features[path]`` is that module's latest output.

    ``features`` is emptied at the start of every forward of ``model`` (a pre-hook on the root),
    so after a forward it holds exactly the taps that ran in that forward and never a stale
    tensor from an earlier batch. If a tapped module runs several times in one forward (a
    shared block), the last call wins.

    Outputs are stored as is (attached to the graph), because the student's features must
    carry gradients into the distillation losses; pass ``detach=True`` when capturing teacher
    features for the cache.

    Use as a context manager, or call :meth:`remove` when done, so the hooks do not outlive
    the distillation run::

        with FeatureTaps(student, ["stages.1", "stages.3"]) as taps:
            logits = student(x)
            feats = taps.features
    """

    def __init__(self, model: nn.Module, paths: Sequence[str], detach: bool = False) -> None:
        if isinstance(paths, str):
            paths = [paths]
        self.paths: list[str] = list(dict.fromkeys(paths))
        self.detach = detach
        self.features: dict[str, Tensor] = {}
        # Resolve every path before registering anything: a bad path leaves no hooks behind.
        modules = [resolve_tap(model, path) for path in self.paths]
        self._handles: list[RemovableHandle] = [model.register_forward_pre_hook(self._clear)]
        for path, module in zip(self.paths, modules, strict=True):
            self._handles.append(module.register_forward_hook(self._recorder(path)))

    def _clear(self, module: nn.Module, args: object) -> None:
        self.features = {}

    def _recorder(self, path: str):
        def record(module: nn.Module, args: object, output: object) -> None:
            if not isinstance(output, Tensor):
                raise SearchKDError(
                    f"tap '{path}' ({type(module).__name__}) outputs {type(output).__name__}, "
                    "not a tensor; tap a module whose output is a single tensor"
                )
            self.features[path] = output.detach() if self.detach else output

        return record

    def remove(self) -> None:
        """Detach all hooks; idempotent. ``features`` keeps the last captured tensors."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> FeatureTaps:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()


def feature_shapes(
    model: nn.Module, paths: Sequence[str], input_shape: Sequence[int]
) -> dict[str, torch.Size]:
    """Shapes of the tapped outputs for one dummy input of ``input_shape`` (batch dim included).

    Losses size their connectors (e.g. the hint regressor's channels) from these shapes before
    training starts. The probe runs in eval mode (BatchNorm would fail on a batch of one and
    would otherwise update its running statistics) under ``no_grad``; afterwards every
    submodule gets back its own training flag, so a deliberately frozen BatchNorm inside a
    training model stays frozen. The returned dict is in ``paths`` order (shallow to deep as
    given), which the losses' "auto" tap choices rely on.
    """
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    flags = {module: module.training for module in model.modules()}
    model.eval()
    try:
        with FeatureTaps(model, paths, detach=True) as taps, torch.no_grad():
            model(torch.zeros(tuple(input_shape), device=device, dtype=dtype))
            captured = taps.features
    finally:
        for module, flag in flags.items():
            module.training = flag
    missing = [path for path in taps.paths if path not in captured]
    if missing:
        raise SearchKDError(
            f"taps {_listing(missing)} did not run in a forward of {type(model).__name__}; "
            "tap modules that the forward actually calls"
        )
    return {path: captured[path].shape for path in taps.paths}
