"""Standardisation + PCA.

The number of components is an integer or a fraction in (0, 1] (keep the fewest components whose
cumulative explained variance reaches it). The full spectrum is computed once (exact,
deterministic ``covariance_eigh`` / full SVD), so the explained-variance curve and the variance at
2/10/50/100 components are exact whatever the number kept. Above ``EXACT_LIMIT`` (min(N, D)) a
seeded randomized solver computes the first components only.

Large N (``max_exact_n``): scikit-learn holds the data in float64 about three times over (8
bytes x N x D each: the copy, the standardised copy, the centred copy), 27 GB at 10^6 x 1,280.
Above ``max_exact_n`` rows :func:`fit_pca` takes the ``blocked`` route instead: the column
means, then the centred cross-product matrix (D x D) are accumulated over blocks of rows read
from the input (which may be a read-only memory map), the covariance of the standardised data
is eigendecomposed (``numpy.linalg.eigh``, the same full spectrum), and the scores are computed
block by block. Memory: the D x D matrices, one float64 block and the float32 scores. It is the
same PCA up to floating-point rounding (the sums run in another order).

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
from scipy.linalg.blas import dsyrk
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from clusterlens.core.errors import DataError

VARIANCE_AT = (2, 10, 50, 100)
EXACT_LIMIT = 4096  # above min(N, D) = this, a randomized solver is used
BLOCK_ROWS = 16_384  # rows per block of the blocked route (16,384 x 1,280 float64: 168 MB)
ROUTES = ("exact", "randomized", "blocked")


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
    route : {"exact", "randomized", "blocked"}
        How it was fitted (see :func:`fit_pca`).
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
    route: str = "exact"

    @property
    def cumulative(self) -> np.ndarray:
        """Cumulative explained variance ratio."""
        return np.cumsum(self.explained_variance_ratio)

    def variance_at(self, k: int) -> float:
        """The variance explained by the first ``k`` components (all computed, if fewer)."""
        cum = self.cumulative
        return float(cum[min(k, len(cum)) - 1])


def pca_route(n: int, d: int, max_exact_n: int | None = None) -> str:
    """The route :func:`fit_pca` takes for N x D data: ``randomized`` when min(N, D) exceeds
    ``EXACT_LIMIT``, else ``blocked`` when N exceeds ``max_exact_n`` (None: never), else
    ``exact``."""
    if min(n, d) > EXACT_LIMIT:
        return "randomized"
    if max_exact_n is not None and n > max_exact_n:
        return "blocked"
    return "exact"


def fit_pca(features: np.ndarray, n_components, standardize: bool = True,
            seed: int = 0, *, max_exact_n: int | None = None,
            block_rows: int = BLOCK_ROWS) -> PCAResult:
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
    max_exact_n : int or None, default None
        Above this many rows, the ``blocked`` route (:func:`pca_route`): bounded memory, and
        ``features`` is read block by block (a memory map is never loaded whole). None: never.
    block_rows : int, default ``BLOCK_ROWS``
        Rows per block of the blocked route.

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
    n, d = np.shape(features)
    if pca_route(n, d, max_exact_n) == "blocked":
        return _fit_blocked(features, check_n_components(n_components, n, d), standardize,
                            block_rows)
    X = np.asarray(features, dtype=np.float64)
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
    k = _kept(ratio, n_components)
    components = fix_signs(pca.components_[:k])
    with threadpool_limits(threads, user_api="blas"):
        scores = (X - pca.mean_) @ components.T  # float64, rounded to float32 once, at the end
    return PCAResult(scores=scores.astype(np.float32), n_components=k,
                     explained_variance_ratio=ratio, scaler_mean=s_mean, scaler_scale=s_scale,
                     pca_mean=pca.mean_, components=components,
                     route="exact" if limit <= EXACT_LIMIT else "randomized")


def _kept(ratio: np.ndarray, n_components) -> int:
    """The number of components kept: the count, or the fewest reaching the fraction."""
    if not isinstance(n_components, float):
        return n_components
    cum = np.cumsum(ratio)
    reach = np.flatnonzero(cum >= n_components - 1e-12)
    if len(reach) == 0:
        raise DataError(f"a variance fraction of {n_components}: the first {len(cum)} "
                        f"components explain only {cum[-1]:.3f}; use an integer number of "
                        "components (reduce.n_components)")
    return int(reach[0]) + 1


def _blocks(n: int, block_rows: int):
    return (slice(s, min(n, s + block_rows)) for s in range(0, n, block_rows))


def _fit_blocked(features, n_components, standardize: bool, block_rows: int) -> PCAResult:
    """The ``blocked`` route of :func:`fit_pca`: three passes over blocks of rows (means; the
    centred cross-products; the scores), BLAS on one thread as the exact route."""
    if isinstance(block_rows, bool) or not isinstance(block_rows, int) or block_rows < 1:
        raise ValueError(f"block_rows must be an integer >= 1, got {block_rows!r}")
    n, d = features.shape
    with threadpool_limits(1, user_api="blas"):
        total = np.zeros(d)
        for b in _blocks(n, block_rows):
            total += np.asarray(features[b], dtype=np.float64).sum(axis=0)
        mean = total / n
        cross = np.zeros((d, d), order="F")
        for b in _blocks(n, block_rows):
            block = np.asarray(features[b], dtype=np.float64) - mean
            # upper triangle of cross + block.T @ block (BLAS syrk: half a matrix product)
            cross = dsyrk(1.0, block.T, beta=1.0, c=cross, trans=0, lower=0, overwrite_c=1)
        cross = np.triu(cross) + np.triu(cross, 1).T  # exactly symmetric
        var = np.maximum(np.diag(cross) / n, 0.0)  # StandardScaler's (population) variance
        if standardize:
            scale = np.sqrt(var)
            scale[scale < 10 * np.finfo(np.float64).eps] = 1.0  # constant columns, as sklearn
            cov = cross / np.outer(scale, scale) / max(n - 1, 1)
            s_mean = mean
        else:
            scale = np.ones(d)
            cov = cross / max(n - 1, 1)
            s_mean = np.zeros(d)
        eigvals, eigvecs = np.linalg.eigh(cov)
        eigvals = np.maximum(eigvals[::-1], 0.0)
        total_var = eigvals.sum()
        ratio = eigvals / total_var if total_var > 0 else np.zeros_like(eigvals)
        k = _kept(ratio, n_components)
        components = fix_signs(eigvecs[:, ::-1][:, :k].T)
        # the standardised data has mean 0; without standardisation PCA subtracts the mean
        pca_mean = np.zeros(d) if standardize else mean
        scores = np.empty((n, k), dtype=np.float32)
        for b in _blocks(n, block_rows):
            block = (np.asarray(features[b], dtype=np.float64) - mean) / scale
            scores[b] = (block @ components.T).astype(np.float32)
    return PCAResult(scores=scores, n_components=k, explained_variance_ratio=ratio,
                     scaler_mean=s_mean, scaler_scale=scale, pca_mean=pca_mean,
                     components=components, route="blocked")


def plane_coords(features: np.ndarray, res: PCAResult, standardize: bool = True,
                 seed: int = 0) -> np.ndarray:
    """The 2-D view: the first two scores of ``res``, or a 2-component fit when it kept one.

    Returns
    -------
    ndarray of shape (N, 2), float32, C-contiguous
    """
    coords = res.scores[:, :2] if res.n_components >= 2 else fit_pca(
        features, 2, standardize, seed,
        max_exact_n=None if res.route != "blocked" else 0).scores
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
    if res.route == "blocked":  # recorded only off the default route (its metrics unchanged)
        m["route"] = "blocked"
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
