"""The Ray runner: Ray Tune executes the trials, the Optuna study stays the record of truth.

Tune's stock ``OptunaSearch`` writes its own trials and cannot write our user attributes
or constraints, so the search algorithm here is a Tune :class:`Searcher` over *our*
study, living in the driver, which is the study's only writer. It proposes and costs
candidates exactly as the local runner does (``Search.propose`` / ``add_rejected`` /
``start_trial`` / ``prepare``); only the proxy training of an accepted candidate runs in
a Ray worker, which reports each epoch's validation accuracy to Tune and, at the end,
the whole proxy result, which the driver records with ``Search.record``. So a trial
lands in the study with the same attributes, constraints and state whichever runner ran
it.

* The dataset and the cached teacher outputs go to Ray's object store once
  (:func:`share`); every trial receives references, and its worker maps the arrays
  from shared memory instead of receiving a copy.
* ``--prune`` hands early stopping to Tune's ``ASHAScheduler`` (same rungs and cutoff
  as the local runner's successive halving); a trial it stops is recorded PRUNED with
  its per-epoch accuracies and the reason.
* A worker that dies mid-trial (killed, out of memory, its node lost) fails the trial
  with the reason Ray gives, and its architecture is queued again, up to
  ``ray.max_retries`` times. A driver killed mid-search leaves RUNNING trials owned by
  its pid, which the rerun fails as orphans before it goes on (``runners.loop.TrialLoop``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import ray
import torch
from ray import tune
from ray.tune import Callback
from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search import Searcher

import runners
from runners.loop import Job, RunSummary, TrialLoop, is_running
from searchkd.config import RayConfig
from searchkd.device import map_tensors, prepare_device, stage_on_device
from searchkd.errors import SearchKDError
from searchkd.proxy import ProxyResult
from searchkd.search import ProxyJob, Search
from searchkd.study import mark_failed


# --- the cluster ------------------------------------------------------------------------
def connect(address: str | None = None, log: Callable[[str], None] = print, **local: Any) -> bool:
    """Join the Ray cluster at ``address`` (``auto`` or HOST:PORT), or start a local Ray
    bound to 127.0.0.1 without its dashboard (``local``: more ``ray.init`` options for it,
    e.g. ``num_cpus``). Returns True when this call started Ray (the caller then shuts it
    down); an already connected process is left as it is."""
    if ray.is_initialized():
        return False
    # Workers import this project's code the way the driver does, also when it runs from
    # a source checkout rather than an installed package.
    root = str(Path(runners.__file__).resolve().parent.parent)
    paths = [root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    runtime_env = {"env_vars": {"PYTHONPATH": os.pathsep.join(paths)}}
    options: dict[str, Any] = {"runtime_env": runtime_env, "logging_level": "WARNING"}
    try:
        if address:
            host = address.rpartition(":")[0]
            if host in ("127.0.0.1", "localhost"):  # a cluster bound to loopback, on this host
                options["_node_ip_address"] = "127.0.0.1"
            ray.init(address=address, **options)
            log(f"ray: joined the cluster at {address}")
        else:
            ray.init(include_dashboard=False, _node_ip_address="127.0.0.1", **options, **local)
            log(f"ray: started a local Ray with {ray.cluster_resources().get('CPU', 0):g} CPUs")
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        hint = (
            "start it with `ray start --head` (which requires RAY_AUTH_MODE=token and its "
            "token here too), or drop --address to run a local Ray"
            if address
            else "check that /tmp is writable and that no other Ray is half-started"
        )
        raise SearchKDError(f"cannot reach {where} ({reason}); {hint}") from None
    return not address


def check_resources(settings: RayConfig, log: Callable[[str], None] = print) -> None:
    """Refuse a trial that no node could ever run, instead of Tune waiting forever, and
    trials that would all fail on a GPU PyTorch cannot use; called as soon as Ray is up,
    before the teacher trains."""
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    for name, wanted, flag, fix in (
        ("CPU", settings.cpus_per_trial, "--cpus-per-trial", "add larger nodes"),
        ("GPU", settings.gpus_per_trial, "--gpus-per-trial", "add GPU nodes (0: train on CPUs)"),
    ):
        # A trial's resources are one bundle, placed on one node: two 1-GPU nodes cannot
        # hold a 2-GPU trial, though the cluster has 2 GPUs.
        largest = max((node.get(name, 0) for node in nodes), default=0)
        if wanted > largest:
            total = sum(node.get(name, 0) for node in nodes)
            raise SearchKDError(
                f"{flag} {wanted:g}: no node of the Ray cluster has that many {name}s (the "
                f"largest has {largest:g} of the cluster's {total:g}); lower {flag} or {fix}"
            )
    check_gpu_workers(settings, log)


def _gpu_probe() -> dict[str, Any]:
    """Run in a Ray worker holding the GPU share a trial will hold: what it was given,
    and whether PyTorch there can use it."""
    cuda = torch.cuda.is_available()
    return {
        "gpu_ids": [str(i) for i in ray.get_gpu_ids()],
        "cuda": cuda,
        "name": torch.cuda.get_device_name(0) if cuda else "",
        "torch": torch.__version__,
        "node": ray.get_runtime_context().get_node_id()[:8],
    }


_GPUS_CHECKED: set[tuple[str, float]] = set()  # (Ray job, GPUs per trial) found usable
GPU_PROBE_WAIT_S = 60.0


def check_gpu_workers(settings: RayConfig, log: Callable[[str], None]) -> None:
    """With ``--gpus-per-trial`` > 0, ask Ray for one trial's GPU share once, before the
    teacher trains, and check that PyTorch on that node sees a CUDA device. A CPU-only
    PyTorch on the GPU nodes would otherwise fail every trial the same way; this says so
    in one line instead, with nothing written to the study. Each trial still checks its
    own worker (:func:`trial_device`), since nodes may differ."""
    checked = (ray.get_runtime_context().get_job_id(), settings.gpus_per_trial)
    if settings.gpus_per_trial <= 0 or checked in _GPUS_CHECKED:  # the CLI checks first
        return
    probe = ray.remote(num_cpus=0, num_gpus=settings.gpus_per_trial)(_gpu_probe)
    pending = probe.remote()
    try:
        found = ray.get(pending, timeout=GPU_PROBE_WAIT_S)
    except ray.exceptions.GetTimeoutError:  # a shared cluster's GPUs are busy: Tune waits
        ray.cancel(pending)
        log(
            f"ray: no GPU share came free within {GPU_PROBE_WAIT_S:.0f}s to check PyTorch's "
            "CUDA there; each trial checks its own"
        )
        return
    if not found["cuda"]:
        raise SearchKDError(
            f"--gpus-per-trial {settings.gpus_per_trial:g}: Ray gave GPU(s) "
            f"{found['gpu_ids']} on node {found['node']}, but PyTorch there sees no CUDA "
            f"device (torch {found['torch']}); install a CUDA build of PyTorch on the GPU "
            "nodes, or run with --gpus-per-trial 0"
        )
    log(f"ray: a trial's GPU share on node {found['node']} is {found['name']}")
    _GPUS_CHECKED.add(checked)


def trial_device(gpus_per_trial: float) -> torch.device:
    """Where a Ray trial trains: the GPU Ray assigned it, or the CPU when it asked for none
    (also on a node that has GPUs). Ray limits a worker's CUDA_VISIBLE_DEVICES to its own
    GPUs, so ``cuda:0`` is the assigned one; a fraction of a GPU shares it with other
    trials."""
    if gpus_per_trial <= 0:
        return torch.device("cpu")
    ids = ray.get_gpu_ids()
    if not ids or not torch.cuda.is_available():
        raise SearchKDError(
            f"this Ray worker was given GPU(s) {list(ids)} but PyTorch here sees no CUDA device "
            f"(torch {torch.__version__}); install a CUDA build of PyTorch on the GPU nodes, "
            "or run with --gpus-per-trial 0"
        )
    return torch.device("cuda", visible_index(ids[0], os.environ.get("CUDA_VISIBLE_DEVICES")))


def visible_index(gpu_id: int | str, visible: str | None) -> int:
    """PyTorch's index of the GPU Ray numbers ``gpu_id``. Ray normally sets the worker's
    CUDA_VISIBLE_DEVICES to its own GPUs (so: 0). With RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_
    DEVICES it leaves the variable as the node was started with, e.g. ``2,3``, and its ids
    are those entries: PyTorch numbers them 0, 1 in that order. Unset: every GPU, as Ray
    numbers them."""
    if not visible:
        return int(gpu_id)
    entries = [entry.strip() for entry in visible.split(",")]
    return entries.index(str(gpu_id)) if str(gpu_id) in entries else 0


# --- data shared through the object store -----------------------------------------------
@dataclass
class _Packed:
    """A tensor as a numpy array, which Ray's object store hands to workers zero-copy
    (torch tensors it would copy). Channels-last tensors travel as N x H x W x C so they
    come back channels-last, the layout the proxy trains in."""

    array: Any
    channels_last: bool


def _pack(tensor: torch.Tensor) -> _Packed:
    channels_last = (
        tensor.dim() == 4
        and not tensor.is_contiguous()
        and tensor.is_contiguous(memory_format=torch.channels_last)
    )
    if channels_last:
        return _Packed(tensor.permute(0, 2, 3, 1).numpy(), True)
    return _Packed(tensor.contiguous().numpy(), False)


def _unpack(packed: _Packed) -> torch.Tensor:
    with warnings.catch_warnings():  # read-only shared memory; training never writes it
        warnings.simplefilter("ignore", UserWarning)
        tensor = torch.from_numpy(packed.array)
    return tensor.permute(0, 3, 1, 2) if packed.channels_last else tensor


@dataclass(frozen=True)
class SharedInputs:
    """Object-store references to what every trial reads: put once per search."""

    data: Any  # ray.ObjectRef of the packed Dataset
    teacher_outputs: Any  # ray.ObjectRef of the packed TeacherOutputs

    def fetch(self):
        """The dataset and teacher outputs, as tensors over the object store's memory."""
        data, outputs = ray.get([self.data, self.teacher_outputs])
        return map_tensors(data, _unpack, (_Packed,)), map_tensors(outputs, _unpack, (_Packed,))


