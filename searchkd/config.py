"""The search configuration: one validated object, built once at the edge.

Sources, later ones win: the embedded default, a YAML file (``--config``), then
command-line flags. Validation happens here and only here (pydantic, unknown keys
rejected), and every problem becomes one line that names the key and says what
is expected, so nothing downstream has to second-guess its input.
"""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from searchkd.budget import parse_limit
from searchkd.errors import SearchKDError
from searchkd.meters import Timing, meter_listing, meter_problem
from searchkd.names import STUDY_NAME_RULE, study_name_problem

# Seeds are multiplied and offset (controller streams, ensemble members, per-trial seeds)
# and stored in the study: 32 bits keep every derived seed inside a 64-bit integer.
MAX_SEED = 2**32 - 1
# A config is a page of settings: a bigger file is the wrong file, and a longer text is
# not a setting (both would otherwise be read whole and echoed back in error lines).
MAX_CONFIG_BYTES = 4_000_000
MAX_TEXT = 4096


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TeacherConfig(_Strict):
    """Where the teacher comes from: a checkpoint, a user factory, or training."""

    # Empty texts are refused: "" would silently mean "no checkpoint" and train a teacher.
    checkpoint: str | None = Field(None, min_length=1)  # a teacher.pt (or its folder)
    factory: str | None = Field(None, min_length=1)  # "module:function", imported when named
    arch: str = Field("resnet20_w16s2", min_length=1)  # a member of `space`, or arch JSON
    space: str = "resnet"
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(0.1, gt=0)
    taps: list[str] | None = None  # feature taps for a factory teacher
    seed: int | None = Field(None, ge=0, le=MAX_SEED)  # None: the search's seed

    @field_validator("factory")
    @classmethod
    def _factory_form(cls, value: str | None) -> str | None:
        if value is not None and value.count(":") != 1:
            raise ValueError("must look like 'package.module:function'")
        return value


class BudgetConfig(_Strict):
    max_macs: str | float | None = "0.25x"
    max_params: str | float | None = None
    max_latency_ms: str | float | None = None

    @field_validator("max_macs", "max_params", "max_latency_ms")
    @classmethod
    def _readable(cls, value: Any, info) -> Any:
        parse_limit(value, info.field_name)  # raises BudgetError with one line
        return value


