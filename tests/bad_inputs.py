"""The bad-input catalog: one source for docs/bad_inputs.md and tests/test_bad_inputs.py.

Each case is a wrong thing a user can hand the `searchkd` command, the files it
needs (made by ``setup`` in an empty folder), the command line, and the one line
the user must see. ``python -m tests.bad_inputs > docs/bad_inputs.md`` rewrites
the doc; a test fails when the doc and this list disagree, so they cannot drift.

In commands and messages, ``{tmp}`` is the case's folder and ``{tiny}`` a small
valid config (digits, a ready untrained teacher, a tiny proxy) written there, so
only the one thing named is wrong. In messages ``...`` stands for any text (a
library's own wording).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

TEACHER_DIR = "teacher"  # under {tmp}: an untrained resnet20 for digits, written by setup


@dataclass(frozen=True)
class Case:
    """One row of the catalog."""

    id: str
    what: str  # the bad input, in words
    argv: tuple[str, ...]
    message: str  # the line after "searchkd: error: "
    setup: Callable[[Path], None] | None = None
    exit_code: int = 2
    # a fault the tests inject (e.g. a full disk) that a command line cannot express
    fault: str | None = None
    # "no-cuda" / "no-nni": the case only exists where CUDA / the nni package is absent
    needs: str | None = None


# --- helpers that make bad files ---------------------------------------------------------
def write_teacher(folder: Path, arch: str = "resnet20", shape=(1, 8, 8), classes: int = 10) -> None:
    """A teacher folder as `searchkd teacher train` writes it, with untrained weights."""
    from search_spaces import get_space
    from searchkd.checkpoint import save_state_dict, write_json

    space = get_space("resnet")
    members = space.canonical()
    model = space.build(members[arch], shape[0], shape[1], classes)
    save_state_dict(model, folder / "teacher.pt")
    write_json(
        {"arch": members[arch], "input_shape": list(shape), "num_classes": classes},
        folder / "teacher.json",
    )


def tiny_config(tmp: Path, **changes) -> dict:
    """The tests' tiny settings (digits, 1-epoch proxy) with the ready teacher of {tmp}."""
    from tests.conftest import tiny_settings

    base = {"trials": 1, "teacher": {"checkpoint": str(tmp / TEACHER_DIR)}}
    return tiny_settings(tmp / "runs", **{**base, **changes})


def prepare(tmp: Path) -> None:
    """What every case gets: a ready teacher and a valid tiny config at {tiny}."""
    write_teacher(tmp / TEACHER_DIR)
    (tmp / "tiny.yaml").write_text(yaml.safe_dump(tiny_config(tmp)))


def _text(name: str, content: str) -> Callable[[Path], None]:
    return lambda tmp: (tmp / name).write_text(content)


def _config(name: str, **changes) -> Callable[[Path], None]:
    return lambda tmp: (tmp / name).write_text(yaml.safe_dump(tiny_config(tmp, **changes)))


def _teacher_of_other_arch(tmp: Path) -> None:
    write_teacher(tmp / "other")
    write_teacher(tmp / "wrn", arch="resnet8x4")
    os.replace(tmp / "wrn" / "teacher.pt", tmp / "other" / "teacher.pt")


