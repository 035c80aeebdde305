"""Does the search beat what a practitioner would use instead? Baselines against searched students.

    nice -n 5 python benchmarks/baselines.py --task mnist5k-cluttered --budget macs
    python benchmarks/baselines.py --task mnist5k-cluttered --budget macs --phase search \
        --searches default,random,long,long-prune
    python benchmarks/baselines.py --table            # the table of everything run so far

For one task and one budget it trains, with one recipe (KD from the task's default teacher,
0.1 CE + 0.9 KL at T=4, SGD Nesterov lr 0.05 cosine, ±2 px shifts, ``--epochs`` epochs,
seeds 0-2, LAST-epoch validation accuracy):

* **zoo** networks scaled to fit the budget: MobileNetV2 and MnasNet-A1 width multipliers
  (the mobilenet space's canonical members, widths scaled as torchvision/timm do), CIFAR
  ResNet-8/14/20 at small widths with a stride-1 or stride-2 stem;
* **hand**-designed students: plain 3x3 stacks (one or two convs per stage) and
  depthwise-separable stacks, widths doubling per stage (the compact space's canonical
  members ``plainW``, ``plainWx2``, ``dsW``);
* **search** picks: the student ``searchkd search`` ranks first under the budget, with the
  default settings and each controller (``akd``, ``evolution``, ``tpe``, ``random``: the
  same number of trained trials, so random search is at equal compute; ``random-nohand``
  without the hand-designed members queued first), and a longer default search (``long``:
  100 trials; ``long-prune``: 100 trials with ASHA). The verdict compares the pick of the
  default controller with the best baseline.

Per family it keeps the LARGEST member that fits the budget (what a user scaling a network
down would pick). Budgets: ``macs`` (0.25x the teacher, the default search's), ``tight``
and ``loose`` latency in milliseconds (``--tight-ms``/``--loose-ms``), measured with the
default meter (ONNX Runtime, one thread, batch 1). Every network's latency is measured in
the same run with ONNX Runtime AND PyTorch eager (one thread, batch 1, median of rounds
until stable). Results are appended to a JSON-lines file as each run ends; rerunning skips
finished runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from search_spaces import get_space
from search_spaces.mobilenet import make_divisible
from searchkd.config import SearchConfig, TeacherConfig
from searchkd.cost import TorchLatencyMeter, count_macs, count_params
from searchkd.data import Dataset, load_dataset
from searchkd.latency import OnnxRuntimeMeter
from searchkd.meters import Timing
from searchkd.recipe import Recipe
from searchkd.retrain import StudentSource, load_retrain_teacher, retrain_student
from searchkd.schedules import ScheduleOptions
from searchkd.study import default_storage, load_existing_study, ranked_students
from searchkd.teacher import resolve_teacher
from searchkd.trials import summarize

SEEDS = (0, 1, 2)
BUDGETS = ("macs", "tight", "loose")
TIGHT_MS, LOOSE_MS = 0.1, 0.25  # the latency budgets, ms in ONNX Runtime
SEARCHES = {  # name -> extra `searchkd search` flags (each otherwise the default search)
    **{c: ["--controller", c] for c in ("akd", "evolution", "tpe", "random")},
    "random-nohand": ["--controller", "random", "--no-hand-designed"],
    "long": ["--trials", "100"],
    "long-prune": ["--trials", "100", "--prune"],
}
DEFAULT_PICK = f"-{SearchConfig().controller}"  # the default search's pick: its controller
RESULTS = Path("benchmarks/results/baselines.jsonl")
LATENCY = Path("benchmarks/results/baselines_latency.json")
OUT = Path("benchmarks/baselines_runs")


# --- the networks a practitioner would try ----------------------------------------------
def _scaled_mobile(name: str, alpha: float) -> dict[str, Any]:
    """A mobilenet-space canonical member at width multiplier ``alpha``: stage widths and
    the stem scaled and rounded to multiples of 8, the 1280-wide head kept (torchvision)."""
    arch = json.loads(json.dumps(get_space("mobilenet").canonical()[name]))
    arch["stem"] = make_divisible(32 * alpha)
    for stage in arch["stages"]:
        stage["channels"] = make_divisible(stage["channels"] * alpha)
    return arch


def _cifar_resnet(n: int, width: int, stem: str) -> dict[str, Any]:
    return {
        "space": "resnet",
        "version": 1,
        "block": "basic",
        "stem": stem,
        "stem_channels": width,
        "preact": False,
        "stages": [
            {"depth": n, "channels": width * 2**k, "stride": 1 if k == 0 else 2} for k in range(3)
        ],
    }


def families() -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """Family -> members, smallest first (kind is the part of the family name before '/')."""
    alphas = (0.1, 0.15, 0.2, 0.25, 0.35, 0.5, 0.75, 1.0)
    out: dict[str, list[tuple[str, dict[str, Any]]]] = {
        "zoo/mobilenet_v2": [
            (f"mobilenet_v2-{a}", _scaled_mobile("mobilenet_v2", a)) for a in alphas
        ],
        "zoo/mnasnet_a1": [(f"mnasnet_a1-{a}", _scaled_mobile("mnasnet_a1", a)) for a in alphas],
    }
    for n, depth in ((1, 8), (2, 14), (3, 20)):
        for stem, tag in (("cifar", "s1"), ("cifar_s2", "s2")):
            out[f"zoo/resnet{depth}-{tag}"] = [
                (f"resnet{depth}-w{w}-{tag}", _cifar_resnet(n, w, stem)) for w in (4, 6, 8, 12, 16)
            ]
    canonical = get_space("compact").canonical()
    for prefix, suffix in (("plain", ""), ("plain", "x2"), ("ds", "")):
        out[f"hand/{prefix}{suffix or ''}"] = [
            (f"{prefix}{w}{suffix}", canonical[f"{prefix}{w}{suffix}"]) for w in (8, 12, 16, 24)
        ]
    return out


# --- measuring ----------------------------------------------------------------------------
class Costs:
    """MACs, parameters and both latencies of an architecture at the task's input size,
    measured once per run (one thread, batch 1)."""

    def __init__(self, data: Dataset, quiet: dict[str, dict[str, Any]] | None = None) -> None:
        """``quiet``: costs from the measure phase by ``arch_key``; they are used instead of
        timing again, so what fits a latency budget does not depend on the training load."""
        self.data = data
        self.shape = (data.in_channels, data.resolution, data.resolution)
        self.ort = OnnxRuntimeMeter(timing=Timing(threads=1, tolerance=0.05))
        self.eager = TorchLatencyMeter("cpu", Timing(threads=1, tolerance=0.05))
        self._quiet = quiet or {}
        self._seen: dict[str, dict[str, float]] = {}

    def __call__(self, arch: dict[str, Any], eager: bool = False) -> dict[str, float]:
        key = json.dumps(arch, sort_keys=True)
        costs = self._seen.get(key) or self._quiet.get(arch_key(arch))
        if costs is None:
            model = self.build(arch)
            costs = {
                "macs": count_macs(model, self.shape),
                "params": count_params(model),
                "ort_ms": self.ort.measure(model, self.shape).median_ms,
            }
            self._seen[key] = costs
        if eager and "eager_ms" not in costs:
            costs["eager_ms"] = self.eager.measure(self.build(arch), self.shape).median_ms
        return costs

    def build(self, arch: dict[str, Any]) -> torch.nn.Module:
        space = get_space(arch["space"])
        return space.build(arch, self.data.in_channels, self.data.resolution, self.data.num_classes)


def budget_flags(budget: str, args: argparse.Namespace) -> list[str]:
    if budget == "macs":
        return ["--max-macs", "0.25x"]
    ms = args.tight_ms if budget == "tight" else args.loose_ms
    return ["--max-macs", "none", "--max-latency-ms", str(ms)]


def fits(costs: dict[str, float], budget: str, teacher_macs: float, args) -> bool:
    if budget == "macs":
        return costs["macs"] <= 0.25 * teacher_macs
    return costs["ort_ms"] <= (args.tight_ms if budget == "tight" else args.loose_ms)


def fitted_baselines(
    budget: str, costs: Costs, teacher_macs: float, args
) -> list[tuple[str, str, dict[str, Any]]]:
    """(family, name, arch): per family, the largest member within the budget."""
    chosen = []
    for family, members in families().items():
        fitting = [m for m in members if fits(costs(m[1]), budget, teacher_macs, args)]
        if fitting:
            name, arch = max(fitting, key=lambda item: costs(item[1])["macs"])
            chosen.append((family, name, arch))
    return chosen


# --- the search's picks -------------------------------------------------------------------
def search_pick(
    task: str, budget: str, search: str, validation_images: int, args
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run (or reuse) ``searchkd search`` and return its pick and facts. The pick's band
    is sized from ``validation_images``: studies older than the rule did not record it."""
    run_dir = OUT / task
    study = f"{task}-{budget}-{search}{seed_tag(args)}"
    facts_path = run_dir / f"{study}.facts.json"
    if not facts_path.exists():
        command = [
            "searchkd", "search", "--dataset", task, "--run-dir", str(run_dir), "--study", study,
            "--seed", str(args.search_seed), "--no-progress",
            *budget_flags(budget, args), *SEARCHES[search],
        ]  # fmt: skip
        log(" ".join(command))
        started = time.perf_counter()
        subprocess.run(command, check=True)
        seconds = time.perf_counter() - started
        facts_path.write_text(json.dumps({"search_seconds": round(seconds, 1)}))
    facts = json.loads(facts_path.read_text())
    loaded = load_existing_study(study, default_storage(run_dir, must_exist=True))
    best = ranked_students(loaded, validation_images)[0]
    trials = loaded.get_trials(deepcopy=False)
    facts.update(
        trial=best.number,
        proxy_accuracy=best.values[0],
        trained=sum(1 for t in trials if t.user_attrs.get("trained")),
        proposed=len(trials),
    )
    return best.user_attrs["arch"], facts


