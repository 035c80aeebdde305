"""The `searchkd` command. Thin: it parses, validates and calls the library.

Every user-fixable problem surfaces as one line on stderr and a non-zero exit;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from searchkd.errors import SearchKDError
from searchkd.meters import Timing, make_meter, meter_help, meter_listing, parse_meter
from searchkd.names import shell_command

DEFAULT_RUN_DIR = "searchkd_runs"
TEACHER_FORMS = (
    "a teacher folder or teacher.pt, a member of the teacher space (e.g. resnet20_w16s2) "
    "or module:function"
)


# --- argument groups ----------------------------------------------------------------------
def _search_flags(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--config", help="YAML file with search settings; flags override it")
    add(
        "--dataset",
        help="mnist5k-cluttered (default), mnist5k, digits, cifar10, cifar100, imagefolder "
        "(all: searchkd.data.DATASET_KINDS)",
    )
    add("--data-dir", help="local folder of cifar10/cifar100/imagefolder data")
    add(
        "--teacher",
        help=f"teacher: {TEACHER_FORMS}",
    )
    add(
        "--space",
        help="student search space: compact (default), mobilenet, mobilenet-reduced, resnet "
        "(all: search_spaces.SPACES), or an NNI model space nni:package.module:SpaceClass "
        "(pip install searchkd[nni]; constructor arguments: space_args in --config)",
    )
    add(
        "--controller",
        help="akd (default), evolution, tpe, nsga2, random (all: searchkd.controller.CONTROLLERS)",
    )
    add(
        "--no-hand-designed",
        dest="hand_designed_seeds",
        action="store_const",
        const=False,
        help="do not queue the space's hand-designed members within budget as first trials",
    )
    add("--trials", type=int, help="trained candidates to complete (default 20)")
    add("--epochs", type=int, help="proxy training epochs per candidate (default 2)")
    add(
        "--prune",
        action="store_true",
        help="stop poor candidates early (successive halving on per-epoch val accuracy)",
    )
    add(
        "--zero-cost-skip",
        type=float,
        metavar="Q",
        help="skip, untrained, a candidate whose training-free score falls below this "
        "quantile of earlier candidates' scores (e.g. 0.5; default off)",
    )
    add(
        "--zero-cost-warmup",
        type=int,
        metavar="N",
        help="before the first trial, score N candidates within budget training-free and "
        "queue the best as the first trials (default off)",
    )
    add(
        "--zero-cost-warmup-trials",
        type=int,
        metavar="K",
        help="how many of the --zero-cost-warmup pool's best to queue (default 5)",
    )
    add(
        "--zero-cost-score",
        help="training-free score for --zero-cost-skip and --zero-cost-warmup: naswot or diswot",
    )
    add("--max-macs", help="MACs budget: absolute (4M) or relative to the teacher (0.25x)")
    add("--max-params", help="parameter budget: absolute (500k) or relative (0.5x)")
    add("--max-latency-ms", help="latency budget in ms, absolute or relative (0.5x)")
    add(
        "--latency",
        metavar="METER",
        help=f"how latency is measured (default onnxruntime): {meter_help()}",
    )
    add("--latency-threads", type=int, help="CPU threads the latency meter times with (1)")
    add(
        "--storage",
        help="Optuna storage: journal:PATH, sqlite:///PATH, postgresql://... "
        "(default: the journal file study.log in the run folder)",
    )
    add("--study", help="study name; rerunning with the same name resumes")
    add("--run-dir", help=f"folder for the study, teachers and exports ({DEFAULT_RUN_DIR})")
    add("--seed", type=int, help="seed for data, teacher, controller and proxies (default 0)")
    add("--image-size", type=int, help="resize images to this square size (imagefolder)")
    _device_flag(parser, "the teacher, its cache and local trials train (Ray trials: see below)")
    add("--no-progress", action="store_true", help="no progress bar")
    ray = parser.add_argument_group("Ray runner (--runner ray)")
    ray.add_argument(
        "--runner", choices=["local", "ray"], help="local (default, in-process) or ray (Ray Tune)"
    )
    ray.add_argument(
        "--address",
        help="join this Ray cluster: auto or HOST:PORT (default: start a local Ray on 127.0.0.1)",
    )
    ray.add_argument("--workers", type=int, help="trials training at once (default 1)")
    ray.add_argument(
        "--cpus-per-trial", type=float, help="CPUs (and torch threads) per trial (default 1)"
    )
    ray.add_argument(
        "--gpus-per-trial",
        type=float,
        help="GPUs per trial, fractions allowed (0.5: two trials share a GPU); each trial "
        "trains on the GPU Ray assigns it. 0 (default): trials train on CPUs, even on "
        "machines with GPUs",
    )
    ray.add_argument(
        "--max-retries",
        type=int,
        help="times an architecture is retried after its worker died mid-trial (default 2)",
    )


def _given(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Map CLI flags onto the nested config; only flags the user gave."""
    out = _given(
        {
            "dataset": args.dataset,
            "data_dir": args.data_dir,
            "space": args.space,
            "controller": args.controller,
            "hand_designed_seeds": args.hand_designed_seeds,
            "trials": args.trials,
            "storage": args.storage,
            "study": args.study,
            "run_dir": args.run_dir,
            "seed": args.seed,
            "image_size": args.image_size,
            "runner": args.runner,
            "device": args.device,
        }
    )
    sections = {
        "ray": {
            "address": args.address,
            "workers": args.workers,
            "cpus_per_trial": args.cpus_per_trial,
            "gpus_per_trial": args.gpus_per_trial,
            "max_retries": args.max_retries,
        },
        "proxy": {"epochs": args.epochs, "prune": True if args.prune else None},
        "budget": {
            "max_macs": args.max_macs,
            "max_params": args.max_params,
            "max_latency_ms": args.max_latency_ms,
        },
        "zero_cost": {
            "skip_quantile": args.zero_cost_skip,
            "score": args.zero_cost_score,
            "warmup_pool": args.zero_cost_warmup,
            "warmup_trials": args.zero_cost_warmup_trials,
        },
        "latency": {"meter": args.latency, "threads": args.latency_threads},
    }
    for section, values in sections.items():
        if given := _given(values):  # a section only when one of its flags was given
            out[section] = given
    if args.teacher is not None:
        out["teacher"] = _teacher_override(args.teacher)
    return out


