"""DVC stage `images`: one row per image with everything known about it, and the images to check.

Joins the index, the selected clustering (``metrics/clustering.json: selected``), the PCA
scores and 2-D views, the label-issue scores (`label_issues`) and the neighbour scores
(`neighbours`), and writes:

- ``data/images.parquet`` and ``data/images.csv`` (same content): one row per index row, in
  index order (see :data:`clusterlens.audit.image_table.COLUMNS`);
- ``data/representatives.json``: per cluster, the members nearest its centre in PCA space and
  its doubtful members (another class than the majority, or far from the centre);
- ``data/audit.csv``: one row per issue type (:mod:`clusterlens.audit.issues`): images flagged,
  their share, the most severe example;
- ``metrics/images.json``: the table's counts (agreement with the clusters, label issues, images
  flagged per issue type);
- ``plots/images/{label_issues,near_duplicates,same_scene,outliers,representatives}.png`` and a
  figure per image-quality flag (``plots/images/<flag>.png``).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clusterlens.audit.image_table import headline, images_table, tsne_columns
from clusterlens.audit.issues import audit_table, issue_counts
from clusterlens.audit.representatives import centre_distances, representatives
from clusterlens.clustering.selection import selected_labels
from clusterlens.config.base import load_params, parse_stage
from clusterlens.config.data import DataParams
from clusterlens.config.images import ImagesParams
from clusterlens.core.cli import run_cli
from clusterlens.core.errors import check_rows
from clusterlens.core.io import load_npy, read_json, read_table, write_json, write_table
from clusterlens.core.logs import get_logger, log_block
from clusterlens.data.quality import KINDS as QUALITY_KINDS
from clusterlens.report.figures import audit
from clusterlens.report.figures.style import matplotlib_setup

log = get_logger("images")
CLUSTERS_DIR = Path("data/clusters")
IN_CLUSTERING = "metrics/clustering.json"
IN_INDEX = "data/index.parquet"
IN_PCA = "data/pca.npy"
IN_PCA_2D = "data/pca_2d.npy"
IN_TSNE = "data/tsne.npz"
IN_UMAP = "data/umap.npz"
IN_LABEL_ISSUES = "data/label_issues.parquet"
IN_NEIGHBOURS = "data/neighbours.parquet"
IN_PAIRS = "data/near_duplicates.csv"
OUT_TABLE = "data/images.parquet"
OUT_CSV = "data/images.csv"
OUT_REPRESENTATIVES = "data/representatives.json"
OUT_METRICS = "metrics/images.json"
OUT_LABEL_ISSUES = "plots/images/label_issues.png"
OUT_DUPLICATES = "plots/images/near_duplicates.png"
OUT_OUTLIERS = "plots/images/outliers.png"
OUT_REPS_PNG = "plots/images/representatives.png"
OUT_AUDIT = "data/audit.csv"
OUT_SAME_SCENE = "plots/images/same_scene.png"
OUT_QUALITY = {kind: f"plots/images/{kind}.png" for kind in QUALITY_KINDS}


@dataclass(frozen=True)
class Params:
    """What the stage reads from params.yaml (parsed once, in :func:`main`)."""
    data: DataParams
    images: ImagesParams


def run(cfg: Params, clusters_dir=CLUSTERS_DIR, clustering_path=IN_CLUSTERING,
        index_path=IN_INDEX, pca_path=IN_PCA, pca_2d_path=IN_PCA_2D, tsne_path=IN_TSNE,
        label_issues_path=IN_LABEL_ISSUES, neighbours_path=IN_NEIGHBOURS,
        pairs_path=IN_PAIRS) -> dict:
    """Build the per-image table, the representatives and the figures; returns the headline."""
    root = Path(cfg.data.root)
    p = cfg.images
    model, labels = selected_labels(read_json(clustering_path), clusters_dir)
    index = read_table(index_path)
    pca = load_npy(pca_path)
    check_rows(str(pca_path), len(pca), str(index_path), len(index))
    check_rows(f"the labels of {model}", len(labels), str(index_path), len(index))
    emb, umap = np.load(tsne_path, allow_pickle=False), np.load(IN_UMAP, allow_pickle=False)
    pairs = read_table(pairs_path)
    log_block(log, "images", inputs={
        "selected": model, "index": f"{index_path} ({len(index)} images)",
        "centre space": f"{pca_path} {pca.shape}", "t-SNE": f"{tsne_path} ({len(emb['rows'])})",
        "scores": f"{label_issues_path}, {neighbours_path}, {pairs_path} ({len(pairs)} pairs)"},
        params={"images.representatives": p.representatives,
                "images.doubtful": p.doubtful, "images.show": p.show,
                "images.pairs": p.pairs, "images.clusters": p.clusters})
    distance = centre_distances(pca, labels)
    table = images_table(index, labels, distance, load_npy(pca_2d_path),
                         tsne_columns(len(index), emb["rows"], emb["embedding"]),
                         read_table(label_issues_path), read_table(neighbours_path),
                         umap_xy=tsne_columns(len(index), umap["rows"], umap["embedding"],
                                              name="UMAP", stage="umap"))
    write_table(OUT_TABLE, table)
    write_table(OUT_CSV, table)
    reps = representatives(labels, distance, table["path"].to_numpy(), table["class"].to_numpy(),
                           p.representatives, p.doubtful)
    write_json(OUT_REPRESENTATIVES, {
        "model": model, "space": "pca", "distance": "euclidean to the cluster mean",
        "representatives": p.representatives, "doubtful": p.doubtful, "clusters": reps})
    summary = audit_table(table)
    write_table(OUT_AUDIT, summary)
    metrics = write_json(OUT_METRICS, {**headline(table, model), "issues": issue_counts(summary)})

    matplotlib_setup()
    n = len(index)
    audit.plot_label_issues(table, root, OUT_LABEL_ISSUES, p.show,
                            f"Suspected label issues ({metrics['label_issues']} of {n} images)")
    copies, scenes = pairs[pairs["kind"] != "same_scene"], pairs[pairs["kind"] == "same_scene"]
    audit.plot_near_duplicates(copies, root, OUT_DUPLICATES, p.pairs,
                               f"Near-duplicate pairs ({len(copies)} in all)")
    audit.plot_near_duplicates(scenes, root, OUT_SAME_SCENE, p.pairs,
                               f"Two shots of the same scene ({len(scenes)} pairs)",
                               empty="No pair of shots of the same scene.")
    for kind, out in OUT_QUALITY.items():
        audit.plot_flagged(table, root, out, kind, p.show,
                           f"{kind.replace('_', ' ').capitalize()} images "
                           f"({int(table['is_' + kind].sum())} of {n})")
    audit.plot_outliers(table, root, OUT_OUTLIERS, p.show,
                        f"The {min(p.show, n)} most atypical images of {n}")
    audit.plot_representatives(reps, root, OUT_REPS_PNG, p.clusters,
                               f"Representatives of the largest clusters of {model}")
    log_block(log, "images done", outputs={
        OUT_TABLE: f"{n} rows x {table.shape[1]} columns (also {OUT_CSV})",
        OUT_REPRESENTATIVES: f"{len(reps)} clusters",
        OUT_METRICS: f"agree {metrics['agree_fraction']}, {metrics['label_issues']} label "
                     f"issues, {metrics['in_duplicate_groups']} images in duplicate groups",
        OUT_AUDIT: ", ".join(f"{k} {v}" for k, v in metrics["issues"].items()),
        "plots": ", ".join([OUT_LABEL_ISSUES, OUT_DUPLICATES, OUT_SAME_SCENE, OUT_OUTLIERS,
                            OUT_REPS_PNG, *OUT_QUALITY.values()])})
    return metrics


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="The per-image table, cluster representatives and "
                                             "thumbnails of the images to check.")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    run(parse_stage(load_params(args.params), Params))


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
