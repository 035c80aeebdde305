"""`searchkd dashboard` in a real browser: headless Chromium renders the study page and the
Pareto-front plot shows every completed trial, infeasible ones greyed, axes named after our
objectives. Skipped where Debian's `chromium` is not installed (`.ci/run` installs it)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from html.parser import HTMLParser

import pytest

from searchkd.study import is_feasible

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOT_TO = os.environ.get("SEARCHKD_SCREENSHOT")  # keep the browser's picture here
INFEASIBLE_GREY = "fill: rgb(204, 204, 204)"  # optuna-dashboard's colour for infeasible trials

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="headless browser test skipped: Debian's `chromium` is not installed "
        "(apt-get install chromium; .ci/run does it where apt is available)",
    ),
]


class ParetoPlot(HTMLParser):
    """Collects the plotly SVG and its points inside the element with id graph-pareto-front."""

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0
        self.svgs = 0
        self.points: list[str] = []

    def handle_starttag(self, tag, attrs) -> None:
        attributes = dict(attrs)
        if self.depth:
            self.depth += 1
        elif attributes.get("id") == "graph-pareto-front":
            self.depth = 1
        if not self.depth:
            return
        if "main-svg" in (attributes.get("class") or "") and tag == "svg":
            self.svgs += 1
        if attributes.get("class") == "point":
            self.points.append(attributes.get("style") or "")

    def handle_startendtag(self, tag, attrs) -> None:  # <path .../> does not nest
        self.handle_starttag(tag, attrs)
        if self.depth:
            self.depth -= 1

    def handle_endtag(self, tag) -> None:
        if self.depth:
            self.depth -= 1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(url: str, server: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"the dashboard exited: {server.stderr.read()}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"the dashboard did not answer at {url}")


def _chromium(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1400,1400",
            "--virtual-time-budget=20000",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_pareto_front_renders_in_chromium(small_study, tmp_path):
    study, storage = small_study
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "searchkd.cli",
            "dashboard",
            "--storage",
            storage,
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for(f"{base}/api/studies", server)
        summaries = json.load(urllib.request.urlopen(f"{base}/api/studies", timeout=30))
        study_id = next(
            s["study_id"] for s in summaries["study_summaries"] if s["study_name"] == "small"
        )
        page = f"{base}/dashboard/studies/{study_id}"
        dom = _chromium("--dump-dom", page)
        screenshot = tmp_path / "pareto.png"
        _chromium(f"--screenshot={screenshot}", page)
    finally:
        server.kill()
        server.wait()
    assert dom.returncode == 0, dom.stderr[-2000:]
    plot = ParetoPlot()
    plot.feed(dom.stdout)
    assert plot.svgs >= 1, "no plotly SVG inside the Pareto-front element"
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    infeasible = [t for t in complete if not is_feasible(t)]
    assert infeasible, "the tiny study should hold candidates rejected over budget"
    greys = Counter(INFEASIBLE_GREY in style for style in plot.points)
    assert greys[True] == len(infeasible)
    assert greys[False] == len(complete) - len(infeasible)
    # the objective selectors and plots use our names, not "Objective 0"
    assert "Objective 0" not in dom.stdout
    for name in ("accuracy", "macs", "latency_ms"):
        assert f">{name}<" in dom.stdout, name
    assert screenshot.stat().st_size > 10_000
    if SCREENSHOT_TO:
        shutil.copy(screenshot, SCREENSHOT_TO)
