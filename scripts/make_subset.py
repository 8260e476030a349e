"""Copy a seeded, class-balanced subset of a class-per-folder image tree (raw data is never
modified; the copy is a new folder outside the repository), optionally with planted label errors.

    python scripts/make_subset.py ../shared/datasets/cifar10-test /tmp/cifar1k --per-class 100
    python scripts/make_subset.py data/digits /tmp/noisy_digits --per-class 1000 \\
        --mislabel 0.05 --truth /tmp/noisy_digits_truth.csv

``--mislabel F`` files a seeded fraction F of the copied images under another class (drawn at
random among the others), keeping their file names; ``--truth`` lists them (``path`` as in the
index, ``given_class``, ``true_class``), to score the label-issue search against.
"""
from __future__ import annotations

import argparse
import csv
import random
import shutil
from pathlib import Path


def make_subset(src: Path, dst: Path, per_class: int, seed: int = 0) -> int:
    """``per_class`` files (sorted, then a seeded sample) of every class folder of ``src``,
    copied to ``dst/<class>/``. Returns the number of files copied."""
    if dst.exists() and any(dst.iterdir()):
        raise SystemExit(f"{dst} exists and is not empty; choose a new folder")
    n = 0
    for cls in sorted(p for p in src.iterdir() if p.is_dir()):
        files = sorted(f for f in cls.iterdir() if f.is_file())
        pick = sorted(random.Random(f"{seed}/{cls.name}").sample(files, min(per_class,
                                                                              len(files))))
        (dst / cls.name).mkdir(parents=True, exist_ok=True)
        for f in pick:
            shutil.copy2(f, dst / cls.name / f.name)
            n += 1
    return n


def mislabel(dst: Path, fraction: float, seed: int = 0) -> list[dict]:
    """Move a seeded ``fraction`` of the files of ``dst`` (sorted) into another class folder
    (a file whose name is taken there stays put); returns the moves as
    ``{path, given_class, true_class}``, paths relative to ``dst``."""
    classes = sorted(p.name for p in dst.iterdir() if p.is_dir())
    files = sorted(f for c in classes for f in (dst / c).iterdir() if f.is_file())
    rng = random.Random(f"{seed}/mislabel")
    moves = []
    for f in sorted(rng.sample(files, round(fraction * len(files)))):
        true = f.parent.name
        given = rng.choice([c for c in classes if c != true])
        target = dst / given / f.name
        if target.exists():
            continue
        f.rename(target)
        moves.append({"path": f"{given}/{f.name}", "given_class": given, "true_class": true})
    return moves


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mislabel", type=float, default=0.0,
                    help="fraction of the copies filed under another class")
    ap.add_argument("--truth", type=Path, help="CSV of the planted label errors")
    args = ap.parse_args()
    print(f"copied {make_subset(args.src, args.dst, args.per_class, args.seed)} files to "
          f"{args.dst}")
    if args.mislabel:
        moves = mislabel(args.dst, args.mislabel, args.seed)
        print(f"filed {len(moves)} of them under another class")
        if args.truth:
            with open(args.truth, "w", newline="", encoding="utf-8") as fh:
                w = csv.DictWriter(fh, fieldnames=["path", "given_class", "true_class"])
                w.writeheader()
                w.writerows(moves)


if __name__ == "__main__":
    main()
