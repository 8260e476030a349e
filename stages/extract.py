"""DVC stage `extract`: backbone features for every indexed image, through the feature store.

Reads ``data/index.parquet`` (and the trained CNN in ``models/backbone`` for ``scratch_cnn``);
writes ``data/features.npy`` (one float32 row per index row, in index order),
``metrics/extract.json`` (what was computed, identical between runs) and
``logs/extract_timing.json`` (throughput: a log, not a metric, since it differs on every run).
With ``extract.processes`` or ``extract.nodes`` > 1 it launches itself under torchrun
(:mod:`clusterlens.features.sharding`); the writer rank writes the outputs.
"""
from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from clusterlens.config.base import check_value, load_params, parse_stage
from clusterlens.config.data import DataParams
from clusterlens.config.extract import ExtractParams
from clusterlens.core.cli import run_cli
from clusterlens.core.devices import resolve_device
from clusterlens.core.errors import DataError
from clusterlens.core.io import read_table, remove_stale_tmp, save_npy, write_json
from clusterlens.core.logs import log_block
from clusterlens.features import sharding
from clusterlens.features.extraction import extract_metrics, features_for_index
from clusterlens.features.precision import precision_label, resolve_jit
from clusterlens.features.preprocessing import build_for_input, index_sides

log = logging.getLogger("clusterlens.extract")

INDEX = "data/index.parquet"
BACKBONE_DIR = "models/backbone"  # the trained scratch CNN (written by the `backbone` stage)
OUT_FEATURES = "data/features.npy"
OUT_METRICS = "metrics/extract.json"
OUT_TIMING = "logs/extract_timing.json"


@dataclass(frozen=True)
class Params:
    """What the stage reads from params.yaml (parsed once, in :func:`main`)."""
    extract: ExtractParams
    data: DataParams
    seed: int


def check_params_vs_input(cfg: Params) -> Path:
    """The rule that needs the data: ``data.root`` is the (existing) folder that was indexed."""
    root = Path(cfg.data.root)
    if not root.is_dir():
        raise DataError(f"data.root: folder {str(root)!r} does not exist (or is not a folder); "
                        "set `data.root` in params.yaml to the folder that was indexed")
    return root


def run(cfg: Params, index_path: str = INDEX, backbone_dir: str = BACKBONE_DIR) -> dict:
    """Extract the features of every indexed image; returns the metrics written."""
    p = cfg.extract
    device = check_value("extract.device", p.device, resolve_device)  # before heavy work
    root = check_params_vs_input(cfg)
    ctx = None
    if sharding.inside_torchrun():  # one rank of a sharded run
        ctx, device = sharding.init(p.device)
    torch.set_num_threads(sharding.resolve_threads(p.threads))
    try:
        return _run(cfg, root, device, index_path, backbone_dir, ctx)
    finally:
        if ctx is not None:
            ctx.close()


def _run(cfg: Params, root: Path, device: torch.device, index_path: str, backbone_dir: str,
         ctx) -> dict:
    p = cfg.extract
    seed = cfg.seed
    if ctx is None or ctx.writer:
        remove_stale_tmp(OUT_FEATURES, OUT_METRICS, OUT_TIMING)  # left by a killed run
    torch.manual_seed(seed)
    index = read_table(index_path)
    backbone, recipe = build_for_input(p.backbone, p.weights, p.image_size, p.resize,
                                       *index_sides(index), model_dir=backbone_dir)
    size = recipe.image_size
    log_block(log, "extract", inputs={"index": f"{index_path} ({len(index)} images)",
                                      "data.root": root},
              params={"extract.backbone": p.backbone, "extract.weights": backbone.weights,
                      "extract.image_size, resize": recipe.describe(),
                      "extract.batch_size": p.batch_size, "extract.device": f"{p.device} -> "
                      f"{device}", "extract.workers": p.workers,
                      "extract.precision":
                          f"{p.precision} -> {precision_label(device, p.precision)}",
                      "extract.jit": f"{p.jit} -> {resolve_jit(p.jit, device)}",
                      "extract.store": p.store or "none",
                      "extract.threads": f"{p.threads} -> {torch.get_num_threads()}",
                      "extract.processes x nodes": f"{p.processes} x {p.nodes}"})
    settings = dict(resize=recipe.resize, precision=p.precision, jit=p.jit,
                    batch_size=p.batch_size)  # resolved values: the store key's
    feats, timing = features_for_index(backbone, index, root, size, device, **settings,
                                       workers=p.workers, store=p.store, seed=seed, ctx=ctx)
    if feats is None:  # a rank that does not write
        return {}
    save_npy(OUT_FEATURES, feats)
    metrics = write_json(OUT_METRICS, {**extract_metrics(backbone, feats, size, device,
                                                         **settings),
                                       "preprocessing": recipe.describe()})
    timing = write_json(OUT_TIMING, {
        "seconds": timing["seconds"], "images_per_s": timing["images_per_s"],
        "images": int(feats.shape[0]), "extracted": timing["extracted"],
        "from_store": timing["from_store"], "device": timing["device"],
        "workers": timing["workers"], "engine": timing["engine"],
        "precision": timing["precision"], "world_size": timing.get("world_size", 1)})
    log_block(log, "extract done", outputs={
        OUT_FEATURES: f"{feats.shape[0]} x {feats.shape[1]} float32",
        OUT_METRICS: f"{metrics['dim']}-D {metrics['backbone']} features on {metrics['device']}",
        OUT_TIMING: f"{timing['extracted']} extracted in {timing['seconds']:.1f} s "
                    f"({timing['images_per_s']:.1f} images/s), {timing['from_store']} from the "
                    "feature store"})
    return metrics


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Extract backbone features for every image.")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--index", default=INDEX)
    args = ap.parse_args(argv)
    cfg = parse_stage(load_params(args.params), Params)  # checked before anything is launched
    p = cfg.extract
    if p.distributed and not sharding.inside_torchrun():
        check_value("extract.device", p.device, resolve_device)
        sharding.launch("stages.extract", p.processes, p.nodes, p.rdzv_endpoint,
                           sharding.resolve_threads(p.threads),
                           ["--params", args.params, "--index", args.index])
        return
    run(cfg, args.index)


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
