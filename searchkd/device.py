"""Where training runs: the ``device`` setting, resolved once, and data placed for it.

Every training path (teacher, teacher-output cache, proxy, retraining) takes a resolved
:class:`torch.device` and moves its model, its loss and each batch there; the data itself
stays on the CPU unless :func:`stage_on_device` finds that it fits on the device.
Checkpoints are always written with CPU tensors (``searchkd.checkpoint``), so a model
trained on a GPU loads on a machine without one, and the study records the device each
trial trained on, because a training time measured on a GPU is not comparable with one
measured on a CPU.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
import re
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch
from torch import nn

from searchkd.errors import SearchKDError

DEVICES = "auto, cpu, cuda or cuda:N"
# At most this share of the device's free memory holds the staged dataset and teacher
# cache; the rest is for the models, activations and other trials sharing the GPU.
STAGE_FRACTION = 0.5
_FORM = re.compile(r"^(auto|cpu|cuda)(?::(\d+))?$")

T = TypeVar("T")


def is_device_spec(spec: str) -> bool:
    """Whether ``spec`` is written as a device setting can be (available or not)."""
    found = _FORM.match(str(spec).strip().lower())
    return found is not None and (found.group(2) is None or found.group(1) == "cuda")


def resolve_device(spec: str) -> torch.device:
    """``auto`` -> ``cuda`` when PyTorch sees a CUDA device, else ``cpu``; ``cpu``, ``cuda``
    and ``cuda:N`` as given, checked here, so a missing GPU is one line before any work
    rather than an error deep inside the first training step."""
    if not is_device_spec(spec):
        raise SearchKDError(f"device {spec!r}: use {DEVICES}")
    kind, _, index = str(spec).strip().lower().partition(":")
    if kind == "cpu" or (kind == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise SearchKDError(
            f"device {spec!r}: PyTorch sees no CUDA device here (torch {torch.__version__}); "
            "install a CUDA build of PyTorch on a machine with an NVIDIA GPU, or use --device cpu"
        )
    if not index:
        return torch.device("cuda", torch.cuda.current_device())
    count = torch.cuda.device_count()
    if int(index) >= count:
        raise SearchKDError(
            f"device {spec!r}: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}; "
            "pick one of those or use --device cuda"
        )
    return torch.device("cuda", int(index))


def describe_device(device: torch.device) -> str:
    """What the study and model cards record: ``cpu``, or ``cuda:0 (NVIDIA H200)``."""
    if device.type != "cuda":
        return device.type
    index = device.index if device.index is not None else torch.cuda.current_device()
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"


def prepare_device(device: torch.device) -> None:
    """Per-process settings for training on ``device``: on CUDA, cuDNN picks the fastest
    convolution algorithm per shape (every batch of a run has the same shape). That choice,
    like the atomics of some CUDA kernels, makes CUDA runs not bit-reproducible."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def available_memory(device: torch.device) -> int:
    """Bytes a new allocation can take on ``device`` now: a GPU's free memory, or the
    memory the operating system says is available (free plus reclaimable caches)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # not Linux: the physical memory, an upper bound
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work, so a wall-clock time covers it (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def on_device(model: nn.Module, device: torch.device) -> Iterator[nn.Module]:
    """``model`` moved to ``device`` for the block and back where it was afterwards: a
    teacher the search keeps on the CPU runs its one cache pass on the GPU."""
    home = next(model.parameters(), torch.empty(0)).device
    model.to(device)
    try:
        yield model
    finally:
        model.to(home)


def stage_on_device(value: T, device: torch.device) -> T:
    """``value`` (tensors inside dataclasses, dicts, lists) moved to ``device``, unless they
    take more than :data:`STAGE_FRACTION` of a GPU's free memory: then ``value`` unchanged,
    and the trainers copy each batch over instead. Resident data saves a host-to-device
    copy per step; a dataset too big for the GPU still trains, a little slower."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        if tensor_bytes(value) > STAGE_FRACTION * free:
            return value
    return to_device(value, device)


def map_tensors(value: Any, fn: Callable[[Any], Any], leaf: tuple[type, ...] = ()) -> Any:
    """``value`` with ``fn`` applied to every tensor (and every instance of ``leaf``) inside
    dataclasses, dicts, lists and tuples, which are copied; anything else is kept as is.

    A dataclass is copied and its fields swapped (no ``__init__``, so checks in its
    ``__post_init__`` do not see half-converted fields); a dict keeps its class and a state
    dict's ``_metadata`` (per-module versions that ``load_state_dict`` reads)."""
    if isinstance(value, (torch.Tensor, *leaf)):
        return fn(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        clone = copy.copy(value)
        for item in dataclasses.fields(value):
            object.__setattr__(clone, item.name, map_tensors(getattr(value, item.name), fn, leaf))
        return clone
    if isinstance(value, dict):
        out = type(value)((key, map_tensors(item, fn, leaf)) for key, item in value.items())
        if hasattr(value, "_metadata"):
            out._metadata = value._metadata
        return out
    if isinstance(value, list | tuple):
        return type(value)(map_tensors(item, fn, leaf) for item in value)
    return value


def to_device(value: T, device: torch.device) -> T:
    """A copy of ``value`` with every tensor inside moved to ``device`` (the channels-last
    layout kept)."""
    return map_tensors(value, lambda tensor: tensor.to(device))


def tensor_bytes(value: Any) -> int:
    """Total bytes of the tensors inside ``value`` (the containers of :func:`map_tensors`)."""
    sizes: list[int] = []
    map_tensors(value, lambda tensor: sizes.append(tensor.element_size() * tensor.nelement()))
    return sum(sizes)
