"""Where the CPU goes in a Ray search on one machine: seconds of CPU used by the driver,
by each trial worker and by Ray's own daemons during one search, read from ``/proc``.

On a 2-core machine with two workers every CPU-second the driver spends is taken from a
trainer, so this is the number to watch when the 2-worker throughput falls short of the
cores' ceiling (``benchmarks/ray_runner.py``).

    python benchmarks/ray_cpu_split.py [--workers 2] [--trials 8] [--latency lut:lut40.json]

Linux only (``/proc``). Uses the ray_runner benchmark's run folder, so its teacher is reused.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.ray_runner import real_search  # noqa: E402
from runners.ray import RayRunner, connect  # noqa: E402
from searchkd.config import RayConfig  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds() -> dict[int, tuple[str, float]]:
    """pid -> (command line, user + system CPU seconds so far) of every process."""
    seen = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            command = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError):
            continue  # ended while we looked
        seen[int(entry)] = (command.strip(), (int(fields[11]) + int(fields[12])) / TICKS)
    return seen


def kind(pid: int, command: str) -> str:
    if pid == os.getpid():
        return "driver (this process: Tune's loop, the searcher, study writes)"
    if "ImplicitFunc" in command:
        return "trial workers (training)"
    if "ray" in command:
        return "Ray daemons (raylet, GCS, agents)"
    return ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--latency", help="latency meter (default: torch-cpu)")
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "searchkd_bench_ray"))
    args = parser.parse_args()
    connect(None, lambda m: None, num_cpus=2)
    search = real_search(args.cache, f"cpu-split-{time.strftime('%H%M%S')}", args.latency)

    # Processes come and go during the search (Ray starts the workers): sample every
    # 0.5 s, keeping each process's first and last reading.
    first: dict[int, float] = {}
    last: dict[int, tuple[str, float]] = {}
    done = threading.Event()
    own = [0.0]  # this sampler's CPU, which is the driver's process but not its work

    def sample() -> None:
        while True:
            for pid, (command, seconds) in cpu_seconds().items():
                first.setdefault(pid, seconds)
                last[pid] = (command, seconds)
            own[0] = time.thread_time()
            if done.wait(0.5):
                return

    sample_once = cpu_seconds()
    for pid, (_, seconds) in sample_once.items():
        first[pid] = seconds
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    RayRunner(RayConfig(workers=args.workers, cpus_per_trial=1), progress=False).run(
        search, args.trials, 10**6
    )
    wall = time.perf_counter() - started
    done.set()
    sampler.join()
    totals: dict[str, float] = {}
    for pid, (command, seconds) in last.items():
        group = kind(pid, command)
        if group:
            totals[group] = totals.get(group, 0.0) + seconds - first[pid]
    totals[kind(os.getpid(), "")] -= own[0]
    print(
        f"{args.workers} workers, {args.trials} trials, latency {args.latency or 'torch-cpu'}: "
        f"{wall:.1f} s wall, {wall * (os.cpu_count() or 1):.0f} CPU-seconds on "
        f"{os.cpu_count()} cores"
    )
    print("| process | CPU seconds | per trial |")
    print("|---|---|---|")
    for group, seconds in sorted(totals.items(), key=lambda item: -item[1]):
        print(f"| {group} | {seconds:.1f} | {seconds / args.trials:.2f} |")


if __name__ == "__main__":
    main()
