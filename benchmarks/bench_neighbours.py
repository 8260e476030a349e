"""The `neighbours` stage's search at 10^4 and 10^5 images (clusterlens/audit/neighbours.py).

    python -m benchmarks.bench_neighbours                  # N = 10^4 and 10^5, D = 1280
    python -m benchmarks.bench_neighbours --sizes 2000 --dim 256     # a quick check

Data: ``benchmarks._util.cnn_like_features`` (ReLU'd Gaussian mixture shaped like pooled CNN
features, 10 classes), saved as a .npy that the measured process memory-maps, as the stage does.

Every measurement runs in a fresh Python process (``benchmarks._util.run_child``): the features
memory-mapped, then ``normalise``, ``nearest_neighbours`` (k = ``--k``; engine ``approximate``:
``approximate_neighbours``, the stage's route above ``neighbours.exact_max_n``, then its
``measure`` against the exact search of 1,000 rows, timed apart: recall@k and how far the
k-th similarity, hence the outlier score, falls below the exact one) and ``outlier_scores``, each
timed. Reported: seconds per step, the process's peak RSS (VmHWM: the interpreter and
libraries included, and the pages of the memory-mapped file it read, which the OS can drop) and
the size of the features. faiss and BLAS use every core (the stage does not limit them).
``sklearn`` rows run only up to ``--sklearn-max`` images. The near-duplicate step that follows
the search in the stage (reading the images, hashes, verification) needs real images: see
``benchmarks/bench_duplicates.py``. Writes benchmarks/results/neighbours.json.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from benchmarks import _util as u
from benchmarks.bench_grid import fmt_table

RESULTS = u.PROJECT / "benchmarks" / "results" / "neighbours.json"

CHILD = """
import time
import numpy as np
from clusterlens.audit import neighbours as nb

def main(args):
    t = {}
    t0 = time.perf_counter()
    X = np.load(args["features"], mmap_mode="r")
    Z = nb.normalise(X)
    del X
    t["normalise"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if args["engine"] == "approximate":
        nn, _ = nb.approximate_neighbours(Z, args["k"], seed=0, block_mb=args["block_mb"])
    else:
        nn = nb.nearest_neighbours(Z, args["k"], engine=args["engine"], block_mb=args["block_mb"])
    t["knn"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    nb.outlier_scores(nn)
    t["scores"] = time.perf_counter() - t0
    out = {"seconds": t, "block_rows": nb.block_rows(len(Z), args["block_mb"])}
    if args["engine"] == "approximate":  # measured apart: the exact search of 1,000 rows
        t0 = time.perf_counter()
        out.update(nb.measure(Z, nn, seed=0))
        out["recall_seconds"] = time.perf_counter() - t0
    return out
"""


def make_data(n: int, dim: int, folder: Path, seed: int = 0):
    """Generated features, saved as .npy: (path, bytes)."""
    X, _ = u.cnn_like_features(n, dim, seed=seed)
    path = folder / f"features_{n}x{dim}.npy"
    np.save(path, X)
    return path, X.nbytes


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--block-mb", type=float, default=256)
    ap.add_argument("--engines", nargs="+", default=["faiss", "sklearn", "approximate"],
                    help="faiss, sklearn (exact), approximate (the stage above exact_max_n)")
    ap.add_argument("--sklearn-max", type=int, default=10_000)
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    info = u.machine()
    print(u.machine_line(info))
    rows, table = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            path, nbytes = make_data(n, args.dim, Path(tmp))
            for engine in args.engines:
                if engine == "sklearn" and n > args.sklearn_max:
                    continue
                res = u.run_child(CHILD, {
                    "features": str(path), "k": args.k, "engine": engine,
                    "block_mb": args.block_mb}, timeout=args.timeout)
                res.update({"n": n, "dim": args.dim, "engine": engine,
                            "features_mb": round(nbytes / 2**20, 1)})
                rows.append(res)
                if not res["ok"]:
                    print(f"N={n} {engine}: failed: {res.get('error', res.get('rc'))}")
                    continue
                s = res["seconds"]
                table.append([n, args.dim, engine, res["block_rows"], f"{s['normalise']:.1f}",
                              f"{s['knn']:.1f}", f"{s['scores']:.3f}", f"{sum(s.values()):.1f}",
                              f"{res['recall']:.4f}" if "recall" in res else "1 (exact)",
                              f"{res['similarity_gap']:.4f}" if "recall" in res else "0",
                              f"{res['features_mb']:.0f}", f"{res['peak_rss_mb']:.0f}"])
                print(fmt_table(table[-1:], HEADER).splitlines()[-1], flush=True)
    print()
    print(fmt_table(table, HEADER))
    out = {"machine": info, "args": vars(args), "rows": rows}
    u.write_result(args.out, out)
    return out


HEADER = ["N", "D", "engine", "block rows", "normalise s", "k-NN s", "scores s", "total s",
          "recall@k", "k-th sim. gap", "features MB", "peak RSS MB"]

if __name__ == "__main__":
    main()