def share(search: Search) -> SharedInputs:
    """Put the dataset and the cached teacher outputs in the object store, once."""
    return SharedInputs(
        data=ray.put(map_tensors(search.data, _pack)),
        teacher_outputs=ray.put(map_tensors(search.teacher_outputs, _pack)),
    )


# --- what runs in a worker ----------------------------------------------------------------
def train_trial(
    config: dict[str, Any], job: ProxyJob, inputs: SharedInputs, threads: int, gpus: float = 0.0
) -> None:
    """Tune's trainable: proxy-train one candidate, reporting each epoch's validation
    accuracy (what ASHA reads) and, after the last, the whole proxy result.

    With ``gpus`` > 0 it trains on the GPU Ray assigned, the data and teacher outputs
    copied there from the object store (which keeps them on the CPU) for the trial."""
    torch.set_num_threads(threads)
    device = trial_device(gpus)
    prepare_device(device)
    data, teacher_outputs = stage_on_device(inputs.fetch(), device)
    where = {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id()}

    def report(epoch: int, accuracies: list[float]) -> None:
        if epoch < job.proxy.epochs:  # the last epoch is reported with the result below
            tune.report(
                {
                    "epoch": epoch,
                    "accuracy": accuracies[-1],
                    "epoch_accuracies": accuracies,
                    **where,
                }
            )

    result = job.run(
        config["arch"], config["seed"], data, teacher_outputs, on_epoch=report, device=device
    )
    tune.report(
        {
            "epoch": job.proxy.epochs,
            "accuracy": result.accuracy,
            "epoch_accuracies": result.epoch_accuracies,
            "proxy_result": json.dumps(result.to_dict()),
            **where,
        }
    )


