"""Non-negative matrix factorisation of the features, ``X ~ W H``.

``W`` (N x n_components, non-negative) is what K-Means then clusters; the factorisation is
computed once and shared by every K. NMF needs non-negative input: CNN features after a ReLU and
raw pixels scaled to [0, 1] are, text or fused features are not. :func:`make_nonnegative` shifts
every column whose minimum is negative to start at 0 (other columns are untouched, so CNN and
pixel features go in unchanged).

Above a switch point (the stage's ``nmf.max_exact_n``) :func:`fit_nmf_sampled` fits the
factorisation on a seeded sample of rows and computes ``W`` for every row with the fitted ``H``
(scikit-learn's ``NMF.transform``), block by block, so a read-only memory map of the features is
never copied whole.
"""
from __future__ import annotations

import warnings

import numpy as np
from sklearn.decomposition import NMF
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

from clusterlens.core.errors import DataError

BLOCK = 65_536  # rows per block for column minima and for W of every row (sampled route)


def column_minima(X, block: int = BLOCK) -> np.ndarray:
    """Every column's minimum of ``X`` (as float32), read ``block`` rows at a time.

    Raises
    ------
    DataError
        If ``X`` holds non-finite values.
    """
    mins = None
    for start in range(0, len(X), block):
        B = np.asarray(X[start:start + block], dtype=np.float32)
        if not np.isfinite(B).all():
            raise DataError("features hold non-finite values; NMF needs finite non-negative "
                            "input")
        low = B.min(axis=0)
        mins = low if mins is None else np.minimum(mins, low)
    return mins


def negative_columns(X) -> np.ndarray:
    """Which columns of ``X`` (as float32) have a negative minimum (:func:`column_minima`).

    Returns
    -------
    ndarray of bool, shape (D,)

    Raises
    ------
    DataError
        If ``X`` holds non-finite values.
    """
    return column_minima(X) < 0


def column_shift(X) -> np.ndarray:
    """What :func:`make_nonnegative` subtracts from every row: each negative column's minimum,
    0 for the others (float32, shape (D,))."""
    mins = column_minima(X)
    return np.where(mins < 0, mins, 0).astype(np.float32)


def make_nonnegative(X) -> tuple[np.ndarray, int]:
    """``X`` (float32) with every column whose minimum is negative shifted to start at 0.

    Returns
    -------
    X : ndarray, float32
        Unchanged when no column is negative.
    shifted : int
        The number of shifted columns.

    Raises
    ------
    DataError
        If ``X`` holds non-finite values.
    """
    X = np.asarray(X, dtype=np.float32)
    shift = column_shift(X)
    if not shift.any():
        return X, 0
    return X - shift, int((shift < 0).sum())


def fit_nmf(X, n_components: int, max_iter: int, seed: int) -> tuple[np.ndarray, dict]:
    """scikit-learn NMF (coordinate descent, NNDSVDa initialisation, seeded).

    BLAS runs on one thread: the solver's matrix products then sum in one order whatever the
    core count (with several threads OpenBLAS splits them by thread count, which moves the
    factorisation in its last digits and K-Means on ``W`` after it). On the demo it is also
    faster than two threads (the products are small).

    Parameters
    ----------
    X : array-like of shape (N, D), non-negative
    n_components : int
        The rank, at most min(N, D).
    max_iter : int
        The solver's iteration cap.
    seed : int

    Returns
    -------
    W : ndarray of shape (N, n_components), float32
    info : dict
        ``reconstruction_error``, ``iterations`` and ``converged`` (False when the solver
        stopped at ``max_iter``).
    """
    model = NMF(n_components=n_components, init="nndsvda", max_iter=max_iter, random_state=seed)
    with warnings.catch_warnings(record=True) as caught, threadpool_limits(1, user_api="blas"):
        warnings.simplefilter("always", ConvergenceWarning)
        W = model.fit_transform(np.asarray(X, dtype=np.float32))
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return W.astype(np.float32), {"reconstruction_error": float(model.reconstruction_err_),
                                  "iterations": int(model.n_iter_), "converged": converged}


def fit_nmf_sampled(X, n_components: int, max_iter: int, seed: int, *, sample: int,
                    shift: np.ndarray | None = None, block: int = BLOCK
                    ) -> tuple[np.ndarray, dict]:
    """NMF (as :func:`fit_nmf`) fitted on a seeded sample of ``sample`` rows
    (:func:`clusterlens.core.sampling.sample_rows`); ``W`` of every row is then the
    non-negative code of that row under the fitted ``H`` (``NMF.transform``, the same
    coordinate-descent solver with ``H`` fixed), ``block`` rows at a time.

    Parameters
    ----------
    X : array-like of shape (N, D)
        Read block by block (a memory map stays on disk); ``X - shift`` must be non-negative.
    n_components, max_iter, seed : int
    sample : int
        Rows the factorisation is fitted on.
    shift : ndarray of shape (D,), optional
        Subtracted from every row first (:func:`column_shift`).
    block : int

    Returns
    -------
    W : ndarray of shape (N, n_components), float32
    info : dict
        ``reconstruction_error`` (the Frobenius norm of ``X - shift - W H`` over every row),
        ``iterations`` and ``converged`` (of the fit on the sample), ``route``
        (``"sample"``), ``sample``.
    """
    from clusterlens.core.sampling import sample_rows

    n = len(X)
    rows = sample_rows(n, sample, seed)
    shift = np.zeros(X.shape[1], np.float32) if shift is None else shift

    def rows_of(index):
        return np.asarray(X[index], dtype=np.float32) - shift

    model = NMF(n_components=n_components, init="nndsvda", max_iter=max_iter, random_state=seed)
    with warnings.catch_warnings(record=True) as caught, threadpool_limits(1, user_api="blas"):
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(rows_of(rows))
        converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
        W = np.empty((n, n_components), dtype=np.float32)
        squared = 0.0
        for start in range(0, n, block):
            B = rows_of(slice(start, start + block))
            Wb = model.transform(B)
            W[start:start + len(B)] = Wb
            residual = B - (Wb @ model.components_).astype(np.float32)
            squared += float(np.einsum("ij,ij->", residual, residual, dtype=np.float64))
    return W, {"reconstruction_error": float(np.sqrt(squared)), "iterations": int(model.n_iter_),
               "converged": converged, "route": "sample", "sample": int(len(rows))}
