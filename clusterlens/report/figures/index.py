"""Figures of the ``index`` stage: class distribution, image sizes, a grid of sample images."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from clusterlens.report.figures.style import save_figure
from clusterlens.report.figures.thumbnails import thumbnail_cell


def plot_class_distribution(counts: pd.Series, path: str | Path) -> None:
    """Bar chart of images per class, largest first, with the median.

    Parameters
    ----------
    counts : pandas.Series
        Images per class, indexed by class name.
    path : str or Path
        The PNG to write.
    """
    import matplotlib.pyplot as plt

    counts = counts.sort_values(ascending=False)
    n = len(counts)
    width = min(max(6.0, 0.28 * n + 2), 60.0)
    fig, ax = plt.subplots(figsize=(width, 4.5))
    ax.bar(range(n), counts.values, color="#4C72B0")
    ax.set_xticks(range(n))
    ax.set_xticklabels(counts.index, rotation=90 if n > 12 else 0,
                       fontsize=max(5, min(10, int(400 / max(n, 1)))))
    ax.axhline(counts.median(), color="#C44E52", ls="--", lw=1,
               label=f"median {counts.median():g}")
    ax.set_xlabel("class")
    ax.set_ylabel("images")
    ax.set_title(f"Class distribution: {int(counts.sum())} images in {n} classes "
                 f"(imbalance max/min {counts.max() / counts.min():.2f})")
    ax.set_ylim(0, counts.max() * 1.15)
    ax.legend(loc="upper right", framealpha=0.9)
    save_figure(fig, path)


def plot_image_sizes(index: pd.DataFrame, path: str | Path) -> None:
    """Histograms of image widths and heights.

    Parameters
    ----------
    index : pandas.DataFrame
        The index table (columns width, height).
    path : str or Path
        The PNG to write.
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, col in zip(axes, ["width", "height"]):
        values = index[col].to_numpy()
        bins = min(50, max(1, len(np.unique(values))))
        ax.hist(values, bins=bins, color="#55A868", edgecolor="white")
        ax.set_xlabel(f"{col} (pixels)")
        ax.set_ylabel("images")
        ax.set_title(f"{col.capitalize()}: median {np.median(values):g}, "
                     f"range {values.min()}-{values.max()}")
    fig.suptitle(f"Image size distribution (n={len(index)})")
    save_figure(fig, path)


def plot_sample_grid(index: pd.DataFrame, root: str | Path, path: str | Path, seed: int,
                     per_class: int = 6, max_classes: int = 10) -> None:
    """A grid of random images: one row per class (a seeded random subset of classes).

    Parameters
    ----------
    index : pandas.DataFrame
        The index table (columns path, class).
    root : str or Path
        The folder the paths are relative to.
    path : str or Path
        The PNG to write.
    seed : int
        Seeds the choice of classes and images.
    per_class : int
        Images per row.
    max_classes : int
        Rows at most.
    """
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    classes = sorted(index["class"].unique())
    if len(classes) > max_classes:
        classes = sorted(rng.choice(classes, size=max_classes, replace=False).tolist())
    fig, axes = plt.subplots(len(classes), per_class,
                             figsize=(1.2 * per_class + 1.5, 1.2 * len(classes) + 0.8),
                             squeeze=False, layout="constrained")
    for r, cls in enumerate(classes):
        paths = index.loc[index["class"] == cls, "path"].to_numpy()
        pick = rng.choice(paths, size=min(per_class, len(paths)), replace=False)
        for c in range(per_class):
            ax = axes[r][c]
            thumbnail_cell(ax, Path(root) / pick[c] if c < len(pick) else None)
            if c == 0:
                ax.set_ylabel(cls, rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle(f"Sample images ({len(classes)} classes x up to {per_class})")
    save_figure(fig, path)
