"""Copy a seeded, class-balanced subset of a class-per-folder image tree (raw data is never
modified; the copy is a new folder outside the repository).

    python scripts/make_subset.py ../shared/datasets/cifar10-test /tmp/cifar1k --per-class 100
"""
from __future__ import annotations

import argparse
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(f"copied {make_subset(args.src, args.dst, args.per_class, args.seed)} files to "
          f"{args.dst}")


if __name__ == "__main__":
    main()
