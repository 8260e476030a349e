"""Agglomerative clustering when the exact tree does not fit: the route choice by predicted
memory, and the two-step route.

- ``ward``: the merge cost of two groups, n_a n_b / (n_a + n_b) ||mu_a - mu_b||^2, depends only
  on their sizes and means, so the weighted tree is *exactly* Ward's agglomeration of the
  original points constrained to merge every cell first (its heights are the real Ward merge
  costs of the points, on scipy's scale: sqrt(2 x cost));
- ``average``, ``complete``, ``single``: the linkage over cell-to-cell distances, each the root
  mean square of the distances between the two cells' points, sqrt(||mu_a - mu_b||^2 + s_a +
  s_b) with s the cell's mean squared distance to its mean (exact, from means, sizes and
  spreads); average weights the cell pairs by their sizes (UPGMA over cells), complete and
  single take their max and min. Distances between plain means would make every small cell look
  closer to everything than its points are, badly so in high dimensions (10,000 256-D points
  in 100 blobs, 2,000 cells, cut at K=100: ARI 0.17 (complete) and 0.00 (average) on plain
  means, 0.93 and 0.97 with the spread; the exact average tree: 0.97); ``cell_spread=False``
  gives the plain-means variant. Single linkage on cells loses the point-level chaining it is
  about: treat its two-step result as a rough approximation only.

With ``n_centroids >= N`` every point is its own cell (no K-Means) and the result is the exact
tree. The weighted linkage is a nearest-neighbour-chain over an ``n_centroids`` square distance
matrix (8 x n_centroids^2 bytes: 32 MB at 2,000 cells), O(n_centroids^2) time.

Invalid arguments raise :class:`~clusterlens.core.errors.ParamError` naming the params key they come
from (``kmeans.engine``, ``agglomerative.route``...), so a stage can pass them on unchanged.

"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field

import numpy as np

from clusterlens.clustering.kmeans_engines import (
    CHUNK,
    _assign_nearest,
    check_engine,
    run_kmeans_engine,
)
from clusterlens.clustering.trees import cut_tree_at, first_seen_order
from clusterlens.config.base import check_value
from clusterlens.config.rules import choice, integer
from clusterlens.core.errors import DataError, ParamError

log = logging.getLogger("clusterlens.clustering.two_step")



ROUTES = ("exact", "two_step", "auto")


LINKAGES = ("ward", "complete", "average", "single")

# `auto` keeps the exact tree up to these N (per linkage); above, it takes the two-step route.
# ward/single (fastcluster's O(N)-memory vector routines) are limited by time: on one thread of a
# 2-core machine, 50 PCA dims, 10^5 points take minutes (ward ~7, single ~4.5), growing as
# N^2.3-2.5 (benchmarks/results/scaling.csv), so about 10 s at 20,000. complete/average hold the
# N x N condensed distance matrix twice (8 bytes x N^2 at the peak): 20,000 points need 3.2 GB
# and about 18 s (30,000: 6.9 GB and 40 s).


DEFAULT_MAX_EXACT_N = {"ward": 20_000, "single": 20_000, "complete": 20_000,
                       "average": 20_000}


MEMORY_FRACTION = 0.8        # `exact` is refused when its predicted peak exceeds this x RAM


MAX_CENTROIDS = 20_000       # the weighted linkage holds an n_centroids^2 float64 matrix


DEFAULT_N_CENTROIDS = 2_000


DEFAULT_POINTS_PER_CENTROID = 64    # two-step K-Means trains on <= this x n_centroids points


DEFAULT_TWO_STEP_MAX_ITER = 20


def total_memory_bytes() -> int:
    """Physical RAM (MemTotal), or 0 when unknown."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0


def exact_peak_bytes(n: int, linkage: str, dim: int = 50) -> int:
    """Predicted peak memory of the exact tree on ``n`` points (beyond the interpreter): complete
    and average, 8 x N^2 bytes (fastcluster's two copies of the condensed float64 distance
    matrix; measured 0.96 GB at 10^4, 6.9 GB at 3x10^4); ward and single (fastcluster's vector
    routines), the float64 copy of the data, its working copy and the tree: 16 x N x dim + 64 x
    N bytes."""
    if linkage in ("complete", "average"):
        return 8 * n * n
    return 16 * n * dim + 64 * n