# --- what runs in the driver ---------------------------------------------------------------
class RecordingASHA(ASHAScheduler):
    """Tune's ASHA, remembering which trials it stopped at a rung (and where), so the
    driver records those PRUNED and not as failed or interrupted."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stopped: dict[str, str] = {}  # tune trial id -> reason

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        decision = super().on_trial_result(tune_controller, trial, result)
        if decision == TrialScheduler.STOP and "proxy_result" not in result:
            self.stopped[trial.trial_id] = (
                f"stopped after epoch {result['epoch']} by Ray Tune's ASHA: accuracy "
                f"{result['accuracy']:.4f} below its rung's cutoff"
            )
        return decision


class StudySearcher(Searcher):
    """Tune's search algorithm over our study; the driver is the study's only writer.

    ``suggest`` takes the trial loop's next job and returns it as a running trial's
    config; results come back in ``on_trial_complete`` and go to the loop. An error raised
    here would only be logged by Tune, so a fatal one (too many rejections or failures, a
    configuration error) is kept, the search is declared finished, and :class:`RayRunner`
    raises it after Tune returns.
    """

    def __init__(
        self,
        loop: TrialLoop,
        max_retries: int,
        scheduler: RecordingASHA | None,
        on_result: Callable[[int, dict], None] | None = None,
        log_trials: bool = True,
    ) -> None:
        super().__init__(metric="accuracy", mode="max")
        self.loop, self.study = loop, loop.study
        self.max_retries = max_retries
        self.log_trials = log_trials
        self.scheduler = scheduler
        self.on_result = on_result
        self.in_flight: dict[str, Job] = {}
        self.errored: dict[str, Job] = {}  # waiting for the reason (ErrorReasons)
        self.fatal: BaseException | None = None

    # --- proposing ---------------------------------------------------------------------
    def suggest(self, trial_id: str) -> dict | str | None:
        if self.fatal is not None:
            return Searcher.FINISHED
        loop = self.loop
        done = loop.trained()
        if done >= loop.n_trials:
            return Searcher.FINISHED
        if done + len(self.in_flight) + len(self.errored) >= loop.n_trials:
            return None  # enough are training; ask again when one ends
        try:
            job = loop.next_job()
        except SearchKDError as exc:
            self.fatal = exc
            return Searcher.FINISHED
        if job is None:
            return Searcher.FINISHED
        self.in_flight[trial_id] = job
        return {"number": job.trial.number, "arch": job.candidate.arch, "seed": job.seed}

    # --- results -----------------------------------------------------------------------
    def on_trial_result(self, trial_id: str, result: dict) -> None:
        job = self.in_flight.get(trial_id)
        if job is None:
            return
        job.accuracies = list(result.get("epoch_accuracies", job.accuracies))
        if self.on_result is not None:
            self.on_result(job.trial.number, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        job = self.in_flight.pop(trial_id, None)
        if job is None:
            return
        if error:  # the reason arrives next, in ErrorReasons.on_trial_error
            self.errored[trial_id] = job
            return
        result = result or {}
        loop = self.loop
        try:
            if "proxy_result" in result:
                proxy = ProxyResult(**json.loads(result["proxy_result"]))
                loop.completed(job, proxy)
                if self.log_trials:
                    done = min(loop.trained(), loop.n_trials)
                    loop.search.log(
                        f"trial {job.trial.number}: accuracy {proxy.accuracy:.4f} "
                        f"({done}/{loop.n_trials} trained)"
                    )
            elif self.scheduler is not None and trial_id in self.scheduler.stopped:
                accuracies = list(result.get("epoch_accuracies", job.accuracies))
                loop.pruned(job, accuracies, self.scheduler.stopped[trial_id])
            else:
                loop.failed(job.trial, "the Ray trial ended without reporting a result")
        except SearchKDError as exc:
            loop.stopped(job.trial, exc)  # recording it failed: not left RUNNING
            self.fatal = exc

    def trial_errored(self, trial_id: str, reason: str, worker_lost: bool) -> None:
        """A trial's worker raised or died: fail it with ``reason``; retry the architecture
        when the worker was lost rather than the candidate broken."""
        job = self.errored.pop(trial_id, None)
        if job is None:
            return
        try:
            if worker_lost:
                self.loop.lost(job.trial, reason, self.max_retries)
            else:
                self.loop.failed(job.trial, reason)
        except SearchKDError as exc:
            self.fatal = exc

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: the study is the searcher's state, and a rerun resumes from it."""

    def __getstate__(self) -> dict[str, Any]:
        """Tune pickles its whole configuration, this searcher included, into ``tuner.pkl``
        for ``Tuner.restore``, which searchkd never calls (a rerun resumes from the study).
        Pickled whole, the searcher carried the search's dataset and teacher outputs: 60 MB
        per run for mnist5k-cluttered in ``ray_results``. So only the study's name goes."""
        return {"study_name": self.study.study_name}  # unpickled: a record, not a searcher

    def restore(self, checkpoint_path: str) -> None:
        """Nothing to restore (see :meth:`save`)."""

    def unfinished(self) -> list[optuna.Trial]:
        return [job.trial for job in [*self.in_flight.values(), *self.errored.values()]]


