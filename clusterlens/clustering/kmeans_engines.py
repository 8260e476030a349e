"""K-Means engines for large N: scikit-learn's and faiss', with the same inertia.

  identical to :func:`clusterlens.clustering.methods.run_kmeans`.
- ``faiss``: ``faiss.Kmeans`` on float32 (Lloyd on BLAS distance blocks; GPU when faiss sees
  one). Every point is used for training (faiss would otherwise subsample to 256 points per
  centroid), initialisation is k-means++ (faiss >= 1.13; plain random points before), a run
  stops when its objective no longer changes (faiss' own rule) or at ``max_iter``. The
  ``n_init`` runs are made here, one ``faiss.Kmeans`` per run with seeds drawn from
  ``seed``, and the run with the lowest objective on all points is kept: so ``iterations`` is
  that run's own count and the choice uses the same float64 objective that is reported.

Both engines report ``inertia`` the same way: the sum over points of the squared Euclidean
distance to the assigned centroid, accumulated in float64 from the returned labels and
centroids (scikit-learn's definition; faiss' own objective is a float32 sum).

Determinism: on CPU both engines give identical labels for the same seed, input and thread
count. faiss also gives the same labels on 1 and 2 OpenMP threads (its centroid sums run per
centroid in point order; tests/test_large_n.py checks both). ``threadpoolctl.threadpool_limits``
reaches faiss' bundled libgomp and OpenBLAS too. On a GPU, faiss sums in parallel and results
may differ in the last bits between runs.

Two-step agglomerative: K-Means (either engine) cuts the points into ``n_centroids`` cells,
then the linkage runs over the cells, each weighted by its number of points, and every point
takes the cluster of its cell. Each cell is described by the exact mean of its points
(recomputed after the final assignment), its size and its spread (mean squared distance of its
points to that mean):
"""
from __future__ import annotations

import logging

import numpy as np

from clusterlens.config.base import check_value
from clusterlens.config.rules import choice
from clusterlens.core.errors import ParamError

log = logging.getLogger("clusterlens.clustering.kmeans_engines")



ENGINES = ("sklearn", "faiss")


CHUNK = 65_536               # rows per block when assigning points / summing the objective
#: Sampled fits (:func:`kmeans_sampled`) train on at least this many points per cluster
#: (faiss warns below 39).
SAMPLE_PER_CLUSTER = 40
#: Sampled faiss fits also stop when an iteration improves the objective by less than this
#: fraction (scikit-learn's tol is 1e-4 on the centre shift).
SAMPLE_EARLY_STOP = 1e-4


