"""Agglomerative merge trees (scipy linkage format): build one, cut it into K clusters.

Shared by the exact route (:mod:`clusterlens.clustering.methods`) and the two-step route over K-Means
cells (:mod:`clusterlens.clustering.two_step`).
"""
from __future__ import annotations

import numpy as np


def linkage_tree(X, method: str) -> np.ndarray:
    """The full merge tree on all points.

    Parameters
    ----------
    X : array-like of shape (n, d)
        The points (converted to float64).
    method : {"ward", "single", "complete", "average"}
        The linkage. ward and single use fastcluster's O(N)-memory vector routine; complete and
        average its O(N^2)-memory routine on the condensed distance matrix.

    Returns
    -------
    ndarray of shape (n - 1, 4)
        The scipy linkage matrix.
    """
    import fastcluster

    X = np.asarray(X, dtype=np.float64)
    if method in ("ward", "single"):
        return fastcluster.linkage_vector(X, method=method, metric="euclidean")
    return fastcluster.linkage(X, method=method, metric="euclidean")


def cut_heights(Z: np.ndarray, ks: list[int]) -> dict[int, float]:
    """Heights at which a horizontal cut of a monotone tree leaves K clusters.

    Parameters
    ----------
    Z : ndarray of shape (n - 1, 4)
        A scipy linkage matrix.
    ks : list of int
        Numbers of clusters, each in [2, n].

    Returns
    -------
    dict of int to float
        For each K, the height midway between the merge that would leave K - 1 clusters and the
        one before it.
    """
    n = len(Z) + 1
    out = {}
    for k in ks:
        below = Z[n - k - 1, 2] if n - k - 1 >= 0 else 0.0
        above = Z[n - k, 2]
        out[k] = float((below + above) / 2)
    return out


def first_seen_order(labels: np.ndarray) -> np.ndarray:
    """Renumber labels 0..K-1 in order of their first point (the numbering of scipy's
    ``cut_tree``).

    Parameters
    ----------
    labels : ndarray of shape (n,)
        Any integer labels.

    Returns
    -------
    ndarray of shape (n,), int64
    """
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[inverse.ravel()]


def cut_tree_at(Z: np.ndarray, ks: list[int]) -> dict[int, np.ndarray]:
    """The tree cut into K clusters, for every K.

    The clusters left after the tree's first N - K merges, numbered in order of their first
    point: the labels of scipy's ``cut_tree``, in O(N) per K (``cut_tree`` walks every merged
    subtree in Python, O(N^2) for chained trees such as single linkage's). A cut that falls
    between merges of equal height follows the tree's own merge order, where scipy may take
    another of the tied merges.

    Parameters
    ----------
    Z : ndarray of shape (n - 1, 4)
        A scipy linkage matrix.
    ks : list of int
        Numbers of clusters, each in [1, n].

    Returns
    -------
    dict of int to ndarray of shape (n,), int64
        The labels of every point for each K.
    """
    n = len(Z) + 1
    left = Z[:, 0].astype(np.int64).tolist()
    right = Z[:, 1].astype(np.int64).tolist()
    merged_at = np.full(2 * n - 1, n - 1, dtype=np.int64)  # row that merges each node away
    merged_at[Z[:, 0].astype(np.int64)] = np.arange(n - 1)
    merged_at[Z[:, 1].astype(np.int64)] = np.arange(n - 1)
    made_at = np.concatenate([np.full(n, -1, dtype=np.int64), np.arange(n - 1)])
    out = {}
    for k in sorted(ks):
        m = n - k  # merges applied
        label = np.full(2 * n - 1, -1, dtype=np.int64)
        roots = np.flatnonzero((made_at < m) & (merged_at >= m))  # the K clusters' top nodes
        label[roots] = np.arange(len(roots))
        lab = label.tolist()
        for i in range(m - 1, -1, -1):  # top-down: a merged node passes its cluster on
            lab[left[i]] = lab[right[i]] = lab[n + i]
        out[k] = first_seen_order(np.asarray(lab[:n], dtype=np.int64))
    return out
