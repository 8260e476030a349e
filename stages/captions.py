"""DVC stage `captions`: zero-shot captions of every image and their sentence embeddings.

Reads ``data/features.npy`` and ``data/index.parquet``; writes ``data/captions.parquet`` (caption,
top-3 labels and probabilities per index row), ``data/text_features.npy`` (N x 384 float32, unit
rows; a CLIP backbone: its text tower's), ``metrics/captions.json`` and ``logs/captions_timing.json``
(not a metric: it differs on every run). ``enabled: false``, or above ``captions.max_n`` images
with ``captions.sample: 0``: an empty table, N x 0 text features; ``sample`` > 0: a stratified sample.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clusterlens.config.base import check_value, load_params, parse_stage
from clusterlens.config.captions import CaptionsParams
from clusterlens.config.data import DataParams
from clusterlens.config.extract import ExtractParams
from clusterlens.config.large_n import LargeNParams
from clusterlens.core.cli import run_cli
from clusterlens.core.devices import resolve_device
from clusterlens.core.errors import DataError, check_rows
from clusterlens.core.io import load_features, read_table, remove_stale_tmp, save_npy, write_json, write_table
from clusterlens.core.logs import get_logger, log_block
from clusterlens.features import captions
from clusterlens.features.extraction import features_for_index
from clusterlens.features.preprocessing import index_sides
from clusterlens.features.sets import sample_route

log = get_logger("captions")
IN_FEATURES = "data/features.npy"
IN_INDEX = "data/index.parquet"
OUT_CAPTIONS = "data/captions.parquet"
OUT_TEXT = "data/text_features.npy"
OUT_METRICS = "metrics/captions.json"
OUT_TIMING = "logs/captions_timing.json"


@dataclass(frozen=True)
class Params:
    """What the stage reads from params.yaml (parsed once, in :func:`main`)."""
    extract: ExtractParams
    captions: CaptionsParams
    seed: int
    data: DataParams
    large_n: LargeNParams = LargeNParams()


def write_disabled(n: int, route: dict) -> dict:
    """No model is loaded: an empty caption table and N x 0 text features (``route``: off by size)."""
    why = f"{n} images > captions.max_n = {route['max_n']} (captions.sample: 0)" if route else "enabled: false"
    (log.warning if route else log.info)("captions: %s: no captions, no text features", why)
    write_table(OUT_CAPTIONS, captions.empty_caption_table())
    save_npy(OUT_TEXT, np.zeros((n, 0), np.float32))
    write_json(OUT_TIMING, {"seconds": 0.0, "captions": 0})
    return write_json(OUT_METRICS, {"enabled": False, "images": int(n), **route})


def check_params_vs_input(cfg: Params, index):
    """The rules that need the data: ``(captioner, recipe, reused)`` for the images' sizes
    (:func:`clusterlens.features.captions.resolve_captioner`); the index, when not reused."""
    e = cfg.extract
    cap, recipe, reused = captions.resolve_captioner(e.backbone, e.weights, e.image_size, e.resize,
                                                     cfg.captions.preprocessing, *index_sides(index), store=e.store)
    if not reused and index is None:
        raise DataError(f"captions need the index to extract {cap.name} features at {recipe.image_size} px")
    return cap, recipe, reused


def captioner_features(cfg: Params, feats: np.ndarray, index, cap, recipe, reused: bool):
    """The features to caption, the ImageNet head that reads them, what metrics record: the extracted
    features when ``reused``, else the captioner's own (extract's settings and feature store)."""
    ep = cfg.extract
    preprocessing = cfg.captions.preprocessing
    info = {"preprocessing": preprocessing, "reused_extract_features": reused,
            "image_size": recipe.image_size, "resize": recipe.resize,
            "captioner": cap.describe(recipe, reused)}
    if reused:
        log.info("captions: %s reads the extracted features (%s)", cap.name, recipe.describe())
        return feats, cap.W, cap.b, info, {"extracted": 0, "from_store": 0}
    log.info("captions: extracting %s features (%s) for the classifier", cap.name, recipe.describe())
    cap_feats, timing = features_for_index(
        cap.backbone(recipe.image_size), index, cfg.data.root,
        recipe.image_size, check_value("extract.device", ep.device, resolve_device),
        resize=recipe.resize, batch_size=ep.batch_size, workers=ep.workers,
        precision=ep.precision, jit=ep.jit, store=ep.store, seed=cfg.seed)
    return cap_feats, cap.W, cap.b, info, {k: timing.get(k, 0) for k in ("extracted", "from_store")}


def run(cfg: Params, features_path: str = IN_FEATURES, index_path: str = IN_INDEX) -> dict:
    """Caption every image (above ``captions.max_n``: none, or a sample), embed; return the metrics."""
    ep = cfg.extract
    p = cfg.captions
    captions.resolve_text_device(ep.device)
    if not Path(features_path).is_file():
        raise DataError(f"{features_path} is missing: run `dvc repro extract` first")
    remove_stale_tmp(OUT_CAPTIONS, OUT_TEXT, OUT_METRICS, OUT_TIMING)
    feats = load_features(features_path, cfg.large_n.mmap_threshold_bytes)
    index = read_table(index_path) if Path(index_path).is_file() else None
    if index is not None:
        check_rows(str(features_path), len(feats), str(index_path), len(index))
    rows, route = sample_route(np.zeros(len(feats)) if index is None else index["label"].to_numpy(), p.max_n,
                               cfg.seed, p.sample)
    if not p.enabled or route.get("route") == "off":
        return write_disabled(len(feats), route if p.enabled else {})
    log_block(log, "captions", inputs={"features": f"{features_path} {feats.shape}"},
              params={"extract.backbone": ep.backbone, "extract.weights": ep.weights, **{f"captions.{k}": getattr(
                  p, k) for k in ("template", "batch_size", "preprocessing", "max_n", "sample")}})
    cap, recipe, reused = check_params_vs_input(cfg, index)  # on the whole index (auto sizes)
    if rows is not None:
        log.warning("captions: %d images > captions.max_n: captioning a stratified sample of %d", len(feats), len(rows))
        feats, index = feats[rows], None if index is None else index.iloc[rows].reset_index(drop=True)
    feats, W, b, info, extracted = captioner_features(cfg, feats, index, cap, recipe, reused)
    table = captions.caption_table(feats, W, b, cap.names, p.template)
    start = time.perf_counter()
    encoder = captions.text_encoder(cap, ep.device)  # CLIP's text tower, or the sentence model
    load_seconds, start = time.perf_counter() - start, time.perf_counter()
    emb = captions.embed_texts(table["caption"].tolist(), p.batch_size, ep.device, cfg.seed, encoder=encoder)
    seconds = time.perf_counter() - start
    if index is not None:
        table.insert(0, "path", index["path"].to_numpy())
    write_table(OUT_CAPTIONS, table)
    save_npy(OUT_TEXT, emb)
    metrics = write_json(OUT_METRICS, {
        "enabled": True, "backbone": ep.backbone, **info, "template": p.template, "text_dim": int(emb.shape[1]),
        **captions.caption_metrics(table, None if index is None else index["class"].to_numpy()), **route})
    write_json(OUT_TIMING, {"seconds": seconds, "model_load_seconds": load_seconds, **extracted,
                            "captions": len(table), "unique_captions": metrics["unique_captions"],
                            "captions_per_s": len(table) / max(seconds, 1e-9)})
    log_block(log, "captions done", outputs={
        OUT_CAPTIONS: f"{len(table)} captions ({metrics['unique_captions']} distinct)",
        OUT_TEXT: f"{emb.shape[0]} x {emb.shape[1]} float32 in {seconds:.1f} s",
        OUT_METRICS: f"confident {metrics['confident_fraction']:.2f}"})
    return metrics


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Zero-shot captions and their sentence embeddings.")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--features", default=IN_FEATURES)
    ap.add_argument("--index", default=IN_INDEX)
    args = ap.parse_args(argv)
    run(parse_stage(load_params(args.params), Params), args.features, args.index)


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