def two_step_peak_bytes(n: int, n_centroids: int, dim: int = 50) -> int:
    """Predicted peak memory of the two-step route beyond the features themselves: the
    cells' square distance matrix (8 x m^2), the float32 training sample (4 x m x
    DEFAULT_POINTS_PER_CENTROID x dim at most), per-point labels (16 x N) and two float64
    blocks of CHUNK rows (2 x 8 x 65,536 x dim). benchmarks/bench_large_n.py prints it beside
    the measured peak."""
    m = min(n, n_centroids)
    return (8 * m * m + 4 * min(n, m * DEFAULT_POINTS_PER_CENTROID) * dim + 16 * n
            + 16 * min(n, CHUNK) * dim)


def max_exact_for(linkage: str, max_exact_n) -> int:
    """The N above which ``auto`` takes the two-step route: ``max_exact_n`` None (the defaults
    of DEFAULT_MAX_EXACT_N), an integer (every linkage), or a mapping linkage -> integer (the
    linkages it leaves out keep their default)."""
    key = "agglomerative.max_exact_n"
    if max_exact_n is None:
        return DEFAULT_MAX_EXACT_N[linkage]
    if isinstance(max_exact_n, dict):
        unknown = set(max_exact_n) - set(LINKAGES)
        if unknown:
            raise ParamError(key, f"has unknown linkages {sorted(unknown)}; use "
                             f"{', '.join(LINKAGES)}")
        if linkage not in max_exact_n:
            return DEFAULT_MAX_EXACT_N[linkage]
        return check_value(f"{key}.{linkage}", max_exact_n[linkage], integer, 2)
    return check_value(key, max_exact_n, integer, 2)


def choose_agglomerative_route(n: int, linkage: str, route_param: str, max_exact_n=None,
                               dim: int = 50, memory_bytes: int | None = None,
                               n_centroids: int = DEFAULT_N_CENTROIDS) -> dict:
    """Which route builds the ``linkage`` tree on ``n`` points, from ``agglomerative.route``:

    - ``exact``: the tree on all points. ParamError when its predicted peak memory
      (``exact_peak_bytes``) exceeds MEMORY_FRACTION of ``memory_bytes`` (default: this
      machine's RAM), with the figure and the advice to use two_step. (ward/single above
      their max_exact_n only get a logged warning: they fit, but take long.)
    - ``two_step``: always the two-step route.
    - ``auto``: exact up to ``max_exact_n`` points (see ``max_exact_for``; defaults: ward and
      single, complete and average 20,000) and while it fits in memory; two-step above.

    Returns a record for the stage's JSON: ``route``, ``requested``, ``reason``, ``n``,
    ``linkage``, ``max_exact_n``, ``exact_peak_bytes``, ``two_step_peak_bytes`` (with
    ``n_centroids`` cells; beyond the features), ``memory_limit_bytes``. The choice is always logged
    (a switch to two_step at WARNING)."""
    check_value("n", n, integer, 1)
    check_value("agglomerative.linkage", linkage, choice, LINKAGES)
    check_value("agglomerative.route", route_param, choice, ROUTES)
    limit = max_exact_for(linkage, max_exact_n)
    memory = total_memory_bytes() if memory_bytes is None else int(memory_bytes)
    mem_limit = int(MEMORY_FRACTION * memory) if memory else None
    peak = exact_peak_bytes(n, linkage, dim)
    fits = mem_limit is None or peak <= mem_limit
    gib = 2.0**30
    need = (f"the exact {linkage} tree on {n:,} points needs about {peak / gib:.1f} GiB"
            + (" (8 bytes x N^2: fastcluster holds the condensed distance matrix twice)"
               if linkage in ("complete", "average") else ""))
    rec = {"route": None, "requested": route_param, "reason": "", "n": n,
           "linkage": linkage, "max_exact_n": limit, "exact_peak_bytes": peak,
           "two_step_peak_bytes": two_step_peak_bytes(n, n_centroids, dim),
           "memory_limit_bytes": mem_limit}
    if route_param == "exact":
        if not fits:
            raise ParamError("agglomerative.route", f"= exact: {need}, more than the "
                             f"{mem_limit / gib:.1f} GiB allowed here ({MEMORY_FRACTION:.0%} of "
                             f"{memory / gib:.1f} GiB RAM); set it to two_step (or auto), which "
                             "clusters K-Means cells instead of points")
        rec.update(route="exact", reason="requested")
        if n > limit:
            log.warning("agglomerative %s: exact tree on %d points (above %d, where auto would "
                        "take two_step): O(N^2) time, expect a long run", linkage, n, limit)
    elif route_param == "two_step":
        rec.update(route="two_step", reason="requested")
    elif n > limit:
        rec.update(route="two_step", reason=f"auto: N = {n:,} > max_exact_n = {limit:,} for "
                                            f"{linkage}")
    elif not fits:
        rec.update(route="two_step", reason=f"auto: {need}, more than the "
                                            f"{mem_limit / gib:.1f} GiB allowed")
    else:
        rec.update(route="exact", reason=f"auto: N = {n:,} <= max_exact_n = {limit:,} for "
                                         f"{linkage}")
    level = log.warning if rec["route"] == "two_step" and route_param == "auto" else log.info
    level("agglomerative %s on %d points: route %s (%s)", linkage, n, rec["route"],
          rec["reason"])
    return rec


