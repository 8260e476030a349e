"""DVC stage `neighbours`: verified near-duplicates, their groups, and an outlier score per image.

A k-nearest-neighbour search on the L2-normalised features (exact up to
``neighbours.exact_max_n`` images, approximate above: ``neighbours.search``) gives each image's
outlier score (the cosine distance to its ``neighbours.k``-th nearest other image) and its
``neighbours.candidates`` nearest neighbours. With the perceptual-hash pairs within
``neighbours.hash_distance`` bits and the files of equal bytes, they are the candidate copies,
each verified on the pixels and given a kind (:mod:`clusterlens.audit.duplicates`). Copy groups
are the connected components of the copy pairs (a pair whose classes differ is a label
conflict). Kept images (the corrections' ``keep``) are not flagged, and a pair of two is not
reported. With splits (``data.splits``), a verified pair across two splits is a leak
(data/leaks.csv; :mod:`clusterlens.audit.leaks`).
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from clusterlens.audit import duplicates as dup
from clusterlens.audit import leaks as lk
from clusterlens.audit import neighbours as nb
from clusterlens.config.base import load_params, parse_stage
from clusterlens.config.data import DataParams
from clusterlens.config.neighbours import NeighboursParams
from clusterlens.core.cli import run_cli
from clusterlens.core.errors import DataError, ParamError, check_rows
from clusterlens.core.io import read_table, write_json, write_table
from clusterlens.core.logs import get_logger, log_block
from clusterlens.data import corrections as corr
from clusterlens.data.index import check_root
from clusterlens.data.splits import image_splits, split_order

log = get_logger("neighbours")

IN_FEATURES = "data/features.npy"
IN_INDEX = "data/index.parquet"
OUT_TABLE = "data/neighbours.parquet"
OUT_PAIRS = "data/near_duplicates.csv"
OUT_LEAKS = "data/leaks.csv"
OUT_METRICS = "metrics/neighbours.json"


@dataclass(frozen=True)
class Params:
    """What the stage reads from params.yaml (parsed once, in :func:`main`)."""
    data: DataParams
    neighbours: NeighboursParams
    seed: int


def check_params_vs_input(cfg: Params, n_images: int) -> Path:
    """The rules that need the data: ``neighbours.k`` and ``neighbours.candidates`` below the
    number of images, ``data.root`` an existing folder (returned)."""
    for key in ("k", "candidates"):
        value = getattr(cfg.neighbours, key)
        if not value < n_images:
            raise ParamError(f"neighbours.{key}", f"must be smaller than the {n_images} images, got {value}")
    return check_root(Path(cfg.data.root))


def find_neighbours(cfg: Params, Z: np.ndarray) -> tuple[nb.Neighbours, dict]:
    """The search ``neighbours.search`` asks for at this N, and how it ran (logged)."""
    p = cfg.neighbours
    try:
        nn, how = nb.find_neighbours(Z, max(p.k, p.candidates), search=p.search,
                                     exact_max_n=p.exact_max_n, engine=p.engine,
                                     block_mb=p.block_mb, seed=cfg.seed)
    except ValueError as exc:
        raise ParamError("neighbours.search", str(exc)) from None
    log.info("%s (%d images; neighbours.exact_max_n %d)", nb.search_text(how), len(Z),
             p.exact_max_n)
    return nn, how


def run(cfg: Params, features_path: str = IN_FEATURES, index_path: str = IN_INDEX) -> dict:
    """Search, verify, write every output; returns the metrics."""
    p = cfg.neighbours
    index = read_table(index_path)
    # memory-mapped: only the normalised float32 copy is held in memory
    X = np.load(features_path, mmap_mode="r", allow_pickle=False)
    check_rows(str(features_path), len(X), str(index_path), len(index))
    root = check_params_vs_input(cfg, len(index))
    log_block(log, "neighbours", inputs={
        "features": f"{features_path} {X.shape}", "index": f"{index_path} ({len(index)} rows)",
        "data.root": root},
        params={**{f"neighbours.{k}": v for k, v in p.model_dump().items()}, "seed": cfg.seed})
    t0 = time.perf_counter()
    try:
        Z = nb.normalise(X)
    except ValueError as exc:
        raise DataError(f"{features_path}: {exc}") from None
    del X
    nn, search = find_neighbours(cfg, Z)
    del Z
    scores = nb.outlier_scores(nn, p.k)
    t1 = time.perf_counter()
    paths, classes = index["path"].to_numpy(), index["class"].to_numpy()
    kept = corr.kept(index)  # a pair of two kept images: the user said both stay
    found, candidates, how = dup.find_near_duplicates(
        root, paths, index["sha256"], nn.indices[:, :p.candidates], kept=kept,
        hash_distance=p.hash_distance, store=p.pixel_store, workers=p.workers, seed=cfg.seed,
        max_pairs_per_image=p.max_pairs_per_image, exact_max_n=None if search["method"] == "exact" else 0)
    log.info(dup.candidates_text(candidates, len(index), how, p.pixel_store))
    (log.warning if how["pair_cap"]["pairs_dropped"] else log.info)(dup.cap_text(how["pair_cap"]))
    groups = dup.copy_groups(len(index), found)
    t2 = time.perf_counter()

    pairs_df = dup.pairs_table(found, paths, classes, groups)
    splits = image_splits(index)
    order = split_order(splits, cfg.data.splits)
    per_image = pd.concat([dup.image_columns(len(index), found),
                           lk.leak_image_columns(len(index), pairs_df, splits)], axis=1)
    flags = ["is_near_duplicate", "is_same_scene", "is_leak"]
    per_image[flags] = corr.silence(per_image[flags], kept)
    table = pd.concat([nb.neighbours_table(paths, classes, groups, scores), per_image], axis=1)
    leaks_df = lk.leak_pairs(pairs_df, splits, order=order)
    write_table(OUT_TABLE, table)
    write_table(OUT_PAIRS, pairs_df)
    write_table(OUT_LEAKS, leaks_df)
    metrics = write_json(OUT_METRICS, {
        "images": int(len(index)), **dup.summary(pairs_df, groups), "candidate_pairs": int(len(candidates)),
        "hash_search": how["hash_search"], "pair_cap": how["pair_cap"], "k": int(p.k), "search": search,
        "splits": list(order), "leak_pairs": int(len(leaks_df)), "leaks": lk.leak_rates(pairs_df, splits, order=order)})
    top = table.nsmallest(3, "outlier_rank")
    log_block(log, "neighbours done", outputs={
        OUT_PAIRS: f"{metrics['duplicate_pairs']} copy pairs in {metrics['duplicate_groups']} "
                   f"groups ({metrics['images_in_groups']} images), "
                   f"{metrics['label_conflicts']} with different classes; "
                   + ", ".join(f"{k} {metrics['pairs_' + k]}" for k in dup.KINDS),
        OUT_TABLE: "most atypical: " + ", ".join(
            f"{r.path} ({r.outlier_score:.3f})" for r in top.itertuples()),
        OUT_LEAKS: lk.rates_text(metrics["leaks"]) if order else "no splits",
        "time": f"search {t1 - t0:.1f} s, near-duplicates {t2 - t1:.1f} s"})
    return metrics


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Near-duplicates and outliers.")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    run(parse_stage(load_params(args.params), Params))


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
