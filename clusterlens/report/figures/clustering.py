"""Figures of the clustering grid: the top of a merge tree, and the metrics against K."""
from __future__ import annotations

import os

import numpy as np

from clusterlens.clustering.trees import cut_heights
from clusterlens.report.figures.style import matplotlib_setup, save_figure


def plot_dendrogram(Z: np.ndarray, ks: list[int], path: str | os.PathLike, linkage: str,
                    leaves: int = 30, unit: str = "images") -> None:
    """Draw the top of a merge tree with the cut for every K marked.

    Parameters
    ----------
    Z : ndarray of shape (n - 1, 4)
        A scipy linkage matrix.
    ks : list of int
        The grid's K values (cuts below the drawn part of the tree are not marked).
    path : str or PathLike
        The PNG to write (atomically).
    linkage : str
        The linkage's name, for the labels.
    leaves : int
        The last ``leaves`` merges are drawn; leaf labels are point counts.
    unit : str
        What the tree's leaves are ("images", "K-Means cells").
    """
    import matplotlib.pyplot as plt
    from scipy.cluster.hierarchy import dendrogram

    matplotlib_setup()
    n = len(Z) + 1
    fig, ax = plt.subplots(figsize=(12, 5.5))

    def leaf_label(i: int) -> str:  # a single image is "(1)", like the merged groups
        return f"({int(Z[i - n, 3]) if i >= n else 1})"

    dendrogram(Z, truncate_mode="lastp", p=min(leaves, n), leaf_label_func=leaf_label,
               leaf_rotation=90, leaf_font_size=8, color_threshold=0,
               above_threshold_color="#4C72B0", ax=ax)
    heights = cut_heights(Z, ks)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, k in enumerate(sorted(heights)):
        if k > min(leaves, n):  # the cut lies below the drawn part of the tree
            continue
        ax.axhline(heights[k], ls="--", lw=1, color=colors[(i + 1) % len(colors)],
                   label=f"cut at K={k} (height {heights[k]:.3g})")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper right", fontsize=8)
    ax.set_xlabel(f"merged groups (in brackets: number of {unit}), last {min(leaves, n)} of {n}")
    ax.set_ylabel(f"{linkage} merge height (PCA space)")
    ax.set_title(f"Agglomerative clustering, {linkage} linkage: top of the dendrogram of "
                 f"{n} {unit}")
    save_figure(fig, path)


def plot_metrics_vs_k(results: dict, path: str | os.PathLike) -> None:
    """Silhouette, NMI, ARI and purity against K, one line per method (and linkage).

    Parameters
    ----------
    results : dict
        method -> point name -> metrics (points without ``k`` are left out).
    path : str or PathLike
        The PNG to write (atomically).
    """
    matplotlib_setup()
    import matplotlib.pyplot as plt

    keys = ["silhouette", "nmi", "ari", "purity"]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.8))
    for ax, key in zip(axes, keys):
        for method, points in results.items():
            series: dict[str, list] = {}
            for _pt, m in points.items():
                if "k" not in m or m.get(key) is None:
                    continue
                label = method if method != "agglomerative" else f"agglo-{m['linkage']}"
                series.setdefault(label, []).append((m["k"], m[key]))
            for label, xy in series.items():
                xy.sort()
                ax.plot([x for x, _ in xy], [v for _, v in xy], marker="o", label=label)
        ax.set_xlabel("number of clusters K")
        ax.set_ylabel(key)
        ax.set_title(f"{key} vs K")
    axes[0].legend(fontsize=7)
    fig.suptitle("Clustering metrics per method and K")
    save_figure(fig, path)
