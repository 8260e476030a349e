"""Standardisation + PCA.

The number of components is an integer or a fraction in (0, 1] (keep the fewest components whose
cumulative explained variance reaches it). The full spectrum is computed once (exact,
deterministic ``covariance_eigh`` / full SVD), so the explained-variance curve and the variance at
2/10/50/100 components are exact whatever the number kept. Above ``EXACT_LIMIT`` (min(N, D)) a
seeded randomized solver computes the first components only.

Same bytes on every CPU: everything is computed in float64, each component's sign is fixed
(:func:`fix_signs`: its largest-magnitude loading is positive, whatever sign the eigensolver
returned), and the scores are rounded to float32 last. Float64 results of different BLAS kernels
and thread counts differ by ~1e-12 (up to 1% of a float32 step on the demo), so the float32
scores come out identical unless a value lies that close to a rounding boundary (an expected
0.06-0.12 flipped values per pair of kernels on the demo's 1797 x 50 scores): the kernel pin of
:mod:`clusterlens.core.numerics` removes that remainder. The exact solver runs BLAS on one thread, so
the float64 model (components, spectrum) does not depend on the core count either.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from clusterlens.core.errors import DataError

VARIANCE_AT = (2, 10, 50, 100)
EXACT_LIMIT = 4096  # above min(N, D) = this, a randomized solver is used


def check_n_components(value, n_samples: int, n_features: int) -> int | float:
    """Validate a number of components against the data's shape.

    Parameters
    ----------
    value : int or float
        A count in [1, min(n_samples, n_features)], or a variance fraction in (0, 1].
    n_samples, n_features : int
        The shape of the data to reduce.

    Returns
    -------
    int or float
        ``value`` unchanged.

    Raises
    ------
    ValueError
        If ``value`` is neither a count in range nor a fraction in (0, 1].
    """
    limit = min(n_samples, n_features)
    if isinstance(value, bool):
        raise ValueError(f"must be an integer or a fraction in (0, 1), got {value!r}")
    if isinstance(value, int):
        if not 1 <= value <= limit:
            raise ValueError(f"= {value} must be between 1 and min(images, feature dim) = "
                             f"min({n_samples}, {n_features}) = {limit}")
        return value
    if isinstance(value, float):
        if not 0.0 < value <= 1.0:
            raise ValueError(f"= {value} as a variance fraction must be in (0, 1]")
        return value
    raise ValueError(f"must be an integer or a fraction in (0, 1), got {value!r}")


def fix_signs(components: np.ndarray) -> np.ndarray:
    """Components with a fixed sign: in each row, the entry of largest magnitude is positive
    (the first such entry on a tie). scikit-learn's ``svd_flip(u_based_decision=False)``
    convention, applied here so the output does not depend on the solver's or the library
    version's choice.

    Parameters
    ----------
    components : ndarray of shape (k, D)

    Returns
    -------
    ndarray of shape (k, D)
        A C-ordered copy, each row multiplied by +1 or -1.
    """
    components = np.array(components, dtype=np.float64, order="C")
    if components.size == 0:
        return components
    pivot = components[np.arange(len(components)), np.abs(components).argmax(axis=1)]
    components *= np.where(pivot < 0, -1.0, 1.0)[:, None]
    return components


@dataclass
class PCAResult:
    """A fitted standardisation + PCA.

    Attributes
    ----------
    scores : ndarray of shape (N, n_components), float32
        The component scores of the input rows.
    n_components : int
        The number of components kept.
    explained_variance_ratio : ndarray
        The full spectrum (or the first components the randomized solver computed).
    scaler_mean, scaler_scale : ndarray of shape (D,)
        The standardisation (zeros and ones without it).
    pca_mean : ndarray of shape (D,)
        The mean PCA subtracts.
    components : ndarray of shape (n_components, D)
        The kept principal axes (float64; signs by :func:`fix_signs`).
    """

    scores: np.ndarray
    n_components: int
    explained_variance_ratio: np.ndarray
    scaler_mean: np.ndarray
    scaler_scale: np.ndarray
    pca_mean: np.ndarray
    components: np.ndarray

    @property
    def cumulative(self) -> np.ndarray:
        """Cumulative explained variance ratio."""
        return np.cumsum(self.explained_variance_ratio)

    def variance_at(self, k: int) -> float:
        """The variance explained by the first ``k`` components (all computed, if fewer)."""
        cum = self.cumulative
        return float(cum[min(k, len(cum)) - 1])


def fit_pca(features: np.ndarray, n_components, standardize: bool = True,
            seed: int = 0) -> PCAResult:
    """Standardise (optionally), then PCA.

    Parameters
    ----------
    features : array-like of shape (N, D)
        The data, converted to float64.
    n_components : int or float
        A count, or a variance fraction in (0, 1] (see :func:`check_n_components`).
    standardize : bool, default True
        z-score every column first.
    seed : int, default 0
        The randomized solver's seed (used only above ``EXACT_LIMIT``).

    Returns
    -------
    PCAResult
        The first ``k`` component scores and the spectrum.

    Raises
    ------
    ValueError
        If ``n_components`` is invalid for the data's shape.
    DataError
        If a variance fraction is not reached by the components the randomized solver computed.
    """
    X = np.asarray(features, dtype=np.float64)
    n, d = X.shape
    n_components = check_n_components(n_components, n, d)
    if standardize:
        scaler = StandardScaler().fit(X)
        X = scaler.transform(X)
        s_mean, s_scale = scaler.mean_, scaler.scale_
    else:
        s_mean, s_scale = np.zeros(d), np.ones(d)
    limit = min(n, d)
    if limit <= EXACT_LIMIT:
        pca = PCA(n_components=None, svd_solver="covariance_eigh" if n >= d else "full")
        threads = 1  # float64 bytes independent of the core count (OpenBLAS splits sums by
        # thread); on the demo 0.60 s instead of 0.45 s with two threads
    else:
        want = n_components if isinstance(n_components, int) else min(limit, 1024)
        want = max(want, min(limit, max(VARIANCE_AT)))
        pca = PCA(n_components=want, svd_solver="randomized", random_state=seed)
        threads = None  # large data: every core
    with threadpool_limits(threads, user_api="blas"):
        pca.fit(X)
    ratio = np.nan_to_num(pca.explained_variance_ratio_, nan=0.0)
    if isinstance(n_components, float):
        cum = np.cumsum(ratio)
        reach = np.flatnonzero(cum >= n_components - 1e-12)
        if len(reach) == 0:
            raise DataError(f"a variance fraction of {n_components}: the first {len(cum)} "
                            f"components explain only {cum[-1]:.3f}; use an integer number of "
                            "components (reduce.n_components)")
        k = int(reach[0]) + 1
    else:
        k = n_components
    components = fix_signs(pca.components_[:k])
    with threadpool_limits(threads, user_api="blas"):
        scores = (X - pca.mean_) @ components.T  # float64, rounded to float32 once, at the end
    return PCAResult(scores=scores.astype(np.float32), n_components=k,
                     explained_variance_ratio=ratio, scaler_mean=s_mean, scaler_scale=s_scale,
                     pca_mean=pca.mean_, components=components)


def plane_coords(features: np.ndarray, res: PCAResult, standardize: bool = True,
                 seed: int = 0) -> np.ndarray:
    """The 2-D view: the first two scores of ``res``, or a 2-component fit when it kept one.

    Returns
    -------
    ndarray of shape (N, 2), float32, C-contiguous
    """
    coords = res.scores[:, :2] if res.n_components >= 2 else fit_pca(
        features, 2, standardize, seed).scores
    return np.ascontiguousarray(coords)


def reduce_metrics(res: PCAResult, n_features: int) -> dict:
    """Summary numbers of a fit.

    Returns
    -------
    dict
        ``n_components``, ``input_dim``, ``images``, ``variance_retained`` and
        ``variance_at_<k>`` for every k in ``VARIANCE_AT``.
    """
    m = {"n_components": res.n_components, "input_dim": int(n_features),
         "images": int(res.scores.shape[0]),
         "variance_retained": res.variance_at(res.n_components)}
    for k in VARIANCE_AT:
        m[f"variance_at_{k}"] = res.variance_at(k)
    return m


def variance_curve(res: PCAResult):
    """The explained-variance table: ``component``, ``explained_variance``,
    ``cumulative_variance`` (rounded to 6 decimals), one row per computed component."""
    cum = res.cumulative
    return pd.DataFrame({"component": np.arange(1, len(cum) + 1),
                         "explained_variance": res.explained_variance_ratio.round(6),
                         "cumulative_variance": cum.round(6)})
