"""`digits` stage: the embedded demo data set.

Writes the 1,797 8x8 handwritten digits that ship inside scikit-learn as a class-per-folder PNG
tree, ``<out>/<digit>/<n>.png`` (n = the sample's row in ``sklearn.datasets.load_digits``), with
the 0..16 intensities scaled to 0..255 grayscale. Nothing is downloaded.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from clusterlens.common import atomic_path, get_logger, log_block, run_cli

log = get_logger("digits")


def write_digits(out_dir: str | Path) -> int:
    """Write the digits tree atomically (into a temp folder renamed at the end); return count."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    with atomic_path(out_dir, suffix=".tmp") as tmp:
        for n, (img, target) in enumerate(zip(images, bunch.target)):
            class_dir = tmp / str(int(target))
            class_dir.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img, mode="L").save(class_dir / f"{n:04d}.png", optimize=False)
    return len(images)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="data/digits", help="output folder (default: data/digits)")
    args = ap.parse_args(argv)
    n = write_digits(args.out)
    log_block(log, "digits", inputs={"source": "sklearn.datasets.load_digits"},
              outputs={args.out: f"{n} PNG images in 10 class folders"})


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
