"""Non-negative matrix factorisation of the features, ``X ~ W H``.

``W`` (N x n_components, non-negative) is what K-Means then clusters; the factorisation is
computed once and shared by every K. NMF needs non-negative input: CNN features after a ReLU and
raw pixels scaled to [0, 1] are, text or fused features are not. :func:`make_nonnegative` shifts
every column whose minimum is negative to start at 0 (other columns are untouched, so CNN and
pixel features go in unchanged).
"""
from __future__ import annotations

import warnings

import numpy as np
from sklearn.decomposition import NMF
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

from clusterlens.core.errors import DataError


def negative_columns(X) -> np.ndarray:
    """Which columns of ``X`` (as float32) have a negative minimum.

    Returns
    -------
    ndarray of bool, shape (D,)

    Raises
    ------
    DataError
        If ``X`` holds non-finite values.
    """
    X = np.asarray(X, dtype=np.float32)
    if not np.isfinite(X).all():
        raise DataError("features hold non-finite values; NMF needs finite non-negative input")
    return X.min(axis=0) < 0


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
    neg = negative_columns(X)
    if not neg.any():
        return X, 0
    mins = X.min(axis=0)
    return X - np.where(neg, mins, 0).astype(np.float32), int(neg.sum())


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
