"""Clustering methods of the grid, each a function from features to one or more labelings.

:data:`GRID_METHODS` maps a method name to a function ``fn(X, value, seed, **options) ->
GridResult``: ``value`` is the method's grid value (K, an eps percentile, a minimum cluster size
or a linkage), ``options`` its other settings. Labels are int64 in row order, -1 for noise
(:data:`clusterlens.clustering.metrics.NOISE`).

=================  =============================================================  ==========
method             what runs                                                      value
=================  =============================================================  ==========
``kmeans``         K-Means (scikit-learn, or faiss: :mod:`clusterlens.clustering.kmeans_engines`)   K
``gmm``            Gaussian mixture                                               K
``dbscan``         DBSCAN, eps from a percentile of the k-distance curve          percentile
``hdbscan``        HDBSCAN                                                        min size
``agglomerative``  one merge tree (exact, or over K-Means cells), cut at every K  linkage
``nmf``            K-Means on the NMF factor W, scored on the features            K
=================  =============================================================  ==========

Large N: every method has a switch point (``<section>.max_exact_n``) above which it runs on a
seeded sample and extends the result to every point, recording ``route: "sample"`` and
``sample`` in the point: K-Means (and K-Means on W) fits faiss on the sample and assigns every
point to its nearest centroid (:func:`kmeans_route`), the Gaussian mixture is fitted on the
sample and labels every point (:func:`gmm_sampled`), DBSCAN and HDBSCAN label the rest by their
nearest sampled point (:mod:`clusterlens.clustering.density`), agglomerative builds its tree over
K-Means cells (:mod:`clusterlens.clustering.two_step`). Up to the switch points the methods run
on every point as documented above.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from clusterlens.clustering import density, grid, kmeans_engines, two_step
from clusterlens.clustering import metrics as cm
from clusterlens.clustering.density import dbscan_eps, run_hdbscan  # noqa: F401 - public here too
from clusterlens.clustering.grid import point_name, point_path  # noqa: F401 - public here too
from clusterlens.clustering.trees import cut_heights, cut_tree_at, linkage_tree  # noqa: F401 - public here too
from clusterlens.config.base import check_value
from clusterlens.config.rules import integer
from clusterlens.core.errors import DataError, ParamError

log = logging.getLogger("clusterlens.cluster")
LINKAGES = ("ward", "complete", "average", "single")
GMM_REG_COVAR_EXP = (-6, -1)  # reg_covar 1e-6 (scikit-learn's default) ... 1e-1
GMM_BLOCK = 16_384  # rows per block when a sampled mixture labels every row (K x 8 bytes each)
#: EM iterations of a sampled mixture at most (it starts from a K-Means partition; one
#: iteration on 80,000 x 50-D at K = 2,000 takes seconds)
GMM_SAMPLE_MAX_ITER = 25


@dataclass
class GridResult:
    """What one grid stage computed.

    Attributes
    ----------
    points : dict of str to (ndarray, dict)
        Point name -> (labels int64 (N,), the point's own values for its metrics JSON).
    tree : ndarray or None
        Agglomerative only: the merge tree (scipy linkage format) the points were cut from.
    cells : ndarray or None
        Agglomerative two-step route only: every point's K-Means cell (int64 (N,)).
    unit : str
        What the tree's leaves are ("images" or "K-Means cells").
    """
    points: dict[str, tuple[np.ndarray, dict]]
    tree: np.ndarray | None = None
    cells: np.ndarray | None = None
    unit: str = "images"


# --------------------------------------------------------------------------- checks
def check_at_most_n(key: str, value: int, n: int, advice: str = "lower it") -> int:
    """``value`` (a K or a neighbourhood size) if it is at most the number of images ``n``.

    Raises
    ------
    ParamError
        Naming ``key``, with ``advice`` (e.g. "remove it from the grid").
    """
    if value > n:
        raise ParamError(key, f"= {value} is larger than the number of images ({n}); {advice} "
                         "in params.yaml (or add images)")
    return value


def check_k(key: str, k, n: int, n_classes: int | None = None) -> int:
    """A grid K: an integer >= 2 and at most ``n`` (ParamError naming ``key`` otherwise).

    With ``n_classes``, ``k`` may also be a value that follows the class count (``classes``,
    ``classes_x<f>``: :func:`clusterlens.clustering.grid.resolve_k`), and the resolved K is checked.
    """
    if n_classes is not None and not isinstance(k, int):
        try:
            k = grid.resolve_k(k, n_classes)
        except ValueError as exc:
            raise ParamError(key, str(exc)) from None
    return check_at_most_n(key, check_value(key, k, integer, 2), n, "remove it from the grid")


def describe_point(metrics: dict) -> str:
    """One line on a scored grid point (for the logs): K, clusters, noise, silhouette, NMI."""
    sil = metrics.get("silhouette")
    k = f"K = {metrics['k']}, " if "k" in metrics else ""
    return (f"{k}{metrics['n_clusters']} clusters, noise {metrics['noise_fraction']:.3f}, "
            f"silhouette {'n/a' if sil is None else format(sil, '.3f')}, NMI {metrics['nmi']:.3f}")


def point_options(method: str, value, n: int, n_classes: int, *, n_init: int, max_iter: int,
                  engine: str, covariance_type: str, gmm_max_iter: int, dbscan_min_samples: int,
                  hdbscan_min_samples: int | None, agglomerative_k: list, route: str,
                  max_exact_n, n_centroids: int, dbscan_max_exact_n: int | None = None,
                  hdbscan_max_exact_n: int | None = None,
                  kmeans_max_exact_n: int | None = None, kmeans_sample_n_init: int = 1,
                  gmm_max_exact_n: int | None = None) -> tuple[object, dict]:
    """One grid point's value and the keyword options of its :data:`GRID_METHODS` function,
    checked against the ``n`` images and ``n_classes`` classes (the rules that need the data).

    ``value`` is the grid value as params give it (a K, ``classes_x<f>``, a percentile, a
    minimum cluster size or a linkage); K values are resolved against ``n_classes`` and every K
    or neighbourhood size must be at most ``n`` (ParamError naming its key otherwise). The
    remaining arguments are the methods' section values; each method takes its own
    (``kmeans_max_exact_n`` and ``kmeans_sample_n_init`` also serve ``nmf``).
    ``nmf`` returns the K-Means options (the caller adds its ``W``); ``agglomerative`` also
    returns ``cuts``, its K grid as params give it (for :func:`point_files`).
    """
    kmeans = {"n_init": n_init, "max_iter": max_iter, "engine": engine,
              "max_exact_n": kmeans_max_exact_n, "sample_n_init": kmeans_sample_n_init}
    if method in ("kmeans", "nmf"):
        return check_k(f"{method}.k", value, n, n_classes), kmeans
    if method == "gmm":
        return check_k("gmm.k", value, n, n_classes), {"covariance_type": covariance_type,
                                                       "max_iter": gmm_max_iter,
                                                       "max_exact_n": gmm_max_exact_n,
                                                       "engine": engine}
    if method == "dbscan":
        return float(value), {"min_samples": check_at_most_n("dbscan.min_samples",
                                                             dbscan_min_samples, n),
                              "max_exact_n": dbscan_max_exact_n}
    if method == "hdbscan":
        ms = hdbscan_min_samples
        return check_at_most_n("hdbscan.min_cluster_size", value, n), {
            "min_samples": ms if ms is None else check_at_most_n("hdbscan.min_samples", ms, n),
            "max_exact_n": hdbscan_max_exact_n}
    if method == "agglomerative":
        ks = list(dict.fromkeys(check_k("agglomerative.k", v, n, n_classes)
                                for v in agglomerative_k))
        return value, {"ks": ks, "route": route, "max_exact_n": max_exact_n,
                       "n_centroids": n_centroids, "engine": engine, "cuts": agglomerative_k}
    raise ParamError("method", f"unknown clustering method {method!r}")


def point_files(method: str, value, n_classes: int, cuts: list = ()
                ) -> dict[str, list[tuple[str, int | str]]]:
    """The files of one grid stage's points: point name -> its (file stem, grid value) pairs.

    A point is named by its resolved K (``k10``, ``ward_k10``), its files by the grid value
    as params give it (``kclasses``, ``ward_kclasses``), so that DVC knows each file's name
    before the class count is known. Values with the same K share one point (written under
    each value's name). Methods without a K grid have no entry (their files are the points).

    Parameters
    ----------
    method : str
        A grid method (:data:`clusterlens.clustering.grid.METHODS`).
    value : int, str
        The stage's grid value: a K value, or the linkage for ``agglomerative``.
    n_classes : int
    cuts : list
        ``agglomerative``: its K grid (``agglomerative.k``).
    """
    if method in grid.K_METHODS:
        return {point_name(method, grid.resolve_k(value, n_classes)):
                [(point_name(method, value), value)]}
    if method != "agglomerative":
        return {}
    files: dict[str, list] = {}
    for g in grid.resolve_grid(list(cuts), n_classes):
        if g.same_as is not None:
            log.warning("agglomerative.k: %s and %s are both K = %d for %d classes: one cut, "
                        "written under both names", g.same_as, g.value, g.k, n_classes)
        files.setdefault(f"{value}_k{g.k}", []).append((f"{value}_k{g.value}", g.value))
    return files


# --------------------------------------------------------------------------- methods
def run_kmeans(X, k: int, n_init: int, max_iter: int, seed: int,
               engine: str = "sklearn") -> tuple[np.ndarray, dict]:
    """K-Means with scikit-learn or faiss.

    Parameters
    ----------
    X : array-like of shape (n, d)
    k, n_init, max_iter, seed : int
        Clusters, restarts (the best objective is kept), Lloyd iterations, random seed.
    engine : {"sklearn", "faiss"}
        ``faiss`` (:func:`clusterlens.clustering.kmeans_engines.kmeans_faiss`): CPU, or GPU where faiss has one;
        the same objective within 1%, several times faster at 10^5 points and more.

    Returns
    -------
    labels : ndarray of shape (n,), int64
    info : dict
        ``inertia``, ``iterations`` (and ``engine`` when not sklearn).
    """
    if engine != "sklearn":
        labels, info = kmeans_engines.run_kmeans_engine(engine, X, k, n_init, max_iter, seed)
        return labels, {"inertia": info["inertia"], "iterations": info["iterations"],
                        "engine": engine}
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, n_init=n_init, max_iter=max_iter, random_state=seed).fit(X)
    return km.labels_.astype(np.int64), {"inertia": float(km.inertia_),
                                         "iterations": int(km.n_iter_)}


def run_gmm(X, k: int, covariance_type: str, max_iter: int, seed: int
            ) -> tuple[np.ndarray, dict]:
    """Gaussian mixture on float64, retrying a collapsed covariance.

    Data with exact duplicate rows (e.g. text features of images that share a caption) can
    collapse a component's covariance; the fit is then retried with ten times the covariance
    regularisation (``reg_covar``, 1e-6 up to 1e-1), logged and recorded, rather than failing.

    Parameters
    ----------
    X : array-like of shape (n, d)
    k : int
        Components.
    covariance_type : {"full", "tied", "diag", "spherical"}
    max_iter, seed : int

    Returns
    -------
    labels : ndarray of shape (n,), int64
    info : dict
        ``bic``, ``converged``, ``reg_covar`` (the regularisation that fitted).

    Raises
    ------
    DataError
        When even ``reg_covar`` 1e-1 does not fit.
    """
    X = np.asarray(X, dtype=np.float64)
    gmm, reg = _fit_gmm(X, k, covariance_type, max_iter, seed)
    return gmm.predict(X).astype(np.int64), {"bic": float(gmm.bic(X)),
                                             "converged": bool(gmm.converged_),
                                             "reg_covar": reg}


def _fit_gmm(X: np.ndarray, k: int, covariance_type: str, max_iter: int, seed: int,
             init_labels: np.ndarray | None = None):
    """(fitted GaussianMixture, reg_covar) on float64 ``X``, retrying a collapsed covariance
    with ten times the regularisation (:func:`run_gmm`). ``init_labels``: start from the
    mixture these hard labels give (:func:`gmm_init_from_labels`) instead of scikit-learn's own
    K-Means initialisation."""
    from sklearn.mixture import GaussianMixture

    exp = GMM_REG_COVAR_EXP[0]
    while True:
        reg = float(10.0 ** exp)
        init = {} if init_labels is None else gmm_init_from_labels(
            X, init_labels, k, covariance_type, reg)
        try:
            gmm = GaussianMixture(n_components=k, covariance_type=covariance_type,
                                  max_iter=max_iter, reg_covar=reg, random_state=seed,
                                  **init).fit(X)
            return gmm, reg
        except ValueError as exc:
            if "ill-defined empirical covariance" not in str(exc) or exp >= GMM_REG_COVAR_EXP[1]:
                raise DataError(f"gmm at K = {k}: the mixture could not be fitted even with "
                                f"reg_covar {reg:g} ({str(exc).split('.')[0]}); lower gmm.k or "
                                "try gmm.covariance_type: spherical") from None
            log.warning("gmm K=%d: collapsed covariance with reg_covar %g (duplicate points?); "
                        "retrying with %g", k, reg, 10.0 ** (exp + 1))
            exp += 1


def gmm_init_from_labels(X: np.ndarray, labels: np.ndarray, k: int, covariance_type: str,
                         reg_covar: float) -> dict:
    """GaussianMixture's ``weights_init``, ``means_init``, ``precisions_init`` from hard labels
    (what scikit-learn's ``init_params="kmeans"`` computes from its own K-Means labels), for
    every covariance type; an empty cluster gets weight 0's smallest positive stand-in, the
    overall mean and unit variance.

    Parameters
    ----------
    X : ndarray of shape (n, d), float64
    labels : ndarray of shape (n,), ints in [0, k)
    k : int
    covariance_type : {"full", "tied", "diag", "spherical"}
    reg_covar : float
        Added to every variance (the diagonal), as the mixture does.
    """
    n, d = X.shape
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    safe = np.maximum(counts, 1.0)
    means = np.zeros((k, d))
    np.add.at(means, labels, X)
    means /= safe[:, None]
    means[counts == 0] = X.mean(axis=0)
    weights = np.maximum(counts, 1e-10) / max(counts.sum(), 1.0)
    weights /= weights.sum()
    diff = X - means[labels]
    if covariance_type in ("diag", "spherical"):
        var = np.zeros((k, d))
        np.add.at(var, labels, diff * diff)
        var = var / safe[:, None]
        var[counts == 0] = 1.0
        var = var + reg_covar
        prec = 1.0 / (var.mean(axis=1) if covariance_type == "spherical" else var)
    elif covariance_type == "tied":
        cov = diff.T @ diff / n + reg_covar * np.eye(d)
        prec = np.linalg.inv(cov)
    else:
        order = np.argsort(labels, kind="stable")
        bounds = np.concatenate([[0], np.cumsum(counts.astype(np.int64))])
        prec = np.empty((k, d, d))
        for j in range(k):
            rows = diff[order[bounds[j]:bounds[j + 1]]]
            cov = (rows.T @ rows / len(rows) if len(rows) else np.eye(d)) + reg_covar * np.eye(d)
            prec[j] = np.linalg.inv(cov)
    return {"weights_init": weights, "means_init": means, "precisions_init": prec}


def gmm_sampled(X, k: int, covariance_type: str, max_iter: int, seed: int, *, sample: int,
                engine: str = "faiss", block: int = GMM_BLOCK) -> tuple[np.ndarray, dict]:
    """Gaussian mixture fitted on a seeded sample of ``sample`` rows, then every row labelled
    by its most likely component, in blocks of ``block`` rows (the N x K log-likelihoods of
    every row at once would take 16 GB at 10^6 x 2,000).

    The mixture starts, like scikit-learn's default, from the K-Means partition of the rows
    it is fitted on, here one faiss K-Means run (:func:`clusterlens.clustering.kmeans_engines.
    kmeans_sampled`; scikit-learn's k-means++ alone takes minutes at K = 2,000), and runs at
    most :data:`GMM_SAMPLE_MAX_ITER` EM iterations (``converged`` says whether they sufficed);
    a collapsed covariance is retried as in :func:`run_gmm`.

    Returns
    -------
    labels : ndarray of shape (n,), int64
    info : dict
        ``bic`` (every row), ``converged``, ``reg_covar``, ``route`` (``"sample"``),
        ``sample``.
    """
    from scipy.special import logsumexp

    from clusterlens.core.sampling import sample_rows

    n = len(X)
    rows = sample_rows(n, sample, seed)
    S = np.asarray(X[rows] if len(rows) < n else X, dtype=np.float64)
    init, _ = kmeans_engines.kmeans_sampled(S, k, n_init=1, max_iter=max_iter, seed=seed,
                                            sample=len(S), engine=engine)
    gmm, reg = _fit_gmm(S, k, covariance_type, min(max_iter, GMM_SAMPLE_MAX_ITER), seed,
                        init_labels=init)
    labels = np.empty(n, dtype=np.int64)
    loglik = 0.0
    for start in range(0, n, block):
        B = np.asarray(X[start:start + block], dtype=np.float64)
        weighted = gmm._estimate_weighted_log_prob(B)  # once for both predict and score_samples
        labels[start:start + len(B)] = weighted.argmax(axis=1)
        loglik += float(logsumexp(weighted, axis=1).sum())
    bic = -2.0 * loglik + gmm._n_parameters() * np.log(n)
    return labels, {"bic": float(bic), "converged": bool(gmm.converged_), "reg_covar": reg,
                    "route": "sample", "sample": int(len(rows))}


def run_dbscan(X, percentile: float, min_samples: int) -> tuple[np.ndarray, dict]:
    """DBSCAN with eps from :func:`dbscan_eps`: (labels int64, ``{"eps": eps}``)."""
    from sklearn.cluster import DBSCAN

    eps = dbscan_eps(X, min_samples, percentile)
    labels = DBSCAN(eps=eps, min_samples=min_samples).fit_predict(X)
    return labels.astype(np.int64), {"eps": eps}


# --------------------------------------------------------------------------- grid points
def sampled_engine(engine: str) -> str:
    """The K-Means engine of the sample routes: faiss when installed (its k-means++ and Lloyd
    are several times faster than scikit-learn's at K in the thousands), else ``engine``."""
    return "faiss" if kmeans_engines.faiss_available() else engine


def kmeans_route(n: int, k: int, max_exact_n: int | None, sample_n_init: int
                 ) -> dict | None:
    """The K-Means sample route for ``n`` points and ``k`` clusters: None (every point, as
    :func:`run_kmeans`) up to ``max_exact_n`` points (None: always), else ``{"sample": m,
    "n_init": sample_n_init}`` with m from :func:`clusterlens.clustering.kmeans_engines.
    sample_size` (``max_exact_n``, or 40 points per cluster when that is more). GMM uses the
    same rule, with its own ``max_exact_n``."""
    if max_exact_n is None or n <= max_exact_n:
        return None
    return {"sample": kmeans_engines.sample_size(n, k, max_exact_n), "n_init": sample_n_init}


def _kmeans_any(X, k: int, seed: int, n_init: int, max_iter: int, engine: str,
                max_exact_n: int | None, sample_n_init: int) -> tuple[np.ndarray, dict]:
    """:func:`run_kmeans` on every point, or above ``max_exact_n`` points the sample route
    (:func:`kmeans_route`, :func:`clusterlens.clustering.kmeans_engines.kmeans_sampled`)."""
    route = kmeans_route(len(X), k, max_exact_n, sample_n_init)
    if route is None:
        return run_kmeans(X, k, n_init, max_iter, seed, engine)
    return kmeans_engines.kmeans_sampled(X, k, n_init=route["n_init"], max_iter=max_iter,
                                         seed=seed, sample=route["sample"],
                                         engine=sampled_engine(engine))


def kmeans_point(X, k: int, seed: int, *, n_init: int, max_iter: int,
                 engine: str = "sklearn", max_exact_n: int | None = None,
                 sample_n_init: int = 1) -> GridResult:
    """One K-Means grid point: :func:`run_kmeans` on every point up to ``max_exact_n`` points
    (None: always); above, fitted on a seeded sample with ``sample_n_init`` runs and every
    point assigned to its nearest centroid (:func:`kmeans_route`; the point records
    ``route``, ``sample``, ``n_init``, ``engine``)."""
    labels, extra = _kmeans_any(X, k, seed, n_init, max_iter, engine, max_exact_n,
                                sample_n_init)
    return GridResult({point_name("kmeans", k): (labels, {"k": k, **extra})})


def nmf_point(X, k: int, seed: int, *, W, n_init: int, max_iter: int,
              engine: str = "sklearn", max_exact_n: int | None = None,
              sample_n_init: int = 1) -> GridResult:
    """K-Means on the NMF factor ``W`` (N, components), with the K-Means routes of
    :func:`kmeans_point`; ``X`` (the features the point is scored on, like every other
    method's) is not clustered."""
    labels, extra = _kmeans_any(W, k, seed, n_init, max_iter, engine, max_exact_n,
                                sample_n_init)
    route = {key: extra[key] for key in ("route", "sample", "n_init", "engine") if key in extra}
    return GridResult({point_name("nmf", k): (labels, {
        "k": k, "nmf_components": int(W.shape[1]), "inertia_on_w": extra["inertia"],
        "iterations": extra["iterations"], **route})})


def gmm_point(X, k: int, seed: int, *, covariance_type: str, max_iter: int,
              max_exact_n: int | None = None, engine: str = "sklearn") -> GridResult:
    """One Gaussian-mixture grid point: :func:`run_gmm` on every point up to ``max_exact_n``
    points (None: always); above, :func:`gmm_sampled` on a seeded sample (its size:
    :func:`kmeans_route`), every point labelled by the fitted mixture."""
    route = kmeans_route(len(X), k, max_exact_n, 1)
    if route is None:
        labels, extra = run_gmm(X, k, covariance_type, max_iter, seed)
    else:
        labels, extra = gmm_sampled(X, k, covariance_type, max_iter, seed,
                                    sample=route["sample"], engine=sampled_engine(engine))
    return GridResult({point_name("gmm", k): (labels, {"k": k, **extra})})


def dbscan_point(X, percentile: float, seed: int, *, min_samples: int,
                 max_exact_n: int | None = None) -> GridResult:
    """One DBSCAN grid point (see :func:`run_dbscan`; deterministic): on every point up to
    ``max_exact_n`` points (None: always), above on a sample of that many, seeded by ``seed``
    (:func:`clusterlens.clustering.density.dbscan_sampled`)."""
    if max_exact_n is not None and len(X) > max_exact_n:
        labels, extra = density.dbscan_sampled(X, percentile, min_samples, sample=max_exact_n,
                                               seed=seed)
    else:
        labels, extra = run_dbscan(X, percentile, min_samples)
    return GridResult({point_name("dbscan", percentile): (
        labels, {"eps_percentile": float(percentile), **extra})})


def hdbscan_point(X, min_cluster_size: int, seed: int, *, min_samples: int | None,
                  max_exact_n: int | None = None) -> GridResult:
    """One HDBSCAN grid point (deterministic): on every point up to ``max_exact_n`` points
    (None: always), above on a sample of that many, seeded by ``seed``
    (:func:`clusterlens.clustering.density.hdbscan_sampled`)."""
    extra = {}
    if max_exact_n is not None and len(X) > max_exact_n:
        labels, extra = density.hdbscan_sampled(X, min_cluster_size, min_samples,
                                                sample=max_exact_n, seed=seed)
    else:
        labels, _ = run_hdbscan(X, min_cluster_size, min_samples)
    return GridResult({point_name("hdbscan", min_cluster_size): (
        labels, {"min_cluster_size": min_cluster_size, **extra})})


def agglomerative_points(X, linkage: str, seed: int, *, ks: list[int], route: str = "auto",
                         max_exact_n=None, n_centroids: int = two_step.DEFAULT_N_CENTROIDS,
                         engine: str = "sklearn") -> GridResult:
    """One merge tree for ``linkage``, cut at every K of ``ks``.

    The route (:func:`clusterlens.clustering.two_step.choose_agglomerative_route`): the exact tree on all
    points, or the two-step route (K-Means cells with ``engine``, the linkage over the cells,
    every point labelled through its cell). Each point records ``route`` and ``route_reason``
    (and ``cells`` on the two-step route).

    Returns
    -------
    GridResult
        Points ``<linkage>_k<K>``, with ``tree``, ``unit`` and (two-step) ``cells``.
    """
    chosen = two_step.choose_agglomerative_route(len(X), linkage, route, max_exact_n,
                                                dim=X.shape[1], n_centroids=n_centroids)
    how = {"route": chosen["route"], "route_reason": chosen["reason"]}
    if chosen["route"] == "exact":
        Z = linkage_tree(X, linkage)
        result = GridResult({}, tree=Z)
        cuts = cut_tree_at(Z, ks)
    else:
        res = two_step.two_step_tree(X, linkage, n_centroids, seed, engine)
        result = GridResult({}, tree=res.tree, cells=res.assign.astype(np.int64),
                            unit="K-Means cells")
        cuts = two_step.cut_two_step(res, ks)
        how["cells"] = int(len(res.sizes))
    for k, labels in cuts.items():
        result.points[f"{linkage}_k{k}"] = (labels, {"k": k, "linkage": linkage, **how})
    return result


GRID_METHODS: dict[str, Callable[..., GridResult]] = {
    "kmeans": kmeans_point, "gmm": gmm_point, "dbscan": dbscan_point,
    "hdbscan": hdbscan_point, "agglomerative": agglomerative_points, "nmf": nmf_point,
}


# --------------------------------------------------------------------------- metrics
def evaluate_labels(X, y, labels, silhouette_sample: int, seed: int, *,
                    sample_distances: np.ndarray | None = None, **extra) -> dict:
    """A grid point's metrics.

    Parameters
    ----------
    X : array-like of shape (n, d)
        The features the internal metrics are computed on.
    y : array-like of shape (n,)
        The classes, for the external metrics.
    labels : array-like of shape (n,)
    silhouette_sample, seed : int
        See :func:`clusterlens.clustering.metrics.internal_metrics`.
    sample_distances : ndarray, optional
        See :func:`clusterlens.clustering.metrics.internal_metrics`.
    **extra
        The point's own values, written first after ``n_clusters`` and ``noise_fraction``.

    Returns
    -------
    dict
        :func:`~clusterlens.clustering.metrics.describe`, ``extra``, the internal then external metrics.
    """
    out = {**cm.describe(labels), **extra}
    out.update(cm.internal_metrics(X, labels, silhouette_sample, seed, sample_distances))
    out.update(cm.external_metrics(y, labels, seed=seed))
    return out


def score_points(X, y, result: GridResult, silhouette_sample: int, seed: int
                 ) -> dict[str, dict]:
    """:func:`evaluate_labels` for every point of ``result``, in order.

    Several labelings of the same points (the cuts of one tree) share one silhouette distance
    matrix (:func:`clusterlens.clustering.metrics.silhouette_distances`): the same numbers, computed once.
    """
    shared = (cm.silhouette_distances(X, silhouette_sample, seed)
              if len(result.points) > 1 else None)
    return {name: evaluate_labels(X, y, labels, silhouette_sample, seed,
                                  sample_distances=shared, **extra)
            for name, (labels, extra) in result.points.items()}
