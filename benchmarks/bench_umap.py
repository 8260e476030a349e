"""UMAP's time and memory at 10^4 and 10^5 points, against t-SNE in the same process.

    python -m benchmarks.bench_umap --n 10000 100000

The points are the PCA-50 (scikit-learn, randomized, seeded) of generated CNN-like features
(``benchmarks._util.cnn_like_features``: 256-D, 100 classes). First, umap-learn is imported with
an empty numba cache (the first run of the ``umap`` stage: numba compiles). Then, for each N,
``clusterlens.clustering.umap_embed.embed`` in 2-D (the map) and in 10-D (where ``clustering``
measures ``silhouette_umap``), each timed with the process's peak RSS (VmHWM, reset before),
and the silhouette of the generated classes in each embedding (on 5,000 seeded points). The
baseline is t-SNE (the ``tsne`` stage's ``embed``, the 2-D view UMAP stands beside) on the same
points, up to ``--tsne-max`` of them. Prints a table and the UMAP/t-SNE ratio; writes
benchmarks/results/umap.json.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np

from benchmarks import _util as u
from benchmarks.bench_grid import fmt_table


def timed(fn):
    u.reset_peak_rss()
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t, u.proc_status_mb("VmHWM")


def class_silhouette(X: np.ndarray, y: np.ndarray, seed: int) -> float:
    from sklearn.metrics import silhouette_score

    rows = np.random.default_rng(seed).permutation(len(X))[:5000]
    return float(silhouette_score(X[rows], y[rows]))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--tsne-max", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=u.PROJECT / "benchmarks/results/umap.json")
    args = ap.parse_args(argv)
    from sklearn.decomposition import PCA

    from clusterlens.clustering import tsne, umap_embed

    info = u.machine()
    print(u.machine_line(info), flush=True)
    with tempfile.TemporaryDirectory() as cache:
        umap_embed.configure_numba(Path(cache) / "numba")
        t = time.perf_counter()
        import umap  # noqa: F401  (numba compiles what umap-learn needs at import)
        first_import = time.perf_counter() - t
        rows, result = [], {"machine": info, "first_import_s": round(first_import, 1), "runs": {}}
        for n in args.n:
            X, y = u.cnn_like_features(n, dim=256, k=args.classes, seed=args.seed)
            X = PCA(50, svd_solver="randomized", random_state=args.seed).fit_transform(X)
            X = X.astype(np.float32)
            kw = dict(n_neighbors=15, min_dist=0.1, seed=args.seed)
            run = {}
            for dim in (2, 10):
                emb, secs, peak = timed(partial(umap_embed.embed, X, n_components=dim, **kw))
                run[f"umap_{dim}d"] = {"seconds": round(secs, 1), "peak_mb": round(peak),
                                       "class_silhouette": round(class_silhouette(
                                           emb, y, args.seed), 4)}
            if n <= args.tsne_max:
                emb, secs, peak = timed(partial(tsne.embed, X, 30, args.seed))
                run["tsne_2d"] = {"seconds": round(secs, 1), "peak_mb": round(peak),
                                  "class_silhouette": round(class_silhouette(emb, y, args.seed),
                                                            4)}
            run["pca_class_silhouette"] = round(class_silhouette(X, y, args.seed), 4)
            result["runs"][n] = run
            for name in ("umap_2d", "umap_10d", "tsne_2d"):
                if name in run:
                    r = run[name]
                    rows.append([f"{n:,}", name, r["seconds"], r["peak_mb"],
                                 r["class_silhouette"]])
            print(fmt_table(rows, ["points", "embedding", "seconds", "peak MB",
                                   "class silhouette"]), flush=True)
    print(f"first import of umap-learn (numba compiling, empty cache): {first_import:.1f} s")
    for n, run in result["runs"].items():
        if "tsne_2d" in run:
            ratio = run["umap_2d"]["seconds"] / run["tsne_2d"]["seconds"]
            run["umap_2d_over_tsne"] = round(ratio, 3)
            print(f"{n:,} points: UMAP 2-D / t-SNE time ratio {ratio:.2f}")
    u.write_result(args.out, result)
    return result


if __name__ == "__main__":
    main()