def _truncated_teacher(tmp: Path) -> None:
    write_teacher(tmp / "cut")
    data = (tmp / "cut" / "teacher.pt").read_bytes()
    (tmp / "cut" / "teacher.pt").write_bytes(data[: len(data) // 2])


def _teacher_without_metadata(tmp: Path) -> None:
    write_teacher(tmp / "bare")
    (tmp / "bare" / "teacher.json").unlink()


def _teacher_with_corrupt_metadata(tmp: Path) -> None:
    write_teacher(tmp / "meta")
    (tmp / "meta" / "teacher.json").write_text('{"arch": {"space": "resnet", ')


def _teacher_of_pickled_code(tmp: Path) -> None:
    import pickle

    write_teacher(tmp / "evil")
    (tmp / "evil" / "teacher.pt").write_bytes(pickle.dumps(os.getcwd))  # not a state dict


def _rgb_teacher(tmp: Path) -> None:
    write_teacher(tmp / "rgb", shape=(3, 32, 32))


def _hundred_class_teacher(tmp: Path) -> None:
    write_teacher(tmp / "k100", classes=100)


def _factory_module(tmp: Path) -> None:
    (tmp / "userteacher.py").write_text("def make(in_channels, num_classes):\n    return 42\n")


def _images(tmp: Path, sizes: dict[str, list[tuple[int, int, str]]]) -> None:
    rng = np.random.default_rng(0)
    for label, specs in sizes.items():
        folder = tmp / "images" / label
        folder.mkdir(parents=True, exist_ok=True)
        for i, (w, h, mode) in enumerate(specs):
            channels = 3 if mode == "RGB" else 1
            pixels = rng.integers(0, 255, (h, w, channels), dtype=np.uint8).squeeze()
            Image.fromarray(pixels, mode).save(folder / f"{i}.png")


def _images_of_two_sizes(tmp: Path) -> None:
    _images(tmp, {"a": [(8, 8, "L")] * 4, "b": [(8, 8, "L")] * 3 + [(12, 12, "L")]})


def _rgb_images(tmp: Path) -> None:
    _images(tmp, {"a": [(8, 8, "RGB")] * 4, "b": [(8, 8, "RGB")] * 4})


def _large_images(tmp: Path) -> None:
    _images(tmp, {"a": [(16, 16, "L")] * 4, "b": [(16, 16, "L")] * 4})


def _corrupt_image(tmp: Path) -> None:
    _images(tmp, {"a": [(8, 8, "L")] * 4, "b": [(8, 8, "L")] * 4})
    (tmp / "images" / "b" / "2.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")


def _one_class(tmp: Path) -> None:
    _images(tmp, {"a": [(8, 8, "L")] * 4})


def _corrupt_cifar(tmp: Path) -> None:
    folder = tmp / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(b"\x80\x02}q\x00(")  # a pickle cut short


def _arch_json(content: str) -> Callable[[Path], None]:
    return lambda tmp: (tmp / "arch.json").write_text(content)


def _student_arch(tmp: Path) -> None:
    """A valid student architecture JSON (the smallest member of the mobilenet space)."""
    import json

    from search_spaces import get_space

    (tmp / "arch.json").write_text(json.dumps(get_space("mobilenet").smallest()))


def _study_with_other_objectives(tmp: Path) -> None:
    import optuna

    (tmp / "runs").mkdir()
    optuna.create_study(
        study_name="taken",
        storage=f"sqlite:///{tmp / 'runs' / 'study.db'}",
        directions=["maximize", "minimize"],
    )


def _study_with_other_settings(tmp: Path) -> None:
    import optuna

    (tmp / "runs").mkdir()
    study = optuna.create_study(
        study_name="digits-mobilenet",
        storage=f"sqlite:///{tmp / 'runs' / 'study.db'}",
        directions=["maximize", "minimize", "minimize"],
    )
    from searchkd.config import SearchConfig

    settings = SearchConfig.model_validate(tiny_config(tmp, seed=7)).search_settings()
    study.set_user_attr("settings", settings)


def _not_a_database(tmp: Path) -> None:
    (tmp / "runs").mkdir()
    (tmp / "runs" / "study.db").write_bytes(b"this is not an SQLite file" * 100)


def _searched_study(tmp: Path) -> None:
    """A study with one rejected and no trained trial, as a search over budget leaves it."""
    import optuna

    (tmp / "runs").mkdir()
    study = optuna.create_study(
        study_name="s",
        storage=f"sqlite:///{tmp / 'runs' / 'study.db'}",
        directions=["maximize", "minimize", "minimize"],
    )
    trial = study.ask()
    trial.set_user_attr("trained", False)
    study.tell(trial, [0.0, 9e6, float("inf")])


def _trained_study(tmp: Path) -> None:
    """A study with one trained student within budget."""
    import optuna

    from search_spaces import get_space

    (tmp / "runs").mkdir()
    study = optuna.create_study(
        study_name="s",
        storage=f"sqlite:///{tmp / 'runs' / 'study.db'}",
        directions=["maximize", "minimize", "minimize"],
    )
    trial = study.ask()
    trial.set_user_attr("trained", True)
    trial.set_user_attr("arch", get_space("mobilenet").smallest())
    study._storage.set_trial_system_attr(trial._trial_id, "constraints", [-0.5, 0.0, 0.0])
    study.tell(trial, [0.5, 5e5, 1.0])


def _study_named(name: str) -> Callable[[Path], None]:
    """A trained study under a name another tool gave it (Optuna accepts any text)."""

    def setup(tmp: Path) -> None:
        import optuna

        _trained_study(tmp)
        storage = f"sqlite:///{tmp / 'runs' / 'study.db'}"
        optuna.copy_study(from_study_name="s", from_storage=storage, to_storage=storage,
                          to_study_name=name)  # fmt: skip
        optuna.delete_study(study_name="s", storage=storage)

    return setup


def _retrained_study(tmp: Path) -> None:
    """A trained study whose trial 0 was retrained with the kd schedule only."""
    import optuna

    _trained_study(tmp)
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp / 'runs' / 'study.db'}")
    study.set_user_attr(
        "retrain:trial0:kd:seed0",
        {"schedule": "kd", "seed": 0, "accuracy": 0.9, "student": str(tmp / "kd.json")},
    )


def _student_file(version: object) -> Callable[[Path], None]:
    """An exported student file whose format_version is ``version`` (absent: ``...``)."""

    def setup(tmp: Path) -> None:
        import json

        from search_spaces import get_space

        record = {
            "format": "searchkd-student",
            "format_version": version,
            "arch": get_space("mobilenet").smallest(),
            "input_shape": [1, 8, 8],
            "num_classes": 10,
            "dataset": "digits",
        }
        if version is ...:
            del record["format_version"]
        (tmp / "student.json").write_text(json.dumps(record))

    return setup


def _wide_arch(name: str, **stage2: int) -> Callable[[Path], None]:
    """The smallest mobilenet member with stages 2 and 3 changed as given."""

    def setup(tmp: Path) -> None:
        import json

        from search_spaces import get_space

        arch = get_space("mobilenet").smallest()
        for index in (2, 3):
            arch["stages"][index].update(stage2)
        (tmp / name).write_text(json.dumps(arch))

    return setup


def _float_image(tmp: Path) -> None:
    _images(tmp, {"a": [(8, 8, "L")] * 4, "b": [(8, 8, "L")] * 3})
    pixels = np.random.default_rng(0).random((8, 8), dtype=np.float32)
    Image.fromarray(pixels, "F").save(tmp / "images" / "b" / "3.tif")


def _huge_yaml(tmp: Path) -> None:
    (tmp / "huge.yaml").write_text("dataset: digits\n# " + "x" * 10_000_000 + "\n")


def _file_in_the_way(tmp: Path) -> None:
    (tmp / "afile").write_text("a file, not a folder")


def _truncated_database(tmp: Path) -> None:
    _searched_study(tmp)
    db = tmp / "runs" / "study.db"
    with sqlite3.connect(db) as connection:
        connection.execute("PRAGMA journal_mode=DELETE")
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 3])


def _journal_damaged_in_the_middle(tmp: Path) -> None:
    """A journal with a garbage line between complete records (not a cut-off end)."""
    import optuna

    from searchkd.study import make_storage

    (tmp / "runs").mkdir()
    journal = tmp / "runs" / "study.log"
    study = optuna.create_study(study_name="s", storage=make_storage(f"journal:{journal}"))
    study.tell(study.ask(), 1.0)
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join([*lines[:2], b"garbage\n", *lines[2:]]))


SEARCH = ("search", "--config", "{tiny}", "--no-progress")

QUANTIZE_INT8 = ("retrain", "--arch", "{tmp}/arch.json", "--epochs", "1", "--quantize", "int8")

