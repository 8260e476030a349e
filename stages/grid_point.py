"""DVC stages `kmeans`, `gmm`, `dbscan`, `hdbscan`, `agglomerative`, `nmf_kmeans`: one grid point,
e.g. ``python -m stages.grid_point kmeans --k 10`` (:mod:`clusterlens.clustering.methods`; a K that follows
the class count, ``--k classes_x0.5``, and its file names: :mod:`clusterlens.clustering.grid`).
Each point writes ``data/clusters/<method>/<point>.npy`` (int64 labels in index row order, -1 for
noise) and ``<point>.json`` (its metrics on the features it clustered: PCA, or with ``space: umap``
``data/umap_features.npy``), read by the `clustering` aggregate; agglomerative also writes its tree
and ``plots/clustering/dendrogram_<linkage>.png``.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clusterlens.clustering import grid, methods
from clusterlens.config.agglomerative import AgglomerativeParams
from clusterlens.config.base import grid_value, load_params, parse_stage
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
SECTION = {"kmeans": "kmeans", "nmf": "kmeans", "gmm": "gmm", "dbscan": "dbscan",
           "hdbscan": "hdbscan"}  # whose max_exact_n switches a method to its sample route


@dataclass(frozen=True)
class Params:
    """What the grid stages read from params.yaml (parsed once, in :func:`main`; the point's own
    value from the command line, :func:`parse_point`): a method's own section is required."""
    seed: int
    metrics: MetricsParams
    kmeans: KMeansParams
    gmm: GMMParams | None = None
    dbscan: DBSCANParams | None = None
    hdbscan: HDBSCANParams | None = None
    agglomerative: AgglomerativeParams | None = None
    large_n: LargeNParams = LargeNParams()


def check_params_vs_input(cfg: Params, method: str, value, n: int, c: int, nmf_path):
    """The rules that need the data (K, sizes vs ``n`` images, ``c`` classes): value, options."""
    km = cfg.kmeans
    g = cfg.gmm  # `x and x.field`: None for a section other methods read and params lack
    d = cfg.dbscan
    h = cfg.hdbscan
    a = cfg.agglomerative
    value, options = methods.point_options(
        method, value, n, c, n_init=km.n_init, max_iter=km.max_iter, engine=km.engine,
        covariance_type=g and g.covariance_type, gmm_max_iter=g and g.max_iter,
        dbscan_min_samples=d and d.min_samples, hdbscan_min_samples=h and h.min_samples,
        dbscan_max_exact_n=d and d.max_exact_n, hdbscan_max_exact_n=h and h.max_exact_n,
        agglomerative_k=a and a.k, route=a and a.route, max_exact_n=a and a.max_exact_n,
        n_centroids=a and a.n_centroids, kmeans_max_exact_n=km.max_exact_n,
        kmeans_sample_n_init=km.sample_n_init, gmm_max_exact_n=g and g.max_exact_n)
    if method == "nmf":
        with np.load(nmf_path) as z:
            options["W"] = z["W"]
    return value, options


def parse_point(params: dict, method: str, text) -> tuple[Params, object]:
    """The door: every section a grid stage reads, and the point's value typed by its model."""
    if method not in methods.GRID_METHODS:
        raise ParamError("method", f"unknown clustering method {method!r}")
    return parse_stage(params, Params), grid_value(params, *GRID_KEYS[method], text)


def run(method: str, value, cfg: Params, pca_path="data/pca.npy",
        index_path="data/index.parquet", out_dir: Path = CLUSTERS_DIR,
        plots_dir: Path = PLOTS_DIR, nmf_path="data/nmf.npz",
        umap_path="data/umap_features.npy") -> dict:
    """Run one grid point (agglomerative: one tree, every cut) with ``value`` as params give
    it (:func:`parse_point`); returns point -> metrics."""
    seed, sample = cfg.seed, cfg.metrics.silhouette_sample
    h = cfg.hdbscan  # `space: umap`: the UMAP embedding of every image
    a = cfg.agglomerative
    on_umap = {"hdbscan": h and h.space, "agglomerative": a and a.space}.get(method) == "umap"
    features_path = umap_path if on_umap else pca_path
    X = load_features(features_path, cfg.large_n.mmap_threshold_bytes)
    if on_umap and not X.shape[1]:
        raise ParamError(f"{method}.space", f"is umap, but {umap_path} is empty: set umap.grid")
    y = read_table(index_path)["label"].to_numpy()
    c = grid.n_classes(y)
    asked = value
    value, options = check_params_vs_input(cfg, method, asked, len(X), c, nmf_path)
    files = methods.point_files(method, asked, c, options.pop("cuts", ()))  # cuts: agglomerative.k
    result = methods.GRID_METHODS[method](X, value, seed, **options)
    for name, (_, extra) in result.points.items():  # the large-N decision (methods.kmeans_route)
        if extra.get("route") == "sample":
            log.warning("%s %s: %d images, above %s.max_exact_n: fitted on a seeded sample of %d, "
                        "every image assigned (%s)", method, name, len(X), SECTION[method],
                        extra["sample"], {k: extra[k] for k in ("engine", "n_init") if k in extra})
    if result.tree is not None:
        folder = Path(out_dir) / method / value
        if result.cells is not None:
            save_npy(folder / "cells.npy", result.cells)
        save_npy(folder / "tree.npy", result.tree)
        plot_dendrogram(result.tree, options["ks"], Path(plots_dir) / f"dendrogram_{value}.png",
                        value, unit=result.unit)
    log_block(log, f"cluster {method} {asked}", inputs={"features": f"{features_path} {X.shape}",
              "classes": c}, params={"seed": seed, "metrics.silhouette_sample": sample})
    summary, written = {}, {}
    for name, metrics in methods.score_points(X, y, result, sample, seed).items():
        for stem, gv in files.get(name, [(name, None)]):
            npy, js = (methods.point_path(method, stem, out_dir, sfx) for sfx in (".npy", ".json"))
            remove_stale_tmp(npy, js)  # left by a run killed mid-write
            save_npy(npy, result.points[name][0])
            point = write_json(js, metrics if gv is None else {"grid_value": gv, **metrics})
            written[npy.as_posix()] = methods.describe_point(summary.setdefault(name, point))
    log_block(log, f"cluster {method} {asked} done", outputs=written)
    return summary


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Run one clustering grid point.")
    ap.add_argument("method", choices=list(methods.GRID_METHODS))
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--k")  # an integer, `classes` or `classes_x<f>` (clusterlens.clustering.grid)
    g.add_argument("--eps-percentile")  # every value: typed and checked by its section's model
    g.add_argument("--min-cluster-size")
    g.add_argument("--linkage")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    value = next(v for v in (args.k, args.eps_percentile, args.min_cluster_size, args.linkage)
                 if v is not None)
    cfg, value = parse_point(load_params(args.params), args.method, value)
    # One OpenMP/BLAS thread: no spin-waiting on a busy machine, and labels that do not depend
    # on the core count (K-Means' Lloyd reductions sum in a thread-dependent order).
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        run(args.method, value, cfg)


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
