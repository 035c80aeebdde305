"""Proxy training throughput on the CPU and on a CUDA device, same students, same data.

The students: the one the default search found (``benchmarks/results/searched_student.json``)
and the fixed 2.56M-MAC student of ``benchmarks/proxy_throughput.py``. Data: the default
task (mnist5k-cluttered, 4,000 training images), staged on the GPU as a local search stages
it. The teacher is untrained (its logits cost the same; accuracy is not the point here).
Each run is a full 2-epoch proxy (``train_proxy``), the default; the first CUDA run of each
student also warms up cuDNN's algorithm choice and is reported apart.

    python benchmarks/gpu_throughput.py [--epochs 2] [--repeats 3] [--dataset digits]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from proxy_throughput import student_arch  # noqa: E402

from search_spaces import get_space  # noqa: E402
from searchkd.config import ProxyConfig  # noqa: E402
from searchkd.data import load_dataset  # noqa: E402
from searchkd.device import describe_device, prepare_device, stage_on_device  # noqa: E402
from searchkd.proxy import compute_teacher_outputs, train_proxy  # noqa: E402


def students() -> dict[str, dict]:
    found = HERE / "results" / "searched_student.json"
    chosen = {}
    if found.exists():
        chosen["searched (default search)"] = json.loads(found.read_text())["arch"]
    chosen["fixed 2.56M-MAC (proxy_throughput)"] = student_arch()
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dataset", default="mnist5k-cluttered")
    args = parser.parse_args()
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.append(torch.device("cuda", torch.cuda.current_device()))
    data = load_dataset(args.dataset, seed=0)
    resnet, space = get_space("resnet"), get_space("mobilenet")
    torch.manual_seed(0)
    teacher = resnet.build(
        resnet.canonical()["resnet20_w16s2"], data.in_channels, data.resolution, data.num_classes
    )
    config = ProxyConfig(epochs=args.epochs)
    rows = []
    for device in devices:
        prepare_device(device)
        started = time.perf_counter()
        cached = compute_teacher_outputs(teacher, data.train_x, [], device=device)
        cache_seconds = time.perf_counter() - started
        staged, outputs = stage_on_device((data, cached), device)
        for name, arch in students().items():
            speeds, first = [], None
            for repeat in range(args.repeats + (device.type == "cuda")):
                torch.manual_seed(repeat)
                model = space.build(arch, data.in_channels, data.resolution, data.num_classes)
                result = train_proxy(
                    model, staged, outputs, [], {"ce": 0.1, "kd": 0.9}, {}, config, repeat,
                    device=device,
                )  # fmt: skip
                if device.type == "cuda" and first is None:
                    first = result.samples_per_second  # cuDNN picks its algorithms here
                    continue
                speeds.append(result.samples_per_second)
            rows.append(
                {
                    "device": describe_device(device),
                    "student": name,
                    "macs": space.macs(arch, data.resolution, data.in_channels, data.num_classes),
                    "samples_per_second": statistics.median(speeds),
                    "range": (min(speeds), max(speeds)),
                    "first_cuda_run": first,
                    "cache_seconds": cache_seconds,
                }
            )
    print(
        f"{args.dataset}: {len(data.train_x)} training images, batch {config.batch_size}, "
        f"{args.epochs}-epoch proxy (0.1 CE + 0.9 KD, cached logits), median of {args.repeats}; "
        f"CPU with {torch.get_num_threads()} torch threads; torch {torch.__version__}"
    )
    print("| device | student | MACs | samples/s | min-max | first CUDA run | teacher cache |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        first = f"{row['first_cuda_run']:.0f}" if row["first_cuda_run"] else "-"
        print(
            f"| {row['device']} | {row['student']} | {row['macs'] / 1e6:.2f}M | "
            f"{row['samples_per_second']:.0f} | {row['range'][0]:.0f}-{row['range'][1]:.0f} | "
            f"{first} | {row['cache_seconds']:.2f}s |"
        )
    by_student: dict[str, dict[str, float]] = {}
    for row in rows:
        kind = row["device"].split(":")[0]
        by_student.setdefault(row["student"], {})[kind] = row["samples_per_second"]
    for name, speeds in by_student.items():
        if "cuda" in speeds:
            print(f"{name}: cuda / cpu = {speeds['cuda'] / speeds['cpu']:.1f}x")


if __name__ == "__main__":
    main()