def seed_tag(args: argparse.Namespace) -> str:
    """Searches with another ``--search-seed`` are other studies and other rows."""
    return f"-s{args.search_seed}" if args.search_seed else ""


# --- retraining ---------------------------------------------------------------------------
def retrain_teacher(task: str, data: Dataset) -> tuple[Any, tuple]:
    """The task's default teacher (trained once, cached under ``OUT``) and the form
    ``retrain`` takes it in; every benchmark that retrains students of ``task`` uses it."""
    full = resolve_teacher(TeacherConfig(), data, 0, OUT / task, log)
    probe = StudentSource({"format": "searchkd-student", "arch": {}, "dataset": task}, "probe")
    return full, load_retrain_teacher(probe, data, OUT / task, str(full.folder), None, log)


def retrain(
    task: str, name: str, arch: dict[str, Any], data: Dataset, teacher, seed: int, args
) -> dict[str, Any]:
    source = StudentSource(
        {"format": "searchkd-student", "arch": arch, "dataset": task}, f"{task}-{name}"
    )
    named, route, info = teacher
    outcome = retrain_student(
        source, "kd", Recipe(epochs=args.epochs, seed=seed), ScheduleOptions(), data,
        named, route, info, OUT / task / "retrain", OUT / task / "assistants",
        progress=False, log=lambda m: None,
    )  # fmt: skip
    card = json.loads(outcome.student.with_suffix(".card.json").read_text())
    return {
        "accuracy": outcome.accuracy,
        "best_accuracy": outcome.best_accuracy,
        "seconds_per_epoch": card["train_seconds"] / args.epochs,
    }


