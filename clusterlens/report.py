"""`report` stage (SPEC P4): one document a person reads after a run.

Writes ``report/report.md`` (markdown; figures linked relatively, e.g. ``../plots/...``, so it
renders from a checkout) and ``report/report.html`` (self-contained: every figure embedded as a
data URI, so the single file can be mailed or attached to a CI run). Sections: data, features,
reduction, clustering grid, the selected model, macro-categories, the supervised upper bound and
the gap. Everything comes from the other stages' metrics, tables and figures; nothing is
recomputed, and no timestamp is written, so the same inputs give the same bytes.
"""
from __future__ import annotations

import argparse
import base64
import html
import re
from pathlib import Path

import pandas as pd

from clusterlens.common import (
    atomic_path, get_logger, load_params, log_block, param, read_json, read_table, run_cli,
)

log = get_logger("report")
OUT_MD = Path("report/report.md")
OUT_HTML = Path("report/report.html")
TOP_CLUSTERS = 10
KEY_METRICS = ["nmi", "ami", "ari", "purity", "hungarian_accuracy", "kappa", "silhouette",
               "davies_bouldin", "noise_fraction", "n_clusters"]


# --------------------------------------------------------------------------- document model
class Doc:
    """A list of blocks rendered both to markdown and to HTML."""

    def __init__(self):
        self.blocks: list[tuple] = []

    def h(self, level: int, text: str):
        self.blocks.append(("h", level, text))

    def p(self, text: str):
        self.blocks.append(("p", text))

    def items(self, items: list[str]):
        self.blocks.append(("ul", items))

    def table(self, df: pd.DataFrame):
        self.blocks.append(("table", df))

    def fig(self, path: str | Path, caption: str):
        path = Path(path)
        if path.is_file():
            self.blocks.append(("img", path, caption))
        else:
            self.blocks.append(("p", f"*(figure `{path}` is missing)*"))


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:,.0f}"
    return str(v)


def _md_table(df: pd.DataFrame) -> str:
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(_fmt(v).replace("|", "\\|") for v in row) + " |")
    return "\n".join(lines)


def _inline_html(text: str) -> str:
    text = html.escape(text, quote=False)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"\*([^*]+)\*", r"<em>\1</em>", text)


def render_markdown(doc: Doc, out_dir: Path) -> str:
    parts = []
    for block in doc.blocks:
        kind = block[0]
        if kind == "h":
            parts.append("#" * block[1] + " " + block[2])
        elif kind == "p":
            parts.append(block[1])
        elif kind == "ul":
            parts.append("\n".join(f"- {x}" for x in block[1]))
        elif kind == "table":
            parts.append(_md_table(block[1]))
        elif kind == "img":
            rel = Path("..") / block[1] if not block[1].is_absolute() else block[1]
            parts.append(f"![{block[2]}]({rel.as_posix()})\n\n*{block[2]}*")
    return "\n\n".join(parts) + "\n"


CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;
margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
img{max-width:100%;height:auto;border:1px solid #eee}figure{margin:1em 0}
figcaption{color:#555;font-size:.9em}code{background:#f5f5f5;padding:0 .2em}
h1{border-bottom:2px solid #ddd}h2{border-bottom:1px solid #eee;margin-top:2em}"""


def render_html(doc: Doc, title: str) -> str:
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"]
    for block in doc.blocks:
        kind = block[0]
        if kind == "h":
            parts.append(f"<h{block[1]}>{_inline_html(block[2])}</h{block[1]}>")
        elif kind == "p":
            parts.append(f"<p>{_inline_html(block[1])}</p>")
        elif kind == "ul":
            parts.append("<ul>" + "".join(f"<li>{_inline_html(x)}</li>" for x in block[1])
                         + "</ul>")
        elif kind == "table":
            df = block[1]
            head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in r)
                           + "</tr>" for r in df.itertuples(index=False))
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif kind == "img":
            data = base64.b64encode(block[1].read_bytes()).decode("ascii")
            parts.append(f"<figure><img alt=\"{html.escape(block[2])}\" "
                         f"src=\"data:image/png;base64,{data}\"><figcaption>"
                         f"{_inline_html(block[2])}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------- sections
def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def section_data(doc: Doc, root: str, index: dict, rejected: pd.DataFrame):
    doc.h(2, "1. Data")
    doc.p(f"`{root}`: **{index['images']:,} images in {index['classes']} classes** "
          f"({index['per_class_min']}-{index['per_class_max']} per class, median "
          f"{index['per_class_median']:g}; imbalance max/min {index['imbalance_ratio']:.2f}). "
          f"Median image size {index['width_median']:g} x {index['height_median']:g} px.")
    bad = [f"**{index['rejected']}** files rejected" +
           (": " + ", ".join(f"{k} {v}" for k, v in index["rejected_by_reason"].items())
            if index["rejected"] else ""),
           f"{index['empty_classes']} class folders without a usable image",
           f"{index['duplicates']} exact duplicate files ({index['cross_class_duplicate_groups']} "
           "groups across classes)"]
    doc.items(bad)
    if len(rejected):
        doc.p(f"First rejected files (all {len(rejected)} in `data/rejected.csv`):")
        doc.table(rejected.head(15)[["path", "reason", "detail"]].fillna(""))
    doc.fig("plots/index/class_distribution.png", "Images per class")
    doc.fig("plots/index/samples.png", "Random sample images, one row per class")


def section_features(doc: Doc, extract: dict, timing: dict | None, cnn: dict | None = None):
    doc.h(2, "2. Features")
    line = (f"Backbone **{extract['backbone']}** ({extract['weights']}), {extract['dim']}-D "
            f"features, input {extract['image_size']} px ({extract['resize']}), device "
            f"{extract['device']}, {extract.get('precision', 'fp32')} compute.")
    if timing:
        line += " " + timing_sentence(timing)
    doc.p(line)
    if cnn and cnn.get("trained", True) and "best_epoch" in cnn:
        doc.p(f"The CNN was trained from scratch (seed 000): {cnn['epochs_run']} epochs, best "
              f"epoch {cnn['best_epoch']} restored (validation accuracy "
              f"{cnn['best_val_acc']:.3f}, loss {cnn['best_val_loss']:.3f}; "
              f"{cnn['lr_reductions']} learning-rate reductions"
              f"{', stopped early' if cnn['stopped_early'] else ''}). Training curves: "
              "`dvc plots show` (DVCLive logs in `dvclive/cnn`), per epoch in "
              "`metrics/cnn_history.csv`.")


def timing_sentence(timing: dict) -> str:
    """The last extract run's throughput, over the images it ran through the network (the rest
    came from the feature store)."""
    extracted = int(timing.get("extracted", timing["images"]))
    from_store = int(timing.get("from_store", 0))
    if not extracted:
        return (f"The last run took all {timing['images']:,} images' features from the feature "
                "store (none extracted).")
    stored = f"; {from_store:,} more came from the feature store" if from_store else ""
    return (f"Throughput of the last run: **{timing['images_per_s']:.0f} images/s** "
            f"({timing['seconds']:.1f} s for the {extracted:,} images it extracted{stored}).")


def section_reduce(doc: Doc, reduce: dict):
    doc.h(2, "3. Reduction (standardize + PCA)")
    doc.p(f"{reduce['n_components']} components keep **{_pct(reduce['variance_retained'])}** "
          f"of the variance of the {reduce['input_dim']}-D features.")
    doc.table(pd.DataFrame({"components": [2, 10, 50, 100],
                            "variance retained": [_pct(reduce[f"variance_at_{k}"])
                                                  for k in (2, 10, 50, 100)]}))
    doc.fig("plots/reduce/explained_variance.png", "Explained variance by component")
    doc.fig("plots/reduce/pca_2d.png", "First two principal components, coloured by class")


def best_table(clustering: dict) -> pd.DataFrame:
    rows = []
    for method, info in clustering["best"].items():
        m = clustering[method][info["point"]]
        rows.append({"method": method, "best point": info["point"],
                     **{k: m.get(k) for k in KEY_METRICS}})
    return pd.DataFrame(rows)


def section_clustering(doc: Doc, clustering: dict, linkages: list[str]):
    sel = clustering["selected"]
    doc.h(2, "4. Clustering grid")
    n_points = sum(len(v) for k, v in clustering.items()
                   if k not in ("selected", "best", "kmeans_recommended_k"))
    doc.p(f"{n_points} grid points over {len(clustering['best'])} methods. Best point per method "
          f"by **{sel['metric']}** (all points: `metrics/clustering_table.csv`):")
    doc.table(best_table(clustering))
    doc.p(f"**Selected model: `{sel['method']}/{sel['point']}`**, {sel['reason']}.")
    rec = clustering.get("kmeans_recommended_k")
    if rec:
        doc.p(f"K-Means K recommended by silhouette: {rec['by_silhouette']}; by the elbow of the "
              f"inertia curve: {rec['by_elbow']}.")
    doc.fig("plots/clustering/metrics_vs_k.png", "Silhouette, NMI, ARI and purity vs K")
    for linkage in linkages:
        doc.fig(f"plots/clustering/dendrogram_{linkage}.png",
                f"Top of the {linkage}-linkage dendrogram of the images, cuts at each K")


def section_feature_sets(doc: Doc, fusion: dict, table: pd.DataFrame, captions: dict,
                         caption_rows: pd.DataFrame, selected_set: str):
    """Seed 003's comparison: Cohen's kappa (after majority-vote mapping) per clustering method
    x feature set at K = the number of classes, and a few of the captions."""
    doc.h(2, "4b. Feature sets: visual, text, fused (seed 003)")
    if not fusion.get("enabled", True) or table.empty:
        doc.p("Captions are off (`captions.enabled: false`): the pipeline runs on the visual "
              "features only.")
        return
    pivot = table.pivot(index="method", columns="features", values="kappa")
    pivot = pivot[[c for c in ("visual", "text", "concat", "weighted") if c in pivot.columns]]
    doc.p(f"The pipeline above runs on the **{selected_set}** features (`fusion.set`). Cohen's "
          f"kappa after majority-vote mapping, each method at K = {fusion['k']} on every feature "
          f"set (`metrics/fusion.csv` also has NMI and ARI); best: "
          f"**{fusion['best']['method']} on {fusion['best']['features']}** "
          f"(kappa {fusion['best']['kappa']:.3f}).")
    doc.table(pivot.reset_index().round(4))
    doc.p(f"Captions: top-3 ImageNet labels from {captions.get('captioner', '?')}, template "
          f"`{captions.get('template')}`, {captions.get('unique_captions', 0):,} distinct "
          f"captions, top-1 probability > 0.5 for {_pct(captions.get('confident_fraction', 0))} "
          "of the images (all in `data/captions.parquet`). The first few:")
    doc.table(caption_rows[["path", "caption"]].head(5))


def section_selected(doc: Doc, clustering: dict, composition: pd.DataFrame):
    sel = clustering["selected"]
    doc.h(2, f"5. The selected model: {sel['method']}/{sel['point']}")
    m = clustering[sel["method"]][sel["point"]]
    doc.p(f"{m['n_clusters']} clusters, noise {_pct(m['noise_fraction'])}; NMI {m['nmi']:.3f}, "
          f"ARI {m['ari']:.3f}, purity {m['purity']:.3f}, Hungarian accuracy "
          f"{m['hungarian_accuracy']:.3f}. The {min(TOP_CLUSTERS, len(composition))} largest "
          f"clusters (all in `metrics/composition.csv`):")
    show = composition.head(TOP_CLUSTERS)
    top = [", ".join(f"{r[f'top{i}_class']} {r[f'top{i}_pct']:.0f}%" for i in range(1, 4)
                     if r[f"top{i}_class"] not in ("", None) and r[f"top{i}_class"] == r[f"top{i}_class"])
           for _, r in show.iterrows()]
    doc.table(pd.DataFrame({"cluster": show["cluster"], "size": show["size"],
                            "share %": show["share_pct"], "entropy (bits)": show["entropy_bits"],
                            "top classes": top}))
    doc.fig("plots/composition/heatmap.png", "Cluster composition, each row normalised to 1")
    doc.fig("plots/composition/montage.png", "Sample images of the largest clusters")
    doc.fig("plots/composition/tsne.png", "t-SNE by true class and by cluster")
    doc.fig("plots/composition/pca_2d.png", "PCA-2D by true class and by cluster")


def section_macro(doc: Doc, macro: dict, groups: dict, purity: dict):
    doc.h(2, "6. Macro-categories")
    doc.p(f"A {macro['linkage']} tree over the {macro['classes']} class centroids (cophenetic "
          f"correlation {macro['cophenetic_correlation']:.3f}).")
    cuts = groups.get("cuts", {})
    g_cuts = [c for c in cuts if c.startswith("g")]
    for name in g_cuts:
        c = cuts[name]
        members = "; ".join("{" + ", ".join(v[:12]) + (" ..." if len(v) > 12 else "") + "}"
                            for v in c["groups"].values())
        doc.p(f"**{name}** ({c['n_groups']} groups): {members}")
    h = {k: v["n_groups"] for k, v in cuts.items() if k.startswith("h")}
    if h:
        doc.p("Groups at fractions of the maximum merge height: " +
              ", ".join(f"{k[1:]}% → {v}" for k, v in h.items()) + ".")
    doc.fig("plots/macro/dendrogram.png", "Dendrogram of the class centroids")
    doc.fig("plots/macro/centroid_distances.png", "Centroid distances in dendrogram order")
    best = purity.get("best", {})
    if best:
        doc.p("K-Means purity against each target (best K): " +
              "; ".join(f"{t}: {v.get('purity', 0):.3f} (K={v.get('k')})" if isinstance(v, dict)
                        else f"{t}: {v}" for t, v in best.items()) + ".")
    doc.fig("plots/macro/purity_lines.png", "K-Means purity vs number of target categories")
    doc.fig("plots/macro/purity_heatmap.png", "K-Means purity, K x target")


def section_upper(doc: Doc, upper: dict, configs: pd.DataFrame, summary: dict):
    doc.h(2, "7. Supervised upper bound and the gap")
    s = upper["split"]
    doc.p(f"Logistic regression on a stratified split ({s['train']:,} train / {s['test']:,} "
          f"test, seed {s['seed']}). Best: **{upper['best']['config']}**, test accuracy "
          f"**{upper['best']['test_accuracy']:.3f}** (train {upper['best']['train_accuracy']:.3f},"
          f" macro-F1 {upper['best']['macro_f1']:.3f}).")
    cols = [c for c in ["config", "features", "C", "class_weight", "train_accuracy",
                        "test_accuracy", "gap", "macro_f1", "weighted_f1"] if c in configs]
    doc.table(configs[cols])
    pc = upper["per_class"]
    doc.p(f"Per-class test accuracy of the best configuration: mean {pc['mean']:.3f}, median "
          f"{pc['median']:.3f}, std {pc['std']:.3f}. Worst: " +
          ", ".join(f"{k} {v:.2f}" for k, v in list(upper.get("worst_classes", {}).items())[:5])
          + ".")
    doc.fig("plots/upper_bound/configs.png", "Train and test accuracy per configuration")
    doc.fig("plots/upper_bound/per_class_accuracy.png", "Per-class accuracy")
    doc.fig("plots/upper_bound/macro_accuracy.png", "Accuracy on macro labels vs baselines")
    rows = []
    for target, v in summary.items():
        rows.append({"target": target,
                     "categories": v.get("classes", v.get("groups")),
                     "best K-Means purity": v.get("kmeans_best_purity"),
                     "selected model, Hungarian acc.": v.get("unsupervised_hungarian_accuracy"),
                     "supervised test accuracy": v.get("supervised_test_accuracy"),
                     "random": v.get("random_baseline")})
    doc.p("**The gap** between what the features give without labels and with them "
          "(`metrics/summary.json`):")
    doc.table(pd.DataFrame(rows))
    doc.fig("plots/summary/gap.png", "Unsupervised vs supervised")


# --------------------------------------------------------------------------- stage
def build(params: dict, timing_path="logs/extract_timing.json") -> Doc:
    root = param(params, "data.root")
    linkages = param(params, "agglomerative.linkage")
    clustering = read_json("metrics/clustering.json")
    index = read_json("metrics/index.json")
    doc = Doc()
    sel = clustering["selected"]
    doc.h(1, f"clusterlens report: {Path(str(root)).name}")
    summary = read_json("metrics/summary.json")
    fine = summary.get("fine", {})
    doc.p(f"{index['images']:,} images, {index['classes']} classes. Selected clustering "
          f"`{sel['method']}/{sel['point']}` ({sel['metric']} {sel['value']:.3f}); supervised "
          f"upper bound {fine.get('supervised_test_accuracy', float('nan')):.3f} test accuracy.")
    section_data(doc, root, index, read_table("data/rejected.csv"))
    timing = read_json(timing_path) if Path(timing_path).is_file() else None
    cnn = read_json("metrics/cnn.json") if Path("metrics/cnn.json").is_file() else None
    section_features(doc, read_json("metrics/extract.json"), timing, cnn)
    section_reduce(doc, read_json("metrics/reduce.json"))
    section_clustering(doc, clustering, linkages)
    section_feature_sets(doc, read_json("metrics/fusion.json"), read_table("metrics/fusion.csv"),
                         read_json("metrics/captions.json"), read_table("data/captions.parquet"),
                         param(params, "fusion.set", "visual"))
    section_selected(doc, clustering, read_table("metrics/composition.csv"))
    section_macro(doc, read_json("metrics/macro.json"), read_json("data/macro/groups.json"),
                  read_json("metrics/macro_purity.json"))
    section_upper(doc, read_json("metrics/upper_bound.json"),
                  read_table("metrics/upper_bound_configs.csv"), summary)
    return doc


def run(params: dict, out_md: Path = OUT_MD, out_html: Path = OUT_HTML) -> Doc:
    log_block(log, "report", inputs={"metrics": "metrics/*.json, *.csv", "figures": "plots/"},
              params={"data.root": param(params, "data.root")})
    doc = build(params)
    with atomic_path(out_md) as tmp:
        tmp.write_text(render_markdown(doc, out_md.parent), encoding="utf-8")
    with atomic_path(out_html) as tmp:
        tmp.write_text(render_html(doc, "clusterlens report"), encoding="utf-8")
    figs = sum(1 for b in doc.blocks if b[0] == "img")
    log_block(log, "report done", outputs={str(out_md): f"{len(doc.blocks)} blocks, {figs} figures",
                                           str(out_html): "self-contained (figures embedded)"})
    return doc


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Write report/report.md and report/report.html.")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    run(load_params(args.params))


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