def _teacher_arg(value: str | None) -> str | None:
    """``--teacher`` as given; an empty one is refused rather than read as "no teacher",
    which would silently train a new one."""
    if value is not None and not value.strip():
        raise SearchKDError(f"--teacher {value!r}: empty; give {TEACHER_FORMS}")
    return value


def _teacher_override(value: str) -> dict[str, Any]:
    _teacher_arg(value)
    path = Path(value)
    if path.exists():
        return {"checkpoint": value}
    if ":" in value:
        return {"factory": value}
    if value.endswith((".pt", ".pth", ".json")) or "/" in value:
        raise SearchKDError(f"--teacher: no file or folder at {value}")
    return {"arch": value}


def _storage_of(args: argparse.Namespace) -> str:
    """The storage of a command that reads an existing study: a storage file that is not
    there is a typo, refused, never created empty (nor its folder)."""
    from searchkd.study import default_storage, require_existing_storage

    if getattr(args, "storage", None):
        return require_existing_storage(args.storage)
    return default_storage(args.run_dir or DEFAULT_RUN_DIR, must_exist=True)


def _study_of(args: argparse.Namespace, name: str | None = None) -> str | None:
    """The study a reading command names (``--study``, or ``name`` given positionally),
    checked like a new study's name: it becomes part of the files the command writes."""
    from searchkd.names import check_study_name

    name = name if name is not None else getattr(args, "study", None)
    return None if name is None else check_study_name(name)


# --- commands -----------------------------------------------------------------------------
def cmd_search(args: argparse.Namespace) -> int:
    from searchkd.config import build_config
    from searchkd.device import resolve_device
    from searchkd.search import Search
    from searchkd.study import shown_url

    config = build_config(args.config, _overrides(args))
    resolve_device(config.device)  # a missing GPU fails before Ray or the teacher starts
    started = time.perf_counter()
    uses_ray = config.runner == "ray" or parse_meter(config.latency.meter).kind.name == "ray"
    started_ray = False
    try:
        if uses_ray:  # before the search is set up: a ray: latency meter times the teacher
            from runners.ray import check_resources, connect

            started_ray = connect(config.ray.address, _log)
            if config.runner == "ray":  # a request no node can meet fails before any work
                check_resources(config.ray, _log)
        search = Search(config, log=_log)
        _log(
            f"study {config.study_name!r} in {shown_url(config.storage_url)}; controller "
            f"{config.controller}; runner {config.runner}; {_count(config.trials, 'trial')} of "
            f"{_count(config.proxy.epochs, 'proxy epoch')}"
        )
        if config.runner == "ray":
            from runners.ray import RayRunner

            runner = RayRunner(config.ray, progress=not args.no_progress)
        else:
            from runners.local import LocalRunner

            runner = LocalRunner(progress=not args.no_progress)
        summary = runner.run(search, config.trials, config.max_rejections)
    finally:
        if started_ray:
            import ray

            ray.shutdown()
    _log(
        f"done: {summary.completed} trained trials in the study ({summary.trained_now} now, "
        f"{summary.rejected_now} rejected over budget, {summary.pruned_now} stopped early, "
        f"{summary.failed_now} failed) in "
        f"{time.perf_counter() - started:.0f}s total"
    )
    _print_front(search.study)
    # A database password stays out of the log: the user adds it (or a ~/.pgpass entry).
    where = shown_url(config.storage_url)
    _log(f"see it: {shell_command('searchkd', 'dashboard', '--storage', where)}")
    return 0