class ProxyConfig(_Strict):
    """Short KD training of each candidate. Its own cosine schedule matters:
    accuracy read early inside a long schedule ranks students poorly.

    Two epochs is a few hundred SGD steps at most, so the step count and the learning rate
    decide what the proxy measures: at batch 128 and lr 0.05 (64 steps on 4,000 images) it
    ranked 13 retrained students of mnist5k-cluttered against their 15-epoch KD accuracy
    with Spearman -0.21 (it measured how fast a net starts, not where it ends); batch 32
    at lr 0.1 ranked them at 0.78 for 1.03x the time (``benchmarks/proxy_fidelity.py``,
    ``docs/baselines.md``). On a GPU, larger batches run faster per image: raise the
    learning rate with them (batch 128 at lr 0.4 ranked at 0.58)."""

    epochs: int = Field(2, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    train_subset: int | None = Field(None, ge=1)  # use only the first N training images
    # Stop poor candidates at rung epochs (successive halving on validation accuracy).
    prune: bool = False
    prune_eta: int = Field(3, ge=2)
    prune_min_epochs: int = Field(1, ge=1)


class LossConfig(_Strict):
    """Weights of the loss terms and the options of each."""

    weights: dict[str, float] = Field(default_factory=lambda: {"ce": 0.1, "kd": 0.9})
    options: dict[str, dict[str, Any]] = Field(default_factory=dict)  # kd: T=4 by default


class LatencyConfig(_Strict):
    """How latency is measured: ``torch-cpu``, ``torch-cuda``, ``onnxruntime[:Provider]``
    (exported, timed in ONNX Runtime on that execution provider),
    ``onnxruntime-int8[:Provider]`` (the same, statically quantised to int8), ``lut:PATH`` (a
    per-block table profiled on the target by ``searchkd profile-device``), or
    ``ray:RESOURCE[:METER]`` (one of the first four, run on the Ray node that advertises
    RESOURCE); the names are those registered in ``searchkd.meters.METERS``.

    The default is ONNX Runtime on this machine's CPU: what small students are deployed
    with. PyTorch eager at batch 1 mostly times per-operator dispatch for networks this
    small (8-18x slower than ONNX Runtime for the same 40 px students), so an eager budget
    steers a search toward fewer operators rather than toward a faster deployed model."""

    meter: str = "onnxruntime"
    threads: int = Field(1, ge=1)
    warmup: int = Field(5, ge=0)
    runs: int = Field(20, ge=1)
    repeats: int = Field(3, ge=1)
    # More rounds while their inter-quartile spread exceeds this fraction of their median
    # (None: exactly `repeats` rounds), up to max_repeats.
    tolerance: float | None = Field(0.05, gt=0)
    max_repeats: int = Field(10, ge=1)

    @field_validator("meter")
    @classmethod
    def _known_meter(cls, value: str) -> str:
        if meter_problem(value, installed=False) is not None:
            raise ValueError(f"must be {meter_listing()}")
        if (problem := meter_problem(value)) is not None:
            raise ValueError(problem)
        return value

    def timing(self) -> Timing:
        """The timing settings every meter takes, as one value."""
        return Timing(**{field.name: getattr(self, field.name) for field in fields(Timing)})


class RayConfig(_Strict):
    """The Ray runner: where it runs and what each trial gets. None of it changes what a
    trial computes, so a study may be resumed with another runner or cluster."""

    address: str | None = None  # None: start a local Ray; "auto" or HOST:PORT: join a cluster
    workers: int = Field(1, ge=1)  # trials training at once
    cpus_per_trial: float = Field(1.0, gt=0)  # also the trial's torch threads (at least 1)
    gpus_per_trial: float = Field(0.0, ge=0)  # > 0: trials train on the GPU Ray assigns
    max_retries: int = Field(2, ge=0)  # attempts after the first when a worker dies mid-trial

    @field_validator("gpus_per_trial")
    @classmethod
    def _ray_gpu_amount(cls, value: float) -> float:
        if value > 1 and not float(value).is_integer():
            raise ValueError(
                "must be a fraction of one GPU (e.g. 0.5) or a whole number (Ray's rule)"
            )
        return value


class ControllerConfig(_Strict):
    """Options of the AKD policy (ignored by the Optuna samplers)."""

    # Chosen on the ground truth (benchmarks/akd_tuning.py, tuning seeds 100-119): at
    # 0.05 the policy collapsed onto a handful of architectures within 50 trials.
    lr: float = Field(0.003, gt=0)
    baseline_decay: float = Field(0.9, ge=0, lt=1)
    entropy_weight: float = Field(1e-3, ge=0)
    reward_exponent: float = -0.07
    hidden_size: int = Field(64, ge=1)
    # Budget warm-up on closed-form MACs before the first trial (0 steps turns it off).
    warmup_steps: int = Field(100, ge=0)
    warmup_batch: int = Field(32, ge=2)
    warmup_target: float = Field(0.5, gt=0, le=1)  # 0.9 left too little diversity
    # Draws per proposal to find an architecture no finished trial has tried (1: off).
    draws: int = Field(16, ge=1)


class ZeroCostConfig(_Strict):
    """Training-free scores (``searchkd/zero_cost.py``).

    Pre-screen: a candidate whose score at initialisation falls below the ``skip_quantile``
    of earlier candidates' scores is skipped untrained (0: off); it never skips before
    ``min_history`` scored candidates. Warm-up (``searchkd/warm_start.py``): before the
    first trial, score ``warmup_pool`` distinct candidates within budget and queue the top
    ``warmup_trials`` (at most the pool) as the first trials (0: off)."""

    score: Literal["naswot", "diswot"] = "naswot"
    skip_quantile: float = Field(0.0, ge=0, lt=1)
    min_history: int = Field(10, ge=1)
    batch: int = Field(64, ge=2)
    warmup_pool: int = Field(0, ge=0)
    warmup_trials: int = Field(5, ge=1)


class SearchConfig(_Strict):
    dataset: str = "mnist5k-cluttered"
    data_dir: str | None = None
    image_size: int | None = Field(None, ge=4)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    space: str = "compact"
    # An nni:package.module:SpaceClass space's constructor arguments, and the module paths
    # of its members that feature losses (hint, at, ...) read; empty: logits-only KD.
    space_args: dict[str, Any] = Field(default_factory=dict)
    space_taps: list[str] = Field(default_factory=list)
    controller: str = "akd"  # a name in searchkd.controller.CONTROLLERS
    trials: int = Field(20, ge=1)
    # Queue the space's hand-designed members that fit the budget as the first trials.
    hand_designed_seeds: bool = True
    # Candidates over budget in a row before the search stops: the budget is too tight.
    max_rejections: int = Field(200, ge=0)
    runner: Literal["local", "ray"] = "local"
    ray: RayConfig = Field(default_factory=RayConfig)
    run_dir: str = "searchkd_runs"
    study: str | None = None
    storage: str | None = None
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    proxy: ProxyConfig = Field(default_factory=ProxyConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    ensemble: list[TeacherConfig] = Field(default_factory=list)  # more teachers (ensemble_kd)
    latency: LatencyConfig = Field(default_factory=LatencyConfig)
    akd: ControllerConfig = Field(default_factory=ControllerConfig)
    zero_cost: ZeroCostConfig = Field(default_factory=ZeroCostConfig)
    # Where training runs (teacher, teacher cache, local proxy trials): auto, cpu, cuda,
    # cuda:N. Not a search setting: a study may be resumed on another device.
    device: str = "auto"

    @field_validator("study")
    @classmethod
    def _study_name(cls, value: str | None) -> str | None:
        """The name becomes part of file names (exports, retraining folders): checked
        here, so an empty name does not silently mean the default one."""
        if value is not None and (problem := study_name_problem(value)) is not None:
            raise ValueError(f"the study name {problem}; {STUDY_NAME_RULE}")
        return value

    @model_validator(mode="after")
    def _space_options(self) -> SearchConfig:
        if (self.space_args or self.space_taps) and not self.space.startswith("nni:"):
            raise ValueError(
                f"space_args and space_taps are for nni:package.module:SpaceClass spaces, "
                f"not {self.space!r}"
            )
        return self

    @field_validator("controller")
    @classmethod
    def _known_controller(cls, value: str) -> str:
        from searchkd.controller import CONTROLLERS

        if value not in CONTROLLERS:
            raise ValueError(
                f"unknown controller {value!r}; choose one of {', '.join(CONTROLLERS)}"
            )
        return value

    @field_validator("device")
    @classmethod
    def _device_form(cls, value: str) -> str:
        from searchkd.device import DEVICES, is_device_spec

        if not is_device_spec(value):
            raise ValueError(f"must be {DEVICES}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _losses_block(cls, data: Any) -> Any:
        """Accept ``losses: {kd: 0.9, crd: {weight: 0.8, temperature: 0.1}}`` and turn it into
        the ``loss: {weights, options}`` form, so both spellings make one configuration (and
        one study fingerprint)."""
        if not isinstance(data, dict) or "losses" not in data:
            return data
        data = dict(data)
        if "loss" in data:
            raise ValueError("give either `losses:` or `loss:`, not both")
        data["loss"] = losses_to_loss_config(data.pop("losses"))
        return data

    @model_validator(mode="after")
    def _zero_cost_runner(self) -> SearchConfig:
        if self.runner == "ray" and self.zero_cost.skip_quantile > 0:
            raise ValueError(
                "zero_cost.skip_quantile works with the local runner only; "
                "drop --zero-cost-skip or use --runner local"
            )
        if self.runner == "local" and self.ray.gpus_per_trial > 0:  # not silently on the CPU
            raise ValueError(
                "ray.gpus_per_trial: the local runner does not use it; add --runner ray, or "
                "train on a GPU here with --device cuda"
            )
        if self.runner == "local" and self.ray.workers > 1:
            raise ValueError(
                f"ray.workers {self.ray.workers}: the local runner trains one trial at a "
                "time; add --runner ray to train several at once"
            )
        return self

    def search_settings(self) -> dict[str, Any]:
        """What defines a study's results: a resumed study must be run with the same.

        Settings added later (``ensemble``, ``teacher.seed``) appear only when they are not
        at their defaults, so studies made before them keep their fingerprint."""
        settings = self.model_dump(
            mode="json",
            include={
                "dataset",
                "data_dir",
                "image_size",
                "seed",
                "space",
                "space_args",
                "space_taps",
                "teacher",
                "budget",
                "proxy",
                "loss",
                "latency",
                "ensemble",
            },
        )
        for key in ("ensemble", "space_args", "space_taps"):  # added later: only when given
            if not settings[key]:
                del settings[key]
        for key in ("tolerance", "max_repeats"):  # added later: studies before them resume
            if settings["latency"][key] == LatencyConfig.model_fields[key].default:
                del settings["latency"][key]
        for teacher in [settings["teacher"], *settings.get("ensemble", [])]:
            if teacher["seed"] is None:
                del teacher["seed"]
        return settings

    @property
    def study_name(self) -> str:
        if self.study is not None:
            return self.study
        # An nni:module:Class space holds ':' which a study name may not: keep the rest.
        space = re.sub(r"[^A-Za-z0-9._-]+", "-", self.space).strip("-")
        return f"{self.dataset}-{space}"

    @property
    def storage_url(self) -> str:
        if self.storage:
            return self.storage
        from searchkd.study import default_storage  # optuna loads only when needed

        return default_storage(self.run_dir)


def differing_settings(
    stored: dict[str, Any], current: dict[str, Any], prefix: str = ""
) -> list[str]:
    """The dotted names of the settings that differ (``recipe.epochs``, not ``recipe``),
    so a refusal to resume says which option to change back."""
    names = []
    for key in sorted(set(stored) | set(current)):
        old, new = stored.get(key), current.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            names += differing_settings(old, new, f"{prefix}{key}.")
        elif old != new:
            names.append(f"{prefix}{key}")
    return names


def losses_to_loss_config(losses: Any) -> dict[str, Any]:
    """``{name: weight | {weight: w, **options}}`` -> ``{"weights": ..., "options": ...}``."""
    if not isinstance(losses, dict) or not losses:
        raise ValueError(
            "`losses` must map loss names to weights, e.g. {kd: 0.9, crd: 0.8}, or to "
            "{weight: w, <option>: value}"
        )
    weights: dict[str, Any] = {}
    options: dict[str, dict[str, Any]] = {}
    for name, value in losses.items():
        if isinstance(value, dict):
            if "weight" not in value:
                raise ValueError(f"losses.{name} needs a `weight` beside its options")
            value = dict(value)
            weights[name] = value.pop("weight")
            if value:
                options[name] = value
        else:
            weights[name] = value
    return {"weights": weights, "options": options}


def _one_line(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown key; check the spelling (see `searchkd search --help`)"
    more = f" (and {error.error_count() - 1} more problem(s))" if error.error_count() > 1 else ""
    return f"config: {where + ': ' if where else ''}{message}{more}"


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise SearchKDError(f"config: no file at {path}; pass the path of a YAML file")
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise SearchKDError(
            f"config: {path} is {size / 1e6:.1f} MB, over the {MAX_CONFIG_BYTES / 1e6:.0f} MB a "
            "settings file may have; pass the path of a searchkd YAML config"
        )
    try:
        data = yaml.safe_load(path.read_text())
    except UnicodeDecodeError:
        raise SearchKDError(
            f"config: {path} is not a text file; pass the path of a YAML file"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise SearchKDError(f"config: {path} is not valid YAML{where}; fix the syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise SearchKDError(f"config: {path} must hold a mapping of keys, not a {kind}")
    return data


def _long_text(value: Any, where: str = "") -> tuple[str, int] | None:
    """The dotted key and length of the first text (key or value) over :data:`MAX_TEXT`."""
    if isinstance(value, str):
        return (where or "(top level)", len(value)) if len(value) > MAX_TEXT else None
    items: list[tuple[str, Any]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            name = str(key)
            if len(name) > MAX_TEXT:
                return (f"{where}.(a key)" if where else "(a key)", len(name))
            items.append((f"{where}.{name}" if where else name, item))
    elif isinstance(value, list):
        items = [(f"{where}[{i}]", item) for i, item in enumerate(value)]
    for name, item in items:
        if (found := _long_text(item, name)) is not None:
            return found
    return None


def build_config(
    yaml_path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> SearchConfig:
    """Default <- YAML file <- overrides (nested dicts, e.g. {"budget": {"max_macs": "2M"}})."""
    data: dict[str, Any] = {}
    if yaml_path is not None:
        data = read_yaml(yaml_path)
    data = _merge(data, overrides or {})
    long = _long_text(data)
    if long is not None:  # named by its key and length: a huge value is not echoed back
        where, length = long
        raise SearchKDError(
            f"config: {where}: a text of {length} characters; a setting has at most "
            f"{MAX_TEXT} (is it the right value?)"
        )
    try:
        return SearchConfig.model_validate(data)
    except ValidationError as exc:
        raise SearchKDError(_one_line(exc)) from None
