"""Is this machine quiet enough to validate a latency table? Times the same random
members in several passes, one after another, and prints how far each member's latency
moved between passes and the rank correlation with a table in each pass.

``profile-device --validate`` times each member once (its rounds repeated until stable);
a slow phase of the machine that outlasts one member's rounds shifts that member alone.
This shows the size of such phases: on a quiet machine the passes agree within a few
per cent, on a noisy one they do not, and the table's Kendall tau moves with them. The
tau between two passes is the ceiling for any table: direct measurement agreeing with
itself.

    python benchmarks/latency_drift.py --table lut40.json [--members 16] [--passes 3]

The table gives the space, input and class count; members are drawn as ``--validate``
draws them (same seed: the same first members).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from searchkd.latency import (  # noqa: E402
    LatencyTable,
    kendall_tau,
    random_members,
    time_in_passes,
)
from searchkd.meters import Timing, make_meter  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", required=True, help="a table from profile-device")
    parser.add_argument("--members", type=int, default=16)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--tolerance", type=float, default=0.05, help="0: fixed 3 rounds")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    table = LatencyTable.load(args.table)
    meter = make_meter("torch-cpu", Timing(tolerance=args.tolerance or None))
    if meter.name != table.meter:
        sys.exit(f"the table was measured with {table.meter}; this script times {meter.name}")
    archs = random_members(table.space, args.members, args.seed)
    sums = [table.unit_sum(arch) for arch in archs]

    started = time.perf_counter()
    passes = time_in_passes(table, meter, archs, args.passes)  # as --validate times them
    seconds = time.perf_counter() - started

    print(f"| member | unit sum ms | {' | '.join(f'pass {p + 1} ms' for p in range(args.passes))}"
          " | max/min - 1 |")  # fmt: skip
    print("|---" * (3 + args.passes) + "|")
    moved = []
    for i, summed in enumerate(sums):
        values = [timings[i] for timings in passes]
        moved.append(max(values) / min(values) - 1)
        cells = " | ".join(f"{v:.3f}" for v in values)
        print(f"| {i} | {summed:.3f} | {cells} | {100 * moved[-1]:.1f} % |")
    print()
    taus = [kendall_tau(list(zip(sums, timings, strict=True))) for timings in passes]
    taus = ", ".join(f"{tau:.3f}" for tau in taus)
    print(f"Kendall tau of the unit sums against each pass: {taus}")
    medians = [statistics.median(timings[i] for timings in passes) for i in range(len(sums))]
    print(
        "Kendall tau of the unit sums against each member's median over the passes: "
        f"{kendall_tau(list(zip(sums, medians, strict=True))):.3f}"
    )
    # The ceiling for any predictor: how well direct measurement agrees with itself.
    selves = [
        kendall_tau(list(zip(passes[a], passes[b], strict=True)))
        for a in range(args.passes)
        for b in range(a + 1, args.passes)
    ]
    if selves:
        print(
            "Kendall tau between passes (the same members measured again): "
            + ", ".join(f"{tau:.3f}" for tau in selves)
        )
    print(
        f"members moved between passes: median {100 * statistics.median(moved):.1f} %, "
        f"most {100 * max(moved):.1f} %; {seconds:.0f} s for {args.passes} passes"
    )


if __name__ == "__main__":
    main()