def cmd_pareto(args: argparse.Namespace) -> int:
    from searchkd.study import load_existing_study

    study = load_existing_study(_study_of(args), _storage_of(args))
    if args.json:
        from searchkd.study import pareto_front, pareto_listing, ranked_students

        rows = [
            {
                "trial": t.number,
                "accuracy": t.values[0],
                "macs": t.values[1],
                "latency_ms": t.values[2],
                "params": t.user_attrs.get("params"),
                "arch": t.user_attrs.get("arch"),
                "summary": t.user_attrs.get("summary"),
                "on_front": on_front,
                "pick": is_pick,
            }
            for t, on_front, is_pick in pareto_listing(pareto_front(study), ranked_students(study))
        ]
        print(json.dumps(rows, indent=2))
    else:
        _print_front(study)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from searchkd.export import export_students
    from searchkd.study import load_existing_study

    study = load_existing_study(_study_of(args), _storage_of(args))
    out = args.out or str(Path(args.run_dir or DEFAULT_RUN_DIR) / "exports")
    for path in export_students(study, out, args.top, args.trial, args.schedule, _log):
        print(path)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from searchkd.report import write_report
    from searchkd.study import load_existing_study

    if args.study and args.study_name and args.study != args.study_name:
        raise SearchKDError(
            f"two studies named: {args.study_name!r} and --study {args.study!r}; give one"
        )
    name = args.study if args.study is not None else args.study_name
    study = load_existing_study(_study_of(args, name), _storage_of(args))
    out = args.out or str(Path(args.run_dir or DEFAULT_RUN_DIR) / "report")
    report = write_report(study, out, args.top)
    print(report.html)
    return 0


def cmd_retrain(args: argparse.Namespace) -> int:
    from searchkd.device import resolve_device
    from searchkd.retrain import (
        load_data,
        load_retrain_teacher,
        recipe_from,
        retrain_student,
        student_from_file,
        students_from_study,
    )
    from searchkd.schedules import ScheduleOptions
    from searchkd.study import load_existing_study
    from searchkd.teacher import resolve_arch

    device = resolve_device(args.device)
    quantization = _quantization(args)
    if args.init_from and quantization is None:
        raise SearchKDError("--init-from applies to quantised students; add --quantize int8")
    teacher_arg = _teacher_arg(args.teacher)
    if args.arch and (args.trial or args.top is not None):
        raise SearchKDError("give either --arch FILE or --study with --trial/--top, not both")
    if args.arch:
        sources = [student_from_file(args.arch)]
    else:
        study = load_existing_study(_study_of(args), _storage_of(args))
        top = None if args.trial else (1 if args.top is None else args.top)  # 0 is refused
        sources = students_from_study(study, args.trial, top)
    run_dir = Path(args.run_dir or DEFAULT_RUN_DIR)
    out = Path(args.out) if args.out else run_dir / "retrain"
    for source in sources:
        recipe = recipe_from(  # first: a bad setting fails before a teacher trains
            source,
            epochs=args.epochs,
            seed=args.seed,
            optimizer=args.optimizer,
            lr=args.lr,
            weight_decay=args.weight_decay,
            lr_schedule=args.lr_schedule,
            label_smoothing=args.label_smoothing,
            batch_size=args.batch_size,
            augment=args.augment,
            loss=_parse_loss(args.loss) if args.loss else None,
        )
        data = load_data(source, args.dataset, args.data_dir)
        teacher, route, info = load_retrain_teacher(
            source, data, run_dir, teacher_arg, args.teacher_epoch, _log, device
        )
        space = source.arch.get("space", "mobilenet")
        options = ScheduleOptions(
            assistants=[resolve_arch(a, space) for a in args.assistant or []],
            assistant_count=args.assistants,
            anchors=args.anchors,
            anchor_selection=args.anchor_selection,
            generations=args.generations,
            ensemble=args.ensemble,
        )
        outcome = retrain_student(
            source, args.schedule, recipe, options, data, teacher, route, info, out,
            run_dir / "assistants", not args.no_progress, _log, device, quantization,
            args.init_from,
        )  # fmt: skip
        print(outcome.student)
    return 0


