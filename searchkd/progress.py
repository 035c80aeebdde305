"""Progress bars that suit where they are written."""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm

LOG_INTERVAL_S = 30.0


def progress_bar(**options: Any) -> tqdm:
    """A tqdm bar, on stderr unless ``file`` says otherwise. On a terminal it redraws in
    place; sent to a file or a pipe every redraw stays in the log (one retraining left
    600 bar lines), so there it redraws at most every 30 s."""
    stream = options.setdefault("file", sys.stderr)
    if not getattr(stream, "isatty", lambda: False)():
        options.setdefault("mininterval", LOG_INTERVAL_S)
    return tqdm(**options)