def _pairwise_sq(P: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances between the rows of P (float64, centred first so the Gram
    trick keeps its precision), as a new (m, m) array."""
    P = P - P.mean(axis=0)
    sq = np.einsum("ij,ij->i", P, P)
    D = P @ P.T
    D *= -2.0
    D += sq[:, None]
    D += sq[None, :]
    np.maximum(D, 0.0, out=D)
    np.fill_diagonal(D, 0.0)
    return D


def _relabel(merges: list[tuple[int, int, float]], leaf_count: np.ndarray) -> np.ndarray:
    """scipy linkage matrix from NN-chain merges given as (slot a, slot b, height): sorted by
    height (stable), node ids assigned in that order (leaves 0..m-1, merge i -> m + i)."""
    m = len(leaf_count)
    order = sorted(range(len(merges)), key=lambda i: merges[i][2])
    parent = list(range(2 * m - 1))
    node_of_root = list(range(m))  # union-find root (a leaf id) -> current node id
    count = [int(c) for c in leaf_count] + [0] * (m - 1)

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    Z = np.empty((m - 1, 4), dtype=np.float64)
    for i, j in enumerate(order):
        a, b, h = merges[j]
        ra, rb = find(a), find(b)
        na, nb = node_of_root[ra], node_of_root[rb]
        parent[rb] = ra
        node_of_root[ra] = m + i
        count[m + i] = count[na] + count[nb]
        Z[i] = (min(na, nb), max(na, nb), h, count[m + i])
    return Z


def weighted_linkage(points, weights, method: str, spread=None) -> np.ndarray:
    """Agglomerative tree (scipy linkage format, one leaf per row of ``points``) where leaf i
    stands for ``weights[i]`` points with mean ``points[i]`` and, optionally, mean squared
    distance ``spread[i]`` from that mean. With unit weights and no spread it is the ordinary
    ``method`` tree of scipy/fastcluster on ``points`` (same merges and heights).

    Weighted: ward merges by n_a n_b / (n_a + n_b) ||mu_a - mu_b||^2 (heights on scipy's scale,
    the square root of twice that; exact for the points behind the leaves, spread or not);
    average by the weight-averaged leaf-to-leaf distance; single and complete ignore the
    weights. ``spread`` (not used by ward): the leaf-to-leaf distance becomes
    sqrt(||mu_a - mu_b||^2 + spread_a + spread_b), the root mean square of the distances between
    the two leaves' points (exact), instead of the distance between their means. Without it, a
    leaf's mean sits closer to everything than its points do, the more so the fewer points it
    holds and the higher the dimension: in 256-D noisy blobs, complete and average linkage on
    plain means of 5-point cells find ARI 0.1-0.2 where the exact trees find 0.95; with the
    spread, 0.93-0.97. The count column counts leaves, not weights.

    Nearest-neighbour chain with Lance-Williams updates on a dense (m, m) float64 matrix:
    O(m^2) memory and time (m = 2,000: 32 MB, under a second)."""
    check_value("agglomerative.linkage", method, choice, LINKAGES)
    P = np.asarray(points, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64).copy()
    m = len(P)
    if m != len(w):
        raise ValueError(f"{m} points but {len(w)} weights")
    if m < 2:
        return np.empty((0, 4), dtype=np.float64)
    if (w <= 0).any():
        raise ValueError("weights must be positive")
    D = _pairwise_sq(P)
    if spread is not None and method != "ward":
        v = np.asarray(spread, dtype=np.float64)
        if v.shape != (m,) or (v < 0).any():
            raise ValueError("spread must hold one non-negative value per point")
        D += v[:, None]
        D += v[None, :]
    if method == "ward":  # squared ward distance on scipy's scale: 2 n_a n_b / (n_a + n_b) d^2
        D *= 2.0 * w[:, None] * w[None, :] / (w[:, None] + w[None, :])
    else:
        np.sqrt(D, out=D)
    np.fill_diagonal(D, np.inf)
    active = np.ones(m, dtype=bool)
    merges: list[tuple[int, int, float]] = []
    chain: list[int] = []
    next_start = 0
    for _ in range(m - 1):
        if not chain:
            while not active[next_start]:
                next_start += 1
            chain.append(next_start)
        while True:
            x = chain[-1]
            row = D[x]
            y = int(np.argmin(row))
            if len(chain) > 1 and row[chain[-2]] <= row[y]:
                y = chain[-2]
                break
            chain.append(y)
        chain.pop()
        chain.pop()
        x, y = min(x, y), max(x, y)
        h = float(D[x, y])
        wx, wy = w[x], w[y]
        with np.errstate(invalid="ignore"):
            if method == "ward":
                new = ((wx + w) * D[x] + (wy + w) * D[y] - w * h) / (wx + wy + w)
            elif method == "average":
                new = (wx * D[x] + wy * D[y]) / (wx + wy)
            elif method == "single":
                new = np.minimum(D[x], D[y])
            else:
                new = np.maximum(D[x], D[y])
        new[~active] = np.inf
        new[x] = new[y] = np.inf
        D[y, :] = new
        D[:, y] = new
        D[x, :] = np.inf
        D[:, x] = np.inf
        active[x] = False
        w[y] = wx + wy
        merges.append((x, y, math.sqrt(h) if method == "ward" else h))
    return _relabel(merges, np.ones(m, dtype=np.int64))


@dataclass
class TwoStepTree:
    """The two-step route's result before cutting: ``tree`` over the cells (scipy linkage,
    leaf i = cell i), ``assign`` (N,) the cell of every point, ``sizes`` points per cell,
    ``centroids`` the cells' means (float64), ``info`` what was run (for the stage's JSON)."""
    tree: np.ndarray
    assign: np.ndarray
    sizes: np.ndarray
    centroids: np.ndarray
    info: dict = field(default_factory=dict)


def _cell_means(X, assign: np.ndarray, m: int, chunk: int = CHUNK) -> tuple[np.ndarray,
                                                                             np.ndarray]:
    """(sizes (m,), float64 means (m, d)) of the points in each cell, in blocks of rows."""
    from scipy.sparse import csr_matrix

    sums = np.zeros((m, X.shape[1]), dtype=np.float64)
    for start in range(0, len(X), chunk):
        a = assign[start:start + chunk]
        onehot = csr_matrix((np.ones(len(a)), (a, np.arange(len(a)))), shape=(m, len(a)))
        sums += onehot @ np.asarray(X[start:start + chunk], dtype=np.float64)
    sizes = np.bincount(assign, minlength=m)
    return sizes, sums / np.maximum(sizes, 1)[:, None]


def _cell_ss(X, assign: np.ndarray, means: np.ndarray, chunk: int = CHUNK) -> np.ndarray:
    """Sum of squared distances of each cell's points to the cell mean (float64, (m,))."""
    ss = np.zeros(len(means), dtype=np.float64)
    for start in range(0, len(X), chunk):
        a = assign[start:start + chunk]
        diff = np.asarray(X[start:start + chunk], dtype=np.float64) - means[a]
        ss += np.bincount(a, weights=np.einsum("ij,ij->i", diff, diff), minlength=len(means))
    return ss


