"""DVC stage `macro_purity`: K-Means purity against every ``g<N>`` macro cut and the fine labels.

For every K of ``kmeans.k``: the purity of data/clusters/kmeans/k<value>.npy against the fine
classes and against the macro labels of every ``g<N>`` cut of the `macro` stage. A stage of its
own so that changing the K grid does not rebuild the tree.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

from clusterlens.analysis import macro
from clusterlens.clustering.grid import point_name, point_path
from clusterlens.clustering.selection import grid_points, prune_stale
from clusterlens.config.base import load_params, parse_stage
from clusterlens.config.kmeans import KMeansParams
from clusterlens.core.cli import run_cli
from clusterlens.core.errors import DataError, ParamError
from clusterlens.core.io import load_npy, read_json, read_table, write_json, write_table
from clusterlens.core.logs import get_logger, log_block
from clusterlens.report.figures import macro as plots
from clusterlens.report.figures.style import matplotlib_setup

log = get_logger("macro_purity")

IN_INDEX = "data/index.parquet"
IN_CLASS_GROUPS = "data/macro/class_groups.csv"
IN_CLUSTERS = "data/clusters"
OUT_METRICS = "metrics/macro_purity.json"
OUT_TABLE = "metrics/macro_purity.csv"
OUT_LINES = "plots/macro/purity_lines.png"
OUT_HEATMAP = "plots/macro/purity_heatmap.png"


@dataclass(frozen=True)
class Params:
    """What the stage reads from params.yaml (parsed once, in :func:`main`)."""
    kmeans: KMeansParams


def kmeans_grid(cfg: Params) -> list:
    """``kmeans.k`` without repeats, in params order; an empty grid is an error (here only: the
    section allows it for the `clustering` stage, whose other grids may be given)."""
    ks = cfg.kmeans.k
    if not ks:
        raise ParamError("kmeans.k", "is empty: macro_purity scores the K-Means grid, give a K")
    return list(dict.fromkeys(ks))


def load_kmeans_labels(values: list, clusters_dir, n: int, index_path: str) -> dict:
    """K -> the K-Means label of every image, from <clusters_dir>/kmeans/k<value>.npy; the K of
    a value that follows the class count (``classes``) is the one its point's JSON records, and
    values with the same K are one point (the first is kept)."""
    labels = {}
    for v in values:
        path = point_path("kmeans", point_name("kmeans", v), clusters_dir, suffix=".npy")
        js = path.with_suffix(".json")
        if not path.is_file() or not (isinstance(v, int) or js.is_file()):
            raise DataError(f"{path} is missing: run `dvc repro` (K-Means grid point k{v})")
        lab, k = load_npy(path), v if isinstance(v, int) else read_json(js)["k"]
        if len(lab) != n:
            raise DataError(f"{path} has {len(lab)} labels but {index_path} has {n} "
                            "rows: re-run `dvc repro`")
        labels.setdefault(k, lab)
    return labels


def run(cfg: Params, clusters_dir=IN_CLUSTERS, groups_path: str = IN_CLASS_GROUPS,
        index_path: str = IN_INDEX) -> dict:
    """Score the K-Means grid against the macro cuts, write every output; returns the metrics."""
    ks = kmeans_grid(cfg)
    # The folder this stage depends on must hold exactly the current grid, as the `clustering`
    # stage keeps it: files of K values no longer in params are deleted.
    prune_stale(grid_points(kmeans_k=ks), clusters_dir, ("kmeans",))
    index = read_table(index_path)
    names = macro.class_names(index, index_path)
    fine = index["label"].to_numpy(np.int64)
    _, cuts = macro.read_class_groups(groups_path, names, index_path)
    log_block(log, "macro_purity", inputs={"class groups": f"{groups_path} ({', '.join(cuts)})",
                                           "clusters": f"{clusters_dir}/kmeans"},
              params={"kmeans.k": ks})
    if not cuts:
        log.warning("no macro granularity (macro.groups gave no cut below the class count): "
                    "purity against the fine labels only")
    labels = load_kmeans_labels(ks, clusters_dir, len(fine), index_path)
    log.info("K-Means grid: K = %s", ", ".join(map(str, labels)))
    table = macro.purity_table(labels, fine, cuts)
    targets = macro.purity_targets(cuts, len(names))
    write_table(OUT_TABLE, table.round(6))
    out = macro.purity_summary(table, targets, len(names),
                               [point_name("kmeans", k) for k in labels])
    out = write_json(OUT_METRICS, out)
    matplotlib_setup()
    plots.plot_purity_lines(table, targets, OUT_LINES)
    plots.plot_purity_heatmap(table, targets, OUT_HEATMAP)
    log_block(log, "macro_purity done", outputs={
        OUT_TABLE: f"{len(table)} K x {len(targets)} targets",
        OUT_METRICS: ", ".join(f"{t}: best K={b['k']} purity {b['purity']:.3f}"
                               for t, b in out["best"].items()),
        "plots": f"{OUT_LINES}, {OUT_HEATMAP}"})
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="K-Means purity against the macro-categories.")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    run(parse_stage(load_params(args.params), Params))


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
