"""Fusing visual and text features, and the table that compares the feature sets.

Four feature sets are clustered with K-Means, a Gaussian mixture and (optionally) Ward
agglomeration at K = the number of classes, and compared by Cohen's kappa after mapping every
cluster to its majority class:

- ``visual``: the backbone features as extracted;
- ``text``: the caption embeddings (unit rows);
- ``concat``: each L2-normalised, then concatenated (D_v + D_t columns);
- ``weighted``: each standardised and PCA-reduced to a common dimension
  ``min(dim, D_v, D_t, N)``, L2-normalised, then ``w * visual + (1 - w) * text``.

Above ``fusion.max_n`` images the comparison runs on a seeded sample stratified by class
(:func:`clusterlens.features.sets.comparison_plan`), the four sets built from the sampled rows,
K-Means with ``SAMPLE_N_INIT`` initialisation, K = the sample's classes.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from clusterlens.clustering import methods
from clusterlens.clustering import metrics as cm
from clusterlens.clustering.reduction import fit_pca
from clusterlens.core.errors import DataError
from clusterlens.features.sets import FEATURE_SETS

METHODS = ("kmeans", "gmm", "ward")
SAMPLE_N_INIT = 1  # K-Means initialisations of a comparison on a sample (fusion.max_n)
SET_TITLES = {"visual": "Visual", "text": "Text", "concat": "Fused - Concat",
              "weighted": "Fused - Weighted"}
METHOD_TITLES = {"kmeans": "K-Means", "gmm": "GMM", "ward": "Agglomerative (ward)"}
TABLE_COLUMNS = ["features", "method", "label", "kappa", "nmi", "ari"]


# --------------------------------------------------------------------------- checks
def check_weight(weight) -> float:
    """The visual share of the weighted average: a number in [0, 1], returned as float.

    Raises
    ------
    ValueError
        If ``weight`` is not a number (``True`` is not) or lies outside [0, 1].
    """
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) \
            or not 0.0 <= float(weight) <= 1.0:
        raise ValueError(f"the weight must be a number in [0, 1] (the visual share), got "
                         f"{weight!r}")
    return float(weight)


def _check_dim(dim) -> int:
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"the common dimension must be an integer >= 1, got {dim!r}")
    return dim


def check_pair(visual, text) -> tuple[np.ndarray, np.ndarray]:
    """The visual and text features as arrays, checked to be 2-D with the same rows.

    Raises
    ------
    DataError
        If either is not 2-D, or their numbers of rows differ.
    """
    v, t = np.asarray(visual), np.asarray(text)
    if v.ndim != 2 or t.ndim != 2:
        raise DataError(f"visual {v.shape} and text {t.shape} features must be 2-D (N, D)")
    if len(v) != len(t):
        raise DataError(f"visual features have {len(v)} rows but text features {len(t)}: "
                        "both must follow the index rows (run `dvc repro`)")
    return v, t


# --------------------------------------------------------------------------- fusion
def l2_normalize(X) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32; all-zero rows stay zero)."""
    X = np.asarray(X, dtype=np.float64)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return (X / np.maximum(norms, 1e-12)).astype(np.float32)


def fuse_concat(visual, text) -> np.ndarray:
    """``[l2(visual), l2(text)]``: (N, D_v + D_t) float32, each half of unit norm.

    Raises
    ------
    DataError
        If the two arrays are not 2-D or have different numbers of rows.
    """
    v, t = check_pair(visual, text)
    return np.hstack([l2_normalize(v), l2_normalize(t)])


def common_dim(dim: int, n: int, d_visual: int, d_text: int) -> int:
    """The PCA dimension both parts are reduced to: min(dim, D_v, D_t, N)."""
    return int(min(_check_dim(dim), d_visual, d_text, n))


def pca_project(X, dim: int, seed: int = 0) -> np.ndarray:
    """Standardise, PCA to ``dim`` components (:func:`clusterlens.clustering.reduction.fit_pca`), then
    L2-normalise the rows; float32."""
    return l2_normalize(fit_pca(np.asarray(X), int(dim), standardize=True, seed=seed).scores)


def fuse_weighted(visual, text, weight: float = 0.5, dim: int = 384, seed: int = 0) -> np.ndarray:
    """The weighted fusion ``w * p(visual) + (1 - w) * p(text)``.

    ``p`` is standardisation + PCA to the common dimension + L2 normalisation;
    ``weight = 1`` gives ``p(visual)`` exactly, ``weight = 0`` gives ``p(text)``.

    Parameters
    ----------
    visual, text : array-like of shape (N, D_v), (N, D_t)
    weight : float in [0, 1], default 0.5
        The visual share.
    dim : int >= 1, default 384
        The common dimension, capped at min(D_v, D_t, N).
    seed : int, default 0

    Returns
    -------
    ndarray of shape (N, min(dim, D_v, D_t, N)), float32
    """
    w = check_weight(weight)
    v, t = check_pair(visual, text)
    k = common_dim(dim, len(v), v.shape[1], t.shape[1])
    pv, pt = pca_project(v, k, seed), pca_project(t, k, seed)
    return (np.float32(w) * pv + np.float32(1.0 - w) * pt).astype(np.float32)


_SET_BUILDERS = {
    "visual": lambda v, t, weight, dim, seed: np.asarray(v, dtype=np.float32),
    "text": lambda v, t, weight, dim, seed: np.asarray(t, dtype=np.float32),
    "concat": lambda v, t, weight, dim, seed: fuse_concat(v, t),
    "weighted": fuse_weighted,
}


