"""DVC stage `nmf`: the NMF factor ``W`` of the selected feature set (``fusion.set``).

Computed once; the ``nmf_kmeans`` grid stages run K-Means on ``W`` at every K in ``nmf.k``.
``nmf.negative`` says what to do with a feature column whose minimum is negative: ``shift``
(subtract that column's minimum) or ``error`` (stop with a message). Writes ``data/nmf.npz``
(``W``: N x n_components float32) and ``metrics/nmf.json`` (reconstruction error, iterations,
shifted columns). Above ``nmf.max_exact_n`` images the factorisation is fitted on a seeded sample
and ``W`` of every image computed from it (logged; ``route`` and ``sample`` in the metrics).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

from clusterlens.clustering import nmf
from clusterlens.config.base import load_params, parse_stage
from clusterlens.config.fusion import FusionParams
from clusterlens.config.nmf import NMFParams
from clusterlens.core.cli import run_cli
from clusterlens.core.errors import ParamError
from clusterlens.core.io import save_npz, write_json
from clusterlens.core.logs import get_logger, log_block
from clusterlens.features.sets import load_feature_set

log = get_logger("nmf")
IN_FEATURES = "data/features.npy"
IN_FUSED = "data/fused.npy"
OUT = "data/nmf.npz"
METRICS = "metrics/nmf.json"


@dataclass(frozen=True)
class Params:
    """What the stage reads from params.yaml (parsed once, in :func:`main`)."""
    seed: int
    nmf: NMFParams
    fusion: FusionParams = FusionParams()


def check_params_vs_input(cfg: Params, X: np.ndarray) -> np.ndarray:
    """The rules that need the data: ``nmf.n_components`` at most min(images, feature dim), and
    no negative feature column under ``nmf.negative: error``. Returns the shift of
    :func:`clusterlens.clustering.nmf.column_shift` (read block by block)."""
    p = cfg.nmf
    limit = min(X.shape)
    if p.n_components > limit:
        raise ParamError("nmf.n_components", f"= {p.n_components} is larger than min(images, "
                         f"feature dim) = min{X.shape} = {limit}")
    shift = nmf.column_shift(X)
    neg = shift < 0
    if p.negative == "error" and neg.any():
        low = float(shift.min())
        raise ParamError("nmf.negative", f"= error, but {int(neg.sum())} of {X.shape[1]} feature "
                         f"columns have negative values (minimum {low:.4g}); NMF needs "
                         "non-negative input: set nmf.negative: shift, or use a backbone whose "
                         "features are non-negative (CNN features after ReLU, raw pixels)")
    return shift


def run(cfg: Params, features_path: str = IN_FEATURES, out: str = OUT,
        metrics_path: str = METRICS, fused_path: str = IN_FUSED) -> dict:
    seed = cfg.seed
    p = cfg.nmf
    X, source = load_feature_set(cfg.fusion.set, features_path, fused_path)
    shift = check_params_vs_input(cfg, X)
    log_block(log, "nmf", inputs={"features": f"{source} {X.shape}"},
              params={"nmf.n_components": p.n_components, "nmf.max_iter": p.max_iter,
                      "nmf.negative": p.negative, "nmf.max_exact_n": p.max_exact_n,
                      "seed": seed})
    shifted = int((shift < 0).sum())
    if shifted:
        log.info("shifted %d of %d feature columns to start at 0 (nmf.negative: shift)",
                 shifted, X.shape[1])
    if p.max_exact_n is not None and len(X) > p.max_exact_n:
        log.warning("%d images, above nmf.max_exact_n: NMF fitted on a seeded sample of %d, W of "
                    "every image from the fitted H", len(X), p.max_exact_n)
        W, info = nmf.fit_nmf_sampled(X, p.n_components, p.max_iter, seed,
                                      sample=p.max_exact_n, shift=shift)
    else:
        W, info = nmf.fit_nmf(nmf.make_nonnegative(X)[0], p.n_components, p.max_iter, seed)
    if not info["converged"]:
        log.warning("NMF did not converge in %d iterations (raise nmf.max_iter)", p.max_iter)
    save_npz(out, W=W)
    metrics = write_json(metrics_path, {"n_components": p.n_components,
                                        "shifted_columns": shifted, **info})
    log_block(log, "nmf done", outputs={out: f"W {W.shape}",
                                        metrics_path: f"reconstruction error "
                                        f"{info['reconstruction_error']:.4g} after "
                                        f"{info['iterations']} iterations"})
    return metrics


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="NMF of the selected feature set (K-Means on W in "
                                 "the nmf_kmeans grid stages).")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    run(parse_stage(load_params(args.params), Params))


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
