"""Among students the proxy cannot tell apart, which one should a search pick?

    python benchmarks/tie_break.py [--draws 2000]

Replayed on the ground truth (``benchmarks/results/ground_truth.json``: 256 students of
``mobilenet-reduced`` with 2-epoch proxy and 10-epoch accuracies): a search is simulated
as ``N`` students drawn at random from those within a MACs budget, each seen through one
proxy run (a seed drawn per student). Its pick is either the highest proxy accuracy (what
``searchkd`` did before this rule), or, among the students within ``band`` of that highest
proxy accuracy, the one with the most MACs (what it does now), or the one with the fewest.
The table gives the mean 10-epoch accuracy of each pick with its standard error over the
draws.

The question comes from ``benchmarks/frontier.py``: among students chosen by proxy
accuracy, the 15-epoch accuracy followed their size more closely than their proxy score,
as if two epochs under-rate larger networks.

That table is another space (``mobilenet-reduced``) and an earlier proxy, so the rule is
checked again on the default space and proxy with a uniform sample: a random search
without hand-designed members (``searchkd search --controller random --no-hand-designed``)
gives each student's 2-epoch proxy accuracy, every one is retrained with the baselines
recipe (KD, 15 epochs, seed 0, last epoch), and searches of ``n`` of them are simulated
as above, the band also sized as one binomial standard error of the best proxy accuracy
on the validation images (what ``searchkd`` uses):

    python benchmarks/tie_break.py --sample STUDY --worker 0 --workers 2   # and worker 1
    python benchmarks/tie_break.py --sample STUDY --table
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from searchkd.study import pick_band  # noqa: E402

TABLE = HERE / "results" / "ground_truth.json"
SAMPLE = HERE / "results" / "tie_break_sample.jsonl"
BANDS = (0.0, 0.01, 0.02, 0.04)
RULES = ("highest proxy", "most MACs in band", "fewest MACs in band")
VALIDATION_IMAGES = 1000  # both tasks' validation split


def picks(members: list[dict], n: int, band: float | None, rng: random.Random) -> dict[str, float]:
    """The true accuracy of each rule's pick from one simulated search; ``band`` None is
    one binomial standard error of the best proxy accuracy."""
    drawn = rng.sample(members, n)
    seen = [(rng.choice(m["proxy"]), m) for m in drawn]
    best = max(p for p, _ in seen)
    width = pick_band(best, VALIDATION_IMAGES) if band is None else band
    tied = [m for p, m in seen if p >= best - width]
    return {
        RULES[0]: max(seen, key=lambda pm: pm[0])[1]["truth"],
        RULES[1]: max(tied, key=lambda m: m["macs"])["truth"],
        RULES[2]: min(tied, key=lambda m: m["macs"])["truth"],
    }


def stored_picks() -> None:
    """The baselines benchmark's stored searches: the highest proxy score against the pick
    ``searchkd`` makes now (``searchkd.study.ranked_students``, one binomial standard error
    on the tasks' 1,000 validation images; the older studies did not record that size)."""
    from benchmarks.baselines import OUT
    from searchkd.study import (
        default_storage,
        load_existing_study,
        make_storage,
        pick_student,
        ranked_students,
    )
    from searchkd.trials import summarize

    print("| study | highest proxy (proxy, MACs) | the pick: largest within one standard error |")
    print("|---|---|---|")
    for folder in sorted(p for p in OUT.iterdir() if (p / "study.log").exists()):
        url = default_storage(folder)
        for summary in make_storage(url).get_all_studies():
            study = load_existing_study(summary.study_name, url)
            ranked = ranked_students(study, validation_images=VALIDATION_IMAGES)
            if not ranked:
                continue
            top, pick = pick_student(ranked, 0.0), ranked[0]
            changed = "same" if pick is top else (
                f"#{pick.number} ({pick.values[0]:.3f}, {pick.values[1] / 1e6:.2f} M): "
                f"{summarize(pick.user_attrs['arch'])}"
            )  # fmt: skip
            print(f"| {summary.study_name} | #{top.number} ({top.values[0]:.3f}, "
                  f"{top.values[1] / 1e6:.2f} M) | {changed} |")  # fmt: skip


def sample_train(study_name: str, task: str, worker: int, workers: int, epochs: int) -> None:
    """Retrain the trained students of ``study_name`` (every ``workers``-th from
    ``worker``) with the baselines recipe, seed 0; a finished student is never redone."""
    import torch

    from benchmarks.baselines import OUT, RESULTS, done, log, retrain, retrain_teacher, same_run
    from searchkd.data import load_dataset
    from searchkd.study import default_storage, is_feasible, load_existing_study, trained_trials
    from searchkd.trials import summarize

    torch.set_num_threads(1)
    data = load_dataset(task, seed=0)
    _, teacher = retrain_teacher(task, data)
    study = load_existing_study(study_name, default_storage(OUT / task, must_exist=True))
    students = [t for t in trained_trials(study) if is_feasible(t)]
    recipe = argparse.Namespace(epochs=epochs)
    for trial in students[worker::workers]:
        key = f"{task}/{study_name}#{trial.number}/e{epochs}/seed0"
        if key in done(SAMPLE):
            continue
        arch = trial.user_attrs["arch"]
        log(f"{key}: {summarize(arch)}")
        name = f"sample-{study_name}-{trial.number}"
        trained = same_run(done(RESULTS), task, arch, 0, epochs) or retrain(
            task, name, arch, data, teacher, 0, recipe
        )
        row = {"key": key, "task": task, "study": study_name, "trial": trial.number,
               "proxy": trial.values[0], "macs": trial.values[1], "ort_ms": trial.values[2],
               "epochs": epochs, "summary": summarize(arch), "arch": arch, **trained}  # fmt: skip
        with SAMPLE.open("a") as handle:
            handle.write(json.dumps(row) + "\n")


def sample_table(study_name: str, draws: int, trials: list[int]) -> None:
    """Rank agreement over the sample, then the rules replayed on it."""
    from scipy.stats import spearmanr

    rows = [r for r in _rows(SAMPLE) if r["study"] == study_name]
    if not rows:
        raise SystemExit(f"no retrained student of {study_name} in {SAMPLE}: train it first")
    truth = [r["accuracy"] for r in rows]
    print(f"{len(rows)} students of {study_name}, retrained (KD, {rows[0]['epochs']} epochs, "
          f"seed 0, last epoch): {100 * min(truth):.1f}-{100 * max(truth):.1f} %")  # fmt: skip
    for what in ("proxy", "macs", "ort_ms"):
        rho = spearmanr([r[what] for r in rows], truth)[0]
        print(f"Spearman of {what} with the retrained accuracy: {rho:.2f}")
    members = [{"macs": r["macs"], "proxy": [r["proxy"]], "truth": r["accuracy"]} for r in rows]
    print_replay(members, [(f"{len(rows)} sampled", members)], trials, draws, (*BANDS, None))


def print_replay(
    everyone: list[dict],
    budgets: list[tuple[str, list[dict]]],
    trials: list[int],
    draws: int,
    bands: tuple[float | None, ...],
) -> None:
    """One row per (budget, trials per search, band): each rule's mean true accuracy of
    the pick with its standard error over the draws."""
    print(f"{len(everyone)} students with a true accuracy; {draws} draws per row")
    print("| MACs budget | students | trials | band | " + " | ".join(RULES) + " |")
    print("|---|---|---|---|" + "---|" * len(RULES))
    for label, within in budgets:
        for n in trials:
            if n > len(within):
                continue
            for band in bands:
                rng = random.Random(0)
                runs = [picks(within, n, band, rng) for _ in range(draws)]
                cells = []
                for rule in RULES:
                    values = [100 * run[rule] for run in runs]
                    error = statistics.stdev(values) / len(values) ** 0.5
                    cells.append(f"{statistics.mean(values):.2f} ± {error:.2f}")
                shown = "1 SE" if band is None else f"{band:.2f}"
                print(f"| {label} | {len(within)} | {n} | {shown} | " + " | ".join(cells) + " |")


def _rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=2000)
    parser.add_argument("--trials", default="20,50", help="students per simulated search")
    parser.add_argument(
        "--stored", action="store_true", help="the rule on benchmarks/baselines.py's searches"
    )
    parser.add_argument("--sample", default="", help="a uniform search's study to check on")
    parser.add_argument("--task", default="mnist5k-cluttered")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--worker", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--table", action="store_true", help="--sample: print the table only")
    args = parser.parse_args()
    trials = [int(n) for n in args.trials.split(",")]
    if args.stored:
        stored_picks()
        return
    if args.sample:
        if not args.table:
            sample_train(args.sample, args.task, args.worker, args.workers, args.epochs)
        sample_table(args.sample, args.draws, trials)
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
    budgets = []
    for quantile in (0.5, 0.25):
        budget = sorted(m["macs"] for m in members)[int(quantile * (len(members) - 1))]
        budgets.append((f"{budget / 1e6:.2f} M", [m for m in members if m["macs"] <= budget]))
    print_replay(members, budgets, trials, args.draws, BANDS)


if __name__ == "__main__":
    main()
