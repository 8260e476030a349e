"""Figures of the macro-categories: the class dendrogram, the centroid distance heatmap, and
cluster purity against macro and fine labels."""
from __future__ import annotations

import os

import numpy as np
import pandas as pd
from scipy.cluster.hierarchy import dendrogram, fcluster, leaves_list
from scipy.spatial.distance import pdist, squareform

from clusterlens.report.figures.style import save_figure

LEFT_ORIENTATION_ABOVE = 30  # more classes than this: horizontal dendrogram, one row per leaf


def dendrogram_layout(n: int, max_name: int) -> dict:
    """Figure size, font size, orientation and label rotation for ``n`` leaves whose names
    have up to ``max_name`` characters."""
    if n <= LEFT_ORIENTATION_ABOVE:
        font = 10 if n <= 15 else 9
        rotate = n > 12 or max_name > 4
        width = max(8.0, 0.34 * n + 2.0)
        height = 6.0 + (0.07 * max_name if rotate else 0.0)
        return {"orientation": "top", "font": font, "figsize": (width, height),
                "rotation": 90 if rotate else 0}
    font = 8 if n <= 400 else 6
    row = font * 1.5 / 72  # inches per leaf row
    return {"orientation": "left", "font": font, "rotation": 0,
            "figsize": (9.0 + 0.07 * max_name, n * row + 1.8)}


def plot_dendrogram(Z: np.ndarray, names: list[str], threshold_ratio: float,
                    path: str | os.PathLike, method: str = "ward") -> None:
    """The class dendrogram, coloured below ``threshold_ratio`` x the maximum merge height."""
    import matplotlib.pyplot as plt

    n = len(names)
    lay = dendrogram_layout(n, max(len(s) for s in names))
    threshold = threshold_ratio * float(Z[:, 2].max())
    n_at = int(len(np.unique(fcluster(Z, threshold, criterion="distance"))))
    fig, ax = plt.subplots(figsize=lay["figsize"])
    dendrogram(Z, labels=names, orientation=lay["orientation"], color_threshold=threshold,
               above_threshold_color="0.55", leaf_font_size=lay["font"],
               leaf_rotation=lay["rotation"], ax=ax)
    label = (f"colour threshold: {threshold_ratio:.0%} of max height ({threshold:.3g}) "
             f"-> {n_at} groups")
    if lay["orientation"] == "top":
        ax.axhline(threshold, color="#C44E52", ls="--", lw=1.2, label=label)
        ax.set_xlabel("class")
        ax.set_ylabel(f"merge height ({method} distance)")
        ax.legend(loc="upper right", fontsize=9)
    else:
        ax.axvline(threshold, color="#C44E52", ls="--", lw=1.2, label=label)
        ax.set_ylabel("class")
        ax.set_xlabel(f"merge height ({method} distance)")
        ax.invert_yaxis()  # first leaf at the top, reading order
        ax.legend(loc="upper left", fontsize=9)
        ax.tick_params(axis="x", labeltop=True, top=True)  # height axis readable at both ends
    ax.set_title(f"Dendrogram of the {n} class centroids ({method} linkage, PCA space)")
    save_figure(fig, path)


def plot_centroid_distances(centroids: np.ndarray, Z: np.ndarray, names: list[str], n_show: int,
                            path: str | os.PathLike) -> list[str]:
    """Euclidean centroid distances in dendrogram leaf order, the first ``n_show`` leaves.

    Returns
    -------
    list of str
        The class names shown, in order.
    """
    import matplotlib.pyplot as plt

    order = leaves_list(Z)[:n_show]
    D = squareform(pdist(centroids))[np.ix_(order, order)]
    shown = [names[i] for i in order]
    n = len(shown)
    cell, font = (0.36, 9) if n <= 30 else (0.2, 7) if n <= 80 else (0.17, 6)
    side = max(6.0, n * cell)
    max_name = max(len(s) for s in shown)
    fig, ax = plt.subplots(figsize=(side + 2.2 + 0.06 * max_name, side + 1.5 + 0.06 * max_name))
    im = ax.imshow(D, cmap="viridis_r", interpolation="nearest")
    ax.set_xticks(range(n), shown, rotation=90 if max_name > 3 else 0, fontsize=font)
    ax.set_yticks(range(n), shown, fontsize=font)
    ax.set_xlabel("class (dendrogram leaf order)")
    ax.set_ylabel("class (dendrogram leaf order)")
    fig.colorbar(im, ax=ax, shrink=0.6, label="Euclidean distance between centroids (PCA space)")
    total = len(names)
    scope = f"all {total} classes" if n == total else f"first {n} of {total} classes"
    ax.set_title(f"Class-centroid distances in dendrogram leaf order ({scope})")
    save_figure(fig, path)
    return shown


def plot_purity_lines(table: pd.DataFrame, targets: dict[str, int],
                      path: str | os.PathLike) -> None:
    """One line per K: purity against each target, by the target's number of categories."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    xs = list(targets.values())
    for _, row in table.iterrows():
        ax.plot(xs, [row[t] for t in targets], marker="o", label=f"K={int(row['k'])}")
    ax.set_xscale("log")
    ax.set_xticks(sorted(set(xs)), [str(x) for x in sorted(set(xs))])
    ax.minorticks_off()
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("number of target categories (log scale; rightmost = the fine classes)")
    ax.set_ylabel("K-Means cluster purity")
    ax.set_title("K-Means purity against macro-categories and fine classes")
    ax.legend(title="K-Means", fontsize=8)
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def plot_purity_heatmap(table: pd.DataFrame, targets: dict[str, int],
                        path: str | os.PathLike) -> None:
    """The purity table as a K x target heatmap, values written in the cells."""
    import matplotlib.pyplot as plt

    M = table[list(targets)].to_numpy(dtype=float)
    cols = [f"{n} classes\n(fine)" if t == "fine" else f"{n} groups\n({t})"
            for t, n in targets.items()]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(cols) + 2.5),
                                    max(3.0, 0.55 * len(M) + 1.8)))
    im = ax.imshow(M, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    for i in range(M.shape[0]):
        for j in range(M.shape[1]):
            ax.text(j, i, f"{M[i, j]:.3f}", ha="center", va="center", fontsize=9)
    ax.set_xticks(range(len(cols)), cols, fontsize=8)
    ax.set_yticks(range(len(M)), [f"K={int(k)}" for k in table["k"]])
    ax.set_xlabel("target categories (macro -> fine)")
    ax.set_ylabel("K-Means clusters")
    fig.colorbar(im, ax=ax, label="purity")
    ax.set_title("K-Means purity: clusters x number of target categories")
    save_figure(fig, path)
