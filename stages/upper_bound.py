"""DVC stage `upper_bound`: the supervised upper bound, logistic regressions on a train/test split.

One fit per entry of ``upper_bound.configs`` on the folder's own splits (``data.splits``) or a
stratified split (``upper_bound.test_size``, ``seed``): :func:`clusterlens.analysis.upper_bound.
fit_bound` (``raw``: the set named by ``fusion.set``; ``pca``: data/pca.npy; above
``upper_bound.max_work``, the bounded route: ``route``). Classes under 2 images are left out
(``excluded_classes``); with under 2 classes left, the outputs say so (``skipped``).
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np

from clusterlens.analysis import upper_bound as ub
from clusterlens.analysis.macro import class_names, read_class_groups
from clusterlens.config.base import check_value, load_params, parse_stage
from clusterlens.config.data import DataParams
from clusterlens.config.fusion import FusionParams
from clusterlens.config.upper_bound import UpperBoundParams
from clusterlens.core.cli import run_cli
from clusterlens.core.errors import check_rows
from clusterlens.core.io import load_npy, read_table, write_json, write_table
from clusterlens.core.logs import get_logger, log_block
from clusterlens.data.splits import image_splits, split_order, train_and_test
from clusterlens.features.sets import load_feature_set
from clusterlens.report.figures import upper_bound as plots
from clusterlens.report.figures.style import matplotlib_setup

log = get_logger("upper_bound")

IN_FEATURES = "data/features.npy"
IN_FUSED = "data/fused.npy"
IN_PCA = "data/pca.npy"
IN_INDEX = "data/index.parquet"
IN_CLASS_GROUPS = "data/macro/class_groups.csv"
OUT_METRICS = "metrics/upper_bound.json"
OUT_CONFIGS = "metrics/upper_bound_configs.csv"
OUT_PER_CLASS = "metrics/upper_bound_per_class.csv"
OUT_PREDICTIONS = "data/upper_bound/predictions.parquet"
OUT_CONFIGS_PNG = "plots/upper_bound/configs.png"
OUT_PER_CLASS_PNG = "plots/upper_bound/per_class_accuracy.png"
OUT_MACRO_CSV = "plots/upper_bound/macro_accuracy.csv"
OUT_MACRO_PNG = "plots/upper_bound/macro_accuracy.png"


@dataclass(frozen=True)
class Params:
    """What the stage reads from params.yaml (parsed once, in :func:`main`)."""
    upper_bound: UpperBoundParams
    seed: int
    data: DataParams
    fusion: FusionParams = FusionParams()


def check_params_vs_input(cfg: Params, y_kept: np.ndarray) -> None:
    """The rule that needs the data: both sides of the split get as many images as classes."""
    check_value("upper_bound.test_size", cfg.upper_bound.test_size,
                lambda t: ub.check_test_size(y_kept, t))


def run(cfg: Params, features_path: str = IN_FEATURES, pca_path: str = IN_PCA,
        index_path: str = IN_INDEX, groups_path: str = IN_CLASS_GROUPS,
        fused_path: str = IN_FUSED) -> dict:
    """Fit and score every configuration, write every output; returns the metrics."""
    p, seed = cfg.upper_bound, cfg.seed
    index = read_table(index_path)
    names = class_names(index, index_path)
    y = index["label"].to_numpy(np.int64)
    excluded = ub.excluded_classes(y, names)  # too small for a stratified split: left out
    rows = ub.split_rows(y, excluded)
    for e in excluded:
        log.warning("class %r (%d image(s)) left out: %s", e["class"], e["images"], e["reason"])
    kept_classes = len(names) - len(excluded)
    folders = train_and_test(split_order(image_splits(index), cfg.data.splits))
    split = ub.split_info(len(rows), kept_classes, folders=folders, test_size=p.test_size, seed=seed)
    if kept_classes < 2:
        return write_skipped(index, names, y, split, excluded)
    if not folders:
        check_params_vs_input(cfg, y[rows])
    raw, features_path = load_feature_set(cfg.fusion.set, features_path, fused_path,
                                          mmap_threshold_bytes=0)  # read only on the exact route
    pca = load_npy(pca_path)
    for path, arr in ((features_path, raw), (pca_path, pca)):
        check_rows(str(path), len(arr), str(index_path), len(y))
    _, cuts = read_class_groups(groups_path, names, index_path)
    log_block(log, "upper_bound", inputs={
        "features": f"{features_path} {raw.shape}", "pca": f"{pca_path} {pca.shape}",
        "index": f"{index_path} ({len(names)} classes)", "macro cuts": ", ".join(cuts) or "none"},
        params={"data.splits": cfg.data.splits, "upper_bound.test_size": p.test_size, "seed": seed,
                "upper_bound.max_iter": p.max_iter,
                "upper_bound.configs": ", ".join(c.name for c in p.configs),
                "upper_bound.route": f"{p.route} (max_work {p.max_work}, max_train {p.max_train})"})
    t0 = time.perf_counter()
    train_idx, test_idx = ub.train_test(y, rows, splits=image_splits(index), folders=folders,
                                        test_size=p.test_size, seed=seed, names=names)
    fit = ub.fit_bound(p.configs, raw, pca, y, train_idx, test_idx, names=names,
                       excluded=excluded, cuts=cuts, max_iter=p.max_iter, seed=seed,
                       route=p.route, max_work=p.max_work, max_train=p.max_train)
    results, best, per_class, macro_plot = fit.results, fit.best, fit.per_class, fit.macro_plot
    seconds = time.perf_counter() - t0
    configs_table = fit.configs_table()
    for path, table in ((OUT_CONFIGS, configs_table), (OUT_PER_CLASS, per_class),
                        (OUT_MACRO_CSV, macro_plot)):
        write_table(path, table.round(6))
    write_table(OUT_PREDICTIONS, fit.predictions(index, names, y, train_idx, test_idx))
    matplotlib_setup()
    plots.plot_configs(configs_table, best, OUT_CONFIGS_PNG)
    plots.plot_per_class(per_class, best, OUT_PER_CLASS_PNG)
    plots.plot_macro(macro_plot, results[best]["test_accuracy"], kept_classes, best,
                     OUT_MACRO_PNG)
    split.update(train=len(train_idx), test=len(test_idx))
    metrics = write_json(OUT_METRICS, ub.summary(split, results, best, per_class, fit.macro,
                                                 excluded) | {"route": fit.route})
    log_block(log, "upper_bound done", outputs={
        OUT_METRICS: f"{ub.split_text(split)}; best {best}: test "
                     f"{results[best]['test_accuracy']:.4f} "
                     f"(train {results[best]['train_accuracy']:.4f}); fits took {seconds:.1f} s",
        OUT_CONFIGS: f"{len(configs_table)} configurations",
        OUT_PER_CLASS: f"{len(per_class)} classes, mean {metrics['per_class']['mean']:.3f}",
        OUT_MACRO_CSV: ", ".join(f"{r.target}: {r.test_accuracy:.3f}"
                                 for r in macro_plot.itertuples()),
        OUT_PREDICTIONS: "split and best-config prediction per image",
        "plots": ", ".join([OUT_CONFIGS_PNG, OUT_PER_CLASS_PNG, OUT_MACRO_PNG])})
    return metrics


def write_skipped(index, names, y, split: dict, excluded) -> dict:
    """Fewer than 2 classes large enough for the split: every output says so; no fits."""
    reason = f"{split['classes']} class(es) of {ub.MIN_IMAGES}+ images; a classifier needs 2"
    log.warning("upper_bound not computed: %s", reason)
    for path, table in zip((OUT_CONFIGS, OUT_PER_CLASS, OUT_MACRO_CSV, OUT_PREDICTIONS),
                           ub.skipped_tables(index, names, y)):
        write_table(path, table)
    matplotlib_setup()
    for path in (OUT_CONFIGS_PNG, OUT_PER_CLASS_PNG, OUT_MACRO_PNG):
        plots.plot_skipped("Supervised upper bound", reason, path)
    return write_json(OUT_METRICS, ub.skipped_summary(split, reason, excluded))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Logistic regression upper bound.")
    ap.add_argument("--params", default="params.yaml")
    run(parse_stage(load_params(ap.parse_args(argv).params), Params))


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
