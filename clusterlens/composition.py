"""`composition` stage: what is inside the clusters of the selected model (SPEC C6, R3).

Reads the model chosen by the `clustering` aggregate (``metrics/clustering.json: selected``) and
writes, for it:

- ``metrics/composition.csv``: one row per cluster (largest first; noise, if any, as cluster -1):
  size, share of all images, the top-5 classes with counts and %, and the class entropy in bits;
- ``plots/composition/heatmap.png``: the cluster-vs-class matrix, each row normalised to 1 (the
  class make-up of each cluster), with class names;
- ``plots/composition/montage.png``: sample images of the largest clusters, one row each; an
  image whose class is not its cluster's majority class is framed in red;
- ``plots/composition/tsne.png`` and ``plots/composition/pca_2d.png``: the 2-D t-SNE and PCA
  views side by side, coloured by class and by cluster.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from clusterlens.clustering import CLUSTERS_DIR, point_path
from clusterlens.metrics import NOISE
from clusterlens.common import (
    DataError, get_logger, load_npy, load_params, log_block, matplotlib_setup, param, read_json,
    read_table, require_int, run_cli, save_figure, write_table,
)

log = get_logger("composition")
TOP = 5

OUT_TABLE = "metrics/composition.csv"
OUT_HEATMAP = "plots/composition/heatmap.png"
OUT_MONTAGE = "plots/composition/montage.png"
OUT_TSNE = "plots/composition/tsne.png"
OUT_PCA = "plots/composition/pca_2d.png"


# --------------------------------------------------------------------------- tables
def entropy_bits(counts: np.ndarray) -> float:
    """Shannon entropy (bits) of a count vector; 0 for a pure cluster."""
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum()) + 0.0


def composition_table(labels: np.ndarray, classes: np.ndarray, top: int = TOP) -> pd.DataFrame:
    """One row per cluster (largest first, ties by cluster id): size, share, top classes with
    counts and %, entropy in bits. ``classes`` holds each image's class name."""
    labels = np.asarray(labels)
    classes = np.asarray(classes, dtype=object)
    if labels.shape != classes.shape:
        raise DataError(f"{len(labels)} cluster labels but {len(classes)} images in the index")
    df = pd.DataFrame({"cluster": labels, "class": classes})
    counts = df.groupby(["cluster", "class"]).size().unstack(fill_value=0)
    rows = []
    n = len(labels)
    for cluster, row in counts.iterrows():
        row = row[row > 0].sort_values(ascending=False, kind="stable")
        size = int(row.sum())
        rec = {"cluster": int(cluster), "size": size, "share_pct": 100 * size / n,
               "entropy_bits": entropy_bits(row.to_numpy()), "classes": int(len(row))}
        for i in range(top):
            if i < len(row):
                rec[f"top{i + 1}_class"] = row.index[i]
                rec[f"top{i + 1}_count"] = int(row.iloc[i])
                rec[f"top{i + 1}_pct"] = round(100 * row.iloc[i] / size, 2)
            else:
                rec[f"top{i + 1}_class"], rec[f"top{i + 1}_count"] = "", 0
                rec[f"top{i + 1}_pct"] = 0.0
        rows.append(rec)
    out = pd.DataFrame(rows)
    # Noise (-1) last; then largest first.
    out["_noise"] = out["cluster"] == NOISE
    out = out.sort_values(["_noise", "size", "cluster"], ascending=[True, False, True],
                          kind="stable").drop(columns="_noise").reset_index(drop=True)
    out["share_pct"] = out["share_pct"].round(2)
    out["entropy_bits"] = out["entropy_bits"].round(4)
    return out


def row_normalised(labels: np.ndarray, classes: np.ndarray,
                   class_order: list[str]) -> pd.DataFrame:
    """Clusters x classes, each row divided by the cluster size (rows sum to 1)."""
    counts = pd.crosstab(pd.Series(labels, name="cluster"), pd.Series(classes, name="class"))
    counts = counts.reindex(columns=class_order, fill_value=0)
    return counts.div(counts.sum(axis=1), axis=0)


# --------------------------------------------------------------------------- figures
def _class_font(n: int) -> float:
    return float(max(4, min(10, 300 / max(n, 1))))