def error_reason(trial) -> tuple[str, bool]:
    """One line for a Tune trial's error, and whether the worker was lost (killed, out of
    memory, its node gone) rather than the candidate failing. Ray records the error's
    text: for a lost worker its message, the pid and an exit type; for an exception the
    trainable raised, the traceback, whose last ``Name: message`` line we keep."""
    path = trial.error_file
    text = Path(path).read_text(errors="replace") if path and Path(path).is_file() else ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if "Worker exit type" in text or "actor died" in text:
        message = next((line for line in lines if "died" in line), "the worker died")
        pid = re.search(r"\bpid[:=] ?(\d+)", text)
        exit_type = re.search(r"Worker exit type: (\w+)", text)
        details = [f"pid {pid.group(1)}" if pid else "", exit_type.group(1) if exit_type else ""]
        return f"worker lost: {message} ({', '.join(filter(None, details))})", True
    for line in reversed(lines):
        found = re.match(r"^(?:[\w.]+\.)?(\w+(?:Error|Exception)\w*): (.+)$", line)
        if found:
            return f"{found.group(1)}: {found.group(2)[:200]}", False
    return (lines[-1][:200] if lines else "the Ray trial failed without a message"), False


class ErrorReasons(Callback):
    """Tune tells a searcher only *that* a trial errored; the why is on the Trial, which
    callbacks receive (just after the searcher was told)."""

    def __init__(self, searcher: StudySearcher) -> None:
        self.searcher = searcher

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.searcher.trial_errored(trial.trial_id, *error_reason(trial))


