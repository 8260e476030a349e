"""The pixel comparison of candidate pairs on a real photo folder, without and with each image's
coarse views kept across its pairs (``clusterlens.audit.verification.Coarse``), in one process.

    python -m benchmarks.bench_coarse_views --root /work/photos/caltech101

A seeded sample of ``--images`` photos is read into working images; ``--pairs`` seeded pairs of
them, sorted by their first image as the stage orders its candidates, are compared with
``match_images`` twice per repeat: each pair with fresh views (the baseline, what the stage did
before the views were kept) and with one kept ``Coarse`` per image. Prints ms per pair, the ratio
and whether every Match is the same; writes benchmarks/results/coarse_views.json.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks import _util as u
from benchmarks.bench_grid import fmt_table


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, required=True, help="a photo folder (any depth)")
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--pairs", type=int, default=3000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=u.PROJECT / "benchmarks/results/coarse_views.json")
    args = ap.parse_args(argv)
    from clusterlens.audit import verification as vf

    files = sorted(p for p in args.root.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    rng = np.random.default_rng(args.seed)
    files = [files[i] for i in sorted(rng.choice(len(files), args.images, replace=False))]
    work = []
    for f in files:
        with Image.open(f) as img:
            work.append(vf.working_pair(img))
    pairs = sorted(map(tuple, rng.integers(0, len(work), (args.pairs, 2)).tolist()))
    times = {"fresh": [], "kept": []}
    same = True
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        fresh = [repr(vf.match_images(work[i][0], work[j][0], (work[i][1], work[j][1])))
                 for i, j in pairs]
        times["fresh"].append(time.perf_counter() - t0)
        views = [vf.Coarse(g) for g, _ in work]
        t0 = time.perf_counter()
        kept = [repr(vf.match_images(work[i][0], work[j][0], (work[i][1], work[j][1]),
                                     coarse_views=(views[i], views[j]))) for i, j in pairs]
        times["kept"].append(time.perf_counter() - t0)
        same &= fresh == kept
    ms = {k: 1000 * u.median(v) / len(pairs) for k, v in times.items()}
    info = u.machine()
    rows = [["fresh views per pair (baseline)", len(pairs), f"{ms['fresh']:.3f}", "1.00"],
            ["views kept per image", len(pairs), f"{ms['kept']:.3f}",
             f"{ms['fresh'] / ms['kept']:.2f}"]]
    print(fmt_table(rows, ["match_images", "pairs", "ms per pair (median)", "speed-up"]))
    print(f"\n{u.machine_line(info)}; {args.images} photos of {args.root}; "
          f"the same Match for every pair: {same}")
    out = {"machine": info, "args": vars(args), "ms_per_pair": ms,
           "speedup": ms["fresh"] / ms["kept"], "same_matches": same}
    u.write_result(args.out, out)
    return out


if __name__ == "__main__":
    main()