def feature_set(name: str, visual, text, weight: float = 0.5, dim: int = 384,
                seed: int = 0) -> np.ndarray:
    """One feature set, float32.

    Parameters
    ----------
    name : {"visual", "text", "concat", "weighted"}
        ``visual`` and ``text`` are returned as given; see :func:`fuse_concat` and
        :func:`fuse_weighted` for the others.
    visual, text : array-like, 2-D, the same number of rows
    weight, dim, seed
        As in :func:`fuse_weighted` (checked whatever the name).

    Raises
    ------
    ValueError
        For an unknown name, weight or dimension.
    DataError
        If the arrays are not 2-D or their rows differ.
    """
    if name not in _SET_BUILDERS:
        raise ValueError(f"unknown feature set {name!r}; choose from {', '.join(FEATURE_SETS)}")
    weight, dim = check_weight(weight), _check_dim(dim)
    v, t = check_pair(visual, text)
    return _SET_BUILDERS[name](v, t, weight, dim, seed)


# --------------------------------------------------------------------------- kappa table
def _kmeans(X, k, seed, n_init, max_iter, covariance_type, gmm_max_iter):
    return methods.run_kmeans(X, k, n_init, max_iter, seed)[0]


def _gmm(X, k, seed, n_init, max_iter, covariance_type, gmm_max_iter):
    return methods.run_gmm(X, k, covariance_type, gmm_max_iter, seed)[0]


def _ward(X, k, seed, n_init, max_iter, covariance_type, gmm_max_iter):
    return methods.cut_tree_at(methods.linkage_tree(X, "ward"), [k])[k]


_CLUSTERERS = {"kmeans": _kmeans, "gmm": _gmm, "ward": _ward}


def _check_methods(methods) -> None:
    for m in methods:
        if m not in _CLUSTERERS:
            raise ValueError(f"unknown clustering method {m!r}; choose from {', '.join(METHODS)}")


def cluster_labels(X, method: str, k: int, seed: int = 0, n_init: int = 10,
                   max_iter: int = 300, covariance_type: str = "diag",
                   gmm_max_iter: int = 200) -> np.ndarray:
    """K cluster labels of ``X`` by ``kmeans``, ``gmm`` or ``ward`` (agglomerative).

    The same code as the clustering grid (:mod:`clusterlens.clustering.methods`): ``n_init`` and
    ``max_iter`` are K-Means's, ``covariance_type`` and ``gmm_max_iter`` the mixture's.

    Raises
    ------
    ValueError
        For an unknown method.
    """
    _check_methods([method])
    return _CLUSTERERS[method](np.asarray(X, dtype=np.float64), k, seed, n_init, max_iter,
                               covariance_type, gmm_max_iter)


def kappa_table(feature_sets: dict, y, k: int | None = None, seed: int = 0,
                methods=("kmeans", "gmm", "ward"), n_init: int = 10, max_iter: int = 300,
                covariance_type: str = "diag", gmm_max_iter: int = 200,
                progress: bool = True) -> pd.DataFrame:
    """Every method x feature set clustered at K, scored against the classes.

    Parameters
    ----------
    feature_sets : dict of str -> array-like of shape (N, D)
        The sets to compare, in table order.
    y : array-like of shape (N,)
        The class labels.
    k : int, optional
        The number of clusters (default: the number of classes).
    seed, n_init, max_iter, covariance_type, gmm_max_iter
        As in :func:`cluster_labels`.
    methods : sequence of str
        From ``METHODS``.
    progress : bool, default True
        Show a progress bar.

    Returns
    -------
    pandas.DataFrame
        Columns ``features``, ``method``, ``label`` (e.g. "K-Means (Fused - Concat)"),
        ``kappa`` (Cohen's kappa after majority-vote mapping,
        :func:`clusterlens.clustering.metrics.kappa_after_majority_vote`), ``nmi``, ``ari``; rows in the
        order of ``feature_sets``, then ``methods``.

    Raises
    ------
    ValueError
        For an unknown method, K < 2 or K larger than the number of rows.
    DataError
        If a set's rows differ from the labels'.
    """
    y = np.asarray(y)
    k = len(np.unique(y)) if k is None else k
    _check_methods(methods)
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ValueError(f"K must be an integer >= 2, got {k!r}")
    rows = []
    jobs = [(name, m) for name in feature_sets for m in methods]
    for name, method in tqdm(jobs, desc="kappa table", unit="fit", disable=not progress):
        X = np.asarray(feature_sets[name])
        if len(X) != len(y):
            raise DataError(f"feature set {name!r} has {len(X)} rows, labels {len(y)}")
        if k > len(X):
            raise ValueError(f"K = {k} is more than the {len(X)} images")
        labels = cluster_labels(X, method, k, seed, n_init, max_iter, covariance_type,
                                gmm_max_iter)
        rows.append({"features": name, "method": method,
                     "label": f"{METHOD_TITLES.get(method, method)} "
                              f"({SET_TITLES.get(name, name)})",
                     "kappa": cm.kappa_after_majority_vote(y, labels),
                     "nmi": cm.nmi(y, labels), "ari": cm.ari(y, labels)})
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def summarize(table: pd.DataFrame, k: int, weighted_dim: int) -> dict:
    """The table as feature set -> method -> kappa, with the best pair, K and the weighted
    set's dimension (keys ``best``, ``k``, ``weighted_dim``)."""
    best = table.loc[table["kappa"].idxmax()]
    out = {name: {r.method: r.kappa for r in table[table.features == name].itertuples()}
           for name in FEATURE_SETS}
    out["best"] = {"features": best["features"], "method": best["method"],
                   "kappa": float(best["kappa"])}
    out["k"] = k
    out["weighted_dim"] = int(weighted_dim)
    return out
