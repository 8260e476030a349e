"""Macro-categories: a hierarchical tree over the class centroids, its cuts, and purity.

The classes' centroids (means of their rows, e.g. in PCA space) are merged by a scipy linkage
into a tree; cutting the tree gives data-driven groups of classes ("macro-categories"). Clusters
can then be scored against the macro labels as well as against the fine classes.

Cut names: ``g<N>`` = the tree cut into (at most) N groups (``fcluster(Z, N, "maxclust")``);
``h<P>`` = the tree cut at P% of the maximum merge height
(``fcluster(Z, P/100 * max(Z[:, 2]), "distance")``). Group ids are scipy's fcluster ids minus 1,
so a cut equals an independent ``fcluster`` call exactly, not just up to relabelling.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.cluster.hierarchy import cophenet, fcluster, leaves_list, linkage
from scipy.spatial.distance import pdist

from clusterlens.clustering.metrics import purity
from clusterlens.core.errors import DataError
from clusterlens.core.io import read_table


# --------------------------------------------------------------------------- classes
def class_names(index: pd.DataFrame, source: str = "the index") -> list[str]:
    """Class names in label order (label i -> ``names[i]``).

    Parameters
    ----------
    index : DataFrame
        One row per image, with ``label`` and ``class`` columns.
    source : str
        Where the index came from, for messages.

    Returns
    -------
    list of str

    Raises
    ------
    DataError
        If labels and class names do not map one to one, or labels are not ``0..C-1``.
    """
    pairs = index[["label", "class"]].drop_duplicates()
    labels = pairs["label"].to_numpy()
    if len(pairs) != pairs["label"].nunique() or pairs["class"].nunique() != len(pairs):
        raise DataError(f"{source}: labels and class names do not map one to one; "
                        "re-run `dvc repro index`")
    if sorted(labels.tolist()) != list(range(len(pairs))):
        raise DataError(f"{source}: labels must be 0..C-1; re-run `dvc repro index`")
    return [str(c) for c in pairs.sort_values("label")["class"]]


def class_centroids(X: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """The mean row of every class, computed in float64.

    Parameters
    ----------
    X : ndarray of shape (N, d)
    labels : ndarray of shape (N,)
        Class labels ``0..n_classes-1``.
    n_classes : int

    Returns
    -------
    ndarray of shape (n_classes, d), float64
    """
    X = np.asarray(X, dtype=np.float64)
    labels = np.asarray(labels)
    return np.stack([X[labels == c].mean(axis=0) for c in range(n_classes)])


# --------------------------------------------------------------------------- tree and cuts
def build_tree(centroids: np.ndarray, method: str = "ward") -> np.ndarray:
    """The scipy linkage matrix over the centroids (Euclidean).

    Parameters
    ----------
    centroids : ndarray of shape (C, d)
    method : str
        A scipy linkage method (``ward``, ``complete``, ``average``...).

    Returns
    -------
    ndarray of shape (C - 1, 4)

    Raises
    ------
    DataError
        If there are fewer than 2 centroids.
    """
    if len(centroids) < 2:
        raise DataError(f"a tree needs at least 2 classes, got {len(centroids)}")
    return linkage(np.asarray(centroids, dtype=np.float64), method=method, metric="euclidean")


AUTO_CUTS = 5  # at most this many g<N> cuts under ``macro.groups: auto``


def auto_groups(n_classes: int, cuts: int = AUTO_CUTS) -> list[int]:
    """Group counts that fit the class count: ``macro.groups: auto``.

    Up to ``cuts`` counts spaced geometrically from 2 to ``min(C - 1, max(4, C // 2))``,
    rounded (halves up) and without repeats: 5 classes give ``[2, 3, 4]``, 10 give
    ``[2, 3, 4, 5]``, 101 give ``[2, 4, 10, 22, 50]``; under 3 classes there is no cut.

    Parameters
    ----------
    n_classes : int
        The number of classes C.
    cuts : int
        The most counts returned.

    Returns
    -------
    list of int
        Increasing, each in ``[2, C - 1]``.
    """
    high = min(n_classes - 1, max(4, n_classes // 2))
    if high < 2:
        return []
    values = np.geomspace(2, high, cuts) if high > 2 else [2]
    return sorted({int(np.floor(v + 0.5)) for v in values})


def resolve_groups(groups: list[int] | str, n_classes: int) -> list[int]:
    """``macro.groups`` as group counts: :func:`auto_groups` for ``"auto"``, else the list."""
    return auto_groups(n_classes) if groups == "auto" else list(groups)


def split_granularities(groups: list[int], n_classes: int) -> tuple[list[int], list[int]]:
    """Split group counts into (kept, skipped): a cut into N >= C groups would just be the
    classes, so it is skipped."""
    return [g for g in groups if g < n_classes], [g for g in groups if g >= n_classes]


def group_cut_name(n: int) -> str:
    """The name of the cut into at most ``n`` groups, ``g<n>``."""
    return f"g{n}"


def height_cut_name(ratio: float) -> str:
    """The name of the cut at ``ratio`` x the maximum merge height, ``h<percent>``."""
    return f"h{round(ratio * 100, 4):g}"


def cut_maxclust(Z: np.ndarray, n: int) -> np.ndarray:
    """Class -> group id (0-based) for the tree cut into at most ``n`` groups."""
    return fcluster(Z, n, criterion="maxclust").astype(np.int64) - 1


def cut_at_height(Z: np.ndarray, ratio: float) -> tuple[np.ndarray, float]:
    """The cut at ``ratio`` x the maximum merge height.

    Returns
    -------
    labels : ndarray of int64
        Class -> group id (0-based).
    height : float
        The absolute cut height.
    """
    height = float(ratio * Z[:, 2].max())
    return fcluster(Z, height, criterion="distance").astype(np.int64) - 1, height


def make_cuts(Z: np.ndarray, groups: list[int], ratios: list[float]) -> dict[str, dict]:
    """Every cut, by name, in the order given: ``g<N>`` cuts first, then ``h<P>`` cuts.

    Returns
    -------
    dict
        Cut name -> ``criterion``, ``requested_groups`` (``g``) or ``height_ratio`` and
        ``height`` (``h``), ``n_groups`` and ``labels`` (class -> group id).
    """
    cuts = {}
    for n in groups:
        lab = cut_maxclust(Z, n)
        cuts[group_cut_name(n)] = {"criterion": "maxclust", "requested_groups": n,
                                   "n_groups": int(len(np.unique(lab))), "labels": lab}
    for r in ratios:
        lab, h = cut_at_height(Z, r)
        cuts[height_cut_name(r)] = {"criterion": "distance", "height_ratio": r, "height": h,
                                    "n_groups": int(len(np.unique(lab))), "labels": lab}
    return cuts


def group_members(labels: np.ndarray, names: list[str]) -> dict[str, list[str]]:
    """Group id (as a string) -> its class names, in class order."""
    return {str(g): [names[i] for i in np.flatnonzero(labels == g)]
            for g in np.unique(labels).tolist()}


def cophenetic_correlation(Z: np.ndarray, centroids: np.ndarray) -> float:
    """How faithfully the tree keeps the centroid distances (NaN under 3 classes)."""
    if len(centroids) < 3:
        return float("nan")
    return float(cophenet(Z, pdist(centroids))[0])


def groups_at(Z: np.ndarray, ratio: float) -> int:
    """The number of groups below ``ratio`` x the maximum merge height."""
    return int(len(np.unique(fcluster(Z, ratio * float(Z[:, 2].max()), "distance"))))


# --------------------------------------------------------------------------- tables
def class_groups_table(names: list[str], labels: np.ndarray, cuts: dict[str, dict]) -> pd.DataFrame:
    """One row per class: name, label, image count, then the group id of every cut."""
    n = len(names)
    table = pd.DataFrame({"class": names, "label": np.arange(n),
                          "images": np.bincount(labels, minlength=n)})
    for name, cut in cuts.items():
        table[name] = cut["labels"]
    return table


def groups_listing(Z: np.ndarray, names: list[str], cuts: dict[str, dict],
                   method: str) -> dict:
    """The tree as a readable mapping: leaf order and, per cut, group -> class names."""
    return {"classes": len(names), "linkage": method, "max_height": float(Z[:, 2].max()),
            "leaf_order": [names[i] for i in leaves_list(Z)],
            "cuts": {name: {**{k: v for k, v in cut.items() if k != "labels"},
                            "groups": group_members(cut["labels"], names)}
                     for name, cut in cuts.items()}}


def height_cuts_table(cuts: dict[str, dict]) -> pd.DataFrame:
    """Height ratio, absolute height (6 decimals) and group count of every ``h<P>`` cut."""
    heights = [c for c in cuts.values() if c["criterion"] == "distance"]
    return pd.DataFrame({"height_ratio": [c["height_ratio"] for c in heights],
                         "height": [round(c["height"], 6) for c in heights],
                         "groups": [c["n_groups"] for c in heights]})


def tree_summary(Z: np.ndarray, centroids: np.ndarray, cuts: dict[str, dict], method: str,
                 color_threshold: float, skipped: list[int], heatmap_classes: int) -> dict:
    """The tree's metrics: cophenetic correlation, heights, group counts of every cut.

    Parameters
    ----------
    Z, centroids : ndarray
        The tree and the centroids it was built from.
    cuts : dict
        From :func:`make_cuts`.
    method : str
        The linkage method (recorded).
    color_threshold : float
        The dendrogram colour threshold, as a fraction of the maximum merge height.
    skipped : list of int
        Group counts not below the class count (recorded).
    heatmap_classes : int
        The number of classes the distance heatmap shows (recorded).
    """
    max_height = float(Z[:, 2].max())
    maxclust = {n: c for n, c in cuts.items() if c["criterion"] == "maxclust"}
    return {
        "classes": len(centroids), "linkage": method,
        "cophenetic_correlation": cophenetic_correlation(Z, centroids),
        "max_height": max_height, "color_threshold": color_threshold * max_height,
        "groups_at_color_threshold": groups_at(Z, color_threshold),
        "skipped_groups": skipped,
        "groups": {n: c["n_groups"] for n, c in maxclust.items()},
        "largest_group": {n: int(np.bincount(c["labels"]).max()) for n, c in maxclust.items()},
        "groups_at_height": {n: c["n_groups"] for n, c in cuts.items()
                             if c["criterion"] == "distance"},
        "heatmap_classes": heatmap_classes,
    }


# --------------------------------------------------------------------------- purity
def read_class_groups(path: str | os.PathLike, names: list[str],
                      index_source: str = "the index") -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Read a class -> group table (see :func:`class_groups_table`) and its ``g<N>`` cuts.

    Parameters
    ----------
    path : str or PathLike
        The table (CSV).
    names : list of str
        The class names in label order, which the table must list in the same order.
    index_source : str
        Where ``names`` came from, for messages.

    Returns
    -------
    table : DataFrame
    cuts : dict
        ``g<N>`` -> class label -> group id (int64 array).

    Raises
    ------
    DataError
        If the file is missing or lists other classes.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} is missing: run `dvc repro macro`")
    table = read_table(path)
    if table["class"].astype(str).tolist() != names:
        raise DataError(f"{path} does not list the classes of {index_source}: "
                        "re-run `dvc repro macro`")
    cuts = {c: table[c].to_numpy(np.int64) for c in table.columns
            if c.startswith("g") and c[1:].isdigit()}
    return table, cuts


def purity_table(cluster_labels: dict[int, np.ndarray], fine: np.ndarray,
                 cuts: dict[str, np.ndarray]) -> pd.DataFrame:
    """Purity of every clustering against the fine labels and against every macro cut.

    Parameters
    ----------
    cluster_labels : dict
        K -> cluster label per image.
    fine : ndarray of int
        The class label per image.
    cuts : dict
        Cut name -> class label -> group id.

    Returns
    -------
    DataFrame
        Columns ``k``, ``fine``, then one per cut; one row per K.
    """
    rows = []
    for k, pred in cluster_labels.items():
        row = {"k": k, "fine": purity(fine, pred)}
        for name, class_to_group in cuts.items():
            row[name] = purity(class_to_group[fine], pred)
        rows.append(row)
    return pd.DataFrame(rows, columns=["k", "fine", *cuts])


def purity_targets(cuts: dict[str, np.ndarray], n_classes: int) -> dict[str, int]:
    """Target column -> number of target categories, coarse to fine (``fine`` last)."""
    out = {name: int(len(np.unique(g))) for name, g in cuts.items()}
    out = dict(sorted(out.items(), key=lambda t: t[1]))
    out["fine"] = n_classes
    return out


def purity_summary(table: pd.DataFrame, targets: dict[str, int], n_classes: int,
                   row_names: list[str]) -> dict:
    """The purity metrics: every row's purity per target (under ``row_names``), and the best K
    per target (the first on a tie)."""
    best = {}
    for t in targets:
        i = int(table[t].to_numpy().argmax())
        best[t] = {"k": int(table["k"].iloc[i]), "purity": float(table[t].iloc[i])}
    return {"classes": n_classes, "targets": targets,
            **{name: {t: float(r[t]) for t in targets}
               for name, (_, r) in zip(row_names, table.iterrows())},
            "best": best}
