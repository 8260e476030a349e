"""DVC stage `fusion`: the four feature sets, the selected one written, and their comparison.

Reads ``data/features.npy``, ``data/text_features.npy`` and the index's labels; writes
``data/fused.npy`` (the set named by ``fusion.set``; for ``visual`` an N x 0 placeholder, as the
visual features are ``data/features.npy`` itself: no copy), ``metrics/fusion.csv`` (the kappa
table: method x feature set, with NMI and ARI) and ``metrics/fusion.json`` (the same as feature
set -> method -> kappa, and the best pair). Without text features (``captions.enabled: false``)
only ``fusion.set: visual`` works and the table is empty.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from clusterlens.config.base import load_params, parse_stage
from clusterlens.config.fusion import FusionParams
from clusterlens.config.gmm import GMMParams
from clusterlens.config.kmeans import KMeansParams
from clusterlens.core.cli import run_cli
from clusterlens.core.errors import DataError, ParamError, check_rows
from clusterlens.core.io import (
    load_npy,
    read_table,
    remove_stale_tmp,
    save_npy,
    write_json,
    write_table,
)
from clusterlens.core.logs import get_logger, log_block
from clusterlens.features import fusion
from clusterlens.features.sets import FEATURE_SETS

log = get_logger("fusion")
IN_VISUAL = "data/features.npy"
IN_TEXT = "data/text_features.npy"
IN_INDEX = "data/index.parquet"
OUT_FUSED = "data/fused.npy"
OUT_TABLE = "metrics/fusion.csv"
OUT_METRICS = "metrics/fusion.json"


@dataclass(frozen=True)
class Params:
    """What the stage reads from params.yaml (parsed once, in :func:`main`); ``kmeans`` and
    ``gmm`` may be absent (None) unless ``fusion.methods`` names them."""
    seed: int
    fusion: FusionParams = FusionParams()
    kmeans: KMeansParams | None = None
    gmm: GMMParams | None = None

    def __post_init__(self):
        for name in ("kmeans", "gmm"):
            if name in self.fusion.methods and getattr(self, name) is None:
                raise ParamError(name, "is missing")


def check_params_vs_input(cfg: Params, text_dim: int) -> None:
    """The rule that needs the data: without text features only ``fusion.set: visual`` works."""
    if text_dim == 0 and cfg.fusion.set != "visual":
        raise ParamError("fusion.set", f"= {cfg.fusion.set} needs text features, but "
                         "captions.enabled is false: set captions.enabled: true, or fusion.set: "
                         "visual")


def write_visual_only(n: int) -> dict:
    """No text features: only ``fusion.set: visual`` works; the comparison table is empty."""
    log.info("no text features (captions.enabled: false): visual only, no comparison table")
    save_npy(OUT_FUSED, np.zeros((n, 0), np.float32))
    write_table(OUT_TABLE, pd.DataFrame(columns=fusion.TABLE_COLUMNS))
    return write_json(OUT_METRICS, {"enabled": False})


def clustering_settings(cfg: Params) -> dict:
    """The K-Means / GMM settings of the grid stages, for the methods the table uses."""
    out = {}
    if "kmeans" in cfg.fusion.methods:
        out.update(n_init=cfg.kmeans.n_init, max_iter=cfg.kmeans.max_iter)
    if "gmm" in cfg.fusion.methods:
        out.update(covariance_type=cfg.gmm.covariance_type, gmm_max_iter=cfg.gmm.max_iter)
    return out


def run(cfg: Params, visual_path: str = IN_VISUAL, text_path: str = IN_TEXT,
        index_path: str = IN_INDEX) -> dict:
    p = cfg.fusion
    seed = cfg.seed
    for path in (visual_path, text_path, index_path):
        if not Path(path).is_file():
            raise DataError(f"{path} is missing: run `dvc repro` (extract, captions) first")
    remove_stale_tmp(OUT_FUSED, OUT_TABLE, OUT_METRICS)
    visual, text = fusion.check_pair(load_npy(visual_path), load_npy(text_path))
    y = read_table(index_path)["label"].to_numpy()
    check_params_vs_input(cfg, text.shape[1])
    if text.shape[1] == 0:  # captions.enabled: false
        return write_visual_only(len(visual))
    settings = clustering_settings(cfg)
    check_rows(str(visual_path), len(visual), str(index_path), len(y))
    k = len(np.unique(y))
    log_block(log, "fusion", inputs={"visual": f"{visual_path} {visual.shape}",
                                     "text": f"{text_path} {text.shape}", "classes": k},
              params={f"fusion.{key}": getattr(p, key)
                      for key in ("set", "weight", "dim", "methods")})
    sets = {name: fusion.feature_set(name, visual, text, p.weight, p.dim, seed)
            for name in FEATURE_SETS}
    chosen = sets[p.set]
    save_npy(OUT_FUSED, chosen if p.set != "visual" else np.zeros((len(chosen), 0), np.float32))
    table = fusion.kappa_table(sets, y, k, seed, p.methods, **settings)
    write_table(OUT_TABLE, table.round(6))
    metrics = write_json(OUT_METRICS, fusion.summarize(table, k, sets["weighted"].shape[1]))
    best = table.loc[table["kappa"].idxmax()]
    placeholder = f" (placeholder: visual = {visual_path})" if p.set == "visual" else ""
    log_block(log, "fusion done", outputs={
        OUT_FUSED: f"{p.set} {chosen.shape}{placeholder}",
        OUT_TABLE: "\n" + table.to_string(index=False, float_format=lambda x: f"{x:.4f}"),
        OUT_METRICS: f"best {best['label']} kappa {best['kappa']:.4f}"})
    return metrics


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Visual + text feature fusion and the kappa table.")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    run(parse_stage(load_params(args.params), Params))


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
