"""DVC stages `kmeans`, `gmm`, `dbscan`, `hdbscan`, `agglomerative`, `nmf_kmeans`: one grid point,
e.g. ``python -m stages.grid_point kmeans --k 10`` (:mod:`clusterlens.clustering.methods`; a K that follows
the class count, ``--k classes_x0.5``, and its file names: :mod:`clusterlens.clustering.grid`).

Each point writes ``data/clusters/<method>/<point>.npy`` (int64 labels in index row order, -1
for noise) and ``<point>.json`` (its metrics on the PCA features), read by the `clustering`
aggregate; agglomerative also writes its tree and ``plots/clustering/dendrogram_<linkage>.png``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from clusterlens.clustering import grid
from clusterlens.clustering import methods as cl
from clusterlens.config.agglomerative import AgglomerativeParams
from clusterlens.config.base import (
    grid_value,
    load_params,
    parse_section,
    require_seed,
)
from clusterlens.config.dbscan import DBSCANParams
from clusterlens.config.gmm import GMMParams
from clusterlens.config.grid import GRID_KEYS
from clusterlens.config.hdbscan import HDBSCANParams
from clusterlens.config.kmeans import KMeansParams
from clusterlens.config.large_n import LargeNParams
from clusterlens.config.metrics import MetricsParams
from clusterlens.core.cli import run_cli
from clusterlens.core.errors import ParamError
from clusterlens.core.io import load_features, read_table, remove_stale_tmp, save_npy, write_json
from clusterlens.core.logs import get_logger, log_block
from clusterlens.report.figures.clustering import plot_dendrogram

log = get_logger("cluster")
CLUSTERS_DIR = Path("data/clusters")
PLOTS_DIR = Path("plots/clustering")


# method -> (params, grid value, N images, C classes, nmf_path) -> (the value for N and C,
# options): the rules that need the data; the static ones are the section models'.
def _kmeans(params, value, n, c, nmf_path, key="kmeans.k"):
    km = parse_section(params, "kmeans", KMeansParams)
    return cl.check_k(key, value, n, c), {"n_init": km.n_init, "max_iter": km.max_iter,
                                          "engine": km.engine}


def _nmf(params, value, n, c, nmf_path):
    k, options = _kmeans(params, value, n, c, nmf_path, "nmf.k")
    with np.load(nmf_path) as z:
        return k, {"W": z["W"], **options}


def _gmm(params, value, n, c, nmf_path):
    g = parse_section(params, "gmm", GMMParams)
    return cl.check_k("gmm.k", value, n, c), {"covariance_type": g.covariance_type,
                                              "max_iter": g.max_iter}


def _dbscan(params, value, n, c, nmf_path):
    d = parse_section(params, "dbscan", DBSCANParams)
    return float(value), {"min_samples": cl.check_at_most_n("dbscan.min_samples", d.min_samples, n)}


def _hdbscan(params, value, n, c, nmf_path):
    h = parse_section(params, "hdbscan", HDBSCANParams)
    mcs = cl.check_at_most_n("hdbscan.min_cluster_size", value, n)
    ms = h.min_samples if h.min_samples is None else cl.check_at_most_n(
        "hdbscan.min_samples", h.min_samples, n)
    return mcs, {"min_samples": ms}


def _agglomerative(params, value, n, c, nmf_path):
    a = parse_section(params, "agglomerative", AgglomerativeParams)
    engine = parse_section(params, "kmeans", KMeansParams).engine
    ks = list(dict.fromkeys(cl.check_k("agglomerative.k", v, n, c) for v in a.k))
    return value, {"ks": ks, "route": a.route, "max_exact_n": a.max_exact_n,
                   "n_centroids": a.n_centroids, "engine": engine, "cuts": a.k}


OPTIONS = {"kmeans": _kmeans, "gmm": _gmm, "dbscan": _dbscan, "hdbscan": _hdbscan,
           "agglomerative": _agglomerative, "nmf": _nmf}


def run(method: str, value, params: dict, pca_path="data/pca.npy",
        index_path="data/index.parquet", out_dir: Path = CLUSTERS_DIR,
        plots_dir: Path = PLOTS_DIR, nmf_path="data/nmf.npz") -> dict:
    """Run one grid point (agglomerative: one tree, every cut); returns point -> metrics."""
    if method not in OPTIONS:
        raise ParamError("method", f"unknown clustering method {method!r}")
    asked = grid_value(params, *GRID_KEYS[method], value)  # as params give it, typed, checked
    seed = require_seed(params)
    sample = parse_section(params, "metrics", MetricsParams).silhouette_sample
    lp = parse_section({"large_n": {}, **params}, "large_n", LargeNParams)  # section optional
    X = load_features(pca_path, lp.mmap_threshold_bytes)
    y = read_table(index_path)["label"].to_numpy()
    c = grid.n_classes(y)
    value, options = OPTIONS[method](params, asked, len(X), c, nmf_path)
    files = cl.point_files(method, asked, c, options.pop("cuts", ()))  # cuts: agglomerative.k
    result = cl.GRID_METHODS[method](X, value, seed, **options)
    if result.tree is not None:
        folder = Path(out_dir) / method / value
        if result.cells is not None:
            save_npy(folder / "cells.npy", result.cells)
        save_npy(folder / "tree.npy", result.tree)
        plot_dendrogram(result.tree, options["ks"], Path(plots_dir) / f"dendrogram_{value}.png",
                        value, unit=result.unit)
    log_block(log, f"cluster {method} {asked}", inputs={"features": f"{pca_path} {X.shape}",
              "classes": c}, params={"seed": seed, "metrics.silhouette_sample": sample})
    summary, written = {}, {}
    for name, metrics in cl.score_points(X, y, result, sample, seed).items():
        for stem, gv in files.get(name, [(name, None)]):
            npy, js = (cl.point_path(method, stem, out_dir, sfx) for sfx in (".npy", ".json"))
            remove_stale_tmp(npy, js)  # left by a run killed mid-write
            save_npy(npy, result.points[name][0])
            point = write_json(js, metrics if gv is None else {"grid_value": gv, **metrics})
            written[npy.as_posix()] = cl.describe_point(summary.setdefault(name, point))
    log_block(log, f"cluster {method} {asked} done", outputs=written)
    return summary


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Run one clustering grid point.")
    ap.add_argument("method", choices=list(OPTIONS))
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--k")  # an integer, `classes` or `classes_x<f>` (clusterlens.clustering.grid)
    g.add_argument("--eps-percentile")  # every value: typed and checked by its section's model
    g.add_argument("--min-cluster-size")
    g.add_argument("--linkage")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    value = next(v for v in (args.k, args.eps_percentile, args.min_cluster_size, args.linkage)
                 if v is not None)
    params = load_params(args.params)
    # One OpenMP/BLAS thread: no spin-waiting on a busy machine, and labels that do not depend
    # on the core count (K-Means' Lloyd reductions sum in a thread-dependent order).
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        run(args.method, value, params)


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