def measure(task: str, args) -> None:
    """Time every family member and every trained search pick of ``task`` again, in one
    process, on a quiet machine (training beside it slows both).

    One network timed after another picks up the machine's drift: the same ResNet-8 built
    by two spaces measured 0.084 and 0.119 ms minutes apart. So every network is exported
    and loaded first, then all are timed round-robin, ``PASSES`` times: a slow minute hits
    every network alike. A network's latency is the median of its passes; ``*_noise`` is
    the inter-quartile range of its passes over that median."""
    torch.set_num_threads(1)
    data = load_dataset(task, seed=0)
    costs = Costs(data)
    archs = {name: arch for members in families().values() for name, arch in members}
    archs.update(
        {r["name"]: r["arch"] for r in done(Path(args.results)).values() if r["task"] == task}
    )
    table = json.loads(LATENCY.read_text()) if LATENCY.exists() else {}
    started = time.strftime("%Y-%m-%d %H:%M")
    entry = {"measured": started, "load": os.getloadavg()[0], "passes": PASSES, "networks": {}}
    timed = time_round_robin(costs, archs, ("ort", "eager"), task)
    for name, arch in archs.items():
        model = costs.build(arch)
        shape = costs.shape
        entry["networks"][name] = {
            "macs": count_macs(model, shape), "params": count_params(model),
            **timed[name], "arch": arch_key(arch),
        }  # fmt: skip
        log(f"{task}/{name}: {entry['networks'][name]}")
    entry["load_after"] = os.getloadavg()[0]
    table[task] = entry
    LATENCY.write_text(json.dumps(table, indent=1) + "\n")


