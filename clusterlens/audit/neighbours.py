"""Nearest neighbours of every image: near-duplicates, their groups and an outlier score.

Features are L2-normalised, so the inner product of two rows is their cosine similarity. An
exact k-nearest-neighbour search (faiss ``knn`` on the inner product, or scikit-learn's brute
force on the equivalent Euclidean distance) runs over blocks of query rows, so the working
memory stays bounded at any number of images (faiss searches the normalised array in place).

- **Near-duplicates**: every pair of distinct images whose similarity is at least a threshold.
  Pairs come from the neighbour lists; a row whose k-th neighbour is itself above the
  threshold (a group larger than k) is searched again over all images, so no pair is missed.
- **Groups**: the connected components of the near-duplicate graph (within and across
  classes); an image in no pair has group -1.
- **Outlier score**: the cosine distance ``1 - similarity`` to the k-th nearest other image;
  high = far from everything else (atypical).
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import numpy as np
import pandas as pd

ENGINES = ("auto", "faiss", "sklearn")
# duplicate_similarity: auto (see auto_duplicate_similarity)
PHOTO_SIMILARITY = 0.9
TINY_SIMILARITY = 0.97
TINY_SIDE = 16
MAX_PAIRS = 5_000_000
PAIR_COLUMNS = ["row_a", "row_b", "path_a", "path_b", "class_a", "class_b", "similarity",
                "label_conflict", "group"]
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


@dataclass(frozen=True)
class DuplicatePairs:
    """Near-duplicate pairs, ``row_a < row_b``, sorted by similarity (highest first).

    Attributes
    ----------
    row_a, row_b : ndarray of int64, shape (P,)
    similarity : ndarray of float32, shape (P,)
    """

    row_a: np.ndarray
    row_b: np.ndarray
    similarity: np.ndarray

    def __len__(self) -> int:
        return len(self.row_a)


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


def duplicate_pairs(Z: np.ndarray, nn: Neighbours, threshold: float, *, block_mb: float = 256,
                    max_pairs: int | None = None) -> DuplicatePairs:
    """Every pair of distinct rows with cosine similarity ``>= threshold``.

    Rows whose k-th neighbour is already at or above the threshold may have more such
    partners than their list holds: those rows are compared with all rows, block by block.

    Parameters
    ----------
    Z : ndarray, shape (N, D)
        The normalised features :func:`nearest_neighbours` searched.
    nn : Neighbours
        Their neighbours.
    threshold : float
        Cosine similarity, in (0, 1].
    block_mb : float
        Working memory per block of the full comparison, MiB.
    max_pairs : int, optional
        Refuse (``ValueError``) to collect more pairs than this (default :data:`MAX_PAIRS`):
        the threshold is too low.

    Returns
    -------
    DuplicatePairs
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
    max_pairs = MAX_PAIRS if max_pairs is None else max_pairs
    n, k = nn.indices.shape
    rows = np.repeat(np.arange(n, dtype=np.int64), k)
    hit = nn.similarities.ravel() >= threshold
    a, b, s = [rows[hit]], [nn.indices.ravel()[hit]], [nn.similarities.ravel()[hit]]
    full = np.flatnonzero(nn.similarities[:, -1] >= threshold)
    step = block_rows(n, block_mb)
    for start in range(0, len(full), step):
        q = full[start:start + step]
        S = Z[q] @ Z.T
        S[np.arange(len(q)), q] = -np.inf
        qi, j = np.nonzero(S >= threshold)
        a.append(q[qi]), b.append(j.astype(np.int64)), s.append(S[qi, j])
        if sum(map(len, a)) > 4 * max_pairs:  # each pair is found at most 4 times
            raise ValueError(_too_many(threshold, max_pairs))
    a, b, s = np.concatenate(a), np.concatenate(b), np.concatenate(s).astype(np.float32)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    # one entry per pair (found from both ends): keep the highest similarity
    order = np.lexsort((-s, hi, lo))
    lo, hi, s = lo[order], hi[order], s[order]
    first = np.ones(len(lo), dtype=bool)
    first[1:] = (lo[1:] != lo[:-1]) | (hi[1:] != hi[:-1])
    lo, hi, s = lo[first], hi[first], s[first]
    if len(lo) > max_pairs:
        raise ValueError(_too_many(threshold, max_pairs))
    order = np.lexsort((hi, lo, -s))
    return DuplicatePairs(row_a=lo[order], row_b=hi[order], similarity=s[order])


