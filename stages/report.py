"""DVC stage `report`: one document a person reads after a run.

Writes ``report/report.md`` (markdown; figures linked relatively, e.g. ``../plots/...``, so it
renders from a checkout) and ``report/report.html`` (self-contained: every figure embedded as a
data URI, plus the explorer of :mod:`clusterlens.report.explorer`: interactive maps with the images'
thumbnails, read from ``data.root``, and cluster galleries; so the single file can be mailed or
attached to a CI run). Everything else comes from the other stages' metrics, tables and figures
(see :mod:`clusterlens.report.document`); nothing is recomputed, and no timestamp or throughput is
written, so the same inputs give the same bytes.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from clusterlens.config.agglomerative import AgglomerativeParams
from clusterlens.config.base import load_params, parse_stage
from clusterlens.config.data import DataParams
from clusterlens.config.fusion import FusionParams
from clusterlens.config.report import ReportParams
from clusterlens.core.cli import run_cli
from clusterlens.core.io import atomic_path, read_json, read_table
from clusterlens.core.logs import get_logger, log_block
from clusterlens.report import explorer
from clusterlens.report.document import (
    ReportData,
    ReportFiles,
    build_report,
    render_html,
    render_markdown,
)

log = get_logger("report")
OUT_MD = Path("report/report.md")
OUT_HTML = Path("report/report.html")
TITLE = "clusterlens report"

# The results the report shows, by ReportData field, in reading order; OPTIONAL may be absent.
INPUTS = {
    "clustering": "metrics/clustering.json", "index": "metrics/index.json",
    "summary": "metrics/summary.json", "rejected": "data/rejected.csv",
    "cnn": "metrics/cnn.json",
    "extract": "metrics/extract.json", "reduce": "metrics/reduce.json",
    "fusion": "metrics/fusion.json", "fusion_table": "metrics/fusion.csv",
    "captions": "metrics/captions.json", "caption_rows": "data/captions.parquet",
    "composition": "metrics/composition.csv", "macro": "metrics/macro.json",
    "groups": "data/macro/groups.json", "purity": "metrics/macro_purity.json",
    "upper": "metrics/upper_bound.json", "upper_configs": "metrics/upper_bound_configs.csv",
    "images": "data/images.parquet", "label_issues": "metrics/label_issues.json",
    "neighbours": "metrics/neighbours.json", "near_duplicates": "data/near_duplicates.csv",
    "audit": "data/audit.csv", "corrections": "data/corrections_applied.csv",
    "leaks": "data/leaks.csv",
}
OPTIONAL = ("cnn",)

FILES = ReportFiles(
    rejected=INPUTS["rejected"], clustering_table="metrics/clustering_table.csv",
    fusion_table=INPUTS["fusion_table"], captions=INPUTS["caption_rows"],
    composition=INPUTS["composition"], summary=INPUTS["summary"],
    cnn_history="metrics/cnn_history.csv", cnn_logs="dvclive/cnn",
    class_distribution="plots/index/class_distribution.png", samples="plots/index/samples.png",
    explained_variance="plots/reduce/explained_variance.png",
    reduce_pca_2d="plots/reduce/pca_2d.png", metrics_vs_k="plots/clustering/metrics_vs_k.png",
    dendrogram="plots/clustering/dendrogram_{linkage}.png",
    heatmap="plots/composition/heatmap.png", montage="plots/composition/montage.png",
    tsne="plots/composition/tsne.png", pca_2d="plots/composition/pca_2d.png", umap="plots/composition/umap.png",
    macro_dendrogram="plots/macro/dendrogram.png",
    centroid_distances="plots/macro/centroid_distances.png",
    purity_lines="plots/macro/purity_lines.png", purity_heatmap="plots/macro/purity_heatmap.png",
    upper_configs="plots/upper_bound/configs.png",
    upper_per_class="plots/upper_bound/per_class_accuracy.png",
    upper_macro="plots/upper_bound/macro_accuracy.png", gap="plots/summary/gap.png",
    images=INPUTS["images"], near_duplicates=INPUTS["near_duplicates"], audit=INPUTS["audit"],
    audit_label_issues="plots/images/label_issues.png",
    audit_near_duplicates="plots/images/near_duplicates.png",
    audit_same_scene="plots/images/same_scene.png", audit_quality="plots/images/{kind}.png",
    audit_outliers="plots/images/outliers.png",
    audit_representatives="plots/images/representatives.png",
    corrections=INPUTS["corrections"], leaks=INPUTS["leaks"],
)


@dataclass(frozen=True)
class Params:
    """What the stage reads from params.yaml (parsed once, in :func:`main`)."""
    data: DataParams
    agglomerative: AgglomerativeParams
    report: ReportParams
    seed: int
    fusion: FusionParams = FusionParams()


def _load(path: str):
    if Path(path).suffix in (".csv", ".parquet"):
        return read_table(path)
    return read_json(path)


def load_inputs(inputs: dict[str, str] = INPUTS) -> dict:
    """Every input by ReportData field; an absent optional input is None."""
    return {name: None if name in OPTIONAL and not Path(path).is_file() else _load(path)
            for name, path in inputs.items()}


def run(cfg: Params, out_md: Path = OUT_MD, out_html: Path = OUT_HTML,
        inputs: dict[str, str] = INPUTS, files: ReportFiles = FILES):
    """Write the report; the explorer's corrections panel starts from the corrections the
    index applied (``data/corrections_applied.csv``)."""
    root = cfg.data.root
    linkages = cfg.agglomerative.linkage
    feature_set = cfg.fusion.set
    p = cfg.report
    seed = cfg.seed
    log_block(log, "report", inputs={"metrics": "metrics/*.json, *.csv", "figures": "plots/",
                                     "thumbnails": root},
              params={"data.root": root, "report.thumbnails": p.thumbnails,
                      "report.thumbnail_px": p.thumbnail_px,
                      "report.max_points": p.max_points, "seed": seed})
    loaded = load_inputs(inputs)
    fragment, note, route = explorer.explorer_section(
        loaded["images"], loaded["groups"], root, p.thumbnails, p.thumbnail_px, seed,
        max_points=p.max_points, corrections=loaded["corrections"],
        leaks=loaded["neighbours"].get("leaks"), composition=loaded["composition"])
    (log.warning if route["route"] == "sample" else log.info)("explorer: %s", route)
    data = ReportData(root=root, linkages=linkages, feature_set=feature_set,
                      explorer=fragment, explorer_note=note, **loaded)
    doc = build_report(data, files)
    out_md, out_html = Path(out_md), Path(out_html)
    with atomic_path(out_md) as tmp:
        tmp.write_text(render_markdown(doc, out_md.parent), encoding="utf-8")
    with atomic_path(out_html) as tmp:
        tmp.write_text(render_html(doc, TITLE), encoding="utf-8")
    figs = sum(1 for b in doc.blocks if b[0] == "img")
    log_block(log, "report done", outputs={str(out_md): f"{len(doc.blocks)} blocks, {figs} figures",
                                           str(out_html): "self-contained (figures and "
                                                          "explorer embedded), "
                                                          f"{out_html.stat().st_size:,} bytes"})
    return doc


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Write report/report.md and report/report.html.")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    run(parse_stage(load_params(args.params), Params))


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
