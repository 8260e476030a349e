"""Figures of a clustering's composition: the cluster-by-class heatmap, a montage of the
largest clusters' representatives, and 2-D views coloured by class and by cluster (a cluster
in the colour of the class it is matched to)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from clusterlens.clustering.metrics import NOISE
from clusterlens.report.colours import MARKERS, NOISE_COLOUR, class_colours, cluster_styles
from clusterlens.report.figures.style import save_figure
from clusterlens.report.figures.thumbnails import thumbnail_cell

OFF_CLASS = "#C44E52"


def _class_font(n: int) -> float:
    return float(max(4, min(10, 300 / max(n, 1))))


def tick_step(n: int, inches: float, font: float) -> int:
    """Label every ``step``-th of ``n`` ticks along ``inches`` so that labels of ``font`` points
    do not overlap (a label needs about 1.2 x its font size); 1 when all fit."""
    fit = max(1, int(inches * 72 / (1.2 * font)))
    return -(-n // fit)


def _label_ticks(set_ticks, labels: list[str], inches: float, font: float) -> int:
    step = tick_step(len(labels), inches, font)
    set_ticks(range(0, len(labels), step), labels[::step], fontsize=font)
    return step


def plot_heatmap(shares: pd.DataFrame, sizes: dict, title: str, path: str | os.PathLike) -> None:
    """Draw the row-normalised cluster-by-class matrix.

    Parameters
    ----------
    shares : DataFrame
        Clusters x classes, rows summing to 1 (see
        :func:`clusterlens.analysis.composition.row_normalised`).
    sizes : dict
        Cluster label -> number of images, shown in the row labels.
    title : str
        The figure's title.
    path : str or PathLike
        The PNG to write.

    Notes
    -----
    Rows are ordered by their majority class (a good clustering shows a diagonal), then by
    size; noise comes last. Cells are annotated when the matrix has at most 400 cells.
    """
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
    # the plot area is about the figure less the labels and the colour bar
    x_step = _label_ticks(lambda t, lab, fontsize: ax.set_xticks(t, lab, rotation=90,
                                                                 fontsize=fontsize),
                          [str(c) for c in shares.columns], width - 3, _class_font(n_cols))
    y_step = _label_ticks(ax.set_yticks,
                          [("noise" if c == NOISE else f"cluster {c}") + f" (n={sizes[c]})"
                           for c in shares.index], height - 2, _class_font(n_rows))
    if n_rows * n_cols <= 400:
        values = shares.to_numpy()
        for r in range(n_rows):
            for c in range(n_cols):
                if values[r, c] >= 0.01:
                    ax.text(c, r, f"{values[r, c]:.0%}", ha="center", va="center", fontsize=7,
                            color="black" if values[r, c] > 0.6 else "white")
    ax.set_xlabel("true class" + (f" (one label every {x_step} classes)" if x_step > 1 else ""))
    ax.set_ylabel("cluster (ordered by majority class"
                  + (f"; one label every {y_step} rows)" if y_step > 1 else ")"))
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.01, label="share of the cluster's images")
    save_figure(fig, path)


def plot_montage(table: pd.DataFrame, nearest: dict[int, list[int]], index: pd.DataFrame,
                 root: str | os.PathLike, path: str | os.PathLike, clusters: int,
                 per_cluster: int, title: str) -> None:
    """Draw the representatives of the largest clusters, one row per cluster.

    Parameters
    ----------
    table : DataFrame
        The composition table (:func:`clusterlens.analysis.composition.composition_table`), largest
        cluster first.
    nearest : dict
        Cluster label -> index rows of its members nearest its centre, nearest first (see
        :func:`clusterlens.audit.representatives.nearest_rows`).
    index : DataFrame
        The image index, with ``path`` (relative to ``root``) and ``class`` columns.
    root : str or PathLike
        The image folder.
    path : str or PathLike
        The PNG to write.
    clusters : int
        How many clusters (rows); noise is never shown.
    per_cluster : int
        Images per row: the first ``per_cluster`` representatives (fewer when the cluster, or
        its list of representatives, is shorter).
    title : str
        The figure's title.

    Notes
    -----
    Each row is labelled with its cluster's size and majority class; an image of another
    class is framed in red.
    """
    import matplotlib.pyplot as plt

    rows = table[table["cluster"] != NOISE].head(clusters)
    fig, axes = plt.subplots(len(rows), per_cluster,
                             figsize=(1.25 * per_cluster + 2.2, 1.35 * len(rows) + 0.8),
                             squeeze=False, layout="constrained")
    for r, rec in enumerate(rows.itertuples(index=False)):
        pick = nearest.get(int(rec.cluster), [])[:per_cluster]
        for c in range(per_cluster):
            ax = axes[r][c]
            row = index.iloc[pick[c]] if c < len(pick) else None
            thumbnail_cell(ax, None if row is None else Path(root) / row["path"])
            if row is not None:
                off = row["class"] != rec.top1_class
                ax.set_title(str(row["class"])[:14], fontsize=6,
                             color=OFF_CLASS if off else "black")
                if off:
                    for spine in ax.spines.values():
                        spine.set_visible(True)
                        spine.set_color(OFF_CLASS)
                        spine.set_linewidth(2)
            if c == 0:
                ax.set_ylabel(f"cluster {rec.cluster}\nn={rec.size}\n{rec.top1_pct:.0f}% "
                              f"{str(rec.top1_class)[:14]}", rotation=0, ha="right", va="center",
                              fontsize=8)
    fig.suptitle(f"{title}\n(the members nearest each cluster's centre, nearest first; image "
                 "titles: true class; red frame: not the cluster's majority class)", fontsize=10)
    save_figure(fig, path)


def _scatter(ax, xy: np.ndarray, groups: np.ndarray, styles: dict, title: str) -> None:
    """One panel: ``styles`` maps each group to ``(name, colour, matplotlib marker)``."""
    uniq = [g for g in sorted(set(groups.tolist())) if g != NOISE]
    point = max(2.0, min(12.0, 6000 / max(len(xy), 1)))
    if NOISE in set(groups.tolist()):
        m = groups == NOISE
        ax.scatter(xy[m, 0], xy[m, 1], s=point, c=NOISE_COLOUR, marker="x", linewidths=0.5,
                   label="noise")
    for g in uniq:
        m = groups == g
        name, colour, marker = styles[g]
        ax.scatter(xy[m, 0], xy[m, 1], s=point, color=colour, marker=marker, alpha=0.7,
                   linewidths=0, label=name)
    if len(uniq) <= 20:
        ax.legend(fontsize=7, markerscale=2, loc="best", framealpha=0.8)
    if len(uniq) <= 60:  # names at the group medians
        for g in uniq:
            cx, cy = np.median(xy[groups == g], axis=0)
            ax.text(cx, cy, styles[g][0], fontsize=7, ha="center", va="center", weight="bold",
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "alpha": 0.6, "lw": 0})
    ax.set_title(title)


def plot_side_by_side(xy: np.ndarray, classes: np.ndarray, labels: np.ndarray, axis_name: str,
                      title: str, path: str | os.PathLike) -> None:
    """Draw a 2-D view twice: coloured by true class (left) and by cluster (right).

    Parameters
    ----------
    xy : ndarray of shape (n, 2)
        The 2-D coordinates (t-SNE embedding or the first two principal components).
    classes : ndarray of shape (n,)
        Class name of each point.
    labels : ndarray of shape (n,)
        Cluster label of each point (noise drawn as grey crosses). Each cluster takes the
        colour of the class it is matched to (:func:`clusterlens.report.colours.cluster_styles`);
        clusters left over when there are more clusters than classes take their majority
        class's colour and another marker.
    axis_name : str
        Axis label stem, e.g. ``"t-SNE"`` gives ``t-SNE 1`` and ``t-SNE 2``.
    title : str
        The figure's title.
    path : str or PathLike
        The PNG to write.
    """
    import matplotlib.pyplot as plt

    class_order = sorted(set(classes.tolist()))
    code = {c: i for i, c in enumerate(class_order)}
    class_codes = np.array([code[c] for c in classes])
    colours = class_colours(class_order)
    fig, axes = plt.subplots(1, 2, figsize=(15, 7))
    _scatter(axes[0], xy, class_codes, {i: (c, colours[c], "o") for i, c in enumerate(class_order)},
             f"coloured by true class ({len(class_order)})")
    styles = cluster_styles(labels, classes, class_order)
    _scatter(axes[1], xy, labels, {c: (s.name(c), s.colour, MARKERS[s.marker][0])
                                   for c, s in styles.items()},
             f"coloured by cluster ({len(styles)}; each in the colour of its matched class)")
    for ax in axes:
        ax.set_xlabel(f"{axis_name} 1")
        ax.set_ylabel(f"{axis_name} 2")
    fig.suptitle(title)
    save_figure(fig, path)
