"""Cluster centres, each image's distance to its cluster's centre, and each cluster's
representatives (the members nearest the centre) and doubtful members.

The centre of a cluster is the mean of its members' coordinates (the PCA scores in the
pipeline); the distance is Euclidean. Noise images (label ``NOISE``) have no centre: their
distance is NaN. Density methods with a membership notion (HDBSCAN's probabilities) are
treated the same way: the centre distance is used for every method, so that the ranking means
the same thing whichever model is selected.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from clusterlens.clustering.metrics import NOISE
from clusterlens.core.errors import DataError


def centre_distances(X: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Distance of each image to the centroid of its cluster.

    Parameters
    ----------
    X : ndarray of shape (n_images, n_dims)
        Coordinates of each image (e.g. PCA scores).
    labels : ndarray of shape (n_images,)
        Cluster label of each image (noise as ``NOISE``).

    Returns
    -------
    ndarray of shape (n_images,), float64
        Euclidean distance to the mean of the image's cluster; NaN for noise.

    Raises
    ------
    DataError
        If ``X`` and ``labels`` differ in length.
    """
    X = np.asarray(X, dtype=np.float64)
    labels = np.asarray(labels)
    if X.ndim != 2 or len(X) != len(labels):
        raise DataError(f"{len(labels)} cluster labels but coordinates of shape {X.shape}")
    out = np.full(len(labels), np.nan)
    # One stable sort instead of a mask per cluster (O(N log N), not O(N x clusters)): each
    # cluster's rows stay in index order, so its mean is the same sum in the same order.
    order = np.argsort(labels, kind="stable")
    clusters, starts = np.unique(labels[order], return_index=True)
    for c, start, stop in zip(clusters, starts, [*starts[1:], len(labels)]):
        if c == NOISE:
            continue
        rows = order[start:stop]
        members = X[rows]
        out[rows] = np.linalg.norm(members - members.mean(axis=0), axis=1)
    return out


def cluster_majority(labels: np.ndarray, classes: np.ndarray) -> dict[int, tuple[str, int]]:
    """Each cluster's most frequent class and how many members have it.

    Parameters
    ----------
    labels : ndarray of shape (n_images,)
        Cluster label of each image.
    classes : ndarray of shape (n_images,)
        Class name of each image.

    Returns
    -------
    dict
        Cluster label -> (majority class, count), noise excluded; a tie goes to the class first
        in sorted order (as in :func:`clusterlens.analysis.composition.composition_table`).
    """
    counts = pd.crosstab(pd.Series(np.asarray(labels), name="cluster"),
                         pd.Series(np.asarray(classes, dtype=object), name="class"))
    counts = counts.reindex(columns=sorted(counts.columns))
    out = {}
    for cluster, row in counts.iterrows():
        if cluster != NOISE:
            j = int(np.argmax(row.to_numpy()))
            out[int(cluster)] = (str(counts.columns[j]), int(row.iloc[j]))
    return out


def _member(row: int, paths, classes, distance: np.ndarray) -> dict:
    return {"row": int(row), "path": str(paths[row]), "class": str(classes[row]),
            "distance": float(distance[row])}


def representatives(labels: np.ndarray, distance: np.ndarray, paths, classes,
                    nearest: int, doubtful: int) -> list[dict]:
    """Per cluster, the members nearest its centre and its most doubtful members.

    Parameters
    ----------
    labels : ndarray of shape (n_images,)
        Cluster label of each image (noise is skipped).
    distance : ndarray of shape (n_images,)
        Distance to the cluster's centre (:func:`centre_distances`).
    paths, classes : sequence of shape (n_images,)
        Each image's path and class name.
    nearest : int
        How many representatives per cluster (all members when fewer).
    doubtful : int
        How many doubtful members per cluster: members whose class is not the cluster's
        majority class first, then the farthest from the centre (farthest first within each
        group). In a cluster smaller than ``nearest + doubtful`` the two lists can overlap.

    Returns
    -------
    list of dict
        One entry per cluster, largest first (ties by cluster id): ``cluster``, ``size``,
        ``majority_class``, ``majority_share``, ``nearest`` and ``doubtful`` (lists of
        ``{"row", "path", "class", "distance"}``, plus ``agrees`` for doubtful members).

    Raises
    ------
    ValueError
        If ``nearest`` < 1 or ``doubtful`` < 0.
    """
    if nearest < 1 or doubtful < 0:
        raise ValueError(f"need nearest >= 1 and doubtful >= 0, got {nearest} and {doubtful}")
    labels = np.asarray(labels)
    distance = np.asarray(distance, dtype=np.float64)
    classes = np.asarray(classes, dtype=object)
    majority = cluster_majority(labels, classes)
    grouped = np.argsort(labels, kind="stable")  # each cluster's rows, in index order
    clusters, starts, counts = np.unique(labels[grouped], return_index=True, return_counts=True)
    where = {int(c): (int(a), int(k)) for c, a, k in zip(clusters, starts, counts)}
    sizes = {c: where[c][1] for c in majority}
    out = []
    for c in sorted(majority, key=lambda c: (-sizes[c], c)):
        members = grouped[where[c][0]:where[c][0] + sizes[c]]
        near = members[np.argsort(distance[members], kind="stable")][:nearest]
        agrees = classes[members] == majority[c][0]
        order = np.lexsort((-distance[members], agrees))  # disagreeing first, then farthest
        doubt = members[order][:doubtful]
        out.append({
            "cluster": int(c), "size": sizes[c], "majority_class": majority[c][0],
            "majority_share": majority[c][1] / sizes[c],
            "nearest": [_member(r, paths, classes, distance) for r in near],
            "doubtful": [{**_member(r, paths, classes, distance),
                          "agrees": bool(classes[r] == majority[c][0])} for r in doubt]})
    return out


def nearest_rows(document: dict, model: str) -> dict[int, list[int]]:
    """Cluster -> its representatives' index rows, nearest the centre first.

    Parameters
    ----------
    document : dict
        The representatives document: ``model`` and ``clusters`` (see :func:`representatives`).
    model : str
        The model the caller's labels come from (``<method>/<point>``).

    Returns
    -------
    dict
        Cluster label -> list of index rows.

    Raises
    ------
    DataError
        If the document was computed for another model (it is stale).
    """
    if document.get("model") != model:
        raise DataError(f"the representatives are of {document.get('model')!r}, not of the "
                        f"selected model {model!r}: run `dvc repro images`")
    return {int(c["cluster"]): [int(m["row"]) for m in c["nearest"]]
            for c in document["clusters"]}
