"""Does int8 pay? fp32 vs static-int8 ONNX Runtime latency, one thread, batch 1.

    nice -n 19 python benchmarks/int8_latency.py            # the table for docs/latency.md
    nice -n 19 python benchmarks/int8_latency.py --passes 5 --sizes 40

Each network is built with random weights (latency does not depend on them), exported and
checked as the ``onnxruntime`` meter does, and quantised as the ``onnxruntime-int8`` meter
does (the meters' own ``onnx_file``), and once more with signed int8 activations for
contrast (``s8 act``; the meter quantises activations to uint8). All sessions are built
first, then timed round-robin: every pass times every session once (rounds of calls sized
to ~``--pass-ms``, the order rotated each pass), so a busy spell on a shared machine hits
all of them alike. A session's latency is the median of its passes; noise is their
inter-quartile range over that median.

Networks: the compact space's canonical ``plain16``, ``ds16`` and ``res16`` at 1x40x40 (the
size the default task searches at), and at 3x96x96 and 3x224x224, where int8 is expected to
pay, ``res16``, MobileNetV2 at width 0.5 (the mobilenet space's canonical member scaled as
torchvision scales it) and ResNet-18.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import platform
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from search_spaces import get_space
from search_spaces.mobilenet import make_divisible
from searchkd.cost import count_macs, count_params
from searchkd.int8_meter import OnnxRuntimeInt8Meter, quantize_onnx
from searchkd.meters import Timing
from searchkd.onnx_meter import OnnxRuntimeMeter

PRECISIONS = ("fp32", "int8", "s8")  # the two meters' models, and int8 with signed activations


def mobilenet_v2(alpha: float) -> dict[str, Any]:
    """MobileNetV2 at width ``alpha``: stage widths and stem scaled and rounded to multiples
    of 8, the 1280-wide head kept (torchvision's rule)."""
    arch = copy.deepcopy(get_space("mobilenet").canonical()["mobilenet_v2"])
    arch["stem"] = make_divisible(32 * alpha)
    for stage in arch["stages"]:
        stage["channels"] = make_divisible(stage["channels"] * alpha)
    return arch


def networks(sizes: list[int]) -> list[tuple[str, str, dict[str, Any], tuple[int, int, int]]]:
    """(label, space, architecture, input shape) for each network timed."""
    compact = get_space("compact").canonical()
    chosen = []
    if 40 in sizes:
        chosen += [(n, "compact", compact[n], (1, 40, 40)) for n in ("plain16", "ds16", "res16")]
    for size in (s for s in sizes if s != 40):
        shape = (3, size, size)
        chosen += [
            ("res16", "compact", compact["res16"], shape),
            ("mobilenet_v2-0.5", "mobilenet", mobilenet_v2(0.5), shape),
            ("resnet18", "resnet", get_space("resnet").canonical()["resnet18"], shape),
        ]
    return chosen


def _timed_round(session, feed, runs: int) -> float:
    times = []
    for _ in range(runs):
        begin = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - begin) * 1000.0)
    return statistics.median(times)


def _cpu() -> str:
    """The CPU's model name and whether it has the VNNI int8 dot-product instructions."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in info.splitlines()
            if line.startswith("model name")
        ),
        "cpu",
    )
    vnni = "avx512_vnni" in info or "avx_vnni" in info
    return f"{model} ({'with' if vnni else 'without'} VNNI)"


def _noise(values: list[float]) -> float:
    quartiles = statistics.quantiles(values, n=4)
    return (quartiles[2] - quartiles[0]) / statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="40,96,224", help="input sizes in pixels")
    parser.add_argument("--passes", type=int, default=9, help="round-robin passes")
    parser.add_argument("--pass-ms", type=float, default=60.0, help="time per session a pass")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    import onnxruntime

    fp32_meter = OnnxRuntimeMeter(timing=Timing(threads=args.threads))
    int8_meter = OnnxRuntimeInt8Meter(timing=Timing(threads=args.threads))
    load_before = os.getloadavg()
    rows, sessions = [], []  # sessions: (row index, precision, session, feed, runs)
    with tempfile.TemporaryDirectory() as scratch:
        for label, space, arch, shape in networks(sizes):
            model = get_space(space).build(arch, shape[0], shape[1], 10).eval()
            row = {
                "net": label,
                "input": "x".join(map(str, shape)),
                "macs": count_macs(model, shape),
                "params": count_params(model),
            }
            for precision in PRECISIONS:
                folder = Path(scratch) / f"{len(rows)}-{precision}"
                folder.mkdir()
                if precision == "fp32":
                    path = fp32_meter.onnx_file(model, shape, folder)
                elif precision == "int8":
                    path = int8_meter.onnx_file(model, shape, folder)
                else:
                    fp32 = fp32_meter.onnx_file(model, shape, folder)
                    path = quantize_onnx(fp32, folder / "s8.onnx", shape, signed_activations=True)
                session = fp32_meter.session(path)
                feed = {session.get_inputs()[0].name: np.zeros((1, *shape), np.float32)}
                for _ in range(5):  # warm-up, then size the round to ~pass_ms
                    session.run(None, feed)
                one = _timed_round(session, feed, 3)
                runs = max(3, min(200, math.ceil(args.pass_ms / max(one, 1e-3))))
                sessions.append((len(rows), precision, session, feed, runs))
            rows.append(row)

        passes: dict[tuple[int, str], list[float]] = {(i, p): [] for i, p, *_ in sessions}
        for number in range(args.passes):
            shift = number % len(sessions)
            for index, precision, session, feed, runs in sessions[shift:] + sessions[:shift]:
                passes[(index, precision)].append(_timed_round(session, feed, runs))
    load_after = os.getloadavg()

    print(
        f"# {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {_cpu()}, "
        f"{os.cpu_count()} cores, onnxruntime {onnxruntime.__version__}, "
        f"{args.threads} thread(s), batch 1, {args.passes} round-robin passes"
    )
    print(
        f"# load average (1/5/15 min) before {load_before[0]:.1f}/{load_before[1]:.1f}/"
        f"{load_before[2]:.1f}, after {load_after[0]:.1f}/{load_after[1]:.1f}/{load_after[2]:.1f}"
    )
    print(f"# meters: {fp32_meter.name} and {int8_meter.name}")
    print()
    print(
        "| network | input | MACs | params | fp32 ms | int8 ms | int8 / fp32 "
        "| int8, s8 act ms | noise fp32 / int8 / s8 |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for index, row in enumerate(rows):
        medians = {p: statistics.median(passes[(index, p)]) for p in PRECISIONS}
        noise = " / ".join(f"{_noise(passes[(index, p)]):.0%}" for p in PRECISIONS)
        print(
            f"| {row['net']} | {row['input']} | {row['macs'] / 1e6:.1f}M | "
            f"{row['params'] / 1e3:.0f}k | {medians['fp32']:.3f} | {medians['int8']:.3f} | "
            f"{medians['int8'] / medians['fp32']:.2f} | {medians['s8']:.3f} | {noise} |"
        )


if __name__ == "__main__":
    main()