PASSES = 9  # round-robin passes of the measure phase
CALLS = 50  # timed calls per network and pass (after 5 untimed)


def time_round_robin(
    costs: Costs,
    archs: dict[str, dict[str, Any]],
    kinds: tuple[str, ...],
    label: str,
    passes: int = PASSES,
) -> dict[str, dict[str, float]]:
    """Per network, ``<kind>_ms`` (median of ``passes`` pass medians) and ``<kind>_noise``
    (their inter-quartile range over that median) for each runtime of ``kinds`` ("ort",
    "eager"): every network is exported and loaded first, then all are timed in turn, once
    per pass, so a slow minute of the machine hits them all alike."""
    medians: dict[str, dict[str, list[float]]] = {n: {k: [] for k in kinds} for n in archs}
    with tempfile.TemporaryDirectory() as folder:
        calls = {name: _calls(costs, arch, Path(folder) / f"{i}.onnx")
                 for i, (name, arch) in enumerate(archs.items())}  # fmt: skip
        for number in range(passes):
            for name, by_kind in calls.items():
                for kind in kinds:
                    medians[name][kind].append(_median_ms(by_kind[kind]))
            log(f"{label}: pass {number + 1}/{passes} done")
    return {
        name: {k: v for kind in kinds for k, v in _summary(kind, medians[name][kind]).items()}
        for name in archs
    }


def _calls(costs: Costs, arch: dict[str, Any], path: Path) -> dict[str, Any]:
    """Batch-1 single-thread calls of the network in ONNX Runtime and in PyTorch eager."""
    import numpy as np

    from searchkd.onnx_export import export_onnx, make_session

    model = costs.build(arch).eval()
    export_onnx(model, costs.shape, path, check_batch=1)
    session = make_session(path, threads=1)
    feed = {session.get_inputs()[0].name: np.zeros((1, *costs.shape), dtype=np.float32)}
    example = torch.zeros(1, *costs.shape)

    def eager() -> None:
        with torch.inference_mode():
            model(example)

    return {"ort": lambda: session.run(None, feed), "eager": eager}


def _median_ms(call: Any) -> float:
    for _ in range(5):
        call()
    times = []
    for _ in range(CALLS):
        begin = time.perf_counter()
        call()
        times.append((time.perf_counter() - begin) * 1000.0)
    return statistics.median(times)


def _summary(kind: str, values: list[float]) -> dict[str, float]:
    quartiles = statistics.quantiles(values, n=4)
    median = statistics.median(values)
    return {f"{kind}_ms": median, f"{kind}_noise": (quartiles[2] - quartiles[0]) / median}


def arch_key(arch: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(arch, sort_keys=True).encode()).hexdigest()[:12]


def quiet_costs(task: str, groups: dict[tuple[str, str], list[dict[str, Any]]]) -> dict:
    """The costs of the measure phase, when it ran for ``task``, of the networks it timed
    under the name they are trained under (a search's pick changes when it reruns)."""
    if not LATENCY.exists():
        return {}
    networks = json.loads(LATENCY.read_text()).get(task, {}).get("networks", {})
    picks = {
        name: arch_key(rows[0]["arch"])
        for (t, name), rows in groups.items()
        if t == task and rows[0]["kind"] == "search"
    }
    return {
        name: costs
        for name, costs in networks.items()
        if name not in picks or costs.get("arch") == picks[name]
    }


def done(results: Path) -> dict[str, dict[str, Any]]:
    """The finished rows by key; of rows with one key, the last written (a search's row is
    written again when its pick changes)."""
    if not results.exists():
        return {}
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    return {row["key"]: row for row in rows}


