"""The gap figure: best K-Means purity vs supervised test accuracy, per target granularity."""
from __future__ import annotations

import os

import numpy as np

from clusterlens.report.figures.style import save_figure


def plot_gap(summary: dict, path: str | os.PathLike) -> None:
    """Draw unsupervised and supervised scores side by side, coarsest target first.

    Parameters
    ----------
    summary : dict
        The output of :func:`clusterlens.analysis.summary.build_summary`.
    path : str or PathLike
        The PNG to write.

    Notes
    -----
    One pair of bars per target (macro groups by size, then the fine classes), a tick for the
    random baseline, and a star for the selected model's Hungarian accuracy on the fine classes.
    """
    import matplotlib.pyplot as plt

    levels = [k for k in summary if k != "fine"]
    levels = sorted(levels, key=lambda k: summary[k]["groups"]) + ["fine"]
    labels = [f"{summary[k]['groups']} macro groups\n({k})" if k != "fine"
              else f"{summary['fine']['classes']} fine classes" for k in levels]
    kmeans = [summary[k]["kmeans_best_purity"] for k in levels]
    sup = [summary[k]["supervised_test_accuracy"] for k in levels]
    rand = [summary[k]["random_baseline"] for k in levels]
    x = np.arange(len(levels))
    fig, ax = plt.subplots(figsize=(max(6.5, 2.0 * len(levels) + 2.5), 4.8))
    bars = [(kmeans, "best K-Means purity (unsupervised)", "#4C72B0", -0.2),
            (sup, "logistic regression test accuracy (supervised)", "#DD8452", 0.2)]
    for values, label, color, off in bars:
        vals = [np.nan if v is None else v for v in values]
        ax.bar(x + off, vals, 0.4, label=label, color=color)
        for i, v in enumerate(vals):
            if np.isfinite(v):
                ax.text(i + off, v + 0.01, f"{v:.3f}", ha="center", fontsize=8)
    ax.scatter(x, rand, marker="_", s=600, color="black", zorder=3, label="random 1/categories")
    hung = summary["fine"].get("unsupervised_hungarian_accuracy")
    if hung is not None:
        ax.scatter([x[-1] - 0.2], [hung], marker="*", s=120, color="#C44E52", zorder=4,
                   label=f"selected model {summary['fine']['unsupervised_model']}: "
                         f"Hungarian accuracy")
    ax.set_xticks(x, labels, fontsize=9)
    ax.set_ylim(0, 1.12)
    ax.set_xlabel("target categories")
    ax.set_ylabel("score (fraction of images)")
    ax.set_title("The gap: unsupervised clustering vs the supervised upper bound")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    save_figure(fig, path)
