"""Build the ground-truth table: every member of ``mobilenet-reduced`` trained on the
default task with the proxy KD recipe, so controllers can be replayed by lookup.

The table takes hours of 2-core CPU, so the work is split in steps that each resume
where they stopped (a finished job is a line in a JSON-lines file and is never redone):

    python benchmarks/ground_truth.py prepare     # data + teacher logits -> bundle
    python benchmarks/ground_truth.py train --workers 2   # proxy-train the job plan
    python benchmarks/ground_truth.py latency     # time every member (torch-cpu, 1 thread)
    python benchmarks/ground_truth.py zero_cost   # NASWOT and DisWOT scores at init
    python benchmarks/ground_truth.py assemble    # -> benchmarks/results/ground_truth.json

``train`` runs anywhere the bundle is (the bundle holds the exact tensors, so no dataset
package is needed there). The committed table was trained on a lent H200 with

    nvidia-cuda-mps-control -d    # kernels of the worker processes share the GPU
    python benchmarks/ground_truth.py train --device cuda --workers 15 --deadline 420
    python benchmarks/ground_truth.py train --device cuda --workers 15 --deadline 165 \
        --groups 6,7,5

The plan (``PLAN``), in priority order, each group in its own fixed random order of
members so a group cut short by ``--deadline`` is a random sample: 2 epochs, seeds 0 and
1 (the table and its noise); 10 epochs, seed 0 (does the proxy rank like longer
training?); 1 and 4 epochs, seed 0, and 2 epochs, seed 2 (which proxy length to default
to); 10 epochs, seed 1 (the reference's own noise); 4 epochs, seed 1; 2 epochs at batch 64.

Accuracy is the LAST epoch's, on the 1,000 validation images, as in a search.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from search_spaces import get_space  # noqa: E402
from search_spaces.base import decisions_key  # noqa: E402
from searchkd.config import ProxyConfig, SearchConfig  # noqa: E402
from searchkd.data import Dataset  # noqa: E402
from searchkd.device import prepare_device, resolve_device, stage_on_device  # noqa: E402
from searchkd.proxy import TeacherOutputs, train_proxy  # noqa: E402

SPACE = "mobilenet-reduced"
WORK = HERE / "ground_truth"  # bundle and raw job results (not committed: regenerable)
TABLE = HERE / "results" / "ground_truth.json"
PLAN = [  # ((epochs, batch size), seeds), priority order
    ((2, 128), (0, 1)),
    ((10, 128), (0,)),
    ((1, 128), (0,)),
    ((4, 128), (0,)),
    ((2, 128), (2,)),
    ((10, 128), (1,)),
    ((4, 128), (1,)),
    ((2, 64), (0, 1)),  # same samples as the 2-epoch proxy, twice the steps
]


def prepare(args: argparse.Namespace) -> None:
    """The default search's data and teacher, frozen into one file of tensors."""
    from searchkd.data import load_dataset
    from searchkd.proxy import compute_teacher_outputs
    from searchkd.teacher import resolve_teacher

    config = SearchConfig()
    data = load_dataset(config.dataset, seed=config.seed)
    teacher = resolve_teacher(config.teacher, data, config.seed, args.run_dir)
    outputs = compute_teacher_outputs(teacher.model, data.train_x, [])
    WORK.mkdir(parents=True, exist_ok=True)
    bundle = {
        "dataset": data.name,
        "train_x": data.train_x,
        "train_y": data.train_y,
        "val_x": data.val_x,
        "val_y": data.val_y,
        "num_classes": data.num_classes,
        "teacher_logits": outputs.logits,
        "teacher": {
            "arch": config.teacher.arch,
            "epochs": config.teacher.epochs,
            "val_accuracy": teacher.meta.get("val_accuracy"),
        },
        "proxy": config.proxy.model_dump(),
        "seed": config.seed,
    }
    torch.save(bundle, args.bundle)
    print(f"wrote {args.bundle}: {data.describe()}; teacher {bundle['teacher']}")


def job_plan(n_members: int, groups: list[int] | None = None) -> list[tuple[int, int, int, int]]:
    """(member, epochs, seed, batch size) in priority order: the groups of PLAN (all, or
    ``groups`` in that order), each in its own fixed random order of members, all of a
    member's seeds together."""
    jobs = []
    for g in range(len(PLAN)) if groups is None else groups:
        (epochs, batch), seeds = PLAN[g]
        order = list(range(n_members))
        random.Random(1000 + g).shuffle(order)
        jobs += [(member, epochs, seed, batch) for member in order for seed in seeds]
    return jobs


def done_jobs(out_dir: Path) -> set[tuple[int, int, int, int]]:
    done = set()
    for path in out_dir.glob("jobs-*.jsonl"):
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                done.add((row["member"], row["epochs"], row["seed"], row.get("batch", 128)))
    return done