def run(task: str, args) -> None:
    torch.set_num_threads(1)
    data = load_dataset(task, seed=0)
    full, teacher = retrain_teacher(task, data)
    teacher_macs = count_macs(full.model, (data.in_channels, data.resolution, data.resolution))
    timed = json.loads(LATENCY.read_text()).get(task, {}) if LATENCY.exists() else {}
    costs = Costs(
        data,
        {
            c["arch"]: {k: v for k, v in c.items() if k != "arch"}
            for c in timed.get("networks", {}).values()
            if "arch" in c  # measure passes before the key was written are re-timed
        },
    )
    # (family, name, arch, facts); a baseline that fits several budgets trains once
    entries: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {}
    budgets = args.budgets.split(",")
    if args.phase in ("all", "baselines"):
        for budget in budgets:
            for family, name, arch in fitted_baselines(budget, costs, teacher_macs, args):
                if not args.names or name in args.names.split(","):
                    entries[name] = (family, arch, {})
    if args.phase in ("all", "search"):
        for budget in budgets:
            for search in args.searches.split(","):
                arch, facts = search_pick(task, budget, search, len(data.val_y), args)
                name = f"search-{budget}-{search}{seed_tag(args)}"
                entries[name] = (f"search/{budget}", arch, facts)
    results = Path(args.results)
    for seed in SEEDS[: args.seeds]:  # seed-major: a cut-short run still covers every entry
        for name, (family, arch, facts) in entries.items():
            key = f"{task}/{name}/e{args.epochs}/seed{seed}"
            finished = done(results)
            if key in finished and finished[key]["arch"] == arch:
                continue  # a search whose pick changed (the pick rule did) is trained again
            measured = costs(arch, eager=True)
            log(f"{key}: {summarize(arch)} {measured}")
            # A pick that is a network already trained with this seed (searches that pick
            # the same hand-designed member) reuses that run: same weights, same numbers.
            trained = same_run(finished, task, arch, seed, args.epochs)
            # a search's pick can change (the pick rule did): its run trains in a new folder
            folder = f"{name}-{arch_key(arch)}" if family.startswith("search/") else name
            row = {
                "key": key, "task": task, "family": family, "kind": family.split("/")[0],
                "name": name,
                "seed": seed, "epochs": args.epochs, "summary": summarize(arch), "arch": arch,
                "teacher_accuracy": teacher[2]["val_accuracy"], "teacher_macs": teacher_macs,
                **measured, **facts,
                **(trained or retrain(task, folder, arch, data, teacher, seed, args)),
                "cpu": os.cpu_count(),
            }  # fmt: skip
            with results.open("a") as handle:
                handle.write(json.dumps(row) + "\n")


def same_run(
    rows: dict[str, dict[str, Any]], task: str, arch: dict[str, Any], seed: int, epochs: int
) -> dict[str, Any] | None:
    """The training results of a finished row with this exact architecture and seed."""
    for row in rows.values():
        if (row["task"], row["seed"], row["epochs"], row["arch"]) == (task, seed, epochs, arch):
            keys = ("accuracy", "best_accuracy", "seconds_per_epoch")
            return {**{k: row[k] for k in keys}, "same_run_as": row["key"]}
    return None