def _quantization(args: argparse.Namespace):
    """``--quantize int8`` and its options as a QuantSpec (None without it); options given
    without it are refused rather than silently ignored."""
    from searchkd.quantize import QuantSpec

    flags = {"weight_bits": ("--weight-bits", args.weight_bits)}
    flags["variant"] = ("--quant-variant", args.quant_variant)
    given = {key: value for key, (_, value) in flags.items() if value is not None}
    if args.quantize is None and given:
        flag = flags[next(iter(given))][0]
        raise SearchKDError(f"{flag} applies to quantised students; add --quantize int8")
    return None if args.quantize is None else QuantSpec.parse(args.quantize, **given)


def _count(n: int, noun: str) -> str:
    """``3 trials``, ``1 trial``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _parse_loss(text: str) -> dict[str, float]:
    """``ce=0.1,kd=0.9`` -> {"ce": 0.1, "kd": 0.9}."""
    weights = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            raise SearchKDError(
                f"--loss {text!r}: use NAME=WEIGHT,..., e.g. ce=0.1,kd=0.9"
            ) from None
    return weights


def cmd_quantize(args: argparse.Namespace) -> int:
    from searchkd.quantize import QuantSpec
    from searchkd.quantize.ptq import ptq_bundle

    if args.calibration_images < 1:
        raise SearchKDError(
            f"--calibration-images {args.calibration_images}: calibrate on at least one image"
        )
    spec = QuantSpec(weight_bits=args.weight_bits, per_channel=not args.per_tensor)
    out = args.out or str(Path(args.student).parent)
    path, accuracies = ptq_bundle(
        args.student, out, spec, args.calibration_images, args.dataset, args.data_dir
    )
    static = accuracies["onnxruntime_static"]
    _log(
        f"validation accuracy: fp32 {accuracies['fp32']:.4f}, post-training {spec.tag} "
        f"{accuracies['fake_quantized']:.4f} (PyTorch) {accuracies['int8_onnx']:.4f} (int8 "
        "ONNX), ONNX Runtime's static quantisation "
        + ("n/a (8-bit weights only)" if static is None else f"{static:.4f}")
    )
    print(path)
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    import optuna_dashboard

    from searchkd.study import make_storage, shown_url

    if not 0 < args.port < 65536:
        raise SearchKDError(f"--port {args.port}: give a port between 1 and 65535")
    storage = _storage_of(args)
    backend = make_storage(storage)
    if not _is_loopback(args.host):
        _log(
            f"searchkd: warning: --host {args.host} serves the study to the network: anyone "
            "who can reach this machine can read it and change it (the dashboard has no "
            "login); use --host 127.0.0.1 to keep it on this machine"
        )
    _log(
        f"optuna-dashboard for {shown_url(storage)} at http://{args.host}:{args.port}/ "
        "(Ctrl-C stops)"
    )
    try:
        optuna_dashboard.run_server(backend, host=args.host, port=args.port)
    except OSError as exc:
        raise SearchKDError(
            f"cannot serve on {args.host}:{args.port} ({exc.strerror}); pass another --port"
        ) from None
    return 0


def cmd_repair_journal(args: argparse.Namespace) -> int:
    from searchkd.journal import repair_journal

    path = Path(args.path)
    if path.is_dir():
        path = path / "study.log"
    done = repair_journal(path)
    if done.backup is None:
        _log(f"{path}: every line is a complete journal record; nothing to repair")
        return 0
    recovered = f", {done.recovered} recovered from damaged lines" if done.recovered else ""
    more = " ..." if len(done.dropped) > 10 else ""
    lines = ", ".join(str(n) for n in done.dropped[:10]) + more
    _log(
        f"repaired {path}: dropped line(s) {lines}, kept {done.kept} records{recovered}; "
        f"the file as it was is {done.backup}"
    )
    return 0


def _list_spaces(as_json: bool) -> int:
    """`searchkd space` alone: every registered space, its size and what it is for."""
    from search_spaces import SPACES
    from search_spaces.nni_space import FORM as NNI_FORM
    from searchkd.config import SearchConfig

    default = SearchConfig().space
    rows = [
        {
            "space": name,
            "default": name == default,
            "size": space.size(),
            "about": " ".join((type(space).__doc__ or "").strip().split("\n\n")[0].split()),
        }
        for name, space in sorted(SPACES.items())
    ]
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        marker = " (default)" if row["default"] else ""
        print(f"{row['space'] + marker:<22} {row['size']:>10.3g} members  {row['about']}")
    print(f"or an NNI model space: {NNI_FORM}; details of one: searchkd space NAME")
    return 0


def cmd_space(args: argparse.Namespace) -> int:
    from search_spaces import get_space
    from searchkd.cost import count_macs, count_params

    if args.name is None:
        return _list_spaces(args.json)
    space = get_space(args.name)
    shape = _parse_shape(args.input)
    if args.classes < 1:
        raise SearchKDError(f"--classes {args.classes}: give a positive number of classes")
    rows = []
    for name, arch in space.canonical().items():
        model = space.build(arch, shape[0], shape[1], args.classes)
        rows.append(
            {"member": name, "params": count_params(model), "macs": count_macs(model, shape)}
        )
    decisions = {  # an nni: space's numbers are ranges
        n: list(d.choices) if hasattr(d, "choices") else str(d)
        for n, d in space.decisions().items()
    }
    if args.json:
        print(
            json.dumps(
                {
                    "space": space.name,
                    "version": space.version,
                    "input": list(shape),
                    "classes": args.classes,
                    "size": space.size(),
                    "decisions": decisions,
                    "canonical": rows,
                },
                indent=2,
            )
        )
        return 0
    print(
        f"space {space.name} v{space.version}: {len(decisions)} decisions, "
        f"{space.size():.3g} architectures"
    )
    for name, choices in decisions.items():
        print(f"  {name:<16} {choices}")
    print(f"\ncanonical members at {args.input}, {args.classes} classes:")
    print(f"  {'member':<18} {'params':>12} {'MACs':>14}")
    for row in rows:
        print(f"  {row['member']:<18} {row['params']:>12,} {row['macs']:>14,}")
    return 0


def cmd_teacher_train(args: argparse.Namespace) -> int:
    from searchkd.config import build_config
    from searchkd.data import load_dataset
    from searchkd.device import resolve_device
    from searchkd.search import _writable_dir
    from searchkd.teacher import default_teacher_dir, resolve_arch, train_teacher

    overrides: dict[str, Any] = {
        k: v
        for k, v in {
            "dataset": args.dataset,
            "data_dir": args.data_dir,
            "seed": args.seed,
            "run_dir": args.run_dir,
            "device": args.device,
        }.items()
        if v is not None
    }
    teacher = {k: v for k, v in {"arch": args.arch, "epochs": args.epochs}.items() if v is not None}
    if teacher:
        overrides["teacher"] = teacher
    config = build_config(args.config, overrides)
    device = resolve_device(config.device)
    data = load_dataset(config.dataset, config.data_dir, config.seed, config.image_size)
    out = (
        Path(args.out)
        if args.out
        else default_teacher_dir(config.teacher, data, config.seed, config.run_dir)
    )
    arch = resolve_arch(config.teacher.arch, config.teacher.space)
    _writable_dir(out)
    trained = train_teacher(
        arch,
        data,
        out,
        config.teacher.epochs,
        config.seed,
        config.teacher.lr,
        config.teacher.batch_size,
        _log,
        device,
    )
    _log(
        f"teacher saved to {out} (val accuracy {trained.meta['val_accuracy']:.4f}, last epoch; "
        f"{len(trained.route)} route checkpoints)"
    )
    return 0


def cmd_profile_device(args: argparse.Namespace) -> int:
    """Build (or validate) a per-block latency table on the machine this runs on."""
    from searchkd.latency import LatencyTable, profile_device, validate_table
    from searchkd.progress import progress_bar
    from searchkd.search import _writable_dir

    for flag in ("threads", "runs", "repeats"):
        if getattr(args, flag) < 1:
            raise SearchKDError(f"--{flag} must be at least 1, got {getattr(args, flag)}")
    if args.warmup < 0 or args.validate_n < 2 or args.validate_passes < 1:
        raise SearchKDError("--warmup must be >= 0, --validate-n >= 2 and --validate-passes >= 1")
    if args.tolerance < 0 or args.max_repeats < args.repeats:
        raise SearchKDError("--tolerance must be >= 0 and --max-repeats at least --repeats")
    if not parse_meter(args.meter).kind.times_here:
        raise SearchKDError(
            f"--meter {args.meter}: profile-device times on this machine with "
            f"{meter_listing(times_here=True)}"
        )
    timing = Timing(
        args.threads,
        args.warmup,
        args.runs,
        args.repeats,
        tolerance=args.tolerance or None,
        max_repeats=args.max_repeats,
    )
    meter = make_meter(args.meter, timing)
    out = Path(args.out)
    if args.validate and out.exists():
        table = LatencyTable.load(out)
        if table.meter != meter.name:  # validation rewrites the table's calibration
            raise SearchKDError(
                f"{out} was measured with {table.meter}, this run would validate it with "
                f"{meter.name}; pass the --meter and --threads it was profiled with"
            )
        _log(f"validating {out} ({len(table.entries)} units, measured with {table.meter})")
    else:
        shape = _parse_shape(args.input)
        _writable_dir(out.parent if str(out.parent) else Path("."))
        with progress_bar(desc="profile", unit="unit", disable=args.no_progress) as bar:

            def progress(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            table = profile_device(args.space, shape, args.classes, meter, progress=progress)
        table.save(out)
        _log(f"latency table of {len(table.entries)} units ({table.meter}) written to {out}")
    if args.validate:
        result = validate_table(
            table, meter, n=args.validate_n, seed=args.seed, passes=args.validate_passes
        )
        table.scale, table.offset_ms = result.scale, result.offset_ms
        table.save(out)
        print(
            f"validated on {result.n} random {table.space} members ({meter.name}, median of "
            f"{args.validate_passes} pass(es)): Kendall tau "
            f"{result.kendall_tau:.3f}; mean absolute percentage error {result.mape_percent:.1f}% "
            f"for the plain sum of units, {result.calibrated_mape_percent:.1f}% calibrated "
            f"(held-out halves); calibration {result.scale:.3f} x sum + "
            f"{result.offset_ms:.3f} ms saved to {out}"
        )
    return 0


# --- helpers ------------------------------------------------------------------------------
def _is_loopback(host: str) -> bool:
    """Whether a bind address keeps a server on this machine (127.0.0.0/8, ::1,
    localhost); 0.0.0.0, :: and every other address are reachable from the network."""
    import ipaddress

    if host.strip().lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name other than localhost may resolve to anything
        return False


def _parse_shape(text: str) -> tuple[int, int, int]:
    try:
        channels, height, width = (int(p) for p in text.lower().split("x"))
    except ValueError:
        raise SearchKDError(f"--input {text!r}: use CxHxW, e.g. 3x224x224") from None
    if min(channels, height, width) <= 0 or height != width:
        raise SearchKDError(f"--input {text!r}: use positive, square CxHxW, e.g. 3x224x224")
    return channels, height, width


def _print_front(study) -> None:
    from textwrap import shorten  # cuts between words: never inside a channel count

    from searchkd.study import (
        TrialRow,
        pareto_front,
        pareto_listing,
        pick_explained,
        ranked_students,
    )

    ranked = ranked_students(study)
    listing = pareto_listing(pareto_front(study), ranked)
    if not listing:
        print("no trained feasible trial yet")
        return
    kind = study.user_attrs.get("accuracy_kind", "last_epoch").replace("_", "-")
    on_front = sum(1 for _, front, _ in listing if front)
    and_pick = ", then the pick, which is off the front" if on_front < len(listing) else ""
    print(
        f"\nPareto front of {study.study_name!r} ({_count(on_front, 'student')}; accuracy = {kind} "
        f"validation accuracy of the proxy run){and_pick}:"
    )
    print(f"  {'trial':>5} {'accuracy':>8} {'MACs':>10} {'params':>9} {'latency':>9}  architecture")
    for row in (TrialRow.from_trial(t) for t, _, _ in listing):
        latency = f"{row.latency_ms:.2f}ms" if row.latency_ms is not None else "-"
        described = shorten(row.described, 90, placeholder=" …")
        print(
            f"  {row.number:>5} {row.accuracy:>8.4f} {row.macs / 1e6:>9.2f}M "
            f"{row.params / 1e3:>8.1f}k {latency:>9}  {described}"
        )
    for line in pick_explained(study, ranked):
        print(line)


def _device_flag(parser: argparse.ArgumentParser, what: str, default: str | None = None) -> None:
    parser.add_argument(
        "--device",
        default=default,
        help=f"where {what}: auto (default: cuda when PyTorch sees a GPU, else cpu), "
        "cpu, cuda or cuda:N",
    )


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _retrain_flags(parser: argparse.ArgumentParser, study_flags) -> None:
    from searchkd.recipe import AUGMENTATIONS, LR_SCHEDULES, OPTIMIZERS
    from searchkd.schedules import SCHEDULES
    from searchkd.schedules.rco import SELECTIONS

    study_flags(parser)
    add = parser.add_argument
    add("--trial", type=int, action="append", help="retrain this trial (repeatable)")
    add("--top", type=int, help="retrain the top K students of the study (default 1)")
    add("--arch", help="an exported student JSON (or architecture JSON) instead of a study")
    add(
        "--schedule", choices=list(SCHEDULES), default="kd", help="ce, kd (default), takd, rco, ban"
    )
    add("--epochs", type=int, required=True, help="training epochs (per run of the schedule)")
    add("--seed", type=int, default=0, help="training seed (default 0)")
    add("--teacher", help="teacher folder or teacher.pt (default: the search's teacher)")
    add("--teacher-epoch", type=int, help="use the teacher's route checkpoint of this epoch")
    add("--dataset", help="dataset (default: the one the student was searched on)")
    add("--data-dir", help="local folder of cifar10/cifar100/imagefolder data")
    add("--optimizer", choices=OPTIMIZERS, help="sgd (default, Nesterov) or adamw")
    add("--lr", type=float, help="learning rate (sgd 0.05, adamw 1e-3)")
    add("--weight-decay", type=float, help="weight decay (sgd 5e-4, adamw 0.05)")
    add("--lr-schedule", choices=LR_SCHEDULES, help="cosine (default) or step (x0.1 at 50%%, 75%%)")
    add("--label-smoothing", type=float, help="label smoothing of the CE term (default 0: off)")
    add("--batch-size", type=int, help="batch size (default 128)")
    add(
        "--augment", choices=AUGMENTATIONS, help="auto (default): shifts for digits, crop+flip else"
    )
    add("--loss", help="loss weights NAME=W,... (default: the search's, e.g. ce=0.1,kd=0.9)")
    add(
        "--assistant",
        action="append",
        help="takd: assistant arch (member name or JSON), repeatable",
    )
    add("--assistants", type=int, default=1, help="takd: assistants to pick automatically (1)")
    add("--anchors", type=int, default=4, help="rco: route anchors (4)")
    add("--anchor-selection", choices=SELECTIONS, default="interval", help="rco: interval|greedy")
    add("--generations", type=int, default=3, help="ban: generations (3)")
    add("--ensemble", action="store_true", help="ban: also report the ensemble of generations")
    add(
        "--quantize",
        metavar="int8",
        help="train the student quantisation-aware and ship it as an int8 ONNX model",
    )
    add("--weight-bits", type=int, help="with --quantize: 8 (default) or 4-bit weights")
    add(
        "--quant-variant",
        help="with --quantize: ste (default; Apprentice's QAT) or polino (stochastic rounding)",
    )
    add(
        "--init-from",
        metavar="STUDENT.json",
        help="with --quantize: start from this trained float student's weights (same "
        "architecture) instead of a fresh initialisation",
    )
    add("--out", help="output folder (default RUN_DIR/retrain)")
    _device_flag(parser, "students (and a teacher never trained yet) train", "auto")
    add("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="searchkd", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    search = sub.add_parser("search", help="search a student under a budget")
    _search_flags(search)
    search.set_defaults(func=cmd_search)

    def study_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--run-dir", help=f"run folder holding the study ({DEFAULT_RUN_DIR})")
        p.add_argument("--storage", help="Optuna storage URL (overrides --run-dir)")
        p.add_argument("--study", help="study name (needed when the storage holds several)")

    pareto = sub.add_parser("pareto", help="print the Pareto front of a study")
    study_flags(pareto)
    pareto.add_argument("--json", action="store_true")
    pareto.set_defaults(func=cmd_pareto)

    export = sub.add_parser("export", help="export top students as architecture JSON")
    study_flags(export)
    export.add_argument("--top", type=int, default=1, help="how many students (default 1)")
    export.add_argument("--trial", type=int, action="append", help="export this trial number")
    export.add_argument("--out", help="output folder (default RUN_DIR/exports)")
    export.add_argument("--schedule", help="export the retraining of this schedule (default: best)")
    export.set_defaults(func=cmd_export)

    report = sub.add_parser("report", help="write an HTML report with figures of a study")
    study_flags(report)  # --study, as the other study commands take it
    report.add_argument(
        "study_name", nargs="?", metavar="STUDY", help="the study, also positionally"
    )
    report.add_argument("--out", help="output folder (default RUN_DIR/report)")
    report.add_argument("--top", type=int, default=3, help="students drawn (default 3)")
    report.set_defaults(func=cmd_report)

    retrain = sub.add_parser("retrain", help="train students fully with a KD schedule and export")
    _retrain_flags(retrain, study_flags)
    retrain.set_defaults(func=cmd_retrain)

    quantize = sub.add_parser(
        "quantize", help="post-training int8 quantisation of a trained student (QAT's baseline)"
    )
    quantize.add_argument("student", help="a trained float student JSON (a retrained bundle)")
    quantize.add_argument("--weight-bits", type=int, default=8, help="8 (default) or 4")
    quantize.add_argument("--per-tensor", action="store_true", help="one weight scale per layer")
    quantize.add_argument(
        "--calibration-images", type=int, default=512, help="training images to calibrate on"
    )
    quantize.add_argument("--dataset", help="dataset (default: the student's)")
    quantize.add_argument("--data-dir", help="local folder of cifar10/cifar100/imagefolder data")
    quantize.add_argument("--out", help="output folder (default: the student's folder)")
    quantize.set_defaults(func=cmd_quantize)

    dashboard = sub.add_parser("dashboard", help="serve optuna-dashboard for the study")
    study_flags(dashboard)
    dashboard.add_argument("--host", default="127.0.0.1", help="bind address (127.0.0.1)")
    dashboard.add_argument("--port", type=int, default=8080)
    dashboard.set_defaults(func=cmd_dashboard)

    repair = sub.add_parser(
        "repair-journal",
        help="drop damaged lines from a study.log (a copy of the file is kept first)",
    )
    repair.add_argument("path", metavar="JOURNAL", help="the study.log, or the run folder")
    repair.set_defaults(func=cmd_repair_journal)

    space = sub.add_parser("space", help="describe a search space and its canonical members")
    space.add_argument("name", nargs="?", help="the space (without one: the known spaces)")
    space.add_argument("--input", default="3x224x224", help="CxHxW (3x224x224)")
    space.add_argument("--classes", type=int, default=1000)
    space.add_argument("--json", action="store_true")
    space.set_defaults(func=cmd_space)

    profile = sub.add_parser(
        "profile-device", help="measure a per-block latency table on this (target) machine"
    )
    profile.add_argument("--space", default="mobilenet", help="student space (mobilenet)")
    profile.add_argument("--input", default="3x224x224", help="CxHxW (3x224x224)")
    profile.add_argument("--classes", type=int, default=1000)
    profile.add_argument("--out", required=True, help="table file (JSON), e.g. lut.json")
    profile.add_argument("--meter", default="torch-cpu", help=meter_listing(times_here=True))
    profile.add_argument("--threads", type=int, default=1, help="CPU threads (1)")
    profile.add_argument("--warmup", type=int, default=5)
    profile.add_argument("--runs", type=int, default=20, help="timed runs per repeat (20)")
    profile.add_argument("--repeats", type=int, default=3, help="rounds of --runs (3)")
    profile.add_argument(
        "--tolerance",
        type=float,
        default=0.05,
        help="add rounds while their spread exceeds this fraction of the median (0.05, as "
        "the search's latency.tolerance; 0: exactly --repeats rounds)",
    )
    profile.add_argument("--max-repeats", type=int, default=10, help="most rounds (10)")
    profile.add_argument(
        "--validate",
        action="store_true",
        help="compare the table (made now, or read from --out) with direct measurement",
    )
    profile.add_argument("--validate-n", type=int, default=50, help="random members (50)")
    profile.add_argument(
        "--validate-passes",
        type=int,
        default=3,
        help="time every member once per pass, passes one after another, and take its "
        "median (3): a slow phase of the machine then cannot shift one member alone",
    )
    profile.add_argument("--seed", type=int, default=0)
    profile.add_argument("--no-progress", action="store_true")
    profile.set_defaults(func=cmd_profile_device)

    teacher = sub.add_parser("teacher", help="teacher commands")
    teacher_sub = teacher.add_subparsers(dest="teacher_command", metavar="ACTION")
    train = teacher_sub.add_parser("train", help="train a teacher, keeping its route")
    train.add_argument("--config")
    train.add_argument("--dataset")
    train.add_argument("--data-dir")
    train.add_argument("--arch", help="canonical member of the teacher space or arch JSON")
    train.add_argument("--epochs", type=int)
    train.add_argument("--seed", type=int)
    train.add_argument("--run-dir")
    train.add_argument("--out", help="output folder (default: the reusable teacher cache)")
    _device_flag(train, "the teacher trains")
    train.set_defaults(func=cmd_teacher_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    logging.getLogger("optuna").setLevel(logging.WARNING)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return args.func(args)
    except SearchKDError as exc:
        if args.debug:
            raise
        print(f"searchkd: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("searchkd: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        first = str(exc).splitlines()[0] if str(exc) else ""
        print(
            f"searchkd: unexpected {type(exc).__name__}: {first} (rerun with --debug for the "
            "traceback, and please report it)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