class RayRunner:
    """Runs trials as Ray Tune trials; the study is written by this process alone."""

    def __init__(
        self,
        settings: RayConfig | None = None,
        progress: bool = True,
        on_result: Callable[[int, dict], None] | None = None,
    ) -> None:
        self.settings = settings or RayConfig()
        self.progress = progress
        self.on_result = on_result  # (trial number, Tune result) per report, in the driver

    def run(self, search: Search, n_trials: int, max_rejections: int = 200) -> RunSummary:
        started_ray = connect(self.settings.address, search.log)
        try:
            check_resources(self.settings, search.log)
            return self._run(search, n_trials, max_rejections)
        finally:
            if started_ray:
                ray.shutdown()

    def _run(self, search: Search, n_trials: int, max_rejections: int) -> RunSummary:
        _quiet_tune()
        loop = TrialLoop(search, n_trials, max_rejections)
        settings, proxy = self.settings, search.config.proxy
        scheduler = None
        if proxy.prune:
            scheduler = RecordingASHA(
                time_attr="epoch",
                max_t=proxy.epochs,
                grace_period=min(proxy.prune_min_epochs, proxy.epochs),
                reduction_factor=proxy.prune_eta,
            )
        searcher = StudySearcher(
            loop,
            settings.max_retries,
            scheduler,
            self.on_result,
            log_trials=self.progress,
        )
        trainable = tune.with_parameters(
            train_trial,
            job=search.job,
            inputs=share(search),
            threads=max(1, int(settings.cpus_per_trial)),
            gpus=settings.gpus_per_trial,
        )
        resources = {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial}
        search.log(
            f"ray: {settings.cpus_per_trial:g} CPU(s) and {settings.gpus_per_trial:g} GPU(s) per "
            f"trial; trials train on {'the assigned GPU' if settings.gpus_per_trial else 'CPUs'}"
        )
        warn_shared_cores(search, settings)
        tuner = tune.Tuner(
            tune.with_resources(trainable, resources),
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                scheduler=scheduler,
                metric="accuracy",
                mode="max",
                num_samples=-1,
                max_concurrent_trials=settings.workers,
                reuse_actors=True,
                trial_name_creator=_trial_name,
                trial_dirname_creator=_trial_name,
            ),
            run_config=tune.RunConfig(
                name=f"{search.study.study_name}-{time.strftime('%Y%m%d-%H%M%S')}",
                storage_path=str((search.run_dir / "ray_results").resolve()),
                verbose=0,
                callbacks=[ErrorReasons(searcher)],
                failure_config=tune.FailureConfig(max_failures=0),  # retries are ours
            ),
        )
        try:
            if loop.resumed < n_trials:
                tuner.fit()
        except KeyboardInterrupt:
            loop.interrupted(searcher.unfinished())
            raise
        finally:
            for trial in searcher.unfinished():  # Tune stopped before telling us
                if is_running(search.study, trial):
                    mark_failed(search.study, trial, "the Ray run ended before the trial did")
        if searcher.fatal is not None:
            raise searcher.fatal
        return loop.summary()


def warn_shared_cores(search: Search, settings: RayConfig) -> None:
    """Say so when candidates are timed on the CPU cores that trials train on: the timing
    then depends on what the trainers are doing (on one quiet 2-core machine the same 12
    candidates' median latency ranged 2.96-3.52 ms over four runs, and often took the
    maximum number of rounds), and the rounds take CPU from the trainers."""
    meter = search.costs.meter_name or ""
    timed_here = meter.startswith(("torch-cpu", "onnxruntime-cpu"))
    if timed_here and settings.workers > 1 and len(ray.nodes()) == 1:
        search.log(
            f"ray: latency is timed ({meter}) on the cores {settings.workers} workers train "
            "on, so it varies with their load and slows them; a latency table "
            "(--latency lut:PATH, see profile-device) or a device node "
            "(--latency ray:RESOURCE) avoids both"
        )


def _trial_name(trial) -> str:
    return f"trial_{trial.config.get('number', trial.trial_id)}"


def _quiet_tune() -> None:
    """Tune as an engine only: the study records results (no per-trial result files, no
    console tables), and Ctrl-C reaches the runner, which requeues as the local one does."""
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    # Without result files Tune's end-of-run summary warns that it found none.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
