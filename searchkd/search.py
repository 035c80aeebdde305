"""One search, set up once: data, teacher, cached teacher outputs, space, costs,
budget, study and controller; then how its candidates are costed (built, counted, timed)
and trained (proxy KD against the cached teacher outputs).

What a trial does to the study is :class:`~searchkd.trials.TrialCore`'s; the loop that
drives trials is ``runners/loop.py``. A distributed runner trains a candidate elsewhere
through :class:`ProxyJob`, a small picklable description of the training.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from search_spaces import get_space, load_architecture
from searchkd.budget import Budget, parse_limit, resolve_budget
from searchkd.config import ProxyConfig, SearchConfig
from searchkd.cost import CostModel, count_macs, count_params
from searchkd.data import Dataset, load_dataset
from searchkd.device import (
    describe_device,
    on_device,
    prepare_device,
    resolve_device,
    stage_on_device,
    tensor_bytes,
)
from searchkd.distill.combined import check_weights
from searchkd.errors import BudgetError, SearchKDError
from searchkd.latency import LatencyTable
from searchkd.meters import LatencyMeter, make_meter
from searchkd.proxy import (
    ProxyResult,
    TeacherOutputs,
    build_objective,
    compute_teacher_outputs,
    train_proxy,
)
from searchkd.pruning import SuccessiveHalving
from searchkd.study import (
    OBJECTIVES,
    VALIDATION_IMAGES,
    adopt_user_attrs,
    claim_settings,
    open_study,
)
from searchkd.study_lock import StudyLock
from searchkd.teacher import (
    Teacher,
    check_teacher_config,
    ready_teacher,
    resolve_teacher,
    untrained_teacher,
)
from searchkd.trials import Candidate, TrialCore
from searchkd.zero_cost import diswot_score, naswot_score, teacher_signature


@dataclass(frozen=True)
class ProxyJob:
    """How to proxy-train one candidate, without the study or the data: a small picklable
    value, so a distributed runner ships it to the worker that trains, while the data and
    the cached teacher outputs travel once, separately (by reference on Ray)."""

    space: str
    in_channels: int
    resolution: int
    num_classes: int
    loss_weights: dict[str, float]
    loss_options: dict[str, dict[str, Any]]
    proxy: ProxyConfig
    space_args: dict[str, Any] = dataclasses.field(default_factory=dict)  # nni: spaces
    space_taps: list[str] = dataclasses.field(default_factory=list)

    def run(
        self,
        arch: dict[str, Any],
        seed: int,
        data: Dataset,
        teacher_outputs: TeacherOutputs,
        on_epoch: Callable[[int, list[float]], None] | None = None,
        device: torch.device | None = None,
    ) -> ProxyResult:
        """Build the candidate with ``seed`` (on the CPU: the same initial weights on every
        device) and train it on ``device`` (default: the CPU); ``on_epoch`` as in
        :func:`~searchkd.proxy.train_proxy` (it may stop the run by raising)."""
        space = get_space(self.space, self.space_args, self.space_taps)
        torch.manual_seed(seed)
        model = space.build(arch, self.in_channels, self.resolution, self.num_classes)
        taps, preact = [], []
        if teacher_outputs.features:  # the losses read features: hook the student's too
            taps, preact = space.feature_taps(arch), list(space.preact_taps(arch))
        return train_proxy(
            model,
            data,
            teacher_outputs,
            taps,
            self.loss_weights,
            self.loss_options,
            self.proxy,
            seed,
            student_preact=preact,
            on_epoch=on_epoch,
            device=device or torch.device("cpu"),
        )


class Search(TrialCore):
    """Everything a search needs, built once from a validated config."""

    def __init__(self, config: SearchConfig, log: Callable[[str], None] = print) -> None:
        self.config = config
        self.log = log
        # Where the teacher, its cache and the local runner's trials train (a Ray trial
        # trains where Ray places it: runners/ray.py).
        self.device = resolve_device(config.device)
        prepare_device(self.device)
        self.run_dir = Path(config.run_dir)  # made once the inputs pass their checks
        self.data = _channels_last(
            load_dataset(config.dataset, config.data_dir, config.seed, config.image_size)
        )
        log(f"data: {self.data.describe()}")
        self.space = get_space(config.space, config.space_args, config.space_taps)
        self.input_shape = (self.data.in_channels, self.data.resolution, self.data.resolution)
        # The inputs' own mistakes first (a misspelt teacher, a missing latency table):
        # checked after the study is opened they would read as "teacher differ", and
        # they would leave an empty study behind.
        for teacher_config in (config.teacher, *config.ensemble):
            check_teacher_config(teacher_config)
        check_weights(config.loss.weights)
        meter = self._make_costs()
        # Teachers that need no training load now, and the budget is checked now: a wrong
        # teacher file or a budget no member meets then fails before the study exists (it
        # leaves no empty study behind) and before a teacher trains.
        ready = [
            ready_teacher(member, self.data, config.seed, self.run_dir, log)
            for member in (config.teacher, *config.ensemble)
        ]
        teacher_cost = self._check_budget_reachable(ready[0], meter)
        _writable_dir(self.run_dir)
        self._open_study()
        self.teacher = ready[0] or resolve_teacher(
            config.teacher, self.data, config.seed, self.run_dir, log, self.device
        )
        self.ensemble = [
            loaded
            or resolve_teacher(member, self.data, config.seed, self.run_dir, log, self.device)
            for loaded, member in zip(ready[1:], config.ensemble, strict=True)
        ]
        budget, teacher_cost = self._adopt_budget(meter, teacher_cost)
        super().__init__(
            config, self.space, self.study, self.lock, budget, teacher_cost, log, _pruner(config)
        )
        log(f"budget: {self.budget.describe()} (teacher: {_cost_text(self.teacher_cost)})")
        self._check_reachable(self.budget)
        self.teacher_outputs = self._cache_teacher_outputs()
        self._resident: tuple[Dataset, TeacherOutputs] | None = None  # see training_inputs
        self._prepare_zero_cost()
        self.job = ProxyJob(
            config.space,
            self.data.in_channels,
            self.data.resolution,
            self.data.num_classes,
            config.loss.weights,
            config.loss.options,
            config.proxy,
            config.space_args,
            config.space_taps,
        )
        self._describe_study()
        self.start()

    def _make_costs(self) -> LatencyMeter | None:
        """The cost model of the candidates (``self.costs``); returns the meter that times
        here, None when latency comes from a table profiled on the target."""
        shape, classes = self.input_shape, self.data.num_classes
        meter, table = self._latency_meter(shape)
        self.costs = CostModel(
            self.build,
            shape,
            meter,
            closed_form_macs=lambda arch: self.space.macs(arch, shape[1], shape[0], classes),
            table=table,
        )
        return meter

    def _open_study(self) -> None:
        """Open (or create) the study before the teacher trains, so a wrong storage or a
        reused study name fails in a second, not after minutes of training. Creating it
        and recording its settings is one step for all searchers on the storage."""
        config = self.config
        self.lock = StudyLock(config.storage_url, config.study_name)
        with self.lock.hold():
            self.study = open_study(config.study_name, config.storage_url, log=self.log)
            claim_settings(self.study, self.lock, self.settings())
        if not self.lock.across_processes:
            kind = config.storage_url.split(":", 1)[0]
            self.log(
                f"note: on {kind} storage, searchers in other processes are not coordinated "
                "(their settings are not checked against each other, and two may train one "
                "architecture); a journal file, SQLite or PostgreSQL coordinate them"
            )

    def _adopt_budget(
        self, meter: LatencyMeter | None, teacher_cost: dict[str, float | None]
    ) -> tuple[Budget, dict[str, float | None]]:
        """The budget's limits and the teacher's costs, as the first searcher on the study
        resolved them (every later searcher adopts them). A table describes the student
        space only: the teacher's latency on the target is unknown then."""
        stored = self.study.user_attrs.get("teacher_cost")
        if stored is not None:
            teacher_cost = stored
        elif "latency_ms" not in teacher_cost:  # not timed by the budget check
            latency = meter.measure(self.teacher.model, self.input_shape) if meter else None
            teacher_cost = {**teacher_cost, "latency_ms": latency.median_ms if latency else None}
        adopted = adopt_user_attrs(
            self.study,
            self.lock,
            {"teacher_cost": teacher_cost, "budget": self._resolve_budget(teacher_cost).limits},
        )
        return _stored_budget(adopted["budget"]), adopted["teacher_cost"]

    def _prepare_zero_cost(self) -> None:
        """The batch training-free scores are computed on and, for DisWOT, the teacher's
        signature on it (computed once, not per candidate)."""
        settings = self.config.zero_cost
        self._zero_cost_batch = self.data.train_x[: settings.batch].to(self.device)
        self._zero_cost_teacher = None
        if (settings.skip_quantile > 0 or settings.warmup_pool > 0) and settings.score == "diswot":
            with on_device(self.teacher.model, self.device):
                self._zero_cost_teacher = teacher_signature(
                    self.teacher.model, self._zero_cost_batch
                )

    def settings(self) -> dict[str, Any]:
        """The config's settings, plus the space's version once it is past 1: a space that
        gained choices gives a study's decisions other distributions, which a study made
        before cannot take (spaces still at version 1 keep their studies' fingerprint)."""
        settings = self.config.search_settings()
        if self.space.version > 1:
            settings["space_version"] = self.space.version
        if fingerprint := getattr(self.space, "fingerprint", None):  # an nni: space's mutables
            settings["space_fingerprint"] = fingerprint
        return settings

    def _latency_meter(self, shape) -> tuple[LatencyMeter | None, LatencyTable | None]:
        """A meter timing candidates here, or a table profiled on the target."""
        settings = self.config.latency
        meter = make_meter(settings.meter, settings.timing())
        if isinstance(meter, LatencyTable):
            meter.check_matches(self.space.arch_family, shape, self.data.num_classes)
            return None, meter
        return meter, None

    def _resolve_budget(self, teacher_cost: dict[str, float | None]) -> Budget:
        """Resolve relative budgets once; a resumed study reuses the stored limits, so a
        noisy re-measurement of the teacher's latency cannot move the budget."""
        stored = self.study.user_attrs.get("budget")
        if stored is not None:
            return _stored_budget(stored)
        raw = self.config.budget
        return resolve_budget(raw.max_macs, raw.max_params, raw.max_latency_ms, teacher_cost)

    # --- set-up -------------------------------------------------------------------------
    def build(self, arch: dict[str, Any]) -> nn.Module:
        return self.space.build(
            arch, self.data.in_channels, self.data.resolution, self.data.num_classes
        )

    def _check_budget_reachable(
        self, teacher: Teacher | None, meter: LatencyMeter | None
    ) -> dict[str, float | None]:
        """Before the study opens and the teacher trains: refuse a budget no member meets.
        Returns the teacher's costs, read from its network before training when it has
        not trained yet (the same MACs, parameters and latency); its latency only when a
        relative latency limit needs it now (else it is timed once the study shows it is
        not stored already)."""
        raw = self.config.budget
        latency_limit = parse_limit(raw.max_latency_ms, "max_latency_ms")
        with torch.random.fork_rng(devices=[]):  # a check draws nothing from the seeded stream
            model = (
                teacher.model
                if teacher is not None
                else untrained_teacher(self.config.teacher, self.data)
            )
            cost: dict[str, float | None] = {
                "macs": count_macs(model, self.input_shape),
                "params": count_params(model),
            }
            if latency_limit is not None and latency_limit.relative and meter is not None:
                cost["latency_ms"] = meter.measure(model, self.input_shape).median_ms
            # A table holds no teacher latency: a relative latency limit then says so.
            budget = resolve_budget(raw.max_macs, raw.max_params, raw.max_latency_ms, cost)
            self._check_reachable(budget)
        return cost

    def _check_reachable(self, budget: Budget) -> None:
        """Refuse to start when even the cheapest member of the space is over ``budget``."""
        smallest = self.space.smallest()
        macs, params = self.costs.counts(smallest)
        measured: dict[str, float | None] = {"macs": macs, "params": params}
        if budget.max_latency_ms is not None:
            measured["latency_ms"] = self.costs.latency(smallest).median_ms
        over = budget.violations(measured)
        if over:
            raise BudgetError(
                f"no member of the {self.space.name} space meets the budget: even the smallest "
                f"has {'; '.join(over)}; raise the budget or choose a smaller space"
            )

    def _cache_teacher_outputs(self) -> TeacherOutputs:
        """Cache the teacher's logits and exactly the taps the configured losses read.

        Which taps those are is known only once the losses exist, so the objective is built
        first for the smallest student against a one-image probe of the teacher. That also
        makes a bad loss config (unknown name or option, missing tap) fail here, before any
        trial, with the error listing what exists.
        """
        teacher = self.teacher
        preact = _preact_taps(teacher)
        probe_x = self.data.train_x[:1]
        probe = compute_teacher_outputs(teacher.model, probe_x, list(teacher.taps), preact=preact)
        probe.ensemble = [probe.logits] * len(self.ensemble)  # only their count matters here
        smallest = self.space.smallest()
        stage, student_preact = (
            self.space.feature_taps(smallest),
            list(self.space.preact_taps(smallest)),
        )
        objective = build_objective(
            self.build(smallest),
            (1, *self.input_shape),
            probe,
            stage,
            self.config.loss.weights,
            self.config.loss.options,
            self.data.train_y,
            student_preact,
        )
        needed = set(objective.teacher_taps)  # the losses checked these against the teacher
        outputs = compute_teacher_outputs(
            teacher.model,
            self.data.train_x,
            [tap for tap in teacher.taps if tap in needed],
            preact={tap: bn for tap, bn in preact.items() if tap in needed},
            ensemble=[member.model for member in self.ensemble],
            device=self.device,
        )
        cached = ", ".join(outputs.features) or "logits only"
        members = f" and {len(self.ensemble)} ensemble teacher(s)" if self.ensemble else ""
        self.log(
            f"teacher outputs cached once for {len(self.data.train_x)} images{members} "
            f"({outputs.seconds:.1f}s; taps: {cached})"
        )
        return outputs

    def _prescreen(self) -> Callable[[dict[str, Any]], float] | None:
        """log(cost / limit) of the worst budget a decision vector breaks, from what is
        known without building a module: the space's closed-form MACs and a latency
        table's prediction. For the AKD warm-up; None when neither applies (building
        thousands of modules to count them would cost more than the rejections it saves)."""
        shape, classes = self.input_shape, self.data.num_classes
        checks: list[tuple[float, Callable[[dict[str, Any]], float]]] = []
        has_formula = self.space.macs(self.space.smallest(), shape[1], shape[0]) is not None
        if self.budget.max_macs is not None and has_formula:
            checks.append(
                (
                    self.budget.max_macs,
                    lambda arch: self.space.macs(arch, shape[1], shape[0], classes),
                )
            )
        if self.budget.max_latency_ms is not None and self.costs.table is not None:
            table = self.costs.table
            checks.append((self.budget.max_latency_ms, lambda arch: table.predict(arch).median_ms))
        if not checks:
            return None

        def excess(decisions: dict[str, Any]) -> float:
            arch = self.space.from_decisions(decisions)
            worst = max(cost(arch) / limit for limit, cost in checks)
            return max(math.log(max(worst, 1e-12)), 0.0)

        return excess

    def _describe_study(self) -> None:
        attrs = {
            "space": self.space.name,
            "dataset": self.data.name,
            "input_shape": list(self.input_shape),
            "num_classes": self.data.num_classes,
            "objectives": list(OBJECTIVES),
            "constraint_names": list(Budget.NAMES),
            "teacher_val_accuracy": self.teacher.meta.get("val_accuracy"),
            "accuracy_kind": "last_epoch",
            VALIDATION_IMAGES: len(self.data.val_y),
            "latency_meter": self.costs.meter_name,
        }
        for key, value in attrs.items():
            self.study.set_user_attr(key, value)

    def cost(self, arch: dict[str, Any], number: int | None = None) -> Candidate:
        """Cost an architecture cheapest check first: closed-form MACs reject without
        building anything; then counted MACs and parameters; latency only if in budget."""
        macs = self.costs.closed_form_macs(arch)
        if macs is not None and (over := self.budget.violations({"macs": macs})):
            return Candidate(number, arch, macs, None, None, over)
        model = None if self.costs.is_cached(arch) else self.build(arch)
        macs, params = self.costs.counts(arch, model)
        candidate = Candidate(number, arch, macs, params, None)
        candidate.violations = self.budget.violations(candidate.measured)
        if not candidate.violations:
            candidate.latency = self.costs.latency(arch, model)
            candidate.violations = self.budget.violations(candidate.measured)
        return candidate

    def train(self, candidate: Candidate, number: int) -> ProxyResult:
        """Proxy-train a candidate; with pruning on, raises
        :class:`~searchkd.pruning.Pruned` when it falls below a rung's cutoff, and with the
        zero-cost pre-screen on, :class:`~searchkd.pruning.Skipped` before training."""
        seed = self.seed_for(number)
        if self.config.zero_cost.skip_quantile > 0:
            torch.manual_seed(seed)  # the same initial weights the proxy will train
            model = self.build(candidate.arch).to(self.device)
            self.screen(candidate, self._zero_cost_score(model))
        data, teacher_outputs = self.training_inputs()
        return self.job.run(
            candidate.arch,
            seed,
            data,
            teacher_outputs,
            on_epoch=self._rung_check if self.pruner else None,
            device=self.device,
        )

    def pool_score(self, decisions: dict[str, Any], index: int) -> float:
        """The training-free score of the zero-cost warm-up's ``index``-th pool member,
        initialised with its own seed (the global random state is left as it was)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed + index)
            model = self.build(self.space.from_decisions(decisions)).to(self.device)
            return self._zero_cost_score(model)

    def training_inputs(self) -> tuple[Dataset, TeacherOutputs]:
        """The dataset and teacher cache where this process's trials read them: moved to
        the training device once, on first use, when together they fit in half of its free
        memory (all our offline datasets do), else left on the CPU and copied a batch at a
        time. ``self.data`` and ``self.teacher_outputs`` stay on the CPU: the Ray runner
        shares those through the object store and never trains here."""
        if self._resident is None:
            inputs = (self.data, self.teacher_outputs)
            self._resident = stage_on_device(inputs, self.device)
            if self.device.type != "cpu":
                where = "on" if self._resident[0].train_x.is_cuda else "kept off"
                self.log(
                    f"training on {describe_device(self.device)}: data and teacher outputs "
                    f"({tensor_bytes(inputs) / 2**20:.0f} MiB) {where} the GPU"
                )
        return self._resident

    def _zero_cost_score(self, model: nn.Module) -> float:
        if self._zero_cost_teacher is not None:
            return diswot_score(model, self._zero_cost_teacher, self._zero_cost_batch)
        return naswot_score(model, self._zero_cost_batch)


def _channels_last(data: Dataset) -> Dataset:
    """The images in the proxy's channels-last layout, converted once per search rather
    than once per candidate (a 600 MB copy per trial on CIFAR); the proxy's own conversion
    is then a no-op."""
    return dataclasses.replace(
        data,
        train_x=data.train_x.contiguous(memory_format=torch.channels_last),
        val_x=data.val_x.contiguous(memory_format=torch.channels_last),
    )


def _pruner(config: SearchConfig) -> SuccessiveHalving | None:
    proxy = config.proxy
    if not proxy.prune:
        return None
    return SuccessiveHalving(proxy.epochs, proxy.prune_eta, proxy.prune_min_epochs)


def _stored_budget(limits: dict[str, float | None]) -> Budget:
    return Budget(
        max_macs=limits["macs"], max_params=limits["params"], max_latency_ms=limits["latency_ms"]
    )


def _preact_taps(teacher: Teacher) -> dict[str, str]:
    """The teacher's pre-ReLU taps (tap -> batch-norm path), from its space; a factory
    teacher has none."""
    if teacher.arch is None:
        return {}
    space, arch = load_architecture(teacher.arch)
    return space.preact_taps(arch)


def _writable_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
        # A probe of its own: two searchers starting together must not delete each other's.
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise SearchKDError(
            f"run folder {path} is not writable ({exc.strerror}); pass --run-dir to a "
            "folder you can write"
        ) from None
    return path


def _cost_text(cost: dict[str, float | None]) -> str:
    parts = [f"{cost['macs'] / 1e6:.2f}M MACs", f"{cost['params'] / 1e3:.0f}k params"]
    if cost.get("latency_ms") is not None:
        parts.append(f"{cost['latency_ms']:.2f} ms")
    return ", ".join(parts)
