"""The Ray runner's cost: per-trial orchestration overhead, and throughput with more workers.

1. Overhead on a trivial trial (training replaced by a no-op returning a fixed result),
   wall time per trial over ``--overhead-trials`` trials, digits 1x8x8, mobilenet space:
   * the local runner (AKD controller, costing with one latency run, study writes);
   * the Ray runner, one worker (the same, plus a Tune trial per candidate);
   * Ray Tune with its stock ``OptunaSearch`` (TPE) over the same decisions, the trial a
     bare ``tune.report``, with and without actor reuse: no costing, no study attributes.
2. Throughput of the Ray runner on real proxy trials (mnist5k-cluttered, 2 epochs, the
   default 0.25x MACs budget, random controller so both runs train the same candidates,
   one CPU and one torch thread per trial), with 1 and with 2 workers.
2b. ``--steady SHORT:LONG``: the same, without the one-time start-up (Ray starting the
   workers' processes, each importing torch and mapping the shared inputs: several seconds,
   a large share of a 12-trial run). Each worker count runs a SHORT- and a LONG-trial
   search of the same seeded candidates; the steady rate is (LONG - SHORT) trials over the
   difference of their wall times, which is what a search of hundreds of trials sees.
   ``--repeats`` runs the four searches that many times, alternating worker counts.
3. The machine's own ceiling for (2): the first ``--ceiling-trials`` of those candidates
   trained by the same proxy job in one process, then split over two processes, without
   Ray, costing or a study. No runner can scale past what the cores do here.

    python -m benchmarks.ray_runner [--overhead-trials 30] [--throughput-trials 12]

Prints a markdown table and writes ``benchmarks/results/ray_runner.json``. Timing: run it
without ``nice`` on a quiet machine; the load average before and after each row is kept.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import platform
import tempfile
import time
from pathlib import Path

import ray
from ray import tune
from ray.tune.search.optuna import OptunaSearch

from runners.local import LocalRunner
from runners.ray import RayRunner, connect
from searchkd.config import RayConfig, build_config
from searchkd.proxy import ProxyResult
from searchkd.search import ProxyJob, Search

RESULTS = Path(__file__).resolve().parent / "results" / "ray_runner.json"
_FIXED = ProxyResult(0.5, 0.5, [0.5], 0.0, 0.0, {}, 0)


@dataclasses.dataclass(frozen=True)
class NoTraining(ProxyJob):
    """A job that trains nothing (defined in the script, so Ray ships it by value)."""

    def run(self, arch, seed, data, teacher_outputs, on_epoch=None, device=None) -> ProxyResult:
        return dataclasses.replace(_FIXED, seed=seed)


def _load() -> float:
    return os.getloadavg()[0]


def trivial_settings(run_dir: Path, study: str) -> dict:
    return {
        "dataset": "digits",
        "run_dir": str(run_dir),
        "study": study,
        "seed": 0,
        "teacher": {"arch": "resnet20", "epochs": 1, "batch_size": 64},
        "budget": {"max_macs": "100M"},
        "latency": {"warmup": 0, "runs": 1, "repeats": 1},
    }


def trivial_search(run_dir: Path, study: str) -> Search:
    return Search(build_config(overrides=trivial_settings(run_dir, study)), log=lambda m: None)


def timed(label: str, fn, trials: int) -> dict:
    before = _load()
    started = time.perf_counter()
    fn()
    seconds = time.perf_counter() - started
    return {
        "row": label,
        "trials": trials,
        "seconds": round(seconds, 2),
        "ms_per_trial": round(seconds / trials * 1000, 1),
        "load_before": round(before, 2),
        "load_after": round(_load(), 2),
    }


def overhead_rows(run_dir: Path, trials: int) -> list[dict]:
    rows = []
    local = trivial_search(run_dir, "local")
    local.train = lambda candidate, number: dataclasses.replace(_FIXED, seed=number)
    rows.append(
        timed(
            "local runner (AKD, costed, study attributes)",
            lambda: LocalRunner(progress=False).run(local, trials, 10**6),
            trials,
        )
    )
    remote = trivial_search(run_dir, "ray")
    remote.job = NoTraining(
        **{f.name: getattr(remote.job, f.name) for f in dataclasses.fields(ProxyJob)}
    )
    rows.append(
        timed(
            "Ray runner, 1 worker (AKD, costed, study attributes)",
            lambda: RayRunner(RayConfig(), progress=False).run(remote, trials, 10**6),
            trials,
        )
    )
    space = remote.space.decisions()
    for reuse in (False, True):
        label = f"Tune + stock OptunaSearch (TPE), actor reuse {'on' if reuse else 'off'}"
        rows.append(timed(label, lambda r=reuse: stock_tune(run_dir, space, trials, r), trials))
    return rows


def _bare_trial(config: dict) -> None:
    tune.report({"accuracy": 0.5})


def stock_tune(run_dir: Path, space: dict, trials: int, reuse: bool) -> None:
    tuner = tune.Tuner(
        tune.with_resources(_bare_trial, {"cpu": 1}),
        tune_config=tune.TuneConfig(
            search_alg=OptunaSearch(space, metric="accuracy", mode="max", seed=0),
            num_samples=trials,
            max_concurrent_trials=1,
            reuse_actors=reuse,
        ),
        run_config=tune.RunConfig(storage_path=str(run_dir / "tune"), verbose=0),
    )
    tuner.fit()


def real_search(run_dir: str | Path, study: str, meter: str | None = None) -> Search:
    """The search every throughput measurement runs: the default task and budget, random
    controller, seed 0, so every run proposes the same candidates in the same order.
    ``meter``: the latency meter (the default's local torch-cpu timing when None); a
    study reopens only with the meter it was run with."""
    settings: dict = {"run_dir": str(run_dir), "study": study, "controller": "random", "seed": 0}
    if meter:
        settings["latency"] = {"meter": meter}
    return Search(build_config(overrides=settings), log=lambda m: None)


def real_search_row(
    run_dir: Path, study: str, workers: int, trials: int, meter: str | None = None
) -> dict:
    """One Ray search of ``trials`` real proxy trials (:func:`real_search`), timed."""
    search = real_search(run_dir, study, meter)
    runner = RayRunner(RayConfig(workers=workers, cpus_per_trial=1), progress=False)
    row = timed(
        f"Ray runner, {workers} worker(s), real proxy trials"
        + (f", latency from {meter}" if meter else ""),
        lambda: runner.run(search, trials, 10**6),
        trials,
    )
    row["trials_per_hour"] = round(trials / row["seconds"] * 3600, 1)
    trained = [t for t in search.study.get_trials() if t.user_attrs.get("trained")]
    row["archs"] = [t.params for t in trained]
    # Training time inside the trials: how much of the wall time the workers trained,
    # and how much slower one trial trains when the other worker trains beside it.
    train = sum(t.user_attrs["train_seconds"] for t in trained)
    row["train_seconds_mean"] = round(train / len(trained), 2)
    row["workers_busy_training"] = round(train / (workers * row["seconds"]), 3)
    return row


def throughput_rows(run_dir: Path, trials: int, meter: str | None = None) -> list[dict]:
    rows = [
        real_search_row(run_dir, f"throughput-{workers}", workers, trials, meter)
        for workers in (1, 2)
    ]
    rows[1]["ratio_vs_1_worker"] = round(rows[1]["trials_per_hour"] / rows[0]["trials_per_hour"], 2)
    rows[1]["same_candidates"] = rows[0].pop("archs") == rows[1].pop("archs")
    return rows


def steady_rows(
    run_dir: Path, short: int, long: int, repeats: int, meter: str | None = None
) -> list[dict]:
    """Trials per hour without the one-time start-up: (long - short) trials over the
    difference of a long and a short search's wall times, per worker count and repeat."""
    rows = []
    for repeat in range(1, repeats + 1):
        rates = {}
        for workers in (1, 2):
            runs = {
                n: real_search_row(run_dir, f"steady-{repeat}-{workers}-{n}", workers, n, meter)
                for n in (short, long)
            }
            extra = runs[long]["seconds"] - runs[short]["seconds"]
            rates[workers] = (long - short) / extra * 3600
            rows.append(
                {
                    "row": f"repeat {repeat}, {workers} worker(s), steady state",
                    "trials": f"{long}-{short}",
                    "seconds": round(extra, 2),
                    "ms_per_trial": round(extra / (long - short) * 1000, 1),
                    "trials_per_hour": round(rates[workers], 1),
                    "start_up_seconds": round(
                        runs[short]["seconds"] - short * extra / (long - short), 2
                    ),
                    "whole_run_trials_per_hour": runs[long]["trials_per_hour"],
                    "same_candidates": runs[short]["archs"] == runs[long]["archs"][:short],
                    "load_before": runs[short]["load_before"],
                    "load_after": runs[long]["load_after"],
                }
            )
        rows[-1]["ratio_vs_1_worker"] = round(rates[2] / rates[1], 2)
    return rows


_CEILING: dict = {}


def _ceiling_init(job: ProxyJob, data, teacher_outputs) -> None:
    import torch

    torch.set_num_threads(1)  # as a Ray trial with one CPU trains
    _CEILING.update(job=job, data=data, teacher_outputs=teacher_outputs)


def _ceiling_train(arch_seed: tuple[dict, int]) -> float:
    arch, seed = arch_seed
    job = _CEILING["job"]
    return job.run(arch, seed, _CEILING["data"], _CEILING["teacher_outputs"]).train_seconds


def ceiling_rows(run_dir: Path, trials: int, study: str, meter: str | None = None) -> list[dict]:
    """The same proxy trainings as ``study``'s first ``trials``, in 1 process, then in 2
    (spawned, so no thread pool is inherited through fork): the best 2-worker ratio the
    cores allow."""
    search = real_search(run_dir, study, meter)
    trained = [t for t in search.study.get_trials() if t.user_attrs.get("trained")][:trials]
    jobs = [(t.user_attrs["arch"], t.user_attrs["seed"]) for t in trained]
    rows = []
    context = multiprocessing.get_context("spawn")
    for processes in (1, 2):
        with context.Pool(
            processes, _ceiling_init, (search.job, search.data, search.teacher_outputs)
        ) as pool:
            pool.map(_ceiling_train, jobs[:processes])  # start-up and first-touch, untimed
            row = timed(
                f"no Ray: the same proxy job, {processes} process(es)",
                lambda p=pool: p.map(_ceiling_train, jobs, chunksize=1),
                len(jobs),
            )
        row["trials_per_hour"] = round(len(jobs) / row["seconds"] * 3600, 1)
        rows.append(row)
    rows[1]["ratio_vs_1_worker"] = round(rows[1]["trials_per_hour"] / rows[0]["trials_per_hour"], 2)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--overhead-trials", type=int, default=30)
    parser.add_argument("--throughput-trials", type=int, default=8)
    parser.add_argument("--ceiling-trials", type=int, default=6)
    parser.add_argument(
        "--latency",
        help="latency meter for the throughput part, e.g. lut:lut40.json (default: torch-cpu)",
    )
    parser.add_argument(
        "--steady",
        metavar="SHORT:LONG",
        help="also measure steady-state throughput from a SHORT- and a LONG-trial search",
    )
    parser.add_argument("--repeats", type=int, default=1, help="repeats of --steady")
    parser.add_argument(
        "--skip-throughput", action="store_true", help="skip the whole-run throughput part"
    )
    parser.add_argument("--results", default=str(RESULTS), help="where the JSON goes")
    parser.add_argument(
        "--skip-overhead", action="store_true", help="run only the throughput (and ceiling) parts"
    )
    parser.add_argument(
        "--cache",
        default=str(Path(tempfile.gettempdir()) / "searchkd_bench_ray"),
        help="run folder for the throughput part (its trained teacher is reused)",
    )
    args = parser.parse_args()
    connect(None, lambda m: None, num_cpus=2)
    overhead = []
    if not args.skip_overhead:
        with tempfile.TemporaryDirectory() as tmp:
            overhead = overhead_rows(Path(tmp), args.overhead_trials)
    cache = Path(args.cache)
    for old in cache.glob("study.log*"):
        old.unlink()  # fresh studies; the teacher in cache/teachers is kept
    throughput = []
    if not args.skip_throughput:
        throughput = throughput_rows(cache, args.throughput_trials, args.latency)
    steady = []
    if args.steady:
        short, long = (int(n) for n in args.steady.split(":"))
        steady = steady_rows(cache, short, long, args.repeats, args.latency)
    ray.shutdown()
    trained_study = "throughput-1" if throughput else f"steady-1-1-{args.steady.split(':')[1]}"
    ceiling = (
        ceiling_rows(cache, args.ceiling_trials, trained_study, args.latency)
        if args.ceiling_trials
        else []
    )
    machine = f"{os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}"
    results = Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(
        json.dumps(
            {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine, "ray": ray.__version__,
             "overhead": overhead, "throughput": throughput, "steady": steady,
             "ceiling": ceiling},
            indent=2,
        )
        + "\n"
    )  # fmt: skip
    print(f"machine: {machine}; ray {ray.__version__}")
    print(
        "| run | trials | wall (s) | per trial (ms) | trials/hour | training steps s/trial "
        "(share of worker time) | load before/after |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in overhead + throughput + steady + ceiling:
        rate = row.get("trials_per_hour", "")
        if "ratio_vs_1_worker" in row:
            rate = f"{rate} ({row['ratio_vs_1_worker']}x)"
        busy = ""
        if "train_seconds_mean" in row:
            busy = f"{row['train_seconds_mean']} ({row['workers_busy_training']:.0%})"
        print(
            f"| {row['row']} | {row['trials']} | {row['seconds']} | {row['ms_per_trial']} | "
            f"{rate} | {busy} | {row['load_before']}/{row['load_after']} |"
        )
    if any(row.get("same_candidates") is False for row in throughput + steady):
        print("note: the two throughput runs trained different candidates")


if __name__ == "__main__":
    main()
