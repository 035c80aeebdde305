"""Among students the proxy cannot tell apart, which one should a search pick?

    python benchmarks/tie_break.py [--draws 2000]

Replayed on the ground truth (``benchmarks/results/ground_truth.json``: 256 students of
``mobilenet-reduced`` with 2-epoch proxy and 10-epoch accuracies): a search is simulated
as ``N`` students drawn at random from those within a MACs budget, each seen through one
proxy run (a seed drawn per student). Its pick is either the highest proxy accuracy (what
``searchkd`` does), or, among the students within ``band`` of that highest proxy accuracy,
the one with the most MACs, or the one with the fewest. The table gives the mean 10-epoch
accuracy of each pick with its standard error over the draws.

The question comes from ``benchmarks/frontier.py``: among students chosen by proxy
accuracy, the 15-epoch accuracy followed their size more closely than their proxy score,
as if two epochs under-rate larger networks.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
from pathlib import Path

TABLE = Path(__file__).resolve().parent / "results" / "ground_truth.json"
BANDS = (0.0, 0.01, 0.02, 0.04)
RULES = ("highest proxy", "most MACs in band", "fewest MACs in band")


def picks(members: list[dict], n: int, band: float, rng: random.Random) -> dict[str, float]:
    """The 10-epoch accuracy of each rule's pick from one simulated search."""
    drawn = rng.sample(members, n)
    seen = [(rng.choice(m["proxy"]), m) for m in drawn]
    best = max(p for p, _ in seen)
    tied = [m for p, m in seen if p >= best - band]
    return {
        RULES[0]: max(seen, key=lambda pm: pm[0])[1]["truth"],
        RULES[1]: max(tied, key=lambda m: m["macs"])["truth"],
        RULES[2]: min(tied, key=lambda m: m["macs"])["truth"],
    }


def stored_picks(validation_images: int = 1000) -> None:
    """The rule applied to the baselines benchmark's stored searches, with a band of one
    binomial standard error of the best proxy accuracy: which picks would change."""
    import math
    import sys

    sys.path.insert(0, str(TABLE.parents[2]))
    from benchmarks.baselines import OUT
    from searchkd.study import default_storage, load_existing_study, make_storage, ranked_students
    from searchkd.trials import summarize

    print("| study | pick (proxy, MACs) | largest within one standard error |")
    print("|---|---|---|")
    for folder in sorted(p for p in OUT.iterdir() if (p / "study.log").exists()):
        url = default_storage(folder)
        for summary in make_storage(url).get_all_studies():
            ranked = ranked_students(load_existing_study(summary.study_name, url))
            if not ranked:
                continue
            pick = ranked[0]
            best = max(t.values[0] for t in ranked)
            band = math.sqrt(best * (1 - best) / validation_images)
            tied = [t for t in ranked if t.values[0] >= best - band]
            largest = max(tied, key=lambda t: t.values[1])
            changed = "same" if largest.number == pick.number else (
                f"#{largest.number} ({largest.values[0]:.3f}, {largest.values[1] / 1e6:.2f} M): "
                f"{summarize(largest.user_attrs['arch'])}"
            )  # fmt: skip
            print(f"| {summary.study_name} | #{pick.number} ({pick.values[0]:.3f}, "
                  f"{pick.values[1] / 1e6:.2f} M) | {changed} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=2000)
    parser.add_argument("--trials", default="20,50", help="students per simulated search")
    parser.add_argument(
        "--stored", action="store_true", help="the rule on benchmarks/baselines.py's searches"
    )
    args = parser.parse_args()
    if args.stored:
        stored_picks()
        return
    table = json.loads(TABLE.read_text())
    members = [
        {
            "macs": m["macs"],
            "proxy": [v for k, v in m["accuracy"].items() if k.startswith("e2_s")],
            "truth": m["accuracy"]["e10_s0"],
        }
        for m in table["members"]
        if "e10_s0" in m["accuracy"]
    ]
    print(f"{len(members)} students with a 10-epoch accuracy; {args.draws} draws per row")
    print("| MACs budget | students | trials | band | " + " | ".join(RULES) + " |")
    print("|---|---|---|---|" + "---|" * len(RULES))
    for quantile in (0.5, 0.25):
        budget = sorted(m["macs"] for m in members)[int(quantile * (len(members) - 1))]
        within = [m for m in members if m["macs"] <= budget]
        for n in map(int, args.trials.split(",")):
            for band in BANDS:
                rng = random.Random(0)
                runs = [picks(within, n, band, rng) for _ in range(args.draws)]
                cells = []
                for rule in RULES:
                    values = [100 * run[rule] for run in runs]
                    error = statistics.stdev(values) / len(values) ** 0.5
                    cells.append(f"{statistics.mean(values):.2f} ± {error:.2f}")
                print(
                    f"| {budget / 1e6:.2f} M | {len(within)} | {n} | {band:.2f} | "
                    + " | ".join(cells)
                    + " |"
                )


if __name__ == "__main__":
    main()
