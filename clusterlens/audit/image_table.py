"""The per-image table: every result about one image on one row, in index order.

:func:`images_table` joins the image index with the selected clustering (cluster, its
majority class, whether the image's class agrees with it, the distance to the cluster's
centre), the 2-D views (PCA, t-SNE where sampled), the label-issue scores, the neighbour
scores, and a flag and a score for every issue type of the audit
(:mod:`clusterlens.audit.issues`). Every input is checked to be aligned with the index (same paths, same order), so
a stale input is an error rather than a silent misjoin.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from clusterlens.audit.duplicates import IMAGE_COLUMNS as DUPLICATE_COLUMNS
from clusterlens.audit.issues import ISSUE_TYPES, flag_column, score_column
from clusterlens.audit.leaks import LEAK_IMAGE_COLUMNS
from clusterlens.audit.representatives import cluster_majority
from clusterlens.clustering.metrics import NOISE
from clusterlens.core.errors import DataError
from clusterlens.data.quality import QUALITY_COLUMNS

LABEL_ISSUE_COLUMNS = ["label_quality", "suggested_class", "suggested_probability",
                       "is_label_issue", "label_issue_rank"]
NEIGHBOUR_COLUMNS = ["duplicate_group", "outlier_score", "outlier_rank"]
ISSUE_COLUMNS = [c for issue in ISSUE_TYPES for c in (flag_column(issue), score_column(issue))]
COLUMNS = list(dict.fromkeys([
    "path", "split", "class", "given_class", "correction", "width", "height", "cluster",
    "cluster_majority_class", "agrees", "centre_distance", "pca_x", "pca_y", "tsne_x", "tsne_y",
    "umap_x", "umap_y", *LABEL_ISSUE_COLUMNS, *NEIGHBOUR_COLUMNS, "near_duplicate_kind",
    *ISSUE_COLUMNS]))  # is_label_issue is both a label-issue and an issue column


def check_aligned(index: pd.DataFrame, other: pd.DataFrame, name: str,
                  columns: list[str]) -> None:
    """Raise :class:`DataError` unless ``other`` has one row per index row, same paths in
    the same order, and the given columns.

    Parameters
    ----------
    index : DataFrame
        The image index (``path`` column).
    other : DataFrame
        A per-image table (``path`` column).
    name : str
        How the error names ``other`` (its file).
    columns : list of str
        Columns ``other`` must have.
    """
    missing = [c for c in ["path", *columns] if c not in other.columns]
    if missing:
        raise DataError(f"{name} has no column {', '.join(missing)}: re-run `dvc repro`")
    if len(other) != len(index) or not np.array_equal(other["path"].to_numpy(dtype=object),
                                                       index["path"].to_numpy(dtype=object)):
        raise DataError(f"{name} ({len(other)} rows) does not list the index's {len(index)} "
                        "images in index order: it is stale, re-run `dvc repro`")


def tsne_columns(n_images: int, rows: np.ndarray, embedding: np.ndarray, *,
                 name: str = "t-SNE", stage: str = "tsne") -> np.ndarray:
    """The coordinates of a sampled map (the t-SNE's, or ``name`` made by ``stage``: the UMAP's)
    as an ``(n_images, 2)`` array, NaN for images outside the sample.

    Parameters
    ----------
    n_images : int
        Number of images in the index.
    rows : ndarray of shape (n_sample,)
        Index rows of the sampled images.
    embedding : ndarray of shape (n_sample, 2)
        Their t-SNE coordinates.

    Raises
    ------
    DataError
        If ``rows`` and ``embedding`` disagree or a row is out of range.
    """
    rows = np.asarray(rows, dtype=np.int64)
    embedding = np.asarray(embedding, dtype=np.float64)
    if embedding.shape != (len(rows), 2) or (len(rows) and not 0 <= rows.min() <= rows.max()
                                             < n_images):
        raise DataError(f"{name} rows ({len(rows)}) and embedding {embedding.shape} do not fit "
                        f"an index of {n_images} images: re-run `dvc repro {stage}`")
    out = np.full((n_images, 2), np.nan)
    out[rows] = embedding
    return out


def images_table(index: pd.DataFrame, labels: np.ndarray, distance: np.ndarray,
                 pca_2d: np.ndarray, tsne_xy: np.ndarray, label_issues: pd.DataFrame,
                 neighbours: pd.DataFrame, *, umap_xy: np.ndarray | None = None) -> pd.DataFrame:
    """Join everything known about each image into one table, in index order.

    Parameters
    ----------
    index : DataFrame
        The image index (``path``, ``class``, ``width``, ``height``, and ``split``,
        ``given_class``, ``correction`` when it has them: none, the class, none otherwise).
    labels : ndarray of shape (n_images,)
        Cluster label of each image (noise as ``NOISE``).
    distance : ndarray of shape (n_images,)
        Distance to the cluster's centre (see
        :func:`clusterlens.audit.representatives.centre_distances`), NaN for noise.
    pca_2d : ndarray of shape (n_images, 2)
        The first two principal components.
    tsne_xy : ndarray of shape (n_images, 2)
        The t-SNE coordinates, NaN outside the sample (:func:`tsne_columns`).
    label_issues : DataFrame
        Per-image label-issue scores, aligned with the index (:data:`LABEL_ISSUE_COLUMNS`).
    neighbours : DataFrame
        Per-image neighbour scores, aligned with the index (:data:`NEIGHBOUR_COLUMNS`).
    umap_xy : ndarray of shape (n_images, 2), optional
        The UMAP map's coordinates, NaN outside its sample (:func:`tsne_columns`); None: NaN.

    Returns
    -------
    DataFrame
        The columns :data:`COLUMNS`, one row per index row. ``cluster_majority_class`` is
        empty and ``agrees`` False for noise images.

    Raises
    ------
    DataError
        If an input does not have one row per image in index order.
    """
    n = len(index)
    labels = np.asarray(labels).astype(np.int64)
    umap_xy = np.full((n, 2), np.nan) if umap_xy is None else umap_xy
    for name, arr, shape in (("cluster labels", labels, (n,)), ("distances", distance, (n,)),
                             ("PCA 2-D", pca_2d, (n, 2)), ("t-SNE", tsne_xy, (n, 2)),
                             ("UMAP", umap_xy, (n, 2))):
        if np.shape(arr) != shape:
            raise DataError(f"{name} have shape {np.shape(arr)}, expected {shape} for the "
                            f"index's {n} images: re-run `dvc repro`")
    check_aligned(index, label_issues, "the label issues", LABEL_ISSUE_COLUMNS)
    check_aligned(index, neighbours, "the neighbour scores",
                  NEIGHBOUR_COLUMNS + DUPLICATE_COLUMNS + LEAK_IMAGE_COLUMNS)
    missing = [c for c in QUALITY_COLUMNS if c not in index.columns]
    if missing:
        raise DataError(f"the index has no column {', '.join(missing)}: re-run `dvc repro`")
    classes = index["class"].astype(str).to_numpy(dtype=object)
    majority = {c: m for c, (m, _) in cluster_majority(labels, classes).items()}
    major = np.array([majority.get(int(c), "") for c in labels], dtype=object)
    out = pd.DataFrame({
        "path": index["path"].to_numpy(dtype=object), "class": classes, "cluster": labels,
        "cluster_majority_class": major, "agrees": (labels != NOISE) & (major == classes),
        "centre_distance": np.asarray(distance, dtype=np.float64),
        "pca_x": np.asarray(pca_2d[:, 0], dtype=np.float64),
        "pca_y": np.asarray(pca_2d[:, 1], dtype=np.float64),
        "tsne_x": tsne_xy[:, 0], "tsne_y": tsne_xy[:, 1],
        "umap_x": np.asarray(umap_xy[:, 0], dtype=np.float64),
        "umap_y": np.asarray(umap_xy[:, 1], dtype=np.float64)})
    for col in LABEL_ISSUE_COLUMNS:
        out[col] = label_issues[col].to_numpy()
    for col in NEIGHBOUR_COLUMNS:
        out[col] = neighbours[col].to_numpy()
    for col in DUPLICATE_COLUMNS + LEAK_IMAGE_COLUMNS:
        out[col] = neighbours[col].to_numpy()
    for col, default in (("split", ""), ("given_class", None), ("correction", "")):
        out[col] = index[col].to_numpy(dtype=object) if col in index else (
            classes if default is None else np.full(n, default, dtype=object))
    for col in ("width", "height"):
        out[col] = index[col].to_numpy(dtype=np.int64)
    out["label_issue_score"] = 1.0 - out["label_quality"].astype(np.float64)
    for col in QUALITY_COLUMNS:
        out[col] = index[col].to_numpy()
    out["agrees"] = out["agrees"].astype(bool)
    for issue in ISSUE_TYPES:
        out[flag_column(issue)] = out[flag_column(issue)].astype(bool)
    return out[COLUMNS]


def headline(table: pd.DataFrame, model: str) -> dict:
    """The per-image table's headline numbers.

    Parameters
    ----------
    table : DataFrame
        The table of :func:`images_table`.
    model : str
        The selected model's name.

    Returns
    -------
    dict
        ``images``, ``model``, ``noise`` (images in no cluster), ``agree_fraction`` (share of
        clustered images whose class is their cluster's majority class), ``label_issues``,
        ``label_issues_suggestion_is_cluster_majority`` (suspected label issues whose suggested
        class is their cluster's majority class: two independent signals agree),
        ``in_duplicate_groups``.
    """
    clustered = table["cluster"] != NOISE
    issues = table["is_label_issue"]
    return {"images": int(len(table)), "model": model, "noise": int((~clustered).sum()),
            "agree_fraction": float(table.loc[clustered, "agrees"].mean())
            if clustered.any() else None,
            "label_issues": int(issues.sum()),
            "label_issues_suggestion_is_cluster_majority": int(
                (issues & (table["suggested_class"] == table["cluster_majority_class"])).sum()),
            "in_duplicate_groups": int((table["duplicate_group"] >= 0).sum())}