def _too_many(threshold: float, max_pairs: int) -> str:
    return (f"= {threshold} gives more than {max_pairs:,} near-duplicate pairs: raise it")


def duplicate_groups(n: int, pairs: DuplicatePairs) -> np.ndarray:
    """Group of every row: connected components of the pair graph, numbered 0, 1, ... in the
    order of their first row; -1 for a row in no pair. Returns int64, shape (n,)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    groups = np.full(n, -1, dtype=np.int64)
    if len(pairs) == 0:
        return groups
    graph = coo_matrix((np.ones(len(pairs), dtype=np.int8), (pairs.row_a, pairs.row_b)),
                       shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    member = np.zeros(n, dtype=bool)
    member[pairs.row_a] = member[pairs.row_b] = True
    rows = np.flatnonzero(member)
    # renumber by first row: np.unique's first occurrences, in row order
    _, first = np.unique(comp[rows], return_index=True)
    new_id = np.empty(comp.max() + 1, dtype=np.int64)
    new_id[comp[rows][np.sort(first)]] = np.arange(len(first))
    groups[rows] = new_id[comp[rows]]
    return groups


def outlier_scores(nn: Neighbours) -> np.ndarray:
    """Cosine distance to the k-th nearest other image, float64, shape (N,)."""
    return 1.0 - nn.similarities[:, -1].astype(np.float64)


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


def pairs_table(pairs: DuplicatePairs, paths, classes, groups: np.ndarray) -> pd.DataFrame:
    """One row per near-duplicate pair with :data:`PAIR_COLUMNS`; ``label_conflict`` when the
    two images' classes differ."""
    paths, classes = np.asarray(paths, dtype=object), np.asarray(classes, dtype=object)
    a, b = pairs.row_a, pairs.row_b
    return pd.DataFrame({
        "row_a": a, "row_b": b, "path_a": paths[a], "path_b": paths[b],
        "class_a": classes[a], "class_b": classes[b],
        "similarity": np.round(pairs.similarity.astype(np.float64), 6),
        "label_conflict": classes[a] != classes[b], "group": groups[a]}, columns=PAIR_COLUMNS)


def auto_duplicate_similarity(widths, heights) -> float:
    """The near-duplicate threshold that ``neighbours.duplicate_similarity: auto`` resolves to.

    ``PHOTO_SIMILARITY`` (0.9), or ``TINY_SIMILARITY`` (0.97) when the images' median shorter
    side is under ``TINY_SIDE`` (16) px. Distinct photos rarely reach 0.9 (among the 10,000
    CIFAR-10 test images, Lite0 features: 43 pairs at the 224 px photo default, 12 at 64 px),
    while mildly resized and re-encoded copies mostly stay above it. Images of a few pixels,
    such as the demo's 8x8 digits, look alike to an ImageNet network (median nearest-neighbour
    similarity 0.925), so 0.9 would join most of them (docs/parameters.md).

    Parameters
    ----------
    widths, heights : array-like of int
        The images' sizes in pixels (``data/index.parquet``).

    Returns
    -------
    float
    """
    sides = np.minimum(np.asarray(widths, dtype=np.float64),
                       np.asarray(heights, dtype=np.float64))
    if sides.size and float(np.median(sides)) < TINY_SIDE:
        return TINY_SIMILARITY
    return PHOTO_SIMILARITY


def summary(pairs_df: pd.DataFrame, groups: np.ndarray, k: int, threshold: float) -> dict:
    """The headline numbers: pairs, groups, images in groups, label-conflict pairs and groups."""
    conflict_groups = pairs_df.loc[pairs_df["label_conflict"], "group"].nunique()
    return {"images": int(len(groups)), "duplicate_pairs": int(len(pairs_df)),
            "duplicate_groups": int(groups.max() + 1) if len(groups) else 0,
            "images_in_groups": int((groups >= 0).sum()),
            "label_conflicts": int(pairs_df["label_conflict"].sum()),
            "conflict_groups": int(conflict_groups), "k": int(k),
            "duplicate_similarity": float(threshold)}
