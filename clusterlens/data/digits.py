"""The embedded demo data set: scikit-learn's 1,797 8x8 handwritten digits as image files.

The tree is ``<out>/<digit>/<n>.png`` (n = the sample's row in ``sklearn.datasets.load_digits``),
with the 0..16 intensities scaled to 0..255 grayscale. Nothing is downloaded.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

from clusterlens.core.io import atomic_path


def bundled_csv() -> Path | None:
    """scikit-learn's own copy of the digits (``sklearn/datasets/data/digits.csv.gz``: 64 pixel
    columns and the digit), found without importing scikit-learn, whose import takes about a
    second of a stage that needs only this file; None when it is not there."""
    spec = importlib.util.find_spec("sklearn")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            return path
    return None


def digit_images() -> tuple[np.ndarray, np.ndarray]:
    """The digits as 8-bit grayscale images (the arrays of ``sklearn.datasets.load_digits``).

    Returns
    -------
    images : numpy.ndarray of uint8, shape (1797, 8, 8)
        Intensities 0..16 scaled to 0..255 (rounded).
    targets : numpy.ndarray of int, shape (1797,)
        The digit of each image.
    """
    path = bundled_csv()
    if path is not None:
        data = np.loadtxt(path, delimiter=",")  # what load_digits reads
        pixels, targets = data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(np.int64)
    else:  # another scikit-learn layout: its loader
        from sklearn.datasets import load_digits

        bunch = load_digits()
        pixels, targets = bunch.images, bunch.target
    images = np.rint(pixels * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    return images, targets


def write_digits(out_dir: str | Path) -> int:
    """Write the digits tree.

    The tree is written into a temporary folder renamed at the end, so ``out_dir`` is either
    complete or untouched.

    Parameters
    ----------
    out_dir : str or Path
        The folder to create, ``out_dir/<digit>/<n>.png``.

    Returns
    -------
    int
        The number of images written (1797).
    """
    images, targets = digit_images()
    with atomic_path(out_dir, suffix=".tmp") as tmp:
        for n, (img, target) in enumerate(zip(images, targets)):
            class_dir = tmp / str(int(target))
            class_dir.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img, mode="L").save(class_dir / f"{n:04d}.png", optimize=False)
    return len(images)
