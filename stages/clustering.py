"""DVC stage `clustering`: every grid point's metrics in one file, the best point per method, and
the selected model.

The grid is read from params.yaml, never by globbing, so files left over from grid points that
were removed from params do not leak into the aggregate (they are deleted). K values that follow
the class count (``classes``, ``classes_x0.5``) are the points of the K their JSON records; two
values with the same K are one point (see :mod:`clusterlens.clustering.selection`). Every point
also gets its label-free silhouettes, in the UMAP embedding of ``data/umap.npz`` and in the PCA
space of the same images (:mod:`clusterlens.clustering.label_free`); ``label_free`` in the
metrics compares the label-free choice with the NMI one.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

from clusterlens.clustering import label_free, selection
from clusterlens.config.agglomerative import AgglomerativeParams
from clusterlens.config.base import load_params, parse_stage
from clusterlens.config.dbscan import DBSCANParams
from clusterlens.config.gmm import GMMParams
from clusterlens.config.hdbscan import HDBSCANParams
from clusterlens.config.kmeans import KMeansParams
from clusterlens.config.nmf import NMFParams
from clusterlens.config.select import SelectParams
from clusterlens.core.cli import run_cli
from clusterlens.core.errors import ParamError
from clusterlens.core.io import write_json, write_table
from clusterlens.core.logs import get_logger, log_block
from clusterlens.report.figures.clustering import plot_metrics_vs_k

log = get_logger("clustering")
CLUSTERS_DIR = "data/clusters"
PLOTS_DIR = "plots/clustering"
IN_PCA = "data/pca.npy"
IN_UMAP = "data/umap.npz"
OUT_METRICS = "metrics/clustering.json"
OUT_TABLE = "metrics/clustering_table.csv"
OUT_INERTIA = "plots/clustering/kmeans_inertia.csv"
OUT_SILHOUETTE = "plots/clustering/kmeans_silhouette.csv"
OUT_VS_K = "plots/clustering/metrics_vs_k.png"


@dataclass(frozen=True)
class Params:
    """What the stage reads from params.yaml (parsed once, in :func:`main`)."""
    select: SelectParams
    agglomerative: AgglomerativeParams
    kmeans: KMeansParams
    gmm: GMMParams
    dbscan: DBSCANParams
    hdbscan: HDBSCANParams
    nmf: NMFParams
    seed: int


def grid_points(cfg: Params) -> dict[str, list[str]]:
    """method -> the point names the params define (in params order)."""
    agglo = cfg.agglomerative
    grid = selection.grid_points(
        kmeans_k=cfg.kmeans.k,
        agglomerative_linkage=agglo.linkage, agglomerative_k=agglo.k,
        gmm_k=cfg.gmm.k,
        dbscan_eps_percentile=cfg.dbscan.eps_percentile,
        hdbscan_min_cluster_size=cfg.hdbscan.min_cluster_size,
        nmf_k=cfg.nmf.k)
    if not grid:  # spans six sections, so no one section model can hold it
        raise ParamError("kmeans.k", "every clustering grid is empty: give at least one K")
    return grid


def add_label_free(cfg: Params, results: dict, clusters_dir, pca_path: str, umap_path: str) -> str:
    """Every point's label-free silhouettes; the label-free metric compared with NMI."""
    umap = np.load(umap_path, allow_pickle=False)
    if cfg.select.metric == "silhouette_umap" and not len(umap["rows"]):
        raise ParamError("select.metric", "is silhouette_umap, but umap.enabled is false: enable "
                         "UMAP, or select by silhouette_pca")
    return label_free.add_scores(results, clusters_dir, pca=np.load(pca_path, mmap_mode="r"),
                                 umap_rows=umap["rows"], umap_reduced=umap["reduced"],
                                 seed=cfg.seed)


def run(cfg: Params, clusters_dir=CLUSTERS_DIR, plots_dir=PLOTS_DIR, pca_path=IN_PCA,
        umap_path=IN_UMAP) -> dict:
    """Aggregate the grid: prune stale files, collect, select, write the tables and figure."""
    sel = cfg.select
    grid = grid_points(cfg)
    log_block(log, "clustering", inputs={"grid": {m: len(p) for m, p in grid.items()}},
              params={"select.metric": sel.metric, "select.max_noise": sel.max_noise})
    selection.prune_stale(grid, clusters_dir)
    selection.prune_stale_dendrograms(cfg.agglomerative.linkage, plots_dir)
    results = selection.collect(grid, clusters_dir)
    log_block(log, "grid values -> K", outputs=selection.resolved_grids(results))
    free = add_label_free(cfg, results, clusters_dir, pca_path, umap_path)
    out = selection.summarize(results, sel.metric, sel.max_noise)
    out["label_free"] = label_free.comparison(
        results, lambda r, metric: selection.select_model(r, metric, sel.max_noise), label_free=free)
    write_json(OUT_METRICS, out)
    table = selection.results_table(results)
    write_table(OUT_TABLE, table)
    if "kmeans" in results:
        inertia, silhouette = selection.kmeans_curves(results["kmeans"])
        write_table(OUT_INERTIA, inertia)
        write_table(OUT_SILHOUETTE, silhouette)
    plot_metrics_vs_k(results, OUT_VS_K)
    selected = out["selected"]
    log_block(log, "clustering done", outputs={
        OUT_METRICS: f"selected {selected['method']}/{selected['point']}: {selected['reason']}; "
                     + label_free.describe(out["label_free"]),
        OUT_TABLE: f"{len(table)} grid points",
        "plots": f"{OUT_INERTIA}, {OUT_SILHOUETTE}, {OUT_VS_K}"})
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Aggregate the clustering grid.")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    run(parse_stage(load_params(args.params), Params))


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
