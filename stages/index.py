"""DVC stage ``index``: scan ``data.root`` (classes, or splits: ``data.splits``) into the index.

Applies the user's corrections (``data.corrections``, every row checked before any image is
decoded). Writes ``data/index.parquet`` (one row per usable image: split, class after
corrections, given class, quality scores and flags), ``data/rejected.csv`` (what was left out,
and why; excluded images as ``excluded``), ``data/corrections_applied.csv`` (each correction and
whether it was applied), ``data/quality_by_class.csv`` (quality flag rates and shortcuts per
class), ``metrics/index.json`` and ``plots/index/*``. The rules are those of
:mod:`clusterlens.data.index`, :mod:`~clusterlens.data.corrections` and
:mod:`~clusterlens.data.quality`.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from clusterlens.config.base import load_params, parse_stage
from clusterlens.config.data import DataParams
from clusterlens.config.index import IndexParams
from clusterlens.config.whole import check_params, declared_params, pipeline_files
from clusterlens.core.cli import run_cli
from clusterlens.core.io import remove_stale_tmp, write_json, write_table
from clusterlens.core.logs import get_logger, log_block
from clusterlens.data import corrections as corr
from clusterlens.data.index import build_index, check_root, index_metrics, inspection_summary, resolve_workers
from clusterlens.data.quality import FLAG_COLUMNS, class_rates, flag_counts, shortcuts
from clusterlens.report.figures.index import plot_class_distribution, plot_image_sizes, plot_sample_grid
from clusterlens.report.figures.style import matplotlib_setup

log = get_logger("index")

OUT_INDEX = "data/index.parquet"
OUT_REJECTED = "data/rejected.csv"
OUT_CORRECTIONS = "data/corrections_applied.csv"
OUT_QUALITY = "data/quality_by_class.csv"
OUT_METRICS = "metrics/index.json"
OUT_COUNTS = "plots/index/class_counts.csv"
OUT_DIST = "plots/index/class_distribution.png"
OUT_SIZES = "plots/index/image_sizes.png"
OUT_SAMPLES = "plots/index/samples.png"
OUTPUTS = (OUT_INDEX, OUT_REJECTED, OUT_CORRECTIONS, OUT_QUALITY, OUT_METRICS, OUT_COUNTS, OUT_DIST, OUT_SIZES,
           OUT_SAMPLES)


@dataclass(frozen=True)
class Params:
    """What the stage reads from params.yaml (parsed once, in :func:`main`)."""
    data: DataParams
    index: IndexParams
    seed: int


def check_params_vs_input(cfg: Params) -> Path:
    """The rule that needs the data: ``data.root`` is an existing folder (returned)."""
    return check_root(Path(cfg.data.root))


def log_layout(info: dict, metrics: dict) -> None:
    """The splits found (or split-like folders read as classes), the corrections applied, and
    a warning per correction not applied."""
    if info["splits"]:
        log.info("splits %s", ", ".join(f"{s} {n}" for s, n in metrics["splits"].items()))
    elif info["split_lookalikes"]:
        log.warning("top-level folders %s look like splits, but not every top-level folder is "
                    "one: read as classes (set `data.splits` to list the splits)",
                    ", ".join(info["split_lookalikes"]))
    applied, n = info["corrections"], metrics["corrections"]
    if len(applied):
        log.info("corrections: %d relabelled, %d excluded, %d kept", n["relabel"], n["exclude"],
                 n["keep"])
    for r in applied[applied["status"] != corr.APPLIED].itertuples():
        log.warning("correction of %s (%s) %s", r.path, r.action, r.status)


def run(cfg: Params) -> dict:
    """Index ``data.root`` and write every output; returns the metrics."""
    p, seed = cfg.index, cfg.seed
    root = check_params_vs_input(cfg)
    corrections = corr.read_corrections(cfg.data.corrections)
    if corrections.attrs.get("absent"):
        log.warning("data.corrections: %s does not exist: no corrections applied",
                    cfg.data.corrections)
    remove_stale_tmp(*OUTPUTS)  # left by a run killed mid-write
    log_block(log, "index", inputs={"data.root": root, "data.corrections": f"{len(corrections)} rows"},
              params={"data.splits": cfg.data.splits, "index.min_side": p.min_side,
                      "index.drop_duplicates": p.drop_duplicates,
                      "index.workers": f"{p.workers} -> {resolve_workers(p.workers)}",
                      "index.store": p.store or "none", "seed": seed})
    index, rejected, info = build_index(root, p.min_side, p.drop_duplicates, p.workers,
                                        splits=cfg.data.splits, corrections=corrections,
                                        store=p.store)
    log.info(inspection_summary(info["inspection"]))
    applied = info["corrections"]
    flags, classes = index[FLAG_COLUMNS], index["class"]
    found = shortcuts(flags, classes)
    metrics = {**index_metrics(index, rejected, info), "quality_flags": flag_counts(flags),
               "quality_shortcuts": len(found), "corrections": corr.counts(applied)}
    log_layout(info, metrics)
    if info["empty_classes"]:
        log.warning("class folders without a usable image (no label given): %s",
                    ", ".join(info["empty_classes"]))
    if len(rejected):
        log.warning("%d files rejected: %s (see %s)", len(rejected),
                    metrics["rejected_by_reason"], OUT_REJECTED)
    for r in found.to_dict("records"):
        log.warning("possible shortcut: %d of %d images of class %r are %s (%.0f%%; %.1f%% in the "
                    "other classes)", r["flagged"], r["images"], r["class"], r["kind"], 100 * r["rate"],
                    100 * r["rest_rate"])

    matplotlib_setup()
    counts = index["class"].value_counts().sort_index()
    write_table(OUT_INDEX, index)
    write_table(OUT_REJECTED, rejected)
    write_table(OUT_CORRECTIONS, applied)
    write_table(OUT_QUALITY, class_rates(flags, classes))
    write_table(OUT_COUNTS, pd.DataFrame({"class": counts.index, "count": counts.values}))
    plot_class_distribution(counts, OUT_DIST)
    plot_image_sizes(index, OUT_SIZES)
    plot_sample_grid(index, root, OUT_SAMPLES, seed, p.sample_per_class, p.sample_classes)
    metrics = write_json(OUT_METRICS, metrics)
    log_block(log, "index done", outputs={
        OUT_INDEX: f"{metrics['images']} images, {metrics['classes']} classes",
        OUT_REJECTED: f"{metrics['rejected']} rejected",
        OUT_CORRECTIONS: ", ".join(f"{k} {n}" for k, n in metrics["corrections"].items()),
        OUT_QUALITY: ", ".join(f"{k} {n}" for k, n in metrics["quality_flags"].items())
                     + f"; {len(found)} possible shortcuts",
        OUT_METRICS: f"imbalance {metrics['imbalance_ratio']:.2f}, "
                     f"{metrics['duplicates']} duplicates",
        "plots": ", ".join([OUT_COUNTS, OUT_DIST, OUT_SIZES, OUT_SAMPLES])})
    return metrics


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Index an image folder (one sub-folder per class).")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    # The whole file first (this stage always runs, and runs first): every bad value anywhere,
    # each naming its key, before any image is read (`python -m clusterlens.check` alone).
    check_params(params, declared_params(pipeline_files(), args.params))
    run(parse_stage(params, Params))


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
