"""What is inside the clusters of one clustering: per-cluster class make-up and entropy.

A clustering's labels (one per image, noise as :data:`clusterlens.clustering.metrics.NOISE`) against each
image's class name give one row per cluster: its size, its share of all images, its top classes
with counts and percentages, and its class entropy in bits. The figures drawn from these
tables are in :mod:`clusterlens.report.figures.composition`.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from clusterlens.clustering.metrics import NOISE
from clusterlens.core.errors import DataError

TOP = 5


def entropy_bits(counts: np.ndarray) -> float:
    """Shannon entropy of a count vector, in bits.

    Parameters
    ----------
    counts : ndarray of int
        How many images of each class a cluster holds (zeros are ignored).

    Returns
    -------
    float
        The entropy in bits; 0.0 for a pure cluster.
    """
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum()) + 0.0


def composition_table(labels: np.ndarray, classes: np.ndarray, top: int = TOP) -> pd.DataFrame:
    """One row per cluster: size, share, top classes and entropy.

    Parameters
    ----------
    labels : ndarray of shape (n_images,)
        Cluster label of each image (noise as ``NOISE``).
    classes : ndarray of shape (n_images,)
        Class name of each image.
    top : int, default 5
        How many of the most frequent classes get their own columns.

    Returns
    -------
    DataFrame
        Columns ``cluster, size, share_pct, entropy_bits, classes`` and, for i in 1..top,
        ``top<i>_class, top<i>_count, top<i>_pct`` (empty class and 0 when a cluster holds fewer
        classes). Largest cluster first (ties by cluster id), noise last; ``share_pct`` and
        percentages rounded to 2 decimals, ``entropy_bits`` to 4.

    Raises
    ------
    DataError
        If ``labels`` and ``classes`` differ in length.
    """
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
    """The cluster-by-class matrix, each row divided by the cluster's size.

    Parameters
    ----------
    labels : ndarray of shape (n_images,)
        Cluster label of each image.
    classes : ndarray of shape (n_images,)
        Class name of each image.
    class_order : list of str
        The columns, in this order (a class no image has gets a column of zeros).

    Returns
    -------
    DataFrame
        Index: cluster labels; columns: ``class_order``; each row sums to 1.
    """
    counts = pd.crosstab(pd.Series(labels, name="cluster"), pd.Series(classes, name="class"))
    counts = counts.reindex(columns=class_order, fill_value=0)
    return counts.div(counts.sum(axis=1), axis=0)
