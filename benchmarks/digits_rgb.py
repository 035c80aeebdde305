"""scikit-learn's digits as a folder of 16x16 RGB PNGs, one sub-folder per class: an offline
three-channel dataset (``--dataset imagefolder``) for spaces whose stem expects RGB, such as
NNI's NAS-Bench-201 space (docs/nni.md).

    python benchmarks/digits_rgb.py OUT_DIR

Each digit is upsampled twice and tinted by its index (a digit-independent colour), so the
three channels differ but the class is still in the shape.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits


def write(out: Path) -> int:
    """Write every digit under ``out/<label>/<index>.png``; returns how many."""
    digits = load_digits()
    palette = np.array([[1.0, 0.6, 0.3], [0.3, 1.0, 0.6], [0.6, 0.3, 1.0]])
    for index, (image, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        grey = np.kron(image / 16.0, np.ones((2, 2)))  # 8x8 -> 16x16
        rgb = (grey[..., None] * palette[index % 3] * 255).astype(np.uint8)
        folder = out / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb, "RGB").save(folder / f"{index}.png")
    return len(digits.images)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    print(f"{write(Path(sys.argv[1]))} images under {sys.argv[1]}")
