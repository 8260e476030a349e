"""DVC stage `composition`: what is inside the clusters of the selected model.

Reads the model chosen by the `clustering` aggregate (``metrics/clustering.json: selected``) and
writes, for it:

- ``metrics/composition.csv``: one row per cluster (largest first; noise, if any, as cluster -1):
  its ``name`` (its most characteristic caption labels, from ``data/captions.parquet``:
  :mod:`clusterlens.analysis.cluster_names`; empty without captions), size, share of all images,
  the top-5 classes with counts and %, and the class entropy in bits;
- ``plots/composition/heatmap.png``: the cluster-vs-class matrix, each row normalised to 1;
- ``plots/composition/montage.png``: the representatives of the largest clusters (the members
  nearest each cluster's centre, from ``data/representatives.json``), one row each; an image
  whose class is not its cluster's majority class is framed in red;
- ``plots/composition/tsne.png``, ``umap.png`` and ``pca_2d.png``: the 2-D t-SNE, UMAP (a
  notice when ``umap`` is off) and PCA views side by side, coloured by class and by cluster
  (above ``PCA_VIEW_MAX`` images the PCA view draws the t-SNE's sampled images).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from clusterlens.analysis.cluster_names import names_from_captions
from clusterlens.analysis.composition import composition_table, row_normalised
from clusterlens.audit.representatives import nearest_rows
from clusterlens.clustering.selection import selected_labels
from clusterlens.config.base import load_params, parse_stage
from clusterlens.config.composition import CompositionParams
from clusterlens.config.data import DataParams
from clusterlens.core.cli import run_cli
from clusterlens.core.errors import DataError
from clusterlens.core.io import load_npy, read_json, read_table, write_table
from clusterlens.core.logs import get_logger, log_block
from clusterlens.report.figures.composition import plot_heatmap, plot_montage, plot_side_by_side
from clusterlens.report.figures.style import matplotlib_setup, plot_notice

log = get_logger("composition")
CLUSTERS_DIR = Path("data/clusters")
IN_CLUSTERING = "metrics/clustering.json"
IN_INDEX = "data/index.parquet"
IN_TSNE = "data/tsne.npz"
IN_PCA_2D = "data/pca_2d.npy"
IN_REPRESENTATIVES = "data/representatives.json"
IN_CAPTIONS = "data/captions.parquet"
IN_UMAP = "data/umap.npz"
OUT_TABLE = "metrics/composition.csv"
OUT_HEATMAP = "plots/composition/heatmap.png"
OUT_MONTAGE = "plots/composition/montage.png"
OUT_TSNE = "plots/composition/tsne.png"
OUT_UMAP = "plots/composition/umap.png"
OUT_PCA = "plots/composition/pca_2d.png"
PCA_VIEW_MAX = 50_000  # above this many images the PCA view draws the t-SNE's sample


@dataclass(frozen=True)
class Params:
    """What the stage reads from params.yaml (parsed once, in :func:`main`)."""
    data: DataParams
    composition: CompositionParams


def run(cfg: Params, clusters_dir=CLUSTERS_DIR, clustering_path=IN_CLUSTERING,
        index_path=IN_INDEX, tsne_path=IN_TSNE, pca_2d_path=IN_PCA_2D,
        representatives_path=IN_REPRESENTATIVES) -> pd.DataFrame:
    root = Path(cfg.data.root)
    p = cfg.composition
    clustering = read_json(clustering_path)
    name, labels = selected_labels(clustering, clusters_dir)
    if not Path(representatives_path).is_file():
        raise DataError(f"{representatives_path} is missing: run `dvc repro images`")
    nearest = nearest_rows(read_json(representatives_path), name)
    index = read_table(index_path)
    classes = index["class"].astype(str).to_numpy()
    sel = clustering["selected"]
    log_block(log, "composition", inputs={"selected": f"{name} ({sel.get('reason', '')})",
                                          "index": f"{index_path} ({len(index)} images)",
                                          "representatives": representatives_path},
              params={"composition.montage_clusters": p.montage_clusters,
                      "composition.montage_images": p.montage_images})
    table = composition_table(labels, classes)
    names = names_from_captions(labels, index["path"], read_table(IN_CAPTIONS))
    table.insert(1, "name", table["cluster"].map(names).fillna("").astype(str))
    write_table(OUT_TABLE, table)

    matplotlib_setup()
    class_order = sorted(set(classes.tolist()))
    shares = row_normalised(labels, classes, class_order)
    sizes = dict(zip(table["cluster"], table["size"]))
    headline = f"{name}: {len(table)} clusters, {sel['metric']} = {sel['value']:.3f}"
    plot_heatmap(shares, sizes, f"Cluster composition (row-normalised), {headline}", OUT_HEATMAP)
    plot_montage(table, nearest, index, root, OUT_MONTAGE, p.montage_clusters,
                 p.montage_images, f"Largest clusters of {name}")
    emb = np.load(tsne_path, allow_pickle=False)
    rows = emb["rows"]
    plot_side_by_side(emb["embedding"], classes[rows], labels[rows], "t-SNE",
                      f"t-SNE of {len(rows)} images (PCA features), {headline}", OUT_TSNE)
    umap = np.load(IN_UMAP, allow_pickle=False)
    if len(umap["rows"]):
        plot_side_by_side(umap["embedding"], classes[umap["rows"]], labels[umap["rows"]], "UMAP",
                          f"UMAP of {len(umap['rows'])} images (PCA features), {headline}", OUT_UMAP)
    else:
        plot_notice("UMAP is off (umap.enabled: false)", OUT_UMAP)
    pca_2d, shown = load_npy(pca_2d_path), np.arange(len(classes))
    if len(classes) > PCA_VIEW_MAX:  # one scatter per class and cluster: draw the t-SNE's rows
        shown = rows
        log.info("composition: %d images > %d: the PCA view draws the t-SNE's %d sampled images",
                 len(classes), PCA_VIEW_MAX, len(rows))
    some = "" if len(shown) == len(classes) else f" of {len(shown)} sampled images"
    plot_side_by_side(pca_2d[shown], classes[shown], labels[shown], "PC",
                      f"First two principal components{some}, {headline}", OUT_PCA)
    log_block(log, "composition done", outputs={
        OUT_TABLE: f"{len(table)} clusters; largest {table['size'].iloc[0]} images, "
                   f"median entropy {table['entropy_bits'].median():.2f} bits",
        "plots": ", ".join([OUT_HEATMAP, OUT_MONTAGE, OUT_TSNE, OUT_UMAP, OUT_PCA])})
    return table


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Composition, montage and 2-D views of the "
                                             "selected clustering.")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    run(parse_stage(load_params(args.params), Params))


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