def plot_heatmap(shares: pd.DataFrame, sizes: dict, title: str, path) -> None:
    """Rows: clusters ordered by their majority class (so a good clustering shows a diagonal);
    columns: classes by name."""
    import matplotlib.pyplot as plt

    majority = shares.to_numpy().argmax(axis=1)
    order = sorted(range(len(shares)), key=lambda i: (shares.index[i] == NOISE, majority[i],
                                                       -sizes[shares.index[i]]))
    shares = shares.iloc[order]
    n_rows, n_cols = shares.shape
    width = min(max(7.0, 0.32 * n_cols + 3), 48.0)
    height = min(max(4.0, 0.3 * n_rows + 2), 48.0)
    fig, ax = plt.subplots(figsize=(width, height))
    im = ax.imshow(shares.to_numpy(), aspect="auto", cmap="viridis", vmin=0, vmax=1,
                   interpolation="nearest")
    ax.set_xticks(range(n_cols))
    ax.set_xticklabels(shares.columns, rotation=90, fontsize=_class_font(n_cols))
    ax.set_yticks(range(n_rows))
    ax.set_yticklabels([("noise" if c == NOISE else f"cluster {c}") + f" (n={sizes[c]})"
                        for c in shares.index], fontsize=_class_font(n_rows))
    if n_rows * n_cols <= 400:
        values = shares.to_numpy()
        for r in range(n_rows):
            for c in range(n_cols):
                if values[r, c] >= 0.01:
                    ax.text(c, r, f"{values[r, c]:.0%}", ha="center", va="center", fontsize=7,
                            color="black" if values[r, c] > 0.6 else "white")
    ax.set_xlabel("true class")
    ax.set_ylabel("cluster (ordered by majority class)")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.01, label="share of the cluster's images")
    save_figure(fig, path)


def plot_montage(table: pd.DataFrame, labels: np.ndarray, index: pd.DataFrame, root, path,
                 clusters: int, per_cluster: int, seed: int, title: str) -> None:
    """One row per largest cluster: a seeded sample of its images, the row labelled with the
    cluster's size and majority class; images of another class are framed in red."""
    import matplotlib.pyplot as plt

    from clusterlens.index import thumbnail_cell

    rng = np.random.default_rng(seed)
    rows = table[table["cluster"] != NOISE].head(clusters)
    fig, axes = plt.subplots(len(rows), per_cluster,
                             figsize=(1.25 * per_cluster + 2.2, 1.35 * len(rows) + 0.8),
                             squeeze=False, layout="constrained")
    for r, rec in enumerate(rows.itertuples(index=False)):
        members = np.flatnonzero(labels == rec.cluster)
        pick = np.sort(rng.choice(members, size=min(per_cluster, len(members)), replace=False))
        for c in range(per_cluster):
            ax = axes[r][c]
            row = index.iloc[pick[c]] if c < len(pick) else None
            thumbnail_cell(ax, None if row is None else Path(root) / row["path"])
            if row is not None:
                off = row["class"] != rec.top1_class
                ax.set_title(str(row["class"])[:14], fontsize=6, color="#C44E52" if off else "black")
                if off:
                    for spine in ax.spines.values():
                        spine.set_visible(True)
                        spine.set_color("#C44E52")
                        spine.set_linewidth(2)
            if c == 0:
                ax.set_ylabel(f"cluster {rec.cluster}\nn={rec.size}\n{rec.top1_pct:.0f}% "
                              f"{str(rec.top1_class)[:14]}", rotation=0, ha="right", va="center",
                              fontsize=8)
    fig.suptitle(title + "\n(image titles: true class; red frame: not the cluster's majority class)",
                 fontsize=10)
    save_figure(fig, path)


def _colours(n: int):
    import matplotlib.pyplot as plt

    if n <= 10:
        return plt.get_cmap("tab10").colors[:n]
    if n <= 20:
        return plt.get_cmap("tab20").colors[:n]
    return [plt.get_cmap("gist_ncar")(v) for v in np.linspace(0.02, 0.95, n)]


def _scatter(ax, xy: np.ndarray, groups: np.ndarray, names: dict, title: str) -> None:
    uniq = [g for g in sorted(set(groups.tolist())) if g != NOISE]
    colours = dict(zip(uniq, _colours(len(uniq))))
    point = max(2.0, min(12.0, 6000 / max(len(xy), 1)))
    if NOISE in set(groups.tolist()):
        m = groups == NOISE
        ax.scatter(xy[m, 0], xy[m, 1], s=point, c="#BBBBBB", marker="x", linewidths=0.5,
                   label="noise")
    for g in uniq:
        m = groups == g
        ax.scatter(xy[m, 0], xy[m, 1], s=point, color=colours[g], alpha=0.7, linewidths=0,
                   label=names[g])
    if len(uniq) <= 20:
        ax.legend(fontsize=7, markerscale=2, loc="best", framealpha=0.8)
    if len(uniq) <= 60:  # names at the group medians
        for g in uniq:
            cx, cy = np.median(xy[groups == g], axis=0)
            ax.text(cx, cy, names[g], fontsize=7, ha="center", va="center", weight="bold",
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "alpha": 0.6, "lw": 0})
    ax.set_title(title)


