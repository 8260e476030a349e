"""Nearest neighbours of every image: the candidates for near-duplicates, and an outlier score.

Features are L2-normalised, so the inner product of two rows is their cosine similarity. An
exact k-nearest-neighbour search (faiss ``knn`` on the inner product, or scikit-learn's brute
force on the equivalent Euclidean distance) runs over blocks of query rows, so the working
memory stays bounded at any number of images (faiss searches the normalised array in place).

- **Candidates**: each image's nearest neighbours are checked for copies by
  :mod:`clusterlens.audit.duplicates` (a cosine threshold alone cannot tell copies from
  look-alikes).
- **Outlier score**: the cosine distance ``1 - similarity`` to the k-th nearest other image;
  high = far from everything else (atypical).
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import numpy as np
import pandas as pd

ENGINES = ("auto", "faiss", "sklearn")
TABLE_COLUMNS = ["path", "class", "duplicate_group", "outlier_score", "outlier_rank",
                 "outlier_rank_in_class"]


@dataclass(frozen=True)
class Neighbours:
    """The k nearest other images of every row.

    Attributes
    ----------
    indices : ndarray of int64, shape (N, k)
        Row indices of the neighbours, most similar first (never the row itself).
    similarities : ndarray of float32, shape (N, k)
        Their cosine similarities, non-increasing along each row.
    """

    indices: np.ndarray
    similarities: np.ndarray


def normalise(X: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, as a C-contiguous float32 copy (an all-zero row stays zero).

    Raises
    ------
    ValueError
        Unless ``X`` is a 2-D array of finite numbers with at least one row and column.
    """
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[0] < 1 or X.shape[1] < 1:
        raise ValueError(f"features must be a non-empty 2-D array, got shape {X.shape}")
    Z = np.array(X, dtype=np.float32, order="C", copy=True)
    if not np.isfinite(Z).all():
        raise ValueError("features contain NaN or infinite values")
    norms = np.linalg.norm(Z, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    Z /= norms
    return Z


def block_rows(n: int, block_mb: float) -> int:
    """Query rows per block so that one block of similarities (rows x ``n`` float32 values,
    plus the search's own temporaries, counted as 4x that) fits in ``block_mb`` MiB."""
    if block_mb <= 0:
        raise ValueError(f"block_mb must be > 0, got {block_mb!r}")
    return int(max(1, min(n, block_mb * 2**20 // (16 * max(n, 1)))))


def _engine(engine: str) -> str:
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}; got {engine!r}")
    if engine != "auto":
        return engine
    return "faiss" if importlib.util.find_spec("faiss") is not None else "sklearn"


def _search(Z: np.ndarray, Q: np.ndarray, k: int, engine: str, model=None):
    """(similarities, indices) of the ``k`` most similar rows of ``Z`` to each row of ``Q``."""
    if engine == "faiss":
        import faiss

        sims, idx = faiss.knn(Q, Z, k, metric=faiss.METRIC_INNER_PRODUCT)
        return sims, idx.astype(np.int64, copy=False)
    dist, idx = model.kneighbors(Q, n_neighbors=k)
    # unit vectors: |a - b|^2 = 2 - 2 cos(a, b)
    return (1.0 - dist.astype(np.float64) ** 2 / 2).astype(np.float32), idx.astype(np.int64)


def _drop_self(rows: np.ndarray, sims: np.ndarray, idx: np.ndarray, k: int):
    """Remove each query row from its own list (or the last entry when it is not there)."""
    is_self = idx == rows[:, None]
    drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), idx.shape[1] - 1)
    keep = np.ones(idx.shape, dtype=bool)
    keep[np.arange(len(rows)), drop] = False
    return sims[keep].reshape(len(rows), k), idx[keep].reshape(len(rows), k)


def nearest_neighbours(Z: np.ndarray, k: int, *, engine: str = "auto",
                       block_mb: float = 256) -> Neighbours:
    """Exact k nearest other rows of every row of ``Z``, by cosine similarity.

    Parameters
    ----------
    Z : ndarray, shape (N, D)
        L2-normalised float32 features (:func:`normalise`).
    k : int
        Neighbours per row, ``1 <= k < N``.
    engine : {"auto", "faiss", "sklearn"}
        ``auto``: faiss when it is installed, else scikit-learn.
    block_mb : float
        Working memory per block of query rows, MiB (:func:`block_rows`).

    Returns
    -------
    Neighbours

    Raises
    ------
    ValueError
        When ``k`` is not in ``[1, N - 1]`` or ``engine`` is unknown.
    """
    n = len(Z)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k < n:
        raise ValueError(f"k must be an integer in [1, {n - 1}] (fewer than the {n} images), "
                         f"got {k!r}")
    engine = _engine(engine)
    model = None
    if engine == "sklearn":
        from sklearn.neighbors import NearestNeighbors

        model = NearestNeighbors(algorithm="brute", metric="euclidean").fit(Z)
    step = block_rows(n, block_mb)
    sims = np.empty((n, k), dtype=np.float32)
    idx = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, step):
        rows = np.arange(start, min(n, start + step))
        s, i = _search(Z, Z[start:start + step], k + 1, engine, model)
        sims[rows], idx[rows] = _drop_self(rows, s, i, k)
    return Neighbours(indices=idx, similarities=sims)


