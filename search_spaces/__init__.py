"""Search spaces by name, and the one entry point that turns JSON into (space, architecture).

Anything that reads an architecture from outside (a teacher config, an exported student,
a study's user attributes) goes through :func:`load_architecture`, so a malformed file
fails early with one line instead of deep inside ``nn.Module`` construction.

Besides the registered spaces, a name ``nni:package.module:SpaceClass`` is an NNI model
space (``search_spaces/nni_space.py``), constructed with the arguments the config or the
architecture gives; NNI is imported only then.
"""

from __future__ import annotations

import copy
from typing import Any

from search_spaces.base import Architecture, SearchSpace
from search_spaces.compact import CompactSpace
from search_spaces.mobilenet import MobileNetSpace
from search_spaces.mobilenet_reduced import MobileNetReducedSpace
from search_spaces.nni_space import FORM as NNI_FORM
from search_spaces.nni_space import is_nni_name
from search_spaces.resnet import ResNetSpace
from searchkd.errors import ArchitectureError

SPACES: dict[str, SearchSpace] = {
    space.name: space
    for space in (CompactSpace(), MobileNetSpace(), MobileNetReducedSpace(), ResNetSpace())
}


def get_space(
    name: str, args: dict[str, Any] | None = None, taps: list[str] | None = None
) -> SearchSpace:
    """The registered space called ``name``, or the NNI space ``nni:module:Class`` built with
    constructor ``args`` (feature ``taps``: module paths for feature losses)."""
    if is_nni_name(name):
        from search_spaces.nni_space import nni_space

        return nni_space(name, args, taps)
    if args or taps:
        raise ArchitectureError(
            f"search space {name!r} takes no space_args or space_taps; those are for "
            "nni:package.module:SpaceClass spaces"
        )
    try:
        return SPACES[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(SPACES))
        raise ArchitectureError(
            f"unknown search space {name!r}; known spaces: {known}, or {NNI_FORM}"
        ) from None


def load_architecture(obj: Any) -> tuple[SearchSpace, Architecture]:
    """Validate an architecture dict (e.g. fresh from ``json.load``) and find its space.

    Returns a deep copy, so later edits to ``obj`` cannot change what was validated.
    """
    if not isinstance(obj, dict):
        raise ArchitectureError(
            f"architecture: expected a JSON object with a 'space' key, got {type(obj).__name__}"
        )
    if "space" not in obj:
        known = ", ".join(sorted(SPACES))
        raise ArchitectureError(f"architecture: missing key 'space' (one of: {known})")
    if is_nni_name(obj["space"]):
        space = get_space(obj["space"], obj.get("args"), obj.get("taps"))
    else:
        space = get_space(obj["space"])
    arch = copy.deepcopy(obj)
    space.validate(arch)
    return space, arch


__all__ = [
    "SPACES",
    "Architecture",
    "CompactSpace",
    "MobileNetReducedSpace",
    "MobileNetSpace",
    "ResNetSpace",
    "SearchSpace",
    "get_space",
    "load_architecture",
]
