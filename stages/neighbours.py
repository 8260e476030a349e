"""DVC stage `neighbours`: near-duplicate images, their groups, and an outlier score per image.

An exact k-nearest-neighbour search on the L2-normalised backbone features (data/features.npy),
block by block (``neighbours.block_mb``). Pairs at cosine similarity >= ``neighbours.
duplicate_similarity`` (``auto``: 0.9, or 0.97 for images of a few pixels) are near-duplicates;
their connected components are the duplicate groups (within and across classes; a pair whose
classes differ is a label conflict). The outlier score is the cosine distance to the
``neighbours.k``-th nearest other image.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np

from clusterlens.audit import neighbours as nb
from clusterlens.config.base import check_value, load_params, parse_stage
from clusterlens.config.neighbours import NeighboursParams
from clusterlens.core.cli import run_cli
from clusterlens.core.errors import DataError, ParamError, check_rows
from clusterlens.core.io import read_table, write_json, write_table
from clusterlens.core.logs import get_logger, log_block

log = get_logger("neighbours")

IN_FEATURES = "data/features.npy"
IN_INDEX = "data/index.parquet"
OUT_TABLE = "data/neighbours.parquet"
OUT_PAIRS = "data/near_duplicates.csv"
OUT_METRICS = "metrics/neighbours.json"


@dataclass(frozen=True)
class Params:
    """What the stage reads from params.yaml (parsed once, in :func:`main`)."""
    neighbours: NeighboursParams


def check_params_vs_input(cfg: Params, n_images: int) -> None:
    """The rules that need the data: ``neighbours.k`` below the number of images."""
    if not cfg.neighbours.k < n_images:
        raise ParamError("neighbours.k", f"must be smaller than the {n_images} images, got {cfg.neighbours.k}")


def run(cfg: Params, features_path: str = IN_FEATURES, index_path: str = IN_INDEX) -> dict:
    """Search, write every output; returns the metrics."""
    p = cfg.neighbours
    index = read_table(index_path)
    # memory-mapped: only the normalised float32 copy is held in memory
    X = np.load(features_path, mmap_mode="r", allow_pickle=False)
    check_rows(str(features_path), len(X), str(index_path), len(index))
    check_params_vs_input(cfg, len(index))
    threshold = p.duplicate_similarity
    if threshold == "auto":
        threshold = nb.auto_duplicate_similarity(index["width"], index["height"])
    log_block(log, "neighbours", inputs={
        "features": f"{features_path} {X.shape}", "index": f"{index_path} ({len(index)} rows)"},
        params={"neighbours.k": p.k, "neighbours.duplicate_similarity": (
                    f"{threshold:g}" + (" (auto)" if p.duplicate_similarity == "auto" else "")),
                "neighbours.block_mb": p.block_mb, "neighbours.engine": p.engine})
    t0 = time.perf_counter()
    try:
        Z = nb.normalise(X)
    except ValueError as exc:
        raise DataError(f"{features_path}: {exc}") from None
    del X
    nn = nb.nearest_neighbours(Z, p.k, engine=p.engine, block_mb=p.block_mb)
    pairs = check_value("neighbours.duplicate_similarity", threshold,
                        lambda t: nb.duplicate_pairs(Z, nn, t, block_mb=p.block_mb))
    groups = nb.duplicate_groups(len(Z), pairs)
    scores = nb.outlier_scores(nn)
    seconds = time.perf_counter() - t0

    paths, classes = index["path"].to_numpy(), index["class"].to_numpy()
    table = nb.neighbours_table(paths, classes, groups, scores)
    pairs_df = nb.pairs_table(pairs, paths, classes, groups)
    write_table(OUT_TABLE, table)
    write_table(OUT_PAIRS, pairs_df)
    metrics = write_json(OUT_METRICS, nb.summary(pairs_df, groups, p.k, threshold))
    top = table.nsmallest(3, "outlier_rank")
    log_block(log, "neighbours done", outputs={
        OUT_PAIRS: f"{metrics['duplicate_pairs']} pairs in {metrics['duplicate_groups']} groups "
                   f"({metrics['images_in_groups']} images), {metrics['label_conflicts']} "
                   "with different classes",
        OUT_TABLE: "most atypical: " + ", ".join(
            f"{r.path} ({r.outlier_score:.3f})" for r in top.itertuples()),
        "search": f"{seconds:.1f} s"})
    return metrics


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Near-duplicates and outliers by nearest neighbours.")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    run(parse_stage(load_params(args.params), Params))


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