def faiss_available() -> bool:
    """Whether the faiss package can be imported."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def _as_float32(X) -> np.ndarray:
    """C-contiguous float32 view of X (no copy when it already is one, memory maps included)."""
    return np.ascontiguousarray(X, dtype=np.float32)


def kmeans_inertia(X, labels: np.ndarray, centroids: np.ndarray, chunk: int = CHUNK) -> float:
    """Sum of squared Euclidean distances of every point to its assigned centroid, in float64
    (scikit-learn's ``inertia_``), in blocks of ``chunk`` rows (works on memory maps)."""
    C = np.asarray(centroids, dtype=np.float64)
    labels = np.asarray(labels)
    total = 0.0
    for start in range(0, len(X), chunk):
        diff = np.asarray(X[start:start + chunk], dtype=np.float64) - C[labels[start:start + chunk]]
        total += float(np.einsum("ij,ij->", diff, diff))
    return total


def _faiss_device(gpu) -> bool:
    """True to run on a GPU: ``"auto"`` uses one when faiss sees a GPU; True requires one."""
    import faiss

    n_gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if gpu == "auto":
        return n_gpus > 0
    if gpu is True and n_gpus == 0:
        raise ValueError("gpu=True but faiss sees no GPU (faiss-cpu, or no CUDA device)")
    return bool(gpu)


def _faiss_assign(index, X, chunk: int = CHUNK) -> np.ndarray:
    """Nearest centroid of every row of X (int64), searched in blocks of ``chunk`` rows."""
    labels = np.empty(len(X), dtype=np.int64)
    for start in range(0, len(X), chunk):
        _, idx = index.search(_as_float32(X[start:start + chunk]), 1)
        labels[start:start + chunk] = idx[:, 0]
    return labels


def run_seeds(seed: int, n: int) -> list[int]:
    """``n`` run seeds (31-bit) derived from ``seed``; the same list for the same seed."""
    return [int(s) for s in np.random.SeedSequence(seed).generate_state(n) & 0x7FFFFFFF]


def kmeans_faiss(X, k: int, n_init: int, max_iter: int, seed: int, gpu="auto",
                 init: str = "k-means++", max_points_per_centroid: int | None = None,
                 return_centroids: bool = False, early_stop_threshold: float = 0.0
                 ) -> tuple[np.ndarray, dict]:
    """K-Means with faiss: (labels int64 (N,), info). ``n_init`` runs (seeds from ``seed``),
    each ``faiss.Kmeans(niter=max_iter, spherical=False)`` on float32 (a C-contiguous float32
    input, memory maps included, is not copied), on a GPU when ``gpu`` says so (``"auto"``: when
    faiss sees one); the run with the lowest float64 inertia on all points is kept. Labels are
    each point's nearest final centroid (``index.search``). ``init``: ``"k-means++"`` (faiss
    >= 1.13; older faiss: random) or ``"random"`` (k random points). ``max_points_per_centroid``:
    None trains on every point (as scikit-learn does); a number lets faiss train on a seeded
    sample of k x that many points (faiss' default is 256; faster, slightly worse objective).

    info (JSON-ready): ``inertia`` (float64), ``iterations`` (of the kept run), ``run_inertias``,
    ``engine``, ``device``, ``init``; plus ``centroids`` (k, d) float32 if ``return_centroids``.
    ``early_stop_threshold`` > 0: a run also stops when an iteration lowers its objective by
    less than that fraction (faiss' ``ClusteringParameters.early_stop_threshold``)."""
    import faiss

    X32 = _as_float32(X)
    n, d = X32.shape
    if not 1 <= k <= n:
        raise ValueError(f"k = {k} must be between 1 and the number of points ({n})")
    on_gpu = _faiss_device(gpu)
    kw = {"niter": max_iter, "nredo": 1, "spherical": False, "verbose": False,
          "max_points_per_centroid": (max(1, -(-n // k)) if max_points_per_centroid is None
                                      else max_points_per_centroid),
          "min_points_per_centroid": 1}  # no stderr warning for small N: the caller checks K
    if early_stop_threshold:
        kw["early_stop_threshold"] = float(early_stop_threshold)
    used_init = "random"
    if init == "k-means++" and hasattr(faiss, "ClusteringInitMethod_KMEANS_PLUS_PLUS"):
        kw["init_method"] = faiss.ClusteringInitMethod_KMEANS_PLUS_PLUS
        used_init = "k-means++"
    elif init not in ("k-means++", "random"):
        raise ValueError(f"init must be 'k-means++' or 'random', got {init!r}")
    best = None
    inertias = []
    for run_seed in run_seeds(seed, n_init):
        # gpu=True: every visible GPU (faiss shards the centroids; CUDA_VISIBLE_DEVICES limits)
        km = faiss.Kmeans(d, k, seed=run_seed, gpu=True if on_gpu else False, **kw)
        km.train(X32)
        labels = _faiss_assign(km.index, X32)
        centroids = np.array(km.centroids, dtype=np.float32)
        inertia = kmeans_inertia(X32, labels, centroids)
        inertias.append(inertia)
        if best is None or inertia < best[0]:
            best = (inertia, labels, centroids, len(km.iteration_stats))
    inertia, labels, centroids, iterations = best
    info = {"inertia": inertia, "iterations": iterations, "run_inertias": inertias,
            "engine": "faiss", "device": "gpu" if on_gpu else "cpu", "init": used_init}
    if return_centroids:
        info["centroids"] = centroids
    return labels, info


def kmeans_sklearn(X, k: int, n_init: int, max_iter: int, seed: int, gpu="auto",
                   init: str = "k-means++", max_points_per_centroid: int | None = None,
                   return_centroids: bool = False) -> tuple[np.ndarray, dict]:
    """K-Means with scikit-learn, same signature and info as ``kmeans_faiss``: labels identical to
    ``KMeans(k, n_init=n_init, max_iter=max_iter, random_state=seed).fit(X)`` (X's own dtype).
    ``gpu`` is ignored (CPU only); ``max_points_per_centroid`` is accepted for symmetry and must
    be None (scikit-learn always trains on every point)."""
    from sklearn.cluster import KMeans

    if max_points_per_centroid is not None:
        raise ValueError("kmeans_sklearn trains on every point: max_points_per_centroid must "
                         "be None")
    X = np.asarray(X)
    km = KMeans(n_clusters=k, n_init=n_init, max_iter=max_iter, random_state=seed,
                init=init).fit(X)
    labels = km.labels_.astype(np.int64)
    info = {"inertia": kmeans_inertia(X, labels, km.cluster_centers_),
            "iterations": int(km.n_iter_), "engine": "sklearn", "device": "cpu", "init": init}
    if return_centroids:
        info["centroids"] = km.cluster_centers_.astype(np.float32)
    return labels, info


def check_engine(engine, key: str = "kmeans.engine") -> str:
    """Validate a K-Means engine name before any work: ParamError for an unknown name, or for
    ``faiss`` when the faiss package is not installed."""
    check_value(key, engine, choice, ENGINES)
    if engine == "faiss" and not faiss_available():
        raise ParamError(key, "= faiss, but the faiss package is not installed: `pip install "
                         "faiss-cpu` (or faiss-gpu for CUDA), or set it to sklearn")
    return engine


def run_kmeans_engine(engine: str, X, k: int, n_init: int, max_iter: int, seed: int,
                      gpu="auto", key: str = "kmeans.engine", **kwargs
                      ) -> tuple[np.ndarray, dict]:
    """K-Means with the engine ``kmeans.engine`` names (``sklearn`` | ``faiss``): (labels,
    info) from ``kmeans_sklearn`` / ``kmeans_faiss``. ParamError (naming ``key``) for an unknown
    engine or a missing faiss."""
    check_engine(engine, key)
    fn = kmeans_faiss if engine == "faiss" else kmeans_sklearn
    return fn(X, k, n_init, max_iter, seed, gpu=gpu, **kwargs)


def sample_size(n: int, k: int, max_exact_n: int,
                per_cluster: int = SAMPLE_PER_CLUSTER) -> int:
    """How many points a sampled fit trains on: ``max_exact_n``, or ``per_cluster`` x ``k`` when
    that is more (every cluster keeps enough points), at most ``n``."""
    return int(min(n, max(max_exact_n, per_cluster * k)))


def kmeans_sampled(X, k: int, *, n_init: int, max_iter: int, seed: int, sample: int,
                   engine: str = "faiss", early_stop: float = SAMPLE_EARLY_STOP
                   ) -> tuple[np.ndarray, dict]:
    """K-Means fitted on a seeded sample of ``sample`` rows
    (:func:`clusterlens.core.sampling.sample_rows`), then every row assigned to its nearest
    centroid in blocks (memory maps are read block by block).

    Parameters
    ----------
    X : array-like of shape (n, d)
    k, n_init, max_iter, seed : int
        As for :func:`run_kmeans_engine`, on the sample.
    sample : int
        Rows the centroids are trained on (all rows when ``sample >= n``).
    engine : {"faiss", "sklearn"}
        The engine on the sample (faiss: k-means++ and Lloyd several times faster than
        scikit-learn's at K in the thousands).
    early_stop : float
        faiss only: a run also stops when an iteration lowers its objective by less than this
        fraction (0: only when it stops changing).

    Returns
    -------
    labels : ndarray of shape (n,), int64
    info : dict
        ``inertia`` (float64, every row), ``iterations`` (the kept run's), ``engine``,
        ``route`` (``"sample"``), ``sample``, ``n_init``, ``max_iter``.
    """
    from clusterlens.core.sampling import sample_rows

    rows = sample_rows(len(X), sample, seed)
    S = _as_float32(X[rows] if len(rows) < len(X) else X)
    extra = {"early_stop_threshold": float(early_stop)} if engine == "faiss" else {}
    _, info = run_kmeans_engine(engine, S, k, n_init, max_iter, seed, gpu="auto",
                                return_centroids=True, **extra)
    centroids = info["centroids"]
    labels = _assign_nearest(X, centroids, engine)
    return labels, {"inertia": kmeans_inertia(X, labels, centroids),
                    "iterations": int(info["iterations"]), "engine": engine, "route": "sample",
                    "sample": int(len(rows)), "n_init": int(n_init), "max_iter": int(max_iter)}


def _assign_nearest(X, centroids: np.ndarray, engine: str, chunk: int = CHUNK) -> np.ndarray:
    """Nearest centroid of every point (int64), in blocks of rows."""
    if engine == "faiss":
        import faiss

        index = faiss.IndexFlatL2(centroids.shape[1])
        index.add(_as_float32(centroids))
        return _faiss_assign(index, X, chunk)
    from sklearn.metrics import pairwise_distances_argmin

    C = np.asarray(centroids, dtype=np.float32)
    out = np.empty(len(X), dtype=np.int64)
    for start in range(0, len(X), chunk):
        out[start:start + chunk] = pairwise_distances_argmin(
            np.asarray(X[start:start + chunk], dtype=np.float32), C)
    return out