def check_n_centroids(n_centroids, key: str = "agglomerative.n_centroids") -> int:
    """An integer in [2, MAX_CENTROIDS] (ParamError naming ``key`` otherwise)."""
    check_value(key, n_centroids, integer, 2)
    if n_centroids > MAX_CENTROIDS:
        gib = 8 * n_centroids**2 / 2**30
        raise ParamError(key, f"= {n_centroids} is above {MAX_CENTROIDS:,}: the linkage over the "
                         f"cells holds an n_centroids^2 float64 matrix ({gib:.1f} GiB); a few "
                         "thousand cells are plenty for cuts at tens of clusters")
    return n_centroids


def two_step_tree(X, linkage: str, n_centroids: int, seed: int, engine: str = "sklearn",
                  n_init: int = 1, max_iter: int = DEFAULT_TWO_STEP_MAX_ITER,
                  points_per_centroid: int = DEFAULT_POINTS_PER_CENTROID, init: str = "random",
                  cell_spread: bool = True, gpu="auto") -> TwoStepTree:
    """Step 1: K-Means (``engine``, ``init`` random points: the cells only need to be small, and
    k-means++ over thousands of centroids costs more than the Lloyd iterations) with
    ``n_centroids`` clusters, trained on a seeded sample of at most ``points_per_centroid x
    n_centroids`` points (all when fewer; faiss' own subsampling rule, made here so both engines
    see the same sample; faiss asks for at least 39 per centroid), then every point is assigned
    to its nearest centroid and each non-empty cell's mean recomputed from its points (empty
    cells dropped).
    Step 2: ``weighted_linkage`` over the cell means, weighted by cell sizes, with each cell's
    spread (mean squared distance of its points to its mean) when ``cell_spread`` (see
    ``weighted_linkage``: it matters for average/complete/single, not for ward). With
    ``n_centroids >= N`` every point is its own cell and step 1 is skipped (the exact tree).
    X may be a memory map: it is read in blocks."""
    check_value("agglomerative.linkage", linkage, choice, LINKAGES)
    check_n_centroids(n_centroids)
    check_engine(engine)
    n = X.shape[0]
    info = {"route": "two_step", "linkage": linkage, "n_centroids": n_centroids, "engine": engine,
            "seed": seed}
    if n_centroids >= n:
        assign = np.arange(n, dtype=np.int64)
        sizes = np.ones(n, dtype=np.int64)
        centroids = np.asarray(X, dtype=np.float64)
        spread = np.zeros(n)
        info.update(cells=n, kmeans="skipped: n_centroids >= N, every point is its own cell",
                    train_points=0)
    else:
        rng = np.random.default_rng(seed)
        n_train = min(n, points_per_centroid * n_centroids)
        sample = np.sort(rng.choice(n, n_train, replace=False)) if n_train < n else None
        X_train = np.asarray(X[sample] if sample is not None else X, dtype=np.float32)
        _, km = run_kmeans_engine(engine, X_train, n_centroids, n_init, max_iter, seed, gpu=gpu,
                                  init=init, return_centroids=True)
        del X_train
        assign = _assign_nearest(X, km["centroids"], engine)
        sizes, means = _cell_means(X, assign, n_centroids)
        keep = np.flatnonzero(sizes)
        remap = np.full(n_centroids, -1, dtype=np.int64)
        remap[keep] = np.arange(len(keep))
        assign = remap[assign]
        sizes, centroids = sizes[keep], means[keep]
        ss = _cell_ss(X, assign, centroids)
        spread = ss / sizes
        info.update(cells=len(keep), train_points=n_train,
                    kmeans={"iterations": km["iterations"], "train_inertia": km["inertia"],
                            "device": km["device"], "n_init": n_init, "max_iter": max_iter,
                            "init": km["init"], "points_per_centroid": points_per_centroid},
                    within_cell_ss=float(ss.sum()))
    use_spread = cell_spread and linkage != "ward"
    tree = weighted_linkage(centroids, sizes, linkage, spread if use_spread else None)
    info["weights"] = "cell sizes (points per cell)"
    info["cell_distance"] = ("ward merge cost from cell means and sizes (exact)"
                             if linkage == "ward" else
                             "RMS distance between the cells' points" if use_spread else
                             "distance between cell means")
    return TwoStepTree(tree=tree, assign=assign, sizes=sizes, centroids=centroids, info=info)


