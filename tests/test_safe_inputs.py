"""Inputs are what they claim, names and files are safe (issue 16, points 6-11): what the
one-line refusals of tests/bad_inputs.py cannot show by their message alone (an image
read right, nothing written or created where it must not be, a warning, a quoted hint)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import optuna
import pytest
from PIL import Image

from searchkd import cli
from searchkd.errors import SearchKDError
from searchkd.names import check_study_name, inside, shell_command
from tests.bad_inputs import _study_named, _trained_study, prepare


# --- 7: images ----------------------------------------------------------------------------
def _two_classes(root: Path, images: list[Image.Image], suffix: str = ".png") -> None:
    for label in ("a", "b"):
        folder = root / label
        folder.mkdir(parents=True)
        for i, image in enumerate(images):
            image.save(folder / f"{i}{suffix}")


def _pixels(root: Path, suffix: str = ".png") -> np.ndarray:
    """The images as the data loader reads them, back on the 0..255 scale."""
    from searchkd.data import load_dataset

    ds = load_dataset("imagefolder", root, seed=0)
    x = np.concatenate([ds.train_x.numpy(), ds.val_x.numpy()])
    mean = np.asarray(ds.mean)[None, :, None, None]
    std = np.asarray(ds.std)[None, :, None, None]
    return np.round((x * std + mean) * 255)


def test_sixteen_bit_greyscale_is_scaled_not_saturated(tmp_path):
    ramp = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).astype(np.uint16)  # 0..63000
    image = Image.fromarray(ramp)
    assert image.mode == "I;16"
    _two_classes(tmp_path, [image] * 3)
    pixels = _pixels(tmp_path)
    assert pixels.shape[1] == 1  # still greyscale
    assert (pixels == 255).mean() < 0.05  # Pillow's own conversion left 98 % at 255
    np.testing.assert_allclose(pixels[0, 0], np.round(ramp / 257.0), atol=1)


def test_thirty_two_bit_values_beyond_sixteen_bits_are_refused(tmp_path):
    from searchkd.data import load_dataset

    values = np.full((8, 8), 70_000, dtype=np.int32)
    _two_classes(tmp_path, [Image.fromarray(values)] * 2, ".tif")
    with pytest.raises(SearchKDError, match=r"mode I with values outside 0\.\.65535"):
        load_dataset("imagefolder", tmp_path, seed=0)


def test_alpha_is_composited_onto_black(tmp_path):
    rgba = Image.new("RGBA", (8, 8), (200, 100, 50, 128))  # half transparent
    _two_classes(tmp_path, [rgba] * 2)
    pixels = _pixels(tmp_path)
    assert pixels.shape[1] == 3
    np.testing.assert_allclose(pixels[0, :, 0, 0], [100, 50, 25], atol=1)


def test_grey_alpha_stays_greyscale_and_is_composited(tmp_path):
    la = Image.new("LA", (8, 8), (200, 0))  # fully transparent: black, not 200
    _two_classes(tmp_path, [la] * 2)
    pixels = _pixels(tmp_path)
    assert pixels.shape[1] == 1 and pixels.max() == 0


def test_palette_with_transparency_reads_its_colours(tmp_path):
    image = Image.new("P", (8, 8), 1)
    image.putpalette([0, 0, 0, 255, 0, 0])  # index 1 is red
    image.putpixel((0, 0), 0)
    image.info["transparency"] = 0
    _two_classes(tmp_path, [image] * 2)
    pixels = _pixels(tmp_path)
    np.testing.assert_allclose(pixels[0, :, 1, 1], [255, 0, 0], atol=1)
    np.testing.assert_allclose(pixels[0, :, 0, 0], [0, 0, 0], atol=1)


def test_cmyk_becomes_rgb(tmp_path):
    cyan = Image.new("CMYK", (8, 8), (255, 0, 0, 0))
    _two_classes(tmp_path, [cyan] * 2, ".jpg")
    pixels = _pixels(tmp_path, ".jpg")
    assert pixels.shape[1] == 3
    np.testing.assert_allclose(pixels[0, :, 4, 4], [0, 255, 255], atol=8)  # JPEG is lossy


# --- 6: names and files ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "name", ["", "a/../../b", "..", "a..b", "x" * 101, "a b", "-lead", "a\\b", "é"]
)
def test_bad_study_names_are_refused(name):
    with pytest.raises(SearchKDError, match="--study: the study name"):
        check_study_name(name)


def test_good_study_names_pass():
    for name in ("digits-mobilenet", "mnist5k-cluttered-mobilenet-reduced", "a.b_c-1", "x" * 100):
        assert check_study_name(name) == name


def test_inside_refuses_a_name_that_leaves_the_folder(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "link").symlink_to(tmp_path)
    assert inside(tmp_path / "out", "s-trial0.json") == tmp_path / "out" / "s-trial0.json"
    for name in ("../s.json", "a/../../s.json", "link/s.json", "/etc/s.json"):
        with pytest.raises(SearchKDError, match="would land outside"):
            inside(tmp_path / "out", name)


def test_export_of_an_escaping_stored_name_writes_nothing(tmp_path, monkeypatch, capsys):
    prepare(tmp_path)
    _study_named("a/../../b")(tmp_path)
    before = set(tmp_path.parent.rglob("*.json"))
    out = tmp_path / "x" / "y" / "out"
    code = cli.main(["export", "--run-dir", str(tmp_path / "runs"), "--out", str(out)])
    assert code == 2 and "would land outside" in capsys.readouterr().err
    assert set(tmp_path.parent.rglob("*.json")) == before


# --- 9: format_version ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("version", "problem"),
    [(2, "newer than this searchkd"), ("abc", "not an integer"), (0, "no searchkd wrote"),
     (..., "has no format_version")],
)  # fmt: skip
def test_load_student_checks_the_format_version(tmp_path, version, problem):
    import searchkd
    from tests.bad_inputs import _student_file

    _student_file(version)(tmp_path)
    with pytest.raises(SearchKDError, match=problem):
        searchkd.load_student(tmp_path / "student.json", weights=False)


# --- 11: smaller cases ----------------------------------------------------------------------
@pytest.mark.parametrize("command", ["pareto", "export", "report", "dashboard"])
def test_reading_a_mistyped_journal_creates_nothing(tmp_path, command, capsys):
    typo = tmp_path / "TYPO" / "study.log"
    code = cli.main([command, "--storage", f"journal:{typo}"])
    assert code == 2 and "no study file at" in capsys.readouterr().err
    assert not typo.parent.exists()


def test_an_empty_study_left_by_an_old_failed_start_does_not_need_study(tmp_path):
    from searchkd.study import load_existing_study

    prepare(tmp_path)
    _trained_study(tmp_path)
    storage = f"sqlite:///{tmp_path / 'runs' / 'study.db'}"
    optuna.create_study(study_name="empty", storage=storage)
    assert load_existing_study(None, storage).study_name == "s"


@pytest.mark.parametrize(
    ("host", "warns"),
    [("0.0.0.0", True), ("::", True), ("192.168.1.5", True), ("example.org", True),
     ("127.0.0.1", False), ("127.0.0.2", False), ("::1", False), ("localhost", False)],
)  # fmt: skip
def test_dashboard_warns_when_it_serves_the_network(tmp_path, monkeypatch, capsys, host, warns):
    import optuna_dashboard

    prepare(tmp_path)
    _trained_study(tmp_path)
    served = []
    monkeypatch.setattr(optuna_dashboard, "run_server", lambda *a, **k: served.append(k))
    code = cli.main(["dashboard", "--run-dir", str(tmp_path / "runs"), "--host", host])
    err = capsys.readouterr().err
    assert code == 0 and served and served[0]["host"] == host
    warning = [line for line in err.splitlines() if line.startswith("searchkd: warning:")]
    assert len(warning) == (1 if warns else 0), err
    if warns:
        assert f"--host {host} serves the study to the network" in warning[0]


def test_hints_quote_paths_with_spaces(tmp_path):
    import searchkd

    folder = tmp_path / "my students"
    folder.mkdir()
    from search_spaces import get_space

    path = folder / "it's.json"
    record = {
        "format": "searchkd-student",
        "format_version": 1,
        "arch": get_space("mobilenet").smallest(),
        "input_shape": [1, 8, 8],
        "num_classes": 10,
    }
    path.write_text(json.dumps(record))
    with pytest.warns(UserWarning) as caught:
        searchkd.load_student(path)
    hint = str(caught[0].message).split("`")[1]
    assert shlex.split(hint) == ["searchkd", "retrain", "--arch", str(path), "--epochs", "E"]
    assert shell_command("a b", "c") == "'a b' c"