def train_worker(args: argparse.Namespace) -> None:
    """One worker: the jobs whose position in the plan is ``worker`` modulo ``workers``."""
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    prepare_device(device)
    bundle = torch.load(args.bundle, map_location="cpu", weights_only=True)
    data = Dataset(
        name=bundle["dataset"],
        train_x=bundle["train_x"],
        train_y=bundle["train_y"],
        val_x=bundle["val_x"],
        val_y=bundle["val_y"],
        num_classes=bundle["num_classes"],
    )
    # Resident on the GPU when they fit (they do: ~30 MB), as a local search does.
    data, teacher = stage_on_device((data, TeacherOutputs(bundle["teacher_logits"])), device)
    space = get_space(SPACE)
    members = list(space.members())
    out_dir = Path(args.out_dir)
    done = done_jobs(out_dir)
    plan = job_plan(len(members), _groups(args))[args.worker :: args.workers]
    deadline = args.started + args.deadline if args.deadline else float("inf")
    with open(out_dir / f"jobs-{args.worker:02d}.jsonl", "a") as out:
        for member, epochs, seed, batch in plan:
            if (member, epochs, seed, batch) in done:
                continue
            if time.time() > deadline:
                break
            arch = space.from_decisions(members[member])
            torch.manual_seed(seed)  # the search seeds weight init the same way
            model = space.build(arch, data.in_channels, data.resolution, data.num_classes)
            proxy = ProxyConfig(
                **{**bundle["proxy"], "epochs": epochs, "batch_size": batch, "prune": False}
            )
            result = train_proxy(
                model, data, teacher, [], {"kd": 1.0}, {}, proxy, seed, device=device
            )
            row = {
                "member": member,
                "epochs": epochs,
                "seed": seed,
                "batch": batch,
                "accuracy": result.accuracy,
                "epoch_accuracies": result.epoch_accuracies,
                "train_seconds": result.train_seconds,
                "device": result.device,
            }
            out.write(json.dumps(row) + "\n")
            out.flush()


def train(args: argparse.Namespace) -> None:
    """Start ``--workers`` worker processes and wait; each appends to its own file."""
    import subprocess

    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    print(f"{len(done_jobs(out_dir))} jobs already done", flush=True)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "_worker",
                "--bundle",
                str(args.bundle),
                "--out-dir",
                str(out_dir),
                "--device",
                args.device,
                "--workers",
                str(args.workers),
                "--worker",
                str(k),
                "--threads",
                str(args.threads),
                "--deadline",
                str(args.deadline),
                "--started",
                str(started),
                "--groups",
                args.groups,
            ]
        )  # fmt: skip
        for k in range(args.workers)
    ]
    codes = [p.wait() for p in procs]
    done = done_jobs(out_dir)
    print(
        f"{len(done)} of {len(job_plan(get_space(SPACE).size()))} planned jobs done in "
        f"{time.time() - started:.0f}s; worker exit codes {codes}",
        flush=True,
    )


def latency(args: argparse.Namespace) -> None:
    """Every member timed on this machine's CPU at batch 1 (torch eager, one thread)."""
    from searchkd.cost import TorchLatencyMeter
    from searchkd.meters import Timing

    space = get_space(SPACE)
    path = WORK / "latency.jsonl"
    seen = set()
    if path.exists():
        seen = {json.loads(line)["member"] for line in path.read_text().splitlines() if line}
    meter = TorchLatencyMeter(
        timing=Timing(threads=1, warmup=10, runs=args.runs, repeats=args.repeats)
    )
    with open(path, "a") as out:
        for member, decisions in enumerate(space.members()):
            if member in seen:
                continue
            arch = space.from_decisions(decisions)
            model = space.build(arch, 1, 40, 10)
            measured = meter.measure(model, (1, 40, 40))
            out.write(
                json.dumps(
                    {
                        "member": member,
                        "latency_ms": measured.median_ms,
                        "spread_ms": measured.spread_ms,
                    }
                )
                + "\n"
            )
            out.flush()
    print(f"latency of {space.size()} members in {path} ({meter.name})")