def cut_two_step(result: TwoStepTree, ks: list[int]) -> dict[int, np.ndarray]:
    """Cut the cells' tree into K clusters for every K (:func:`clusterlens.clustering.trees.cut_tree_at`)
    and give every point its cell's cluster; labels numbered in order of their first point.

    Raises
    ------
    DataError
        When a K exceeds the number of non-empty cells.
    """
    m = len(result.sizes)
    for k in ks:
        if k > m:
            raise DataError(f"K = {k} is more than the {m} non-empty K-Means cells of the "
                            "two-step route; raise agglomerative.n_centroids")
    if m == 1:
        return {k: np.zeros(len(result.assign), dtype=np.int64) for k in ks}
    return {k: first_seen_order(cells[result.assign])
            for k, cells in cut_tree_at(result.tree, list(ks)).items()}


def two_step_agglomerative(X, linkage: str, ks: list[int], n_centroids: int, seed: int,
                           engine: str = "sklearn", **kwargs) -> dict[int, np.ndarray]:
    """Agglomerative clustering for large N: {K: labels int64 (N,)} for every K in ``ks``, from
    ``two_step_tree`` (K-Means cells, weighted linkage over them; ``kwargs`` go there) cut by
    ``cut_two_step``. Use ``two_step_tree`` + ``cut_two_step`` to keep the tree and its info."""
    ks = [check_value("agglomerative.k", k, integer, 2) for k in ks]
    n_centroids = check_n_centroids(n_centroids)
    too_big = [k for k in ks if k > min(n_centroids, len(X))]
    if too_big:
        raise ParamError("agglomerative.k", f"values {too_big} exceed agglomerative.n_centroids "
                         f"= {n_centroids} (or N = {len(X)}): the two-step tree has one leaf "
                         "per K-Means cell")
    return cut_two_step(two_step_tree(X, linkage, n_centroids, seed, engine, **kwargs), ks)
