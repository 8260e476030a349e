"""DVC stage `reduce`: standardise + PCA of the selected feature set (``fusion.set``).

Writes ``data/pca.npy`` (N x n_components float32 scores), ``data/pca_2d.npy`` (the 2-D view),
``data/pca_model.npz`` (scaler and PCA parameters), ``metrics/reduce.json`` (the variance kept
and at 2/10/50/100 components), the explained-variance curve (csv + png) and the 2-D view
coloured by class under ``plots/reduce/``. Above ``reduce.max_exact_n`` images the PCA takes the
bounded-memory ``blocked`` route (:func:`clusterlens.clustering.reduction.fit_pca`), recorded
in the metrics as ``route``.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

from clusterlens.clustering import reduction
from clusterlens.config.base import check_value, load_params, parse_stage
from clusterlens.config.fusion import FusionParams
from clusterlens.config.large_n import LargeNParams
from clusterlens.config.reduce import ReduceParams
from clusterlens.core.cli import run_cli
from clusterlens.core.errors import check_rows
from clusterlens.core.io import (
    read_table,
    remove_stale_tmp,
    save_npy,
    save_npz,
    write_json,
    write_table,
)
from clusterlens.core.logs import get_logger, log_block
from clusterlens.features.sets import load_feature_set
from clusterlens.report.figures.reduce import plot_explained_variance, plot_pca_2d
from clusterlens.report.figures.style import matplotlib_setup

log = get_logger("reduce")
IN_FEATURES = "data/features.npy"
IN_FUSED = "data/fused.npy"
IN_INDEX = "data/index.parquet"
OUT_PCA = "data/pca.npy"
OUT_PCA_2D = "data/pca_2d.npy"
OUT_MODEL = "data/pca_model.npz"
OUT_METRICS = "metrics/reduce.json"
OUT_CURVE = "plots/reduce/explained_variance.csv"
OUT_CURVE_PNG = "plots/reduce/explained_variance.png"
OUT_SCATTER = "plots/reduce/pca_2d.png"


@dataclass(frozen=True)
class Params:
    """What the stage reads from params.yaml (parsed once, in :func:`main`)."""
    reduce: ReduceParams
    seed: int
    fusion: FusionParams = FusionParams()
    large_n: LargeNParams = LargeNParams()


def check_params_vs_input(cfg: Params, shape: tuple[int, int]) -> None:
    """The rule that needs the data: ``reduce.n_components`` at most min(images, feature dim)."""
    check_value("reduce.n_components", cfg.reduce.n_components,
                lambda v: reduction.check_n_components(v, *shape))


def run(cfg: Params, features_path: str = IN_FEATURES, index_path: str = IN_INDEX,
        fused_path: str = IN_FUSED) -> dict:
    p = cfg.reduce
    seed = cfg.seed
    features, source = load_feature_set(cfg.fusion.set, features_path, fused_path,
                                        mmap_threshold_bytes=cfg.large_n.mmap_threshold_bytes)
    index = read_table(index_path)
    check_rows(str(source), len(features), str(index_path), len(index))
    check_params_vs_input(cfg, features.shape)
    remove_stale_tmp(OUT_PCA, OUT_PCA_2D, OUT_MODEL, OUT_METRICS, OUT_CURVE, OUT_CURVE_PNG,
                     OUT_SCATTER)  # left by a run killed mid-write
    log_block(log, "reduce", inputs={"features": f"{source} {features.shape}"},
              params={"reduce.standardize": p.standardize,
                      "reduce.n_components": p.n_components,
                      "reduce.max_exact_n": p.max_exact_n, "seed": seed})
    route = reduction.pca_route(*features.shape, p.max_exact_n)
    if route == "blocked":
        log.warning("reduce: %d images > reduce.max_exact_n = %d: blocked PCA (covariance "
                    "accumulated over blocks of %d rows; bounded memory)", len(features),
                    p.max_exact_n, reduction.BLOCK_ROWS)
    else:
        log.info("reduce: %s PCA (%d images; reduce.max_exact_n = %s)", route, len(features),
                 p.max_exact_n)
    res = reduction.fit_pca(features, p.n_components, p.standardize, seed,
                            max_exact_n=p.max_exact_n)
    metrics = reduction.reduce_metrics(res, features.shape[1])
    save_npy(OUT_PCA, res.scores)
    coords = reduction.plane_coords(features, res, p.standardize, seed)
    save_npy(OUT_PCA_2D, coords)
    save_npz(OUT_MODEL, scaler_mean=res.scaler_mean, scaler_scale=res.scaler_scale,
             pca_mean=res.pca_mean, components=res.components,
             explained_variance_ratio=res.explained_variance_ratio)
    write_table(OUT_CURVE, reduction.variance_curve(res))
    ratio = res.explained_variance_ratio
    matplotlib_setup()
    plot_explained_variance(ratio, res.n_components, OUT_CURVE_PNG)
    plot_pca_2d(coords, index["class"].astype(str).to_numpy(), OUT_SCATTER,
                (float(ratio[0]), float(ratio[1]) if len(ratio) > 1 else 0.0), seed)
    metrics = write_json(OUT_METRICS, metrics)
    log_block(log, "reduce done", outputs={
        OUT_PCA: f"{res.scores.shape[0]} x {res.n_components} float32 "
                 f"({metrics['variance_retained']:.1%} of variance)",
        OUT_PCA_2D: "2-D coordinates", OUT_MODEL: "scaler + PCA parameters",
        OUT_METRICS: ", ".join(f"{k}={metrics[f'variance_at_{k}']:.3f}"
                               for k in reduction.VARIANCE_AT),
        "plots": ", ".join([OUT_CURVE, OUT_CURVE_PNG, OUT_SCATTER])})
    return metrics


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Standardise + PCA of the selected feature set.")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    run(parse_stage(load_params(args.params), Params))


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
