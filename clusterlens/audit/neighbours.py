"""Nearest neighbours of every image: the candidates for near-duplicates, and an outlier score.

Features are L2-normalised, so the inner product of two rows is their cosine similarity. An
exact k-nearest-neighbour search (faiss ``knn`` on the inner product, or scikit-learn's brute
force on the equivalent Euclidean distance) runs over blocks of query rows, so the working
memory stays bounded at any number of images (faiss searches the normalised array in place).
Its work grows as N^2; above a switch point (the ``neighbours`` stage's ``exact_max_n``)
:func:`approximate_neighbours` searches a faiss inverted-file index of the leading principal
components and re-ranks its candidates exactly, and :func:`recall` measures it against the
exact search on a sample of rows.

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


def _exact_model(Z: np.ndarray, engine: str):
    """scikit-learn's brute-force search over ``Z`` for the ``sklearn`` engine (faiss needs
    none: None)."""
    if engine != "sklearn":
        return None
    from sklearn.neighbors import NearestNeighbors

    return NearestNeighbors(algorithm="brute", metric="euclidean").fit(Z)


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
    model = _exact_model(Z, engine)
    step = block_rows(n, block_mb)
    sims = np.empty((n, k), dtype=np.float32)
    idx = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, step):
        rows = np.arange(start, min(n, start + step))
        s, i = _search(Z, Z[start:start + step], k + 1, engine, model)
        sims[rows], idx[rows] = _drop_self(rows, s, i, k)
    return Neighbours(indices=idx, similarities=sims)


# --------------------------------------------------------------------------- large N
SEARCH_DIM = 128          # the approximate search works on this many principal components
RERANK = 3                # candidates per neighbour re-ranked exactly on the full features
PCA_SAMPLE = 20_000       # rows the projection is fitted on
RECALL_QUERIES = 1_000    # rows whose exact neighbours measure the approximate search


def ivf_lists(n: int) -> int:
    """Inverted lists of the approximate search: about 4 sqrt(N), 64 to 16,384."""
    return int(min(16_384, max(64, round(4 * np.sqrt(n)))))


@dataclass(frozen=True)
class Approximate:
    """How an approximate search ran: ``dim`` (principal components searched), ``nlist``,
    ``nprobe``, ``candidates`` (per row, re-ranked exactly)."""

    dim: int
    nlist: int
    nprobe: int
    candidates: int


def projection(Z: np.ndarray, dim: int, seed: int) -> np.ndarray:
    """A (D, dim) orthonormal projection onto the leading principal directions of a seeded
    sample of at most :data:`PCA_SAMPLE` rows (the identity's first ``dim`` columns' worth when
    D <= dim: then the rows are searched as they are)."""
    n, d = Z.shape
    rows = np.sort(np.random.default_rng(seed).choice(n, size=min(n, PCA_SAMPLE), replace=False))
    S = np.asarray(Z[rows], dtype=np.float64)
    S -= S.mean(axis=0)
    _, _, vt = np.linalg.svd(S, full_matrices=False)
    V = vt[:dim].T
    V *= np.where(V[np.abs(V).argmax(axis=0), np.arange(V.shape[1])] < 0, -1.0, 1.0)  # sign
    return np.ascontiguousarray(V, dtype=np.float32)


def approximate_neighbours(Z: np.ndarray, k: int, *, seed: int, dim: int = SEARCH_DIM,
                           nprobe: int = 32, block_mb: float = 256
                           ) -> tuple[Neighbours, Approximate]:
    """Approximate k nearest other rows of every row of ``Z``, re-ranked exactly.

    The rows are projected on their ``dim`` leading principal directions (:func:`projection`)
    and normalised again; a faiss inverted-file index (:func:`ivf_lists` lists, k-means seeded
    by ``seed``) returns ``RERANK * (k + 1)`` candidates per row from ``nprobe`` lists; their
    cosine similarities on the full features decide the ``k`` kept. Memory: the projected
    copy (N x ``dim`` float32, twice) on top of ``Z``.

    Parameters
    ----------
    Z : ndarray, shape (N, D)
        L2-normalised float32 features (:func:`normalise`).
    k : int
        Neighbours per row, ``1 <= k < N``.
    seed : int
        Seeds the projection's sample and the index's k-means.
    dim, nprobe : int
        Principal components searched; lists probed per query.
    block_mb : float
        Working memory per block of rows re-ranked, MiB.

    Returns
    -------
    Neighbours, Approximate
        The rows that got fewer than ``k`` candidates are searched exactly.
    """
    import faiss

    n, d = Z.shape
    if not 1 <= k < n:
        raise ValueError(f"k must be in [1, {n - 1}], got {k!r}")
    P = Z @ projection(Z, dim, seed) if d > dim else np.array(Z, copy=True)
    faiss.normalize_L2(P)
    nlist = min(ivf_lists(n), max(1, n // 39))
    quantizer = faiss.IndexFlatIP(P.shape[1])
    index = faiss.IndexIVFFlat(quantizer, P.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = int(seed)
    train = np.sort(np.random.default_rng(seed + 1).choice(n, size=min(n, 64 * nlist),
                                                           replace=False))
    index.train(P[train])
    index.add(P)
    index.nprobe = min(nprobe, nlist)
    m = min(n, RERANK * (k + 1))
    sims = np.empty((n, k), dtype=np.float32)
    idx = np.empty((n, k), dtype=np.int64)
    step = int(max(1, min(n, block_mb * 2**20 // (4 * m * (d + 2)))))
    for start in range(0, n, step):
        rows = np.arange(start, min(n, start + step))
        _, cand = index.search(P[rows], m)
        cand = np.where(cand < 0, rows[:, None], cand)  # an unfilled slot: the row itself
        cand[cand == rows[:, None]] = -1
        exact = np.einsum("id,ijd->ij", Z[rows], Z[np.maximum(cand, 0)])
        exact[cand < 0] = -np.inf                        # never itself, never a filler
        order = np.lexsort((cand, -exact), axis=1)[:, :k]  # most similar, ties by row
        sims[rows] = np.take_along_axis(exact, order, axis=1)
        idx[rows] = np.take_along_axis(cand, order, axis=1)
    short = np.flatnonzero(~np.isfinite(sims).all(axis=1))  # fewer than k candidates found
    if len(short):
        s, i = _search(Z, Z[short], k + 1, "faiss")
        sims[short], idx[short] = _drop_self(short, s, i, k)
    return Neighbours(indices=idx, similarities=sims), Approximate(P.shape[1], nlist,
                                                                   index.nprobe, m)


def choose_search(n: int, search: str, exact_max_n: int, engine: str) -> str:
    """``exact`` or ``approximate``: what ``search`` (``auto``, ``exact``, ``approximate``)
    means for ``n`` images; ``auto`` is approximate above ``exact_max_n`` when faiss is
    installed.

    Raises
    ------
    ValueError
        When ``approximate`` is asked for without faiss, or ``engine`` is ``sklearn``.
    """
    faiss = _engine("auto") == "faiss"
    if search == "approximate" and (not faiss or engine == "sklearn"):
        raise ValueError("the approximate search needs faiss (pip install faiss-cpu) and "
                         "engine auto or faiss")
    if search == "auto":
        return "approximate" if n > exact_max_n and faiss and engine != "sklearn" else "exact"
    return search


def find_neighbours(Z: np.ndarray, k: int, *, search: str = "auto", exact_max_n: int = 50_000,
                    engine: str = "auto", block_mb: float = 256,
                    seed: int = 0) -> tuple[Neighbours, dict]:
    """The k nearest other rows by the search :func:`choose_search` picks, and how it ran:
    ``{"method": "exact"}``, or the approximate search's ``dim``, ``nlist``, ``nprobe``,
    ``candidates``, and its ``recall`` and ``similarity_gap`` against the exact search on
    ``recall_queries`` rows (:func:`measure`)."""
    if choose_search(len(Z), search, exact_max_n, engine) == "exact":
        return nearest_neighbours(Z, k, engine=engine, block_mb=block_mb), {"method": "exact"}
    nn, info = approximate_neighbours(Z, k, seed=seed, block_mb=block_mb)
    got = measure(Z, nn, seed=seed)
    return nn, {"method": "approximate", "dim": info.dim, "nlist": info.nlist,
                "nprobe": info.nprobe, "candidates": info.candidates,
                "recall": round(got["recall"], 6),
                "similarity_gap": round(got["similarity_gap"], 6),
                "recall_queries": min(len(Z), RECALL_QUERIES)}


def search_text(how: dict) -> str:
    """One line of :func:`find_neighbours`' record, e.g. ``exact search``."""
    if how["method"] == "exact":
        return "exact search"
    return (f"approximate search: {how['dim']} principal components, {how['nlist']} lists, "
            f"{how['nprobe']} probed, {how['candidates']} candidates re-ranked; recall "
            f"{how['recall']:.4f}, k-th similarity {how['similarity_gap']:.4f} below the exact "
            f"one, on {how['recall_queries']} rows searched exactly")