def plot_side_by_side(xy: np.ndarray, classes: np.ndarray, labels: np.ndarray, axis_name: str,
                      title: str, path) -> None:
    import matplotlib.pyplot as plt

    class_order = sorted(set(classes.tolist()))
    code = {c: i for i, c in enumerate(class_order)}
    class_codes = np.array([code[c] for c in classes])
    fig, axes = plt.subplots(1, 2, figsize=(15, 7))
    _scatter(axes[0], xy, class_codes, dict(enumerate(class_order)),
             f"coloured by true class ({len(class_order)})")
    n_clusters = len(set(labels.tolist()) - {NOISE})
    _scatter(axes[1], xy, labels, {c: f"c{c}" for c in set(labels.tolist())},
             f"coloured by cluster ({n_clusters})")
    for ax in axes:
        ax.set_xlabel(f"{axis_name} 1")
        ax.set_ylabel(f"{axis_name} 2")
    fig.suptitle(title)
    save_figure(fig, path)


# --------------------------------------------------------------------------- stage
def selected_labels(clustering: dict, clusters_dir=CLUSTERS_DIR) -> tuple[str, np.ndarray]:
    sel = clustering.get("selected") or {}
    if "method" not in sel or "point" not in sel:
        raise DataError("metrics/clustering.json has no selected model: run `dvc repro clustering`")
    path = point_path(sel["method"], sel["point"], clusters_dir, ".npy")
    if not path.is_file():
        raise DataError(f"{path} (the selected model's labels) is missing: run `dvc repro`")
    return f"{sel['method']}/{sel['point']}", load_npy(path)


def run(params: dict, clusters_dir=CLUSTERS_DIR, clustering_path="metrics/clustering.json",
        index_path="data/index.parquet", tsne_path="data/tsne.npz",
        pca_2d_path="data/pca_2d.npy") -> pd.DataFrame:
    seed = require_int("seed", param(params, "seed"))
    root = Path(param(params, "data.root"))
    n_clusters = require_int("composition.montage_clusters",
                             param(params, "composition.montage_clusters"), 1)
    per_cluster = require_int("composition.montage_images",
                              param(params, "composition.montage_images"), 1)
    clustering = read_json(clustering_path)
    name, labels = selected_labels(clustering, clusters_dir)
    index = read_table(index_path)
    classes = index["class"].astype(str).to_numpy()
    sel = clustering["selected"]
    log_block(log, "composition", inputs={"selected": f"{name} ({sel.get('reason', '')})",
                                          "index": f"{index_path} ({len(index)} images)"},
              params={"composition.montage_clusters": n_clusters,
                      "composition.montage_images": per_cluster, "seed": seed})
    table = composition_table(labels, classes)
    write_table(OUT_TABLE, table)

    matplotlib_setup()
    class_order = sorted(set(classes.tolist()))
    shares = row_normalised(labels, classes, class_order)
    sizes = dict(zip(table["cluster"], table["size"]))
    headline = (f"{name}: {len(table)} clusters, {sel['metric']} = {sel['value']:.3f}")
    plot_heatmap(shares, sizes, f"Cluster composition (row-normalised), {headline}", OUT_HEATMAP)
    plot_montage(table, labels, index, root, OUT_MONTAGE, n_clusters, per_cluster, seed,
                 f"Largest clusters of {name}")
    emb = np.load(tsne_path, allow_pickle=False)
    rows = emb["rows"]
    plot_side_by_side(emb["embedding"], classes[rows], labels[rows], "t-SNE",
                      f"t-SNE of {len(rows)} images (PCA features), {headline}", OUT_TSNE)
    plot_side_by_side(load_npy(pca_2d_path), classes, labels, "PC",
                      f"First two principal components, {headline}", OUT_PCA)
    log_block(log, "composition done", outputs={
        OUT_TABLE: f"{len(table)} clusters; largest {table['size'].iloc[0]} images, "
                   f"median entropy {table['entropy_bits'].median():.2f} bits",
        "plots": ", ".join([OUT_HEATMAP, OUT_MONTAGE, OUT_TSNE, OUT_PCA])})
    return table


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Composition, montage and 2-D views of the "
                                             "selected clustering.")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    run(load_params(args.params))


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
