"""DBSCAN and HDBSCAN at large N: fit on a seeded sample, then assign every other point.

Both methods grow faster than N log N in time (the HDBSCAN grid point took about 18 minutes
extrapolated at 10^5 points, and its tree is quadratic on dense data), so above a switch point
(``dbscan.max_exact_n``, ``hdbscan.max_exact_n``) the grid point runs on a seeded sample of that
many points and labels the rest by their nearest sampled point:

- **DBSCAN**: eps comes from the sample's k-distance curve, as on all points; a point outside
  the sample joins the cluster of its nearest *core* sample point when it is within eps of it (it
  would be a border point of that cluster), and is noise otherwise;
- **HDBSCAN**: a point outside the sample takes the label of its nearest sampled point (noise
  included) when it lies within 1.5 times that point's core distance, and is noise otherwise;
  ``min_cluster_size`` counts sampled points.

Up to the switch point the methods run on every point (:func:`dbscan_eps`,
:func:`run_hdbscan`, and :func:`clusterlens.clustering.methods.run_dbscan`).
"""
from __future__ import annotations

import numpy as np

from clusterlens.core.sampling import sample_rows

ASSIGN_BLOCK = 8192  # points assigned per nearest-neighbour query block
#: HDBSCAN: a point joins its nearest sampled point's cluster within this many times that
#: point's core distance. Both distances are measured in the sample, so the ratio does not
#: depend on the sample's share; 1.25-2 gave the full run's noise share and ARI 1.0 on blobs
#: (20,000 points, half sampled), 1 doubled the noise, no limit halved it.
CORE_SLACK = 1.5


def dbscan_eps(X, min_samples: int, percentile: float) -> float:
    """DBSCAN's eps: the ``percentile`` of every point's distance to its ``min_samples``-th
    neighbour (itself included)."""
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=min(min_samples, len(X))).fit(X)
    dist, _ = nn.kneighbors(X)
    return float(np.percentile(dist[:, -1], percentile))


def run_hdbscan(X, min_cluster_size: int, min_samples: int | None) -> tuple[np.ndarray, dict]:
    """scikit-learn's HDBSCAN: (labels int64, ``{}``)."""
    from sklearn.cluster import HDBSCAN

    labels = HDBSCAN(min_cluster_size=min_cluster_size, min_samples=min_samples,
                     copy=True).fit_predict(X)
    return labels.astype(np.int64), {}


def nearest(reference: np.ndarray, X: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray,
                                                                              np.ndarray]:
    """(distance, index into ``reference``) of the nearest reference point of every row of
    ``X[rows]``, Euclidean, block by block."""
    from sklearn.neighbors import NearestNeighbors

    model = NearestNeighbors(n_neighbors=1).fit(reference)
    dist = np.empty(len(rows))
    idx = np.empty(len(rows), dtype=np.int64)
    for start in range(0, len(rows), ASSIGN_BLOCK):
        block = rows[start:start + ASSIGN_BLOCK]
        d, i = model.kneighbors(np.asarray(X[block]))
        dist[start:start + len(block)], idx[start:start + len(block)] = d[:, 0], i[:, 0]
    return dist, idx


def dbscan_sampled(X: np.ndarray, percentile: float, min_samples: int, *, sample: int,
                   seed: int) -> tuple[np.ndarray, dict]:
    """DBSCAN on a seeded sample of ``sample`` points, every other point assigned (module
    docstring): (labels int64, ``{"eps", "route": "sample", "sample"}``). ``min_samples`` and
    the eps percentile apply to the sample as they are (scaling ``min_samples`` by the sample's
    share breaks the clusters into fragments)."""
    from sklearn.cluster import DBSCAN

    n = len(X)
    rows = sample_rows(n, sample, seed)
    S = np.asarray(X[rows])
    eps = dbscan_eps(S, min_samples, percentile)
    model = DBSCAN(eps=eps, min_samples=min_samples).fit(S)
    labels = np.full(n, -1, dtype=np.int64)
    labels[rows] = model.labels_
    rest = np.setdiff1d(np.arange(n), rows)
    core = model.core_sample_indices_
    if len(core) and len(rest):
        dist, idx = nearest(S[core], X, rest)
        labels[rest] = np.where(dist <= eps, model.labels_[core[idx]], -1)
    return labels, {"eps": float(eps), "route": "sample", "sample": int(sample)}


def hdbscan_sampled(X: np.ndarray, min_cluster_size: int, min_samples: int | None, *,
                    sample: int, seed: int) -> tuple[np.ndarray, dict]:
    """HDBSCAN on a seeded sample of ``sample`` points; every other point takes its nearest
    sampled point's label when it lies within :data:`CORE_SLACK` times that point's core
    distance (the distance to its ``min_samples``-th nearest sampled point,
    ``min_cluster_size`` when None), and is noise otherwise: (labels int64,
    ``{"route": "sample", "sample"}``)."""
    from sklearn.neighbors import NearestNeighbors

    n = len(X)
    rows = sample_rows(n, sample, seed)
    S = np.asarray(X[rows])
    sampled, _ = run_hdbscan(S, min_cluster_size, min_samples)
    labels = np.full(n, -1, dtype=np.int64)
    labels[rows] = sampled
    rest = np.setdiff1d(np.arange(n), rows)
    if len(rest):
        k = min(len(S), min_samples or min_cluster_size)
        core = NearestNeighbors(n_neighbors=k).fit(S).kneighbors(S)[0][:, -1]
        dist, idx = nearest(S, X, rest)
        labels[rest] = np.where(dist <= CORE_SLACK * core[idx], sampled[idx], -1)
    return labels, {"route": "sample", "sample": int(sample)}
