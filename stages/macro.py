"""DVC stage `macro`: class centroids in PCA space, a linkage tree over them, its cuts.

The tree uses ``macro.linkage`` (Ward by default); it is cut into ``macro.groups`` groups
(maxclust, ``g<N>``; ``auto``: counts that fit the class count, see
:func:`clusterlens.analysis.macro.auto_groups`, recorded in metrics/macro.json as ``groups_resolved``)
and at ``macro.height_ratios`` of the maximum merge height (``h<P>``). Writes the class ->
group map of every cut, the group listing, the tree, the dendrogram and the centroid distance
heatmap in leaf order.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

from clusterlens.analysis import macro
from clusterlens.config.base import load_params, parse_stage
from clusterlens.config.macro import MacroParams
from clusterlens.core.cli import run_cli
from clusterlens.core.errors import check_rows
from clusterlens.core.io import load_npy, read_table, save_npy, write_json, write_table
from clusterlens.core.logs import get_logger, log_block
from clusterlens.report.figures import macro as plots
from clusterlens.report.figures.style import matplotlib_setup

log = get_logger("macro")

IN_PCA = "data/pca.npy"
IN_INDEX = "data/index.parquet"
OUT_GROUPS = "data/macro/groups.json"
OUT_CLASS_GROUPS = "data/macro/class_groups.csv"
OUT_LINKAGE = "data/macro/linkage.npy"
OUT_CENTROIDS = "data/macro/centroids.npy"
OUT_METRICS = "metrics/macro.json"
OUT_HEIGHT_CUTS = "plots/macro/height_cuts.csv"
OUT_DENDROGRAM = "plots/macro/dendrogram.png"
OUT_HEATMAP = "plots/macro/centroid_distances.png"


@dataclass(frozen=True)
class Params:
    """What the stage reads from params.yaml (parsed once, in :func:`main`)."""
    macro: MacroParams


def check_params_vs_input(cfg: Params, n_classes: int) -> tuple[list[int], list[int], list[int]]:
    """The rules that need the data: ``macro.groups`` resolved for the class count (``auto``),
    split into the counts kept and those skipped (not fewer than the classes).

    Returns ``(groups, kept, skipped)``."""
    groups = macro.resolve_groups(cfg.macro.groups, n_classes)
    kept, skipped = macro.split_granularities(groups, n_classes)
    return groups, kept, skipped


def run(cfg: Params, pca_path: str = IN_PCA, index_path: str = IN_INDEX) -> dict:
    """Build the tree and its cuts, write every output; returns the metrics."""
    p = cfg.macro
    X = load_npy(pca_path)
    index = read_table(index_path)
    check_rows(str(pca_path), len(X), str(index_path), len(index))
    names = macro.class_names(index, index_path)
    n_classes = len(names)
    groups, kept, skipped = check_params_vs_input(cfg, n_classes)
    log_block(log, "macro", inputs={"pca": f"{pca_path} {X.shape}",
                                    "index": f"{index_path} ({n_classes} classes)"},
              params={f"macro.{k}": v for k, v in p.model_dump().items()})
    if p.groups == "auto":
        log.info("macro.groups auto: %s for %d classes", groups or "no cut", n_classes)
    if skipped:
        log.warning("macro.groups %s skipped: not fewer than the %d classes", skipped, n_classes)
    labels = index["label"].to_numpy()
    centroids = macro.class_centroids(X, labels, n_classes)
    Z = macro.build_tree(centroids, p.linkage)
    cuts = macro.make_cuts(Z, kept, p.height_ratios)

    save_npy(OUT_CENTROIDS, centroids)
    save_npy(OUT_LINKAGE, Z)
    write_table(OUT_CLASS_GROUPS, macro.class_groups_table(names, labels, cuts))
    write_json(OUT_GROUPS, macro.groups_listing(Z, names, cuts, p.linkage))
    write_table(OUT_HEIGHT_CUTS, macro.height_cuts_table(cuts))

    matplotlib_setup()
    plots.plot_dendrogram(Z, names, p.color_threshold, OUT_DENDROGRAM, p.linkage)
    shown = plots.plot_centroid_distances(centroids, Z, names, min(p.heatmap_classes, n_classes),
                                          OUT_HEATMAP)
    metrics = {"groups_auto": p.groups == "auto", "groups_resolved": groups,
               **macro.tree_summary(Z, centroids, cuts, p.linkage, p.color_threshold, skipped,
                                    len(shown))}
    metrics = write_json(OUT_METRICS, metrics)
    log_block(log, "macro done", outputs={
        OUT_CLASS_GROUPS: "class x cut group ids: " + ", ".join(
            f"{n}={c['n_groups']}" for n, c in cuts.items()),
        OUT_GROUPS: "group -> class names for every cut",
        OUT_LINKAGE: f"scipy linkage {Z.shape}", OUT_CENTROIDS: f"{centroids.shape}",
        OUT_METRICS: f"cophenetic correlation {metrics['cophenetic_correlation']}",
        "plots": ", ".join([OUT_DENDROGRAM, OUT_HEATMAP, OUT_HEIGHT_CUTS])})
    return metrics


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Macro-categories from the class-centroid tree.")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    run(parse_stage(load_params(args.params), Params))


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