def measure(Z: np.ndarray, nn: Neighbours, *, seed: int, queries: int = RECALL_QUERIES,
            engine: str = "auto") -> dict:
    """How close a search came to the exact one, on a seeded sample of ``queries`` rows whose
    exact neighbours are searched (``queries`` x N work): ``recall`` (share of the true k
    nearest found) and ``similarity_gap`` (mean of the true k-th similarity minus the k-th
    similarity found: what the outlier score is off by, 0 for an exact search)."""
    n, k = nn.indices.shape
    rows = np.sort(np.random.default_rng(seed + 2).choice(n, size=min(n, queries),
                                                           replace=False))
    engine = _engine(engine)
    s, i = _search(Z, Z[rows], k + 1, engine, _exact_model(Z, engine))
    sims, true = _drop_self(rows, s, i, k)
    hits = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(true, nn.indices[rows]))
    gap = float(np.mean(sims[:, -1].astype(np.float64) - nn.similarities[rows, -1]))
    return {"recall": hits / (len(rows) * k), "similarity_gap": max(0.0, gap)}


def recall(Z: np.ndarray, nn: Neighbours, *, seed: int, queries: int = RECALL_QUERIES,
           engine: str = "auto") -> float:
    """Share of the true k nearest neighbours found (:func:`measure`)."""
    return measure(Z, nn, seed=seed, queries=queries, engine=engine)["recall"]


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