# --- the table ----------------------------------------------------------------------------
def table(results: Path, args) -> str:
    """Per task and budget: the largest member of each baseline family that fits (from the
    costs measured in the run), the search picks made under that budget."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in done(results).values():
        groups.setdefault((row["task"], row["name"]), []).append(row)
    lines = []
    for task in sorted({t for t, _ in groups}):
        for budget in args.budgets.split(","):
            rows, untrained = budget_rows(groups, task, budget, args)
            if rows:
                lines += budget_table(task, budget, rows)
            if untrained:
                lines.append(f"Fit the budget but not trained: {', '.join(untrained)}")
    return "\n".join(lines)


def budget_rows(groups, task: str, budget: str, args) -> tuple[list, list[str]]:
    """Rows (mean accuracy, name, first row with costs, accuracies, runs) of the baselines
    that fit and the search picks of this budget; and the names of fitting members that
    were never trained (largest of their family by the quiet measurement, not by the one
    made under training load that chose what to train)."""
    quiet = quiet_costs(task, groups)
    teacher_macs = next(g[0]["teacher_macs"] for (t, _), g in groups.items() if t == task)
    untrained = []
    names = set()
    for members in families().values():
        fitting = []
        for name, _ in members:
            trained = groups.get((task, name))
            costs = quiet.get(name) or (trained[0] if trained else None)
            if costs is not None and fits(costs, budget, teacher_macs, args):
                fitting.append((costs["macs"], name))
        if fitting:
            name = max(fitting)[1]
            (names.add if (task, name) in groups else untrained.append)(name)
    names |= {
        n for t, n in groups if t == task and groups[(t, n)][0]["family"] == f"search/{budget}"
    }
    rows = []
    for name in names:
        group = groups[(task, name)]
        accs = [100 * r["accuracy"] for r in group]
        first = {**group[0], **quiet.get(name, {})}
        rows.append((statistics.mean(accs), name, first, accs, group))
    return sorted(rows, key=lambda r: -r[0]), untrained


def budget_table(task: str, budget: str, rows: list) -> list[str]:
    first = rows[0][2]
    lines = [
        "",
        f"### {task}, budget {budget} (teacher {100 * first['teacher_accuracy']:.1f} %, "
        f"{first['teacher_macs'] / 1e6:.2f} M MACs)",
        "",
        "| student | kind | accuracy % (last epoch, mean ± sd) | seeds | MACs | params "
        "| ONNX Runtime ms (± noise) | eager ms | s/epoch | search s (trials) | architecture |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mean, name, row, accs, group in rows:
        sd = f"{statistics.stdev(accs):.2f}" if len(accs) > 1 else "n/a"
        search = (
            f"{row['search_seconds']:.0f} ({row['trained']})" if "search_seconds" in row else ""
        )
        ort = f"{row['ort_ms']:.3f}" + (
            f" ± {100 * row['ort_noise']:.0f} %" if "ort_noise" in row else ""
        )
        lines.append(
            f"| {name} | {row['kind']} | {mean:.2f} ± {sd} | {len(accs)} "
            f"| {row['macs'] / 1e6:.2f} M | {row['params'] / 1e3:.0f} k | {ort} "
            f"| {row['eager_ms']:.3f} "
            f"| {statistics.mean(r['seconds_per_epoch'] for r in group):.1f} | {search} "
            f"| {row['summary']} |"
        )
    lines.append(verdict(rows))
    return lines


def verdict(rows: list) -> str:
    """The issue's target: each default search's student (one per search seed) against the
    best fitting baseline."""
    default = re.compile(rf"{re.escape(DEFAULT_PICK)}(-s\d+)?$")
    picks = [r for r in rows if default.search(r[1]) and r[2]["kind"] == "search"]
    baselines = [r for r in rows if r[2]["kind"] != "search"]
    if not picks or not baselines:
        return ""
    best = max(baselines, key=lambda r: r[0])
    lines = []
    for pick in sorted(picks, key=lambda r: r[1]):
        gain = pick[0] - best[0]
        ratio = pick[2]["ort_ms"] / best[2]["ort_ms"]
        faster_as_good = [r[1] for r in baselines if r[0] >= pick[0] and faster(r[2], pick[2])]
        met = (gain >= 1.5 or (gain >= 0 and ratio <= 0.6)) and not faster_as_good
        lines.append(
            f"{pick[1]} vs best baseline ({best[1]}): {gain:+.2f} pp, ONNX Runtime latency "
            f"x{ratio:.2f}; baselines as accurate and faster: "
            f"{', '.join(faster_as_good) or 'none'} -> target {'met' if met else 'MISSED'}"
        )
    return "\n" + "\n\n".join(lines)


def faster(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether network ``a`` runs faster than ``b`` in ONNX Runtime by more than the noise
    of the two measurements (their passes' relative inter-quartile ranges, at least 5 %)."""
    noise = max(0.05, a.get("ort_noise", 0.0) + b.get("ort_noise", 0.0))
    return a["ort_ms"] < b["ort_ms"] * (1 - noise)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="mnist5k-cluttered")
    parser.add_argument("--budgets", default=",".join(BUDGETS), help="comma-separated")
    parser.add_argument("--phase", choices=("all", "baselines", "search", "measure"), default="all")
    parser.add_argument("--searches", default="akd,evolution,random", help=", ".join(SEARCHES))
    parser.add_argument("--search-seed", type=int, default=0)
    parser.add_argument("--names", default="", help="train only these baselines (comma-separated)")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--tight-ms", type=float, default=TIGHT_MS)
    parser.add_argument("--loose-ms", type=float, default=LOOSE_MS)
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("--table", action="store_true", help="print the table only")
    args = parser.parse_args()
    if args.phase == "measure" and not args.table:
        measure(args.task, args)
    elif not args.table:
        run(args.task, args)
    print(table(Path(args.results), args))


if __name__ == "__main__":
    main()
