"""`nmf` stage: non-negative matrix factorisation of the backbone features (SPEC C3, seed 004).

Seed 004 factorises the scaled pixels ``X ~ W H`` (``W``: N x n_components, non-negative) and runs
K-Means on ``W``; the ``nmf@K`` grid stages do the K-Means part, one stage per K in ``nmf.k``,
so the factorisation is computed once and shared by every K.

NMF needs non-negative input. CNN features after a ReLU and raw pixels scaled to [0, 1] are; text
or fused features are not. ``nmf.negative`` says what to do with a feature column whose minimum is
negative: ``shift`` (default) subtracts that column's minimum (the column then starts at 0; columns
that are already non-negative are untouched, so CNN and pixel features go in unchanged), ``error``
stops with a message. Writes ``data/nmf.npz`` (``W``: N x n_components float32) and
``metrics/nmf.json`` (reconstruction error, iterations, shifted columns).
"""
from __future__ import annotations

import argparse

import numpy as np

from clusterlens.common import (
    DataError, ParamError, get_logger, load_params, log_block, param, require_choice,
    require_int, run_cli, save_npz, write_json,
)

log = get_logger("nmf")
OUT = "data/nmf.npz"
METRICS = "metrics/nmf.json"
NEGATIVE = ("shift", "error")


def make_nonnegative(X: np.ndarray, mode: str) -> tuple[np.ndarray, int]:
    """``X`` with every column whose minimum is negative shifted to start at 0 (``shift``), or a
    DataError (``error``). Returns the array and the number of shifted columns."""
    X = np.asarray(X, dtype=np.float32)
    if not np.isfinite(X).all():
        raise DataError("features hold non-finite values; NMF needs finite non-negative input")
    mins = X.min(axis=0)
    neg = mins < 0
    if not neg.any():
        return X, 0
    if mode == "error":
        raise ParamError("nmf.negative", f"= error, but {int(neg.sum())} of {X.shape[1]} feature "
                         f"columns have negative values (minimum {float(mins.min()):.4g}); NMF "
                         "needs non-negative input: set nmf.negative: shift, or use a backbone "
                         "whose features are non-negative (CNN features after ReLU, raw pixels)")
    return X - np.where(neg, mins, 0).astype(np.float32), int(neg.sum())


def fit_nmf(X: np.ndarray, n_components: int, max_iter: int, seed: int) -> tuple[np.ndarray, dict]:
    """scikit-learn NMF (coordinate descent, NNDSVDa initialisation, seeded) as in seed 004.
    Returns ``W`` (N x n_components, float32) and facts about the fit."""
    import warnings

    from sklearn.decomposition import NMF
    from sklearn.exceptions import ConvergenceWarning

    model = NMF(n_components=n_components, init="nndsvda", max_iter=max_iter, random_state=seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        W = model.fit_transform(np.asarray(X, dtype=np.float32))
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    if not converged:
        log.warning("NMF did not converge in %d iterations (raise nmf.max_iter)", max_iter)
    return W.astype(np.float32), {"reconstruction_error": float(model.reconstruction_err_),
                                  "iterations": int(model.n_iter_), "converged": converged}


def run(params: dict, features_path="data/features.npy", out=OUT, metrics_path=METRICS,
        fused_path="data/fused.npy") -> dict:
    seed = require_int("seed", param(params, "seed"))
    n_components = require_int("nmf.n_components", param(params, "nmf.n_components"), 1)
    max_iter = require_int("nmf.max_iter", param(params, "nmf.max_iter"), 1)
    negative = require_choice("nmf.negative", param(params, "nmf.negative"), NEGATIVE)
    from clusterlens.fusion import load_selected

    X, features_path = load_selected(params, features_path, fused_path)
    limit = min(X.shape)
    if n_components > limit:
        raise ParamError("nmf.n_components", f"= {n_components} is larger than min(images, "
                         f"feature dim) = min{X.shape} = {limit}")
    log_block(log, "nmf", inputs={"features": f"{features_path} {X.shape}"},
              params={"nmf.n_components": n_components, "nmf.max_iter": max_iter,
                      "nmf.negative": negative, "seed": seed})
    X, shifted = make_nonnegative(X, negative)
    if shifted:
        log.info("shifted %d of %d feature columns to start at 0 (nmf.negative: shift)",
                 shifted, X.shape[1])
    W, info = fit_nmf(X, n_components, max_iter, seed)
    save_npz(out, W=W)
    metrics = write_json(metrics_path, {"n_components": n_components, "shifted_columns": shifted,
                                        **info})
    log_block(log, "nmf done", outputs={out: f"W {W.shape}",
                                        metrics_path: f"reconstruction error "
                                        f"{info['reconstruction_error']:.4g} after "
                                        f"{info['iterations']} iterations"})
    return metrics


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="NMF of the backbone features (K-Means on W in "
                                 "the nmf@K grid stages).")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    run(load_params(args.params))


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
