"""PCA figures: the explained-variance curve and the 2-D view coloured by class."""
from __future__ import annotations

import os

import numpy as np
import pandas as pd

from clusterlens.report.figures.style import save_figure


def class_colors(n: int) -> list:
    """``n`` distinct colours: tab10 up to 10, tab20 up to 20, then spread over gist_ncar."""
    import matplotlib.pyplot as plt

    if n <= 10:
        return [plt.get_cmap("tab10")(i) for i in range(n)]
    if n <= 20:
        return [plt.get_cmap("tab20")(i) for i in range(n)]
    cmap = plt.get_cmap("gist_ncar")
    return [cmap(0.05 + 0.9 * i / max(n - 1, 1)) for i in range(n)]


def plot_pca_2d(coords: np.ndarray, classes: np.ndarray, path: str | os.PathLike,
                variance: tuple[float, float], seed: int = 0) -> None:
    """Scatter the 2-D PCA view coloured by class and save it to ``path``.

    Parameters
    ----------
    coords : ndarray of shape (N, 2)
        PC 1 and PC 2 scores.
    classes : ndarray of shape (N,)
        Class names (strings).
    path : str or PathLike
        The PNG to write.
    variance : (float, float)
        The variance ratio of PC 1 and PC 2, for the axis labels.
    seed : int, default 0
        Seeds the drawing order (so that no class is drawn on top of the others).
    """
    import matplotlib.pyplot as plt

    names = sorted(pd.unique(classes))
    colors = class_colors(len(names))
    order = np.random.default_rng(seed).permutation(len(coords))  # no class drawn on top
    color_of = {c: colors[i] for i, c in enumerate(names)}
    fig, ax = plt.subplots(figsize=(9 if len(names) <= 20 else 8, 7))
    size = float(np.clip(8000 / max(len(coords), 1), 3, 30))
    ax.scatter(coords[order, 0], coords[order, 1], s=size, alpha=0.7, linewidths=0,
               c=[color_of[c] for c in classes[order]])
    # Standardized CNN features have a few far outliers: frame the central 99% of the points
    # and say how many fall outside, rather than squeezing everyone into a corner.
    lo, hi = np.percentile(coords, [0.5, 99.5], axis=0)
    pad = 0.08 * (hi - lo + 1e-12)
    lo, hi = lo - pad, hi + pad
    outside = int((~((coords >= lo) & (coords <= hi)).all(axis=1)).sum())
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    if outside:
        ax.text(0.01, 0.01, f"{outside} outlying points outside the view", fontsize=8,
                transform=ax.transAxes, color="0.3")
    if len(names) <= 30:
        for c in names:
            ax.scatter([], [], color=color_of[c], label=c, s=30)
        ax.legend(title="class", bbox_to_anchor=(1.01, 1), loc="upper left",
                  fontsize=8 if len(names) <= 20 else 6, frameon=False)
    ax.set_xlabel(f"PC 1 ({variance[0]:.1%} of variance)")
    ax.set_ylabel(f"PC 2 ({variance[1]:.1%} of variance)")
    ax.set_title(f"PCA 2-D view coloured by class ({len(coords)} images, {len(names)} classes)")
    save_figure(fig, path)


def plot_explained_variance(ratio: np.ndarray, n_kept: int, path: str | os.PathLike) -> None:
    """Per-component and cumulative explained variance, with the number kept marked.

    Parameters
    ----------
    ratio : ndarray
        The explained variance ratio of every computed component.
    n_kept : int
        The number of components kept (a dashed line).
    path : str or PathLike
        The PNG to write.
    """
    import matplotlib.pyplot as plt

    cum = np.cumsum(ratio)
    x = np.arange(1, len(cum) + 1)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(x, cum, color="#4C72B0", label="cumulative")
    ax.bar(x, ratio, color="#DD8452", alpha=0.6, label="per component")
    kept = float(cum[min(n_kept, len(cum)) - 1])
    ax.axvline(n_kept, color="#C44E52", ls="--", label=f"kept: {n_kept} ({kept:.1%})")
    ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("number of principal components (log scale)")
    ax.set_ylabel("explained variance ratio")
    ax.set_title("PCA explained variance")
    ax.legend(loc="center right")
    save_figure(fig, path)