CASES: tuple[Case, ...] = (
    # --- the config file --------------------------------------------------------------
    Case(
        "config-missing",
        "config file that does not exist",
        ("search", "--config", "{tmp}/nope.yaml"),
        "config: no file at {tmp}/nope.yaml; pass the path of a YAML file",
    ),
    Case(
        "yaml-malformed",
        "malformed YAML",
        ("search", "--config", "{tmp}/bad.yaml"),
        "config: {tmp}/bad.yaml is not valid YAML at line 3; fix the syntax",
        _text("bad.yaml", "dataset: digits\ntrials: [3\n"),
    ),
    Case(
        "yaml-not-mapping",
        "YAML that is a list, not a mapping",
        ("search", "--config", "{tmp}/list.yaml"),
        "config: {tmp}/list.yaml must hold a mapping of keys, not a list",
        _text("list.yaml", "- dataset: digits\n"),
    ),
    Case(
        "yaml-binary",
        "a binary file given as config",
        ("search", "--config", "{tmp}/teacher/teacher.pt"),
        "config: {tmp}/teacher/teacher.pt is not a text file; pass the path of a YAML file",
    ),
    Case(
        "unknown-key",
        "unknown top-level key (typo)",
        ("search", "--config", "{tmp}/typo.yaml"),
        "config: datset: unknown key; check the spelling (see `searchkd search --help`)",
        _text("typo.yaml", "datset: digits\n"),
    ),
    Case(
        "unknown-nested-key",
        "unknown nested key",
        ("search", "--config", "{tmp}/nested.yaml"),
        "config: proxy.epoch: unknown key; check the spelling (see `searchkd search --help`)",
        _text("nested.yaml", "proxy: {epoch: 3}\n"),
    ),
    Case(
        "wrong-type",
        "wrong type (text where a number belongs)",
        ("search", "--config", "{tmp}/type.yaml"),
        "config: trials: Input should be a valid integer, unable to parse string as an integer",
        _text("type.yaml", "trials: many\n"),
    ),
    Case(
        "section-not-mapping",
        "a section that is a number, not a mapping",
        ("search", "--config", "{tmp}/section.yaml"),
        "config: proxy: Input should be a valid dictionary or instance of ProxyConfig",
        _text("section.yaml", "proxy: 3\n"),
    ),
    Case(
        "negative-lr",
        "negative learning rate",
        ("search", "--config", "{tmp}/lr.yaml"),
        "config: proxy.lr: Input should be greater than 0",
        _text("lr.yaml", "proxy: {lr: -0.1}\n"),
    ),
    Case(
        "zero-trials",
        "zero trials",
        (*SEARCH, "--trials", "0"),
        "config: trials: Input should be greater than or equal to 1",
    ),
    Case(
        "warmup-negative-pool",
        "a negative zero-cost warm-up pool",
        (*SEARCH, "--zero-cost-warmup", "-3"),
        "config: zero_cost.warmup_pool: Input should be greater than or equal to 0",
    ),
    Case(
        "tiny-image-size",
        "image size too small",
        (*SEARCH, "--image-size", "2"),
        "config: image_size: Input should be greater than or equal to 4",
    ),
    Case(
        "latency-cuda-missing",
        "CUDA latency meter on a machine without CUDA",
        ("search", "--config", "{tmp}/cuda.yaml", "--no-progress"),
        "latency meter torch-cuda: this machine has no CUDA device for PyTorch; use "
        "torch-cpu, a lut: table profiled on the target, or run where a GPU is visible",
        _config("cuda.yaml", latency={"meter": "torch-cuda"}),
        needs="no-cuda",
    ),
    Case(
        "latency-ray-no-resource",
        "ray: latency meter without a resource name",
        ("search", "--config", "{tmp}/ray-meter.yaml", "--no-progress"),
        "config: latency.meter: must be torch-cpu, torch-cuda, onnxruntime[:Provider], "
        "onnxruntime-int8[:Provider], lut:PATH "
        "(see profile-device) or ray:RESOURCE[:METER] (timed on the Ray node advertising it)",
        _config("ray-meter.yaml", latency={"meter": "ray::torch-cpu"}),
    ),
    Case(
        "latency-int8-no-provider",
        "int8 latency meter on an execution provider this ONNX Runtime lacks",
        (*SEARCH, "--latency", "onnxruntime-int8:NoSuchExecutionProvider"),
        "ONNX Runtime here has no NoSuchExecutionProvider; available: ...",
    ),
    # --- the Ray runner ---------------------------------------------------------------
    Case(
        "ray-zero-workers",
        "Ray runner with no workers",
        (*SEARCH, "--runner", "ray", "--workers", "0"),
        "config: ray.workers: Input should be greater than or equal to 1",
    ),
    Case(
        "ray-gpus-per-trial",
        "GPUs per trial on a Ray cluster without GPUs",
        (*SEARCH, "--runner", "ray", "--gpus-per-trial", "1"),
        "--gpus-per-trial 1: no node of the Ray cluster has that many GPUs (the largest has "
        "0 of the cluster's 0); lower --gpus-per-trial or add GPU nodes (0: train on CPUs)",
        needs="no-cuda",
    ),
    Case(
        "ray-gpus-per-trial-fraction",
        "more than one GPU per trial, but not a whole number",
        (*SEARCH, "--runner", "ray", "--gpus-per-trial", "1.5"),
        "config: ray.gpus_per_trial: must be a fraction of one GPU (e.g. 0.5) or a whole "
        "number (Ray's rule)",
    ),
    Case(
        "gpus-per-trial-local",
        "GPUs per trial with the local runner, which would train on the CPU",
        (*SEARCH, "--gpus-per-trial", "1"),
        "config: ray.gpus_per_trial: the local runner does not use it; add --runner ray, or "
        "train on a GPU here with --device cuda",
    ),
    Case(
        "workers-local",
        "several workers with the local runner, which trains one trial at a time",
        (*SEARCH, "--workers", "2"),
        "config: ray.workers 2: the local runner trains one trial at a time; add --runner ray "
        "to train several at once",
    ),
    # --- the training device -----------------------------------------------------------
    Case(
        "device-unknown",
        "a device name PyTorch does not use here",
        (*SEARCH, "--device", "gpu"),
        "config: device: must be auto, cpu, cuda or cuda:N",
    ),
    Case(
        "device-cuda-missing",
        "training on CUDA on a machine without it",
        (*SEARCH, "--device", "cuda"),
        "device 'cuda': PyTorch sees no CUDA device here (torch ...); install a CUDA build of "
        "PyTorch on a machine with an NVIDIA GPU, or use --device cpu",
        needs="no-cuda",
    ),
    Case(
        "retrain-device-cuda-missing",
        "retraining on CUDA on a machine without it",
        ("retrain", "--arch", "{tmp}/arch.json", "--epochs", "1", "--device", "cuda:1"),
        "device 'cuda:1': PyTorch sees no CUDA device here (torch ...); install a CUDA build "
        "of PyTorch on a machine with an NVIDIA GPU, or use --device cpu",
        _student_arch,
        needs="no-cuda",
    ),
    Case(
        "seed-huge",
        "a seed beyond 32 bits",
        (*SEARCH, "--seed", "18446744073709551616"),
        "config: seed: Input should be less than or equal to 4294967295",
    ),
    Case(
        "yaml-huge",
        "a 10 MB config file",
        ("search", "--config", "{tmp}/huge.yaml"),
        "config: {tmp}/huge.yaml is 10.0 MB, over the 4 MB a settings file may have; pass the "
        "path of a searchkd YAML config",
        _huge_yaml,
    ),
    Case(
        "yaml-long-text",
        "a 100,000-character value (not echoed back)",
        ("search", "--config", "{tmp}/long.yaml"),
        "config: dataset: a text of 100000 characters; a setting has at most 4096 (is it the "
        "right value?)",
        _text("long.yaml", "dataset: " + "x" * 100_000 + "\n"),
    ),
    # --- budgets ----------------------------------------------------------------------
    Case(
        "budget-unreadable",
        "unreadable budget",
        (*SEARCH, "--max-macs", "lots"),
        "max_macs: cannot read 'lots'; use a number "
        "(4000000, 4M, 1.5G) or a fraction of the teacher (0.25x)",
    ),
    Case(
        "budget-negative",
        "negative budget",
        (*SEARCH, "--max-macs=-4M"),
        "max_macs: cannot read '-4M'; use a number "
        "(4000000, 4M, 1.5G) or a fraction of the teacher (0.25x)",
    ),
    Case(
        "budget-zero",
        "zero latency budget",
        (*SEARCH, "--max-latency-ms", "0"),
        "max_latency_ms: '0' must be a positive number",
    ),
    Case(
        "budget-impossible",
        "budget no member of the space can meet",
        (*SEARCH, "--max-macs", "1k"),
        "no member of the mobilenet space meets the budget: even the smallest has macs ... > "
        "1k; raise the budget or choose a smaller space",
    ),
    Case(
        "budget-impossible-latency",
        "latency budget no member of the space can meet",
        (*SEARCH, "--max-latency-ms", "0.0001"),
        "no member of the mobilenet space meets the budget: even the smallest has latency_ms "
        "... ms > 0.0001 ms; raise the budget or choose a smaller space",
    ),
    Case(
        "budget-impossible-relative",
        "relative budget no member can meet, the teacher not trained yet",
        ("search", "--config", "{tmp}/untrained.yaml", "--no-progress"),
        "no member of the mobilenet space meets the budget: even the smallest has macs ... > "
        "...; raise the budget or choose a smaller space",
        _config("untrained.yaml", teacher={"arch": "resnet20"}, budget={"max_macs": "0.0001x"}),
    ),
    # --- names of parts ---------------------------------------------------------------
    Case(
        "unknown-space",
        "unknown search space",
        (*SEARCH, "--space", "vit"),
        "unknown search space 'vit'; known spaces: compact, mobilenet, mobilenet-reduced, resnet, "
        "or nni:package.module:SpaceClass",
    ),
    Case(
        "nni-not-installed",
        "an NNI space where nni is not installed",
        (*SEARCH, "--space", "nni:my_spaces:MySpace"),
        "NNI spaces need nni and pytorch-lightning (nni is not installed); install the extra: "
        'pip install "searchkd[nni]"',
        needs="no-nni",
    ),
    Case(
        "nni-space-form",
        "an NNI space named by a file path",
        (*SEARCH, "--space", "nni:spaces/my_space.py:MySpace"),
        "search space 'nni:spaces/my_space.py:MySpace': an NNI space is named "
        "nni:package.module:SpaceClass (a module importable here and a ModelSpace subclass in it)",
    ),
    Case(
        "space-args-builtin",
        "space_args for a built-in space",
        ("search", "--config", "{tmp}/c.yaml", "--no-progress"),
        "config: space_args and space_taps are for nni:package.module:SpaceClass spaces, not "
        "'mobilenet'",
        _config("c.yaml", space_args={"width": 8}),
    ),
    Case(
        "unknown-controller",
        "unknown controller",
        (*SEARCH, "--controller", "bohb"),
        "config: controller: unknown controller 'bohb'; choose one of akd, evolution, tpe, "
        "nsga2, random",
    ),
    Case(
        "unknown-loss",
        "unknown loss",
        ("search", "--config", "{tmp}/loss.yaml", "--no-progress"),
        "unknown distillation loss 'mimic'; known losses: ...",
        _config("loss.yaml", loss={"weights": {"ce": 0.5, "mimic": 0.5}}),
    ),
    Case(
        "unknown-runner",
        "unknown runner",
        ("search", "--config", "{tmp}/runner.yaml"),
        "config: runner: Input should be 'local' or 'ray'",
        _text("runner.yaml", "runner: slurm\n"),
    ),
    Case(
        "unknown-dataset",
        "unknown dataset",
        (*SEARCH, "--dataset", "imagenet"),
        "unknown dataset 'imagenet'; choose one of: mnist5k-cluttered, mnist5k, digits, "
        "cifar10, cifar100, imagefolder",
    ),
    Case(
        "unknown-storage",
        "storage URL of an unknown kind",
        (*SEARCH, "--storage", "mongodb://localhost/x"),
        "cannot open storage mongodb://localhost/x: Can't load plugin: sqlalchemy.dialects:mongodb",
    ),
    Case(
        "storage-unreachable",
        "PostgreSQL server that is not there",
        (*SEARCH, "--storage", "postgresql://searchkd@127.0.0.1:9/none"),
        "cannot open storage postgresql://searchkd@127.0.0.1:9/none: ...",
    ),
    # --- the teacher ------------------------------------------------------------------
    Case(
        "teacher-missing",
        "teacher checkpoint that does not exist",
        (*SEARCH, "--teacher", "{tmp}/gone/teacher.pt"),
        "--teacher: no file or folder at {tmp}/gone/teacher.pt",
    ),
    Case(
        "teacher-other-arch",
        "teacher checkpoint of another architecture",
        (*SEARCH, "--teacher", "{tmp}/other"),
        "teacher: {tmp}/other/teacher.pt does not fit this architecture (... mis-shaped "
        "tensors, e.g. ...); pass the architecture the checkpoint was trained with",
        _teacher_of_other_arch,
    ),
    Case(
        "teacher-truncated",
        "truncated teacher checkpoint",
        (*SEARCH, "--teacher", "{tmp}/cut"),
        "teacher: cannot read {tmp}/cut/teacher.pt (...); the file is corrupt or not a "
        "PyTorch state dict — re-create it",
        _truncated_teacher,
    ),
    Case(
        "teacher-pickled-code",
        "teacher checkpoint that pickles code",
        (*SEARCH, "--teacher", "{tmp}/evil"),
        "teacher: cannot read {tmp}/evil/teacher.pt (...); the file is corrupt or not a "
        "PyTorch state dict — re-create it",
        _teacher_of_pickled_code,
    ),
    Case(
        "teacher-no-metadata",
        "teacher folder without teacher.json",
        (*SEARCH, "--teacher", "{tmp}/bare"),
        "teacher: no teacher.json beside {tmp}/bare/teacher.pt; a searchkd teacher is the "
        "folder `searchkd teacher train` writes (teacher.pt + teacher.json); for your own "
        "model use teacher.factory",
        _teacher_without_metadata,
    ),
    Case(
        "teacher-corrupt-metadata",
        "teacher.json that is not valid JSON",
        (*SEARCH, "--teacher", "{tmp}/meta"),
        "teacher metadata: {tmp}/meta/teacher.json is not valid JSON (...); re-export it",
        _teacher_with_corrupt_metadata,
    ),
    Case(
        "teacher-other-input",
        "teacher trained on 3x32x32 images, data is 1x8x8",
        (*SEARCH, "--teacher", "{tmp}/rgb"),
        "teacher expects input 3x32x32 but dataset digits has 1x8x8; use a teacher trained "
        "on this dataset",
        _rgb_teacher,
    ),
    Case(
        "teacher-other-classes",
        "teacher of 100 classes, data has 10",
        (*SEARCH, "--teacher", "{tmp}/k100"),
        "teacher predicts 100 classes but dataset digits has 10; use a teacher trained on "
        "this dataset",
        _hundred_class_teacher,
    ),
    Case(
        "teacher-empty",
        "an empty --teacher (not a new teacher in silence)",
        (*SEARCH, "--teacher", ""),
        "--teacher '': empty; give a teacher folder or teacher.pt, a member of the teacher "
        "space (e.g. resnet20_w16s2) or module:function",
    ),
    Case(
        "factory-missing",
        "teacher factory module that does not exist",
        (*SEARCH, "--teacher", "no_such_module:make"),
        "teacher factory 'no_such_module:make' cannot be imported (No module named "
        "'no_such_module')",
    ),
    Case(
        "factory-not-module",
        "teacher factory that returns no nn.Module",
        (*SEARCH, "--teacher", "userteacher:make"),
        "teacher factory 'userteacher:make' returned int, not a torch.nn.Module",
        _factory_module,
    ),
    Case(
        "factory-form",
        "teacher factory not of the form module:function",
        ("search", "--config", "{tmp}/factory.yaml"),
        "config: teacher.factory: must look like 'package.module:function'",
        _text("factory.yaml", "teacher: {factory: 'a:b:c'}\n"),
    ),
    # --- architectures ----------------------------------------------------------------
    Case(
        "arch-json-corrupt",
        "corrupt architecture JSON (teacher arch)",
        ("teacher", "train", "--dataset", "digits", "--arch", "{tmp}/arch.json"),
        "teacher architecture: {tmp}/arch.json is not valid JSON (...); re-export it",
        _arch_json('{"space": "resnet", "stages": ['),
    ),
    Case(
        "arch-json-other-space",
        "architecture JSON of an unknown space",
        ("teacher", "train", "--dataset", "digits", "--arch", "{tmp}/arch.json"),
        "unknown search space 'vit'; known spaces: compact, mobilenet, mobilenet-reduced, resnet, "
        "or nni:package.module:SpaceClass",
        _arch_json('{"space": "vit", "version": 1}'),
    ),
    Case(
        "arch-json-bad-field",
        "architecture JSON with a bad field",
        ("teacher", "train", "--dataset", "digits", "--arch", "{tmp}/arch.json"),
        "architecture: missing key 'space' (one of: compact, mobilenet, mobilenet-reduced, resnet)",
        _arch_json('{"stages": []}'),
    ),
    Case(
        "arch-channels-huge",
        "architecture file with 100,000 channels in a stage",
        ("retrain", "--arch", "{tmp}/wide.json", "--epochs", "1"),
        "mobilenet architecture stages[2].channels: must be <= 8192 (searchkd's bound on an "
        "architecture), got 100000",
        _wide_arch("wide.json", channels=100_000),
    ),
    Case(
        "arch-layers-huge",
        "architecture file with 10,000 layers in a stage",
        ("retrain", "--arch", "{tmp}/deep.json", "--epochs", "1"),
        "mobilenet architecture stages[2].layers: must be <= 64 (searchkd's bound on an "
        "architecture), got 10000",
        _wide_arch("deep.json", layers=10_000),
    ),
    Case(
        "arch-memory",
        "architecture within bounds that would not fit in memory",
        (
            "retrain",
            "--arch",
            "{tmp}/big.json",
            "--epochs",
            "1",
            "--dataset",
            "digits",
            "--teacher",
            "{tmp}/teacher",
            "--device",
            "cpu",
            "--no-progress",
        ),  # fmt: skip
        "student big: training it would take about ... GB (...M parameters, batch 128 of "
        "1x8x8) but cpu has 0.1 GB available; make it smaller (its widest field: "
        "stages[2].channels = 8000) or lower the batch size",
        _wide_arch("big.json", channels=8000),
        fault="100 MB of memory",
    ),
    Case(
        "student-version-newer",
        "student file of a newer format_version",
        ("retrain", "--arch", "{tmp}/student.json", "--epochs", "1"),
        "student file: {tmp}/student.json is format_version 99, newer than this searchkd "
        "reads (1); upgrade searchkd to read it, or re-export it with this version",
        _student_file(99),
    ),
    Case(
        "student-version-text",
        "student file whose format_version is not an integer",
        ("retrain", "--arch", "{tmp}/student.json", "--epochs", "1"),
        "student file: {tmp}/student.json has format_version 'abc', not an integer; "
        "re-export it with this searchkd",
        _student_file("abc"),
    ),
    Case(
        "student-version-unknown",
        "student file of a format_version no searchkd wrote",
        ("retrain", "--arch", "{tmp}/student.json", "--epochs", "1"),
        "student file: {tmp}/student.json has format_version 0, which no searchkd wrote; "
        "re-export it with this searchkd",
        _student_file(0),
    ),
    Case(
        "student-version-missing",
        "student file without format_version",
        ("retrain", "--arch", "{tmp}/student.json", "--epochs", "1"),
        "student file: {tmp}/student.json has no format_version; re-export it with this searchkd",
        _student_file(...),
    ),
    # --- data -------------------------------------------------------------------------
    Case(
        "dataset-folder-missing",
        "missing dataset folder",
        (*SEARCH, "--dataset", "cifar10", "--data-dir", "{tmp}/nowhere"),
        "cifar10: data directory {tmp}/nowhere does not exist; pass --data-dir pointing at "
        "the 'cifar-10-batches-py' folder (or its parent)",
    ),
    Case(
        "dataset-dir-not-given",
        "dataset that needs a folder, none given",
        (*SEARCH, "--dataset", "imagefolder"),
        "imagefolder: no data directory given; pass --data-dir pointing at ...",
    ),
    Case(
        "cifar-corrupt",
        "corrupt CIFAR batch file",
        (*SEARCH, "--dataset", "cifar10", "--data-dir", "{tmp}"),
        "cifar10: cannot unpickle {tmp}/cifar-10-batches-py/data_batch_1 (...); file is "
        "corrupt, re-download cifar10 (python version) and extract it again",
        _corrupt_cifar,
    ),
    Case(
        "images-mixed-sizes",
        "images of different sizes",
        (*SEARCH, "--dataset", "imagefolder", "--data-dir", "{tmp}/images"),
        "imagefolder: images differ in size (8x8 (0.png), 12x12 (3.png)); pass an image size "
        "(image_size / --image-size) to resize them all to one square size",
        _images_of_two_sizes,
    ),
    Case(
        "images-wrong-size",
        "images of another size than the teacher's",
        (*SEARCH, "--dataset", "imagefolder", "--data-dir", "{tmp}/images"),
        "teacher expects input 1x8x8 but dataset imagefolder has 1x16x16; use a teacher "
        "trained on this dataset",
        _large_images,
    ),
    Case(
        "images-wrong-channels",
        "RGB images for a greyscale teacher",
        (*SEARCH, "--dataset", "imagefolder", "--data-dir", "{tmp}/images"),
        "teacher expects input 1x8x8 but dataset imagefolder has 3x8x8; use a teacher "
        "trained on this dataset",
        _rgb_images,
    ),
    Case(
        "image-corrupt",
        "a corrupt image file",
        (*SEARCH, "--dataset", "imagefolder", "--data-dir", "{tmp}/images"),
        "imagefolder: cannot read image {tmp}/images/b/2.png (...); fix or remove the file",
        _corrupt_image,
    ),
    Case(
        "image-float",
        "a floating-point (mode F) image",
        (*SEARCH, "--dataset", "imagefolder", "--data-dir", "{tmp}/images"),
        "imagefolder: {tmp}/images/b/3.tif has image mode F, which searchkd does not read; "
        "save it as 8- or 16-bit greyscale or RGB (with or without alpha)",
        _float_image,
    ),
    Case(
        "images-one-class",
        "image folder with one class",
        (*SEARCH, "--dataset", "imagefolder", "--data-dir", "{tmp}/images"),
        "imagefolder: {tmp}/images has 1 class folder(s), need at least 2; put one "
        "sub-folder per class under it",
        _one_class,
    ),
    # --- the study and the run folder -------------------------------------------------
    Case(
        "study-other-objectives",
        "study name reused with other objectives",
        (*SEARCH, "--study", "taken"),
        "study 'taken' in sqlite:///{tmp}/runs/study.db was created with other objectives; "
        "pass another --study name",
        _study_with_other_objectives,
    ),
    Case(
        "study-other-settings",
        "study resumed with other settings (seed)",
        SEARCH,
        "study 'digits-mobilenet' was run with other settings (seed differ); rerun with the "
        "original settings to resume, or pass a new --study name",
        _study_with_other_settings,
    ),
    Case(
        "study-name-path",
        "a study name that climbs out of the run folder",
        (*SEARCH, "--study", "a/../../b"),
        "config: study: the study name 'a/../../b' holds a path separator; use 1-100 letters, "
        "digits, '.', '_' or '-', starting with a letter or digit, e.g. --study digits-small",
    ),
    Case(
        "study-name-long",
        "a 300-character study name",
        ("search", "--config", "{tmp}/long-study.yaml", "--no-progress"),
        "config: study: the study name is 300 characters long (at most 100); use 1-100 "
        "letters, digits, '.', '_' or '-', starting with a letter or digit, e.g. --study "
        "digits-small",
        _config("long-study.yaml", study="x" * 300),
    ),
    Case(
        "study-name-empty",
        "an empty study name (not the default one in silence)",
        (*SEARCH, "--study", ""),
        "config: study: the study name is empty; use 1-100 letters, digits, '.', '_' or '-', "
        "starting with a letter or digit, e.g. --study digits-small",
    ),
    Case(
        "export-study-name-path",
        "export --study of a name that climbs out of the folder",
        ("export", "--run-dir", "{tmp}/runs", "--study", "a/../../b"),
        "--study: the study name 'a/../../b' holds a path separator; use 1-100 letters, "
        "digits, '.', '_' or '-', starting with a letter or digit, e.g. --study digits-small",
        _study_named("a/../../b"),
    ),
    Case(
        "export-stored-name-path",
        "export of a study whose stored name climbs out of the folder",
        ("export", "--run-dir", "{tmp}/runs", "--out", "{tmp}/out"),
        "refusing to write 'a/../../b-trial0.json': it would land outside {tmp}/out; copy "
        "the study under a name of letters, digits, '.', '_' and '-' (optuna.copy_study) and "
        "use that",
        _study_named("a/../../b"),
    ),
    Case(
        "study-db-garbage",
        "study.db that is not a database",
        ("pareto", "--run-dir", "{tmp}/runs"),
        "cannot open storage sqlite:///{tmp}/runs/study.db: ...",
        _not_a_database,
    ),
    Case(
        "study-db-truncated",
        "truncated study.db",
        ("pareto", "--run-dir", "{tmp}/runs"),
        "cannot open storage sqlite:///{tmp}/runs/study.db: ...",
        _truncated_database,
    ),
    Case(
        "run-dir-unwritable",
        "run folder that cannot be created (a file is in the way)",
        (*SEARCH, "--run-dir", "{tmp}/afile/runs"),
        "run folder {tmp}/afile/runs is not writable (Not a directory); pass --run-dir to a "
        "folder you can write",
        _file_in_the_way,
    ),
    Case(
        "disk-full",
        "full disk while saving (ENOSPC)",
        ("export", "--run-dir", "{tmp}/runs", "--out", "{tmp}/out"),
        "cannot write {tmp}/out/s-trial0.json (No space left on device); free some space or "
        "choose another folder",
        _trained_study,
        fault="ENOSPC",
    ),
    Case(
        "journal-disk-full",
        "full disk while the search writes its journal (ENOSPC)",
        SEARCH,
        "cannot write the study to {tmp}/runs/study.log (No space left on device); nothing "
        "was half-written and every recorded trial is kept: free space (or fix the disk), then "
        "rerun the same command to resume",
        fault="ENOSPC in study.log",
    ),
    Case(
        "sqlite-disk-full",
        "full disk while the search writes its SQLite study",
        (*SEARCH, "--storage", "sqlite:///{tmp}/runs/study.db"),
        "cannot write the study to sqlite:///{tmp}/runs/study.db (database or disk is full); "
        "nothing was half-written and every recorded trial is kept: free space (or fix the "
        "disk), then rerun the same command to resume",
        fault="full SQLite database",
    ),
    Case(
        "journal-damaged-middle",
        "study.log with a damaged line between complete records",
        ("pareto", "--run-dir", "{tmp}/runs"),
        "{tmp}/runs/study.log is damaged at line 3 of 4: not a journal record, with complete "
        "records after it (not a cut-off end), so it was left as it is; repair it with "
        "`searchkd repair-journal {tmp}/runs/study.log` (it keeps the original as a .damaged- "
        "file)",
        _journal_damaged_in_the_middle,
    ),
    Case(
        "journal-not-a-journal",
        "a --storage journal file that is some other text file",
        ("pareto", "--storage", "journal:{tmp}/notes.log"),
        "{tmp}/notes.log is not an Optuna journal (it holds no complete journal record); pass "
        "the study.log a search wrote, or another --storage",
        _text("notes.log", "a log of something else\n"),
    ),
    Case(
        "repair-journal-missing",
        "repair-journal of a file that does not exist",
        ("repair-journal", "{tmp}/nope.log"),
        "no journal file at {tmp}/nope.log; pass the study.log of a run folder",
    ),
    # --- the read-only commands -------------------------------------------------------
    Case(
        "pareto-no-study-db",
        "pareto on a run folder without a study",
        ("pareto", "--run-dir", "{tmp}/nowhere"),
        "no study in {tmp}/nowhere (no study.log); run `searchkd search` first or pass "
        "--storage / --run-dir",
    ),
    Case(
        "pareto-unknown-study",
        "a study name that is not in the storage",
        ("pareto", "--run-dir", "{tmp}/runs", "--study", "other"),
        "no study 'other' in sqlite:///{tmp}/runs/study.db; studies there: s",
        _searched_study,
    ),
    Case(
        "export-untrained-trial",
        "export of a trial that was not trained",
        ("export", "--run-dir", "{tmp}/runs", "--trial", "0"),
        "trial 0 of study 's' is not a trained candidate; see `searchkd pareto` for the "
        "trained trials",
        _searched_study,
    ),
    Case(
        "export-nothing-trained",
        "export from a study with no trained trial",
        ("export", "--run-dir", "{tmp}/runs"),
        "study 's' has no trained feasible trial yet",
        _searched_study,
    ),
    Case(
        "export-top-zero",
        "export --top 0",
        ("export", "--run-dir", "{tmp}/runs", "--top", "0"),
        "--top 0: choose at least one student (--top 1 or more)",
        _searched_study,
    ),
    Case(
        "retrain-top-zero",
        "retrain --top 0 (not the top student in silence)",
        ("retrain", "--run-dir", "{tmp}/runs", "--top", "0", "--epochs", "1"),
        "--top 0: choose at least one student (--top 1 or more)",
        _trained_study,
    ),
    Case(
        "retrain-seed-huge",
        "retrain --seed beyond 32 bits",
        ("retrain", "--arch", "{tmp}/arch.json", "--epochs", "1", "--seed", "18446744073709551616"),
        "recipe: seed 18446744073709551616: give a seed between 0 and 4294967295",
        _student_arch,
    ),
    Case(
        "retrain-teacher-empty",
        "retrain --teacher ''",
        ("retrain", "--arch", "{tmp}/arch.json", "--epochs", "1", "--teacher", ""),
        "--teacher '': empty; give a teacher folder or teacher.pt, a member of the teacher "
        "space (e.g. resnet20_w16s2) or module:function",
        _student_arch,
    ),
    Case(
        "export-schedule-unknown",
        "export --schedule that does not exist",
        ("export", "--run-dir", "{tmp}/runs", "--schedule", "nosuch"),
        "--schedule 'nosuch': no such schedule; known schedules: ce, kd, takd, rco, ban",
        _retrained_study,
    ),
    Case(
        "export-schedule-not-run",
        "export --schedule never run on that trial",
        ("export", "--run-dir", "{tmp}/runs", "--schedule", "takd"),
        "--schedule takd: trial 0 was never retrained with takd (its retrainings: kd); export "
        "another schedule, or run `searchkd retrain --study s --trial 0 --schedule takd "
        "--epochs E` first",
        _retrained_study,
    ),
    Case(
        "report-nothing-trained",
        "report of a study with no trained trial",
        ("report", "s", "--run-dir", "{tmp}/runs", "--out", "{tmp}/report"),
        "study 's' has no trained feasible trial yet; run `searchkd search` until one completes",
        _searched_study,
    ),
    Case(
        "dashboard-port",
        "dashboard port out of range",
        ("dashboard", "--run-dir", "{tmp}/runs", "--port", "99999"),
        "--port 99999: give a port between 1 and 65535",
        _searched_study,
    ),
    Case(
        "storage-folder-missing",
        "SQLite storage in a folder that does not exist",
        ("pareto", "--storage", "sqlite:///{tmp}/no/such/dir/study.db"),
        "--storage sqlite:///{tmp}/no/such/dir/study.db: no study file at "
        "{tmp}/no/such/dir/study.db; check the path (this command reads a study, it does not "
        "create one; `searchkd search` does)",
    ),
    Case(
        "pareto-journal-typo",
        "pareto --storage journal: of a file that does not exist (none is created)",
        ("pareto", "--storage", "journal:{tmp}/TYPO/study.log"),
        "--storage journal:{tmp}/TYPO/study.log: no study file at {tmp}/TYPO/study.log; check "
        "the path (this command reads a study, it does not create one; `searchkd search` does)",
    ),
    Case(
        "export-journal-typo",
        "export --storage journal: of a file that does not exist (none is created)",
        ("export", "--storage", "journal:{tmp}/TYPO/study.log"),
        "--storage journal:{tmp}/TYPO/study.log: no study file at {tmp}/TYPO/study.log; check "
        "the path (this command reads a study, it does not create one; `searchkd search` does)",
    ),
    Case(
        "space-input",
        "space --input that is not CxHxW",
        ("space", "mobilenet", "--input", "3x224"),
        "--input '3x224': use CxHxW, e.g. 3x224x224",
    ),
    Case(
        "retrain-quantize-int4",
        "int4 activations for a quantised student",
        (*QUANTIZE_INT8[:-1], "int4"),
        "quantisation: 4-bit activations are not supported; activations run in 8 bits (uint8, "
        "as ONNX Runtime's int8 kernels read them); 4 bits is for weights only",
        _student_arch,
    ),
    Case(
        "retrain-weight-bits",
        "a weight bit width with no int8 kernel",
        (*QUANTIZE_INT8, "--weight-bits", "3"),
        "quantisation: 3-bit weights are not supported; use 8 or 4",
        _student_arch,
    ),
)