def zero_cost(args: argparse.Namespace) -> None:
    """Every member's training-free scores at initialisation (init seeds 0 and 1) on the
    first 64 training images: NASWOT, and DisWOT against the default teacher."""
    from searchkd.data import load_dataset
    from searchkd.teacher import resolve_teacher
    from searchkd.zero_cost import diswot_score, naswot_score, teacher_signature

    config = SearchConfig()
    data = load_dataset(config.dataset, seed=config.seed)
    teacher = resolve_teacher(config.teacher, data, config.seed, args.run_dir)
    x = data.train_x[:64]
    signature = teacher_signature(teacher.model, x)
    space = get_space(SPACE)
    started = time.perf_counter()
    with open(WORK / "zero_cost.jsonl", "w") as out:
        for member, decisions in enumerate(space.members()):
            arch = space.from_decisions(decisions)
            scores: dict[str, list[float]] = {"naswot": [], "diswot": []}
            for seed in (0, 1):
                torch.manual_seed(seed)
                model = space.build(arch, data.in_channels, data.resolution, data.num_classes)
                scores["naswot"].append(naswot_score(model, x))
                scores["diswot"].append(diswot_score(model, signature, x))
            out.write(json.dumps({"member": member, "zero_cost": scores}) + "\n")
    seconds = (time.perf_counter() - started) / (4 * space.size())
    print(f"zero-cost scores of {space.size()} members, {seconds * 1000:.0f} ms per score")


def run_key(row: dict) -> str:
    """e<epochs>_s<seed> for the proxy's batch size, e<epochs>_b<batch>_s<seed> otherwise."""
    batch = row.get("batch", 128)
    middle = "" if batch == 128 else f"_b{batch}"
    return f"e{row['epochs']}{middle}_s{row['seed']}"


def _groups(args: argparse.Namespace) -> list[int] | None:
    return [int(g) for g in args.groups.split(",")] if args.groups else None


def assemble(args: argparse.Namespace) -> None:
    """One JSON table: per member its decisions, costs, latency and accuracies per
    (epochs, seed)."""
    space = get_space(SPACE)
    bundle = torch.load(args.bundle, weights_only=True)
    runs: dict[int, dict[str, float]] = {}
    seconds: dict[int, list[float]] = {}
    devices = set()
    for path in sorted(Path(args.out_dir).glob("jobs-*.jsonl")):
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            runs.setdefault(row["member"], {})[run_key(row)] = row["accuracy"]
            seconds.setdefault(row["epochs"], []).append(row["train_seconds"])
            devices.add(row["device"])
    zero = {}
    if (WORK / "zero_cost.jsonl").exists():
        for line in (WORK / "zero_cost.jsonl").read_text().splitlines():
            row = json.loads(line)
            zero[row["member"]] = row["zero_cost"]
    latencies = {}
    lat_path = WORK / "latency.jsonl"
    if lat_path.exists():
        for line in lat_path.read_text().splitlines():
            if line:
                row = json.loads(line)
                latencies[row["member"]] = row["latency_ms"]
    rows = []
    for member, decisions in enumerate(space.members()):
        arch = space.from_decisions(decisions)
        model = space.build(arch, 1, 40, 10)
        rows.append(
            {
                "member": member,
                "key": decisions_key(decisions),
                "decisions": decisions,
                "macs": space.macs(arch, 40, 1, 10),
                "params": sum(p.numel() for p in model.parameters()),
                "latency_ms": latencies.get(member),
                "accuracy": runs.get(member, {}),
                "zero_cost": zero.get(member),
            }
        )
    table = {
        "space": SPACE,
        "dataset": bundle["dataset"],
        "teacher": bundle["teacher"],
        "proxy": bundle["proxy"],
        "accuracy": "last epoch, 1000 validation images; key e<epochs>_s<seed>",
        "latency": "torch-cpu, 1 thread, batch 1, 1x40x40, median of rounds",
        "train_device": sorted(devices),
        "train_seconds_median": {
            str(e): round(statistics.median(v), 3) for e, v in sorted(seconds.items())
        },
        "members": rows,
    }
    TABLE.write_text(json.dumps(table, indent=1) + "\n")
    counts = {}
    for row in rows:
        for key in row["accuracy"]:
            counts[key] = counts.get(key, 0) + 1
    print(f"wrote {TABLE}: {len(rows)} members; runs per setting {dict(sorted(counts.items()))}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="step", required=True)
    for name in ("prepare", "train", "_worker", "latency", "zero_cost", "assemble"):
        step = sub.add_parser(name)
        step.add_argument("--bundle", default=str(WORK / "bundle.pt"))
        step.add_argument("--out-dir", default=str(WORK))
        step.add_argument("--run-dir", default="searchkd_runs")
        step.add_argument("--device", default="cpu")
        step.add_argument("--workers", type=int, default=1)
        step.add_argument("--worker", type=int, default=0)
        step.add_argument("--threads", type=int, default=1)
        step.add_argument("--deadline", type=float, default=0, help="seconds; 0: none")
        step.add_argument("--started", type=float, default=0)
        step.add_argument("--groups", default="", help="PLAN groups to run, in order")
        step.add_argument("--runs", type=int, default=30)
        step.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    if args.step == "_worker":
        os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
        train_worker(args)
    else:
        steps = {"prepare": prepare, "train": train, "latency": latency, "zero_cost": zero_cost}
        {**steps, "assemble": assemble}[args.step](args)


if __name__ == "__main__":
    main()