def connected_groups(n: int, row_a: np.ndarray, row_b: np.ndarray) -> np.ndarray:
    """Group of every row: connected components of the graph with edges ``(row_a, row_b)``,
    numbered 0, 1, ... in the order of their first row; -1 for a row in no edge. Returns
    int64, shape (n,)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    groups = np.full(n, -1, dtype=np.int64)
    if len(row_a) == 0:
        return groups
    graph = coo_matrix((np.ones(len(row_a), dtype=np.int8), (row_a, row_b)), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    member = np.zeros(n, dtype=bool)
    member[row_a] = member[row_b] = True
    rows = np.flatnonzero(member)
    # renumber by first row: np.unique's first occurrences, in row order
    _, first = np.unique(comp[rows], return_index=True)
    new_id = np.empty(comp.max() + 1, dtype=np.int64)
    new_id[comp[rows][np.sort(first)]] = np.arange(len(first))
    groups[rows] = new_id[comp[rows]]
    return groups


def outlier_scores(nn: Neighbours, k: int | None = None) -> np.ndarray:
    """Cosine distance to the ``k``-th nearest other image (default: the last one searched),
    float64, shape (N,)."""
    col = nn.similarities.shape[1] - 1 if k is None else k - 1
    return 1.0 - nn.similarities[:, col].astype(np.float64)


def ranks(scores: np.ndarray, classes: np.ndarray | None = None) -> np.ndarray:
    """Rank 1 = highest score, ties by row order; within each class when ``classes`` is given.
    Returns int64, shape (N,)."""
    scores = np.asarray(scores, dtype=np.float64)
    out = np.empty(len(scores), dtype=np.int64)
    groups = [np.arange(len(scores))] if classes is None else [
        np.flatnonzero(classes == c) for c in pd.unique(np.asarray(classes))]
    for rows in groups:
        order = rows[np.argsort(-scores[rows], kind="stable")]
        out[order] = np.arange(1, len(rows) + 1)
    return out


def neighbours_table(paths, classes, groups: np.ndarray, scores: np.ndarray) -> pd.DataFrame:
    """One row per image, in input order, with :data:`TABLE_COLUMNS`."""
    classes = np.asarray(classes)
    return pd.DataFrame({
        "path": list(paths), "class": classes, "duplicate_group": groups,
        "outlier_score": np.round(scores, 6), "outlier_rank": ranks(scores),
        "outlier_rank_in_class": ranks(scores, classes)}, columns=TABLE_COLUMNS)