def by_id() -> dict[str, Case]:
    return {case.id: case for case in CASES}


def _shown(arg: str) -> str:
    """An argument as the table shows it: an empty one as '', a very long one cut."""
    if not arg:
        return "''"
    return arg if len(arg) <= 60 else f"{arg[:20]}...({len(arg)} characters)"


def markdown_table() -> str:
    """The catalog as the Markdown table in docs/bad_inputs.md."""
    rows = [
        "| # | bad input | command | message (after `searchkd: error: `) | exit |",
        "|---|---|---|---|---|",
    ]
    for number, case in enumerate(CASES, 1):
        command = "searchkd " + " ".join(_shown(arg) for arg in case.argv)
        if case.fault:
            command += f" *(with {case.fault} injected)*"
        message = case.message.replace("|", "\\|")
        rows.append(f"| {number} | {case.what} | `{command}` | {message} | {case.exit_code} |")
    return "\n".join(rows)


DOC_HEAD = """# Bad inputs

What `searchkd` answers when it is handed something wrong: one line on stderr,
`searchkd: error: <message>`, and exit code 2 (a traceback only with `--debug`).
Every row is a test (`tests/test_bad_inputs.py`), made from the same list
(`tests/bad_inputs.py`); regenerate this page with
`python -m tests.bad_inputs > docs/bad_inputs.md`.

`{tmp}` is the folder the test made the bad file in; `{tiny}` a small valid config
(digits, a ready teacher, a 1-epoch proxy) so that only the named thing is wrong;
`...` is a library's own wording (a path, a parser's detail).

A `search` refused this way leaves the run folder's studies as they were: no empty
study is left behind to make `--study` necessary afterwards, and a run folder that did
not exist is not made. A command that only reads
a study (`pareto`, `export`, `report`, `retrain`, `dashboard`) never creates a storage
file or its folder.

Anything else that goes wrong is a bug: the command says `searchkd: unexpected
<Error>: <first line> (rerun with --debug for the traceback, and please report it)`
and exits 1.

"""


def render_doc() -> str:
    return DOC_HEAD + markdown_table() + "\n"


if __name__ == "__main__":
    print(render_doc(), end="")
