"""DVC stage `fusion`: the four feature sets, the selected one written, and their comparison.

Reads ``data/features.npy``, ``data/text_features.npy`` and the index's labels; writes
``data/fused.npy`` (the set named by ``fusion.set``; for ``visual`` an N x 0 placeholder, as the
visual features are ``data/features.npy`` itself: no copy), ``metrics/fusion.csv`` (the kappa
table: method x feature set, with NMI and ARI) and ``metrics/fusion.json`` (the same as feature
set -> method -> kappa, and the best pair). Without text features (``captions.enabled: false``)
only ``fusion.set: visual`` works and the table is empty. Above ``fusion.max_n`` images, or with
the captions' sample (``captions.max_n``), the table compares the sets on a stratified sample
(:func:`clusterlens.features.sets.comparison_plan`), recorded as ``route: sample``.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from clusterlens.config.base import load_params, parse_stage
from clusterlens.config.captions import CaptionsParams
from clusterlens.config.fusion import FusionParams
from clusterlens.config.gmm import GMMParams
from clusterlens.config.kmeans import KMeansParams
from clusterlens.config.large_n import LargeNParams
from clusterlens.core.cli import run_cli
from clusterlens.core.errors import DataError, ParamError, check_rows
from clusterlens.core.io import load_features, load_npy, read_table, remove_stale_tmp, save_npy, write_json, write_table
from clusterlens.core.logs import get_logger, log_block
from clusterlens.features import fusion
from clusterlens.features.sets import FEATURE_SETS, comparison_plan

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
    captions: CaptionsParams = CaptionsParams()
    large_n: LargeNParams = LargeNParams()

    def __post_init__(self):
        for name in ("kmeans", "gmm"):
            if name in self.fusion.methods and getattr(self, name) is None:
                raise ParamError(name, "is missing")


def check_params_vs_input(cfg: Params, text_shape: tuple[int, int], n: int) -> None:
    """The rule that needs the data: without text features for every image (captions off, or
    on a sample) only ``fusion.set: visual`` works."""
    if text_shape[1] == 0 and cfg.fusion.set != "visual":
        raise ParamError("fusion.set", f"= {cfg.fusion.set} needs text features, but there are none "
                         f"(captions.enabled is false, or more than captions.max_n = {cfg.captions.max_n} "
                         "images with captions.sample: 0): set captions.enabled: true and captions.max_n: "
                         "null, or fusion.set: visual")
    if text_shape[1] and text_shape[0] != n and cfg.fusion.set != "visual":
        raise ParamError("fusion.set", f"= {cfg.fusion.set} needs text features of every image, but "
                         f"captions.max_n = {cfg.captions.max_n} captioned {text_shape[0]} of {n}: "
                         "set captions.max_n: null, or fusion.set: visual")


def write_visual_only(n: int, captions_max_n: int | None) -> dict:
    """No text features: only ``fusion.set: visual`` works; the comparison table is empty."""
    off = {} if captions_max_n is None or n <= captions_max_n else {"route": "off", "captions_max_n": captions_max_n}
    log.info("no text features (%s): visual only, no comparison table",
             f"{n} images > captions.max_n" if off else "captions.enabled: false")
    save_npy(OUT_FUSED, np.zeros((n, 0), np.float32))
    write_table(OUT_TABLE, pd.DataFrame(columns=fusion.TABLE_COLUMNS))
    return write_json(OUT_METRICS, {"enabled": False, **off})


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
    visual, text = load_features(visual_path, cfg.large_n.mmap_threshold_bytes), load_npy(text_path)
    y = read_table(index_path)["label"].to_numpy()
    check_rows(str(visual_path), len(visual), str(index_path), len(y))
    check_params_vs_input(cfg, text.shape, len(visual))
    if text.shape[1] == 0:  # captions.enabled: false
        return write_visual_only(len(visual), cfg.captions.max_n if cfg.captions.enabled else None)
    settings = clustering_settings(cfg)
    rows, text_rows, route = comparison_plan(y, len(text), p.max_n, cfg.captions.max_n, seed, cfg.captions.sample)
    log_block(log, "fusion", inputs={"visual": f"{visual_path} {visual.shape}",
                                     "text": f"{text_path} {text.shape}", "classes": len(np.unique(y))},
              params={f"fusion.{key}": getattr(p, key) for key in ("set", "weight", "dim", "methods", "max_n")})
    if rows is None:
        sets = {name: fusion.feature_set(name, visual, text, p.weight, p.dim, seed) for name in FEATURE_SETS}
        chosen = sets[p.set]
    else:
        log.warning("fusion: the comparison runs on a seeded sample of %d of %d images, stratified by class, "
                    "K-Means with %d initialisation (fusion.max_n %s)", len(rows), len(y), fusion.SAMPLE_N_INIT,
                    p.max_n)
        if "n_init" in settings:
            settings["n_init"] = route["n_init"] = fusion.SAMPLE_N_INIT
        sets = {name: fusion.feature_set(name, visual[rows], text[text_rows], p.weight, p.dim, seed)
                for name in FEATURE_SETS}
        chosen = visual if p.set == "visual" else fusion.feature_set(p.set, visual, text, p.weight, p.dim, seed)
        y = y[rows]
    k = len(np.unique(y))
    save_npy(OUT_FUSED, chosen if p.set != "visual" else np.zeros((len(chosen), 0), np.float32))
    table = fusion.kappa_table(sets, y, k, seed, p.methods, **settings)
    write_table(OUT_TABLE, table.round(6))
    metrics = write_json(OUT_METRICS, {**fusion.summarize(table, k, sets["weighted"].shape[1]), **route})
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
