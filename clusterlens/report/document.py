"""The run report: one document built from the stages' metrics, tables and figures.

:func:`build_report` turns already-loaded results (:class:`ReportData`) and the paths of the
figures and files it shows or names (:class:`ReportFiles`) into a :class:`Doc`, a list of
blocks; :func:`render_markdown` renders it with figures linked relatively, and
:func:`render_html` as one self-contained page with every figure embedded as a data URI and the
explorer (:mod:`clusterlens.report.explorer`) inlined. Both start with a table of contents linking to
the sections: the explorer, data, features, reduction, clustering grid, feature sets, the
selected model, macro-categories, the supervised upper bound and the gap, and the images to
check (suspected label issues, near-duplicates, outliers, cluster representatives). Nothing is
recomputed, and nothing that varies from run to run (timestamps, throughput) is written, so the
same inputs give the same bytes.
"""
from __future__ import annotations

import base64
import html
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

TOP_CLUSTERS = 10
TOP_IMAGES = 10
EMBED_PNG_MAX = 512 * 1024  # bytes: a larger figure is embedded in the page as WebP
EMBED_WEBP_QUALITY = 85
KEY_METRICS = ["nmi", "ami", "ari", "purity", "hungarian_accuracy", "kappa", "silhouette",
               "davies_bouldin", "noise_fraction", "n_clusters"]


# --------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class ReportFiles:
    """Where the figures the report shows, and the files its text names, are.

    Relative paths are relative to the working directory; ``dendrogram`` is a pattern with a
    ``{linkage}`` field.
    """

    rejected: str
    clustering_table: str
    fusion_table: str
    captions: str
    composition: str
    summary: str
    cnn_history: str
    cnn_logs: str
    class_distribution: str
    samples: str
    explained_variance: str
    reduce_pca_2d: str
    metrics_vs_k: str
    dendrogram: str
    heatmap: str
    montage: str
    tsne: str
    pca_2d: str
    macro_dendrogram: str
    centroid_distances: str
    purity_lines: str
    purity_heatmap: str
    upper_configs: str
    upper_per_class: str
    upper_macro: str
    gap: str
    images: str
    near_duplicates: str
    audit: str
    audit_label_issues: str
    audit_near_duplicates: str
    audit_same_scene: str
    audit_quality: str  # one figure per image-quality flag: a format string with {kind}
    audit_outliers: str
    audit_representatives: str
    corrections: str = "data/corrections_applied.csv"
    leaks: str = "data/leaks.csv"
    umap: str = "plots/composition/umap.png"  # shown when the umap stage ran


@dataclass(frozen=True)
class ReportData:
    """Everything the report shows, already loaded: JSON results as dicts, tables as
    DataFrames; ``cnn`` may be None (no CNN result). ``explorer`` is the HTML fragment of
    :func:`clusterlens.report.explorer.explorer_html` (None: no explorer) and ``explorer_note`` a
    sentence saying what it shows."""

    root: str
    linkages: list[str]
    feature_set: str
    index: dict
    rejected: pd.DataFrame
    extract: dict
    cnn: dict | None
    reduce: dict
    clustering: dict
    fusion: dict
    fusion_table: pd.DataFrame
    captions: dict
    caption_rows: pd.DataFrame
    composition: pd.DataFrame
    macro: dict
    groups: dict
    purity: dict
    upper: dict
    upper_configs: pd.DataFrame
    summary: dict
    images: pd.DataFrame
    label_issues: dict
    neighbours: dict
    near_duplicates: pd.DataFrame
    audit: pd.DataFrame
    corrections: pd.DataFrame | None = None
    leaks: pd.DataFrame | None = None
    explorer: str | None = None
    explorer_note: str = ""


# --------------------------------------------------------------------------- document model
class Doc:
    """A list of blocks (headings, paragraphs, lists, tables, figures, a table of contents, raw
    HTML) rendered both to markdown and to HTML. Inline markup: ```code```, ``**bold**``,
    ``*italic*``."""

    def __init__(self):
        self.blocks: list[tuple] = []

    def h(self, level: int, text: str):
        """Add a heading of ``level`` (1 = title)."""
        self.blocks.append(("h", level, text))

    def p(self, text: str):
        """Add a paragraph."""
        self.blocks.append(("p", text))

    def items(self, items: list[str]):
        """Add a bullet list."""
        self.blocks.append(("ul", items))

    def table(self, df: pd.DataFrame, pick: tuple[str, ...] = ()):
        """Add a table (numbers formatted to 4 significant digits, missing values as ``-``).
        In the HTML page, each cell of the ``pick`` columns (image paths) gets a checkbox
        (class ``cl-pick``, the path in ``data-path``) that selects the image in the
        explorer's corrections panel; the checkboxes are hidden in a page without explorer."""
        self.blocks.append(("table", df, tuple(pick)))

    def toc(self):
        """Add a table of contents: links to every level-2 heading of the document."""
        self.blocks.append(("toc",))

    def raw(self, html_text: str, markdown: str):
        """Add ``html_text`` to the HTML page as it is, and the paragraph ``markdown`` in its
        place in the markdown."""
        self.blocks.append(("raw", html_text, markdown))

    def fig(self, path: str | os.PathLike, caption: str):
        """Add a figure; a missing file becomes a paragraph saying so."""
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


def md_cell(text: str) -> str:
    """One markdown table cell: ``|``, backslashes and line breaks escaped so that a file name
    holding them stays in its cell (a newline shows as ``\\n``)."""
    text = text.replace("\\", "\\\\").replace("|", "\\|")
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _md_table(df: pd.DataFrame) -> str:
    cols = [md_cell(str(c)) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(md_cell(_fmt(v)) for v in row) + " |")
    return "\n".join(lines)


def slug(text: str) -> str:
    """The anchor of a heading, as GitHub makes it: lower case, punctuation dropped, spaces
    as hyphens (``5. The model: a/b`` -> ``5-the-model-ab``)."""
    text = re.sub(r"[`*]", "", text).strip().lower()
    return re.sub(r"\s", "-", re.sub(r"[^\w\- ]", "", text))


def _toc(doc: Doc) -> list[tuple[str, str]]:
    return [(b[2], slug(b[2])) for b in doc.blocks if b[0] == "h" and b[1] == 2]


def _inline_html(text: str) -> str:
    text = html.escape(text, quote=False)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"\*([^*]+)\*", r"<em>\1</em>", text)


def render_markdown(doc: Doc, out_dir: str | os.PathLike) -> str:
    """Render ``doc`` as markdown.

    Parameters
    ----------
    doc : Doc
        The document.
    out_dir : str or PathLike
        The folder the markdown file will be written to: relative figure paths are linked
        relative to it (``plots/x.png`` from ``report/`` is ``../plots/x.png``); absolute ones
        are kept.

    Returns
    -------
    str
        The markdown text, ending with a newline.
    """
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
        elif kind == "toc":
            parts.append("**Contents**\n\n" + "\n".join(f"- [{text}](#{anchor})"
                                                      for text, anchor in _toc(doc)))
        elif kind == "raw":
            parts.append(block[2])
        elif kind == "img":
            path = block[1]
            rel = path if path.is_absolute() else Path(os.path.relpath(path, out_dir))
            parts.append(f"![{block[2]}]({rel.as_posix()})\n\n*{block[2]}*")
    return "\n\n".join(parts) + "\n"


CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;
margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
.tw{max-width:100%;overflow-x:auto;margin:.8em 0}
table{border-collapse:collapse;font-size:.82em}
th,td{border:1px solid #ccc;padding:.2em .45em;text-align:right;overflow-wrap:anywhere}
th{overflow-wrap:normal}nav.toc{background:#fafafa;border:1px solid #eee;padding:.3em 1em}
nav.toc ol{margin:.3em 0;padding-left:1.5em;list-style:none}a.top{font-size:.8em;
margin-left:.6em;color:#888;text-decoration:none}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
img{max-width:100%;height:auto;border:1px solid #eee}figure{margin:1em 0}
figcaption{color:#555;font-size:.9em}code{background:#f5f5f5;padding:0 .2em}
h1{border-bottom:2px solid #ddd}h2{border-bottom:1px solid #eee;margin-top:2em}
.cl-pick{display:none}"""


def _html_cell(v, pick: bool) -> str:
    text = html.escape(_fmt(v))
    if pick and isinstance(v, str):
        return (f"<td><label><input type=\"checkbox\" class=\"cl-pick\" "
                f"data-path=\"{html.escape(v)}\">{text}</label></td>")
    return f"<td>{text}</td>"


def render_html(doc: Doc, title: str) -> str:
    """Render ``doc`` as one self-contained HTML page.

    Parameters
    ----------
    doc : Doc
        The document; its figures are read and embedded as base64 PNG data URIs.
    title : str
        The page title.

    Returns
    -------
    str
        The HTML text, ending with a newline. Level-2 headings carry the anchors of
        :func:`slug` and a link back to the contents.
    """
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
             f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"]
    for block in doc.blocks:
        kind = block[0]
        if kind == "h" and block[1] == 2:
            parts.append(f"<h2 id=\"{slug(block[2])}\">{_inline_html(block[2])}"
                         "<a class=\"top\" href=\"#contents\">contents</a></h2>")
        elif kind == "h":
            parts.append(f"<h{block[1]}>{_inline_html(block[2])}</h{block[1]}>")
        elif kind == "toc":
            parts.append("<nav class=\"toc\" id=\"contents\"><strong>Contents</strong><ol>" +
                         "".join(f"<li><a href=\"#{anchor}\">{_inline_html(text)}</a></li>"
                                 for text, anchor in _toc(doc)) + "</ol></nav>")
        elif kind == "raw":
            parts.append(block[1])
        elif kind == "p":
            parts.append(f"<p>{_inline_html(block[1])}</p>")
        elif kind == "ul":
            parts.append("<ul>" + "".join(f"<li>{_inline_html(x)}</li>" for x in block[1])
                         + "</ul>")
        elif kind == "table":
            df, pick = block[1], block[2] if len(block) > 2 else ()
            head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
            rows = "".join("<tr>" + "".join(_html_cell(v, c in pick)
                                           for v, c in zip(r, df.columns))
                           + "</tr>" for r in df.itertuples(index=False))
            parts.append(f"<div class=\"tw\"><table><thead><tr>{head}</tr></thead><tbody>{rows}"
                         "</tbody></table></div>")
        elif kind == "img":
            mime, raw = embedded_figure(block[1])
            data = base64.b64encode(raw).decode("ascii")
            parts.append(f"<figure><img alt=\"{html.escape(block[2])}\" "
                         f"src=\"data:{mime};base64,{data}\"><figcaption>"
                         f"{_inline_html(block[2])}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def embedded_figure(path: Path) -> tuple[str, bytes]:
    """A figure as the page embeds it: the PNG itself up to :data:`EMBED_PNG_MAX` bytes; a
    larger one (a montage of photos, a heatmap of 1,000 classes) re-encoded as WebP at quality
    :data:`EMBED_WEBP_QUALITY` on white, which keeps the page within its size at 10^6 images.
    The PNG under ``plots/`` is unchanged; a figure WebP cannot hold (over 16,383 px a side)
    stays PNG."""
    raw = path.read_bytes()
    if len(raw) <= EMBED_PNG_MAX:
        return "image/png", raw
    from io import BytesIO

    from PIL import Image

    with Image.open(path) as img:
        if max(img.size) > 16383:
            return "image/png", raw
        rgba = img.convert("RGBA")
        rgb = Image.new("RGB", img.size, "white")
        rgb.paste(rgba, mask=rgba.getchannel("A"))
    out = BytesIO()
    rgb.save(out, format="WEBP", quality=EMBED_WEBP_QUALITY, method=4)
    return "image/webp", out.getvalue()


# --------------------------------------------------------------------------- sections
def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def section_data(doc: Doc, root: str, index: dict, rejected: pd.DataFrame, files: ReportFiles):
    """Section 1: the image folder, class balance, rejected files and duplicates."""
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
    if index.get("splits"):
        doc.p("Read as splits (training split first): " + ", ".join(
            f"**{s}** {n:,} images" for s, n in index["splits"].items()) + ".")
    if len(rejected):
        doc.p(f"First rejected files (all {len(rejected)} in `{files.rejected}`):")
        doc.table(rejected.head(15)[["path", "reason", "detail"]].fillna(""))
    doc.fig(files.class_distribution, "Images per class")
    doc.fig(files.samples, "Random sample images, one row per class")


CORRECTIONS_SHOWN = 50


def section_corrections(doc: Doc, index: dict, corrections: pd.DataFrame | None,
                        files: ReportFiles):
    """The corrections the index applied (relabel, exclude, keep), or how to make some."""
    doc.h(3, "Corrections")
    counts = index.get("corrections") or {}
    if corrections is None or not len(corrections):
        doc.p("No corrections in force. Relabel, exclude or keep images with the explorer's "
              "corrections panel, or by hand in the corrections file (`data.corrections`: "
              "`path,action,class,note`), then `dvc repro`.")
        return
    doc.p(f"Applied from the corrections file (`data.corrections`): **{counts.get('relabel', 0)}"
          f"** relabelled, **{counts.get('exclude', 0)}** excluded, **{counts.get('keep', 0)}** "
          f"kept (their audit flags are off)" + (
              f"; **{counts['not_applied']}** not applied (the image is rejected)"
              if counts.get("not_applied") else "") +
          f". Every row, with what became of it: `{files.corrections}`"
          + (f" (the first {CORRECTIONS_SHOWN} below)." if len(corrections) > CORRECTIONS_SHOWN
             else "."))
    rows = corrections.head(CORRECTIONS_SHOWN).astype(object).fillna("")
    doc.table(pd.DataFrame({"path": rows["path"].to_numpy(), "action": rows["action"].to_numpy(),
                            "class": [f"{g} -> {c}" if a == "relabel" else g for a, g, c in
                                      zip(rows["action"], rows["given_class"], rows["class"])],
                            "note": rows["note"].to_numpy(), "status": rows["status"].to_numpy()}))


def section_features(doc: Doc, extract: dict, cnn: dict | None, files: ReportFiles):
    """Section 2: the backbone and, for a CNN trained from scratch, its training run. The
    extraction's throughput differs on every run, so it stays in its log, not here."""
    doc.h(2, "2. Features")
    line = (f"Backbone **{extract['backbone']}** ({extract['weights']}), {extract['dim']}-D "
            f"features, input {extract['image_size']} px ({extract['resize']}), device "
            f"{extract['device']}, {extract.get('precision', 'fp32')} compute.")
    doc.p(line)
    if cnn and cnn.get("trained", True) and "best_epoch" in cnn:
        doc.p(f"The CNN was trained from scratch: {cnn['epochs_run']} epochs, best "
              f"epoch {cnn['best_epoch']} restored (validation accuracy "
              f"{cnn['best_val_acc']:.3f}, loss {cnn['best_val_loss']:.3f}; "
              f"{cnn['lr_reductions']} learning-rate reductions"
              f"{', stopped early' if cnn['stopped_early'] else ''}). Training curves: "
              f"`dvc plots show` (DVCLive logs in `{files.cnn_logs}`), per epoch in "
              f"`{files.cnn_history}`.")


def section_reduce(doc: Doc, reduce: dict, files: ReportFiles):
    """Section 3: the variance the PCA keeps."""
    doc.h(2, "3. Reduction (standardize + PCA)")
    doc.p(f"{reduce['n_components']} components keep **{_pct(reduce['variance_retained'])}** "
          f"of the variance of the {reduce['input_dim']}-D features.")
    doc.table(pd.DataFrame({"components": [2, 10, 50, 100],
                            "variance retained": [_pct(reduce[f"variance_at_{k}"])
                                                  for k in (2, 10, 50, 100)]}))
    doc.fig(files.explained_variance, "Explained variance by component")
    doc.fig(files.reduce_pca_2d, "First two principal components, coloured by class")


def best_table(clustering: dict) -> pd.DataFrame:
    """The best grid point of each method with its key metrics, one row per method."""
    rows = []
    for method, info in clustering["best"].items():
        m = clustering[method][info["point"]]
        rows.append({"method": method, "best point": info["point"],
                     **{k: m.get(k) for k in KEY_METRICS}})
    return pd.DataFrame(rows)


def label_free_paragraph(doc: Doc, comp: dict | None):
    """The model a label-free criterion selects beside the label-based one, with the NMI of
    each (``label_free`` of the clustering metrics)."""
    if not comp:
        return
    free, based = comp["label_free"], comp["label_based"]
    doc.p(f"**Without labels.** Selecting by `{free['metric']}` (the silhouette in "
          + ("UMAP space" if free["metric"] == "silhouette_umap" else "PCA space; "
             "`umap.enabled: true` adds the silhouette in UMAP space")
          + "; cuts into one giant cluster and a few outliers are passed over), which needs no "
          "labels, picks " + ("the same model as" if comp["agree"] else "another model than")
          + f" `{based['metric']}` does:")
    doc.table(pd.DataFrame({
        "criterion": [f"{free['metric']} (no labels)", f"{based['metric']} (labels)"],
        "model": [f"{d['method']}/{d['point']}" for d in (free, based)],
        "nmi": [d["nmi"] for d in (free, based)]}))


def section_clustering(doc: Doc, clustering: dict, linkages: list[str], files: ReportFiles):
    """Section 4: the clustering grid, the best point per method and the selected model."""
    sel = clustering["selected"]
    doc.h(2, "4. Clustering grid")
    n_points = sum(len(v) for k, v in clustering.items()
                   if k not in ("selected", "best", "kmeans_recommended_k", "label_free"))
    doc.p(f"{n_points} grid points over {len(clustering['best'])} methods. Best point per method "
          f"by **{sel['metric']}** (all points: `{files.clustering_table}`):")
    doc.table(best_table(clustering))
    doc.p(f"**Selected model: `{sel['method']}/{sel['point']}`**, {sel['reason']}.")
    label_free_paragraph(doc, clustering.get("label_free"))
    rec = clustering.get("kmeans_recommended_k")
    if rec:
        doc.p(f"K-Means K recommended by silhouette: {rec['by_silhouette']}; by the elbow of the "
              f"inertia curve: {rec['by_elbow']}.")
    doc.fig(files.metrics_vs_k, "Silhouette, NMI, ARI and purity vs K")
    for linkage in linkages:
        doc.fig(files.dendrogram.format(linkage=linkage),
                f"Top of the {linkage}-linkage dendrogram of the images, cuts at each K")


def section_feature_sets(doc: Doc, fusion: dict, table: pd.DataFrame, captions: dict,
                         caption_rows: pd.DataFrame, selected_set: str, files: ReportFiles):
    """Section 4b: Cohen's kappa (after majority-vote mapping) per clustering method x feature
    set (visual, text, fused) at K = the number of classes, and the first captions."""
    doc.h(2, "4b. Feature sets: visual, text, fused")
    if not fusion.get("enabled", True) or table.empty:
        why = (f"{captions.get('images', 0):,} images > `captions.max_n` = "
               f"{captions['max_n']:,}; `captions.sample` captions a sample instead"
               if captions.get("route") == "off" else "`captions.enabled: false`")
        doc.p(f"Captions are off ({why}): the pipeline runs on the visual features only.")
        return
    pivot = table.pivot(index="method", columns="features", values="kappa")
    pivot = pivot[[c for c in ("visual", "text", "concat", "weighted") if c in pivot.columns]]
    doc.p(f"The pipeline above runs on the **{selected_set}** features (`fusion.set`). Cohen's "
          f"kappa after majority-vote mapping, each method at K = {fusion['k']} on every feature "
          + (f"set, on a seeded sample of {fusion['sample']:,} images stratified by class "
             f"(`fusion.max_n`) " if fusion.get("route") == "sample" else "set ")
          + f"(`{files.fusion_table}` also has NMI and ARI); best: "
          f"**{fusion['best']['method']} on {fusion['best']['features']}** "
          f"(kappa {fusion['best']['kappa']:.3f}).")
    doc.table(pivot.reset_index().round(4))
    doc.p(f"Captions: top-3 ImageNet labels from {captions.get('captioner', '?')}, template "
          f"`{captions.get('template')}`, {captions.get('unique_captions', 0):,} distinct "
          f"captions, top-1 probability > 0.5 for {_pct(captions.get('confident_fraction', 0))} "
          f"of the images (all in `{files.captions}`). The first few:")
    doc.table(caption_rows[["path", "caption"]].head(5))


def _top_classes(row) -> str:
    return ", ".join(f"{row[f'top{i}_class']} {row[f'top{i}_pct']:.0f}%" for i in range(1, 4)
                     if row[f"top{i}_class"] not in ("", None)
                     and row[f"top{i}_class"] == row[f"top{i}_class"])


def section_selected(doc: Doc, clustering: dict, composition: pd.DataFrame, files: ReportFiles,
                     umap: bool = False):
    """Section 5: the selected model's scores, its largest clusters and their figures."""
    sel = clustering["selected"]
    doc.h(2, f"5. The selected model: {sel['method']}/{sel['point']}")
    m = clustering[sel["method"]][sel["point"]]
    doc.p(f"{m['n_clusters']} clusters, noise {_pct(m['noise_fraction'])}; NMI {m['nmi']:.3f}, "
          f"ARI {m['ari']:.3f}, purity {m['purity']:.3f}, Hungarian accuracy "
          f"{m['hungarian_accuracy']:.3f}. The {min(TOP_CLUSTERS, len(composition))} largest "
          f"clusters (all in `{files.composition}`):")
    show = composition.head(TOP_CLUSTERS)
    top = [_top_classes(r) for _, r in show.iterrows()]
    named = "name" in show.columns and show["name"].fillna("").astype(str).str.len().any()
    doc.table(pd.DataFrame({"cluster": show["cluster"], **(
        {"name (captions)": show["name"].fillna("")} if named else {}), "size": show["size"],
                            "share %": show["share_pct"], "entropy (bits)": show["entropy_bits"],
                            "top classes": top}))
    doc.fig(files.heatmap, "Cluster composition, each row normalised to 1")
    doc.fig(files.montage, "Representatives of the largest clusters (the members nearest "
            "each cluster's centre)")
    doc.fig(files.tsne, "t-SNE by true class and by cluster")
    if umap:
        doc.fig(files.umap, "UMAP by true class and by cluster")
    doc.fig(files.pca_2d, "PCA-2D by true class and by cluster")


def section_macro(doc: Doc, macro: dict, groups: dict, purity: dict, files: ReportFiles):
    """Section 6: the tree over the class centroids, its cuts and K-Means purity per target."""
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
    doc.fig(files.macro_dendrogram, "Dendrogram of the class centroids")
    doc.fig(files.centroid_distances, "Centroid distances in dendrogram order")
    best = purity.get("best", {})
    if best:
        doc.p("K-Means purity against each target (best K): " +
              "; ".join(f"{t}: {v.get('purity', 0):.3f} (K={v.get('k')})" if isinstance(v, dict)
                        else f"{t}: {v}" for t, v in best.items()) + ".")
    doc.fig(files.purity_lines, "K-Means purity vs number of target categories")
    doc.fig(files.purity_heatmap, "K-Means purity, K x target")


def gap_table(summary: dict) -> pd.DataFrame:
    """One row per target (fine classes and macro granularities): unsupervised vs supervised."""
    rows = []
    for target, v in summary.items():
        rows.append({"target": target,
                     "categories": v.get("classes", v.get("groups")),
                     "best K-Means purity": v.get("kmeans_best_purity"),
                     "selected model, Hungarian acc.": v.get("unsupervised_hungarian_accuracy"),
                     "supervised test accuracy": v.get("supervised_test_accuracy"),
                     "random": v.get("random_baseline")})
    return pd.DataFrame(rows)


def excluded_paragraph(doc: Doc, excluded: list[dict], where: str) -> None:
    """Say which classes were too small for a per-class split and left out of ``where``
    (nothing when none was)."""
    if not excluded:
        return
    names = "; ".join(f"`{e['class']}` ({e['images']:,} image{'s' if e['images'] != 1 else ''}"
                      f": {e['reason']})" for e in excluded)
    doc.p(f"Classes too small for a per-class split are left out of {where}: {names}. Their "
          "images are clustered and shown like any other.")


def section_upper(doc: Doc, upper: dict, configs: pd.DataFrame, summary: dict,
                  files: ReportFiles):
    """Section 7: the supervised upper bound, its configurations, and the gap."""
    doc.h(2, "7. Supervised upper bound and the gap")
    s = upper["split"]
    best = upper["best"]
    if upper.get("skipped"):
        doc.p(f"No supervised bound: {upper['skipped']}.")
    else:
        how = (f"the folder's own splits: trained on `{s['train_split']}` ({s['train']:,} "
               f"images), tested on `{s['test_split']}` ({s['test']:,})"
               if s.get("source") == "folder" else
               f"a stratified split ({s['train']:,} train / {s['test']:,} test, seed {s['seed']})")
        doc.p(f"Logistic regression on {how}. Best: **{best['config']}**, test "
              f"accuracy **{_fmt(best['test_accuracy'])}** (train "
              f"{_fmt(best['train_accuracy'])}, macro-F1 {_fmt(best['macro_f1'])}).")
    excluded_paragraph(doc, upper.get("excluded_classes", []), "the supervised upper bound")
    cols = [c for c in ["config", "features", "C", "class_weight", "train_accuracy",
                        "test_accuracy", "gap", "macro_f1", "weighted_f1"] if c in configs]
    if len(configs):
        doc.table(configs[cols])
    pc = upper["per_class"]
    if pc.get("mean") is not None:
        doc.p(f"Per-class test accuracy of the best configuration: mean {pc['mean']:.3f}, "
              f"median {pc['median']:.3f}, std {pc['std']:.3f}. Worst: " +
              ", ".join(f"{k} {v:.2f}" for k, v in
                        list(upper.get("worst_classes", {}).items())[:5]) + ".")
    doc.fig(files.upper_configs, "Train and test accuracy per configuration")
    doc.fig(files.upper_per_class, "Per-class accuracy")
    doc.fig(files.upper_macro, "Accuracy on macro labels vs baselines")
    doc.p("**The gap** between what the features give without labels and with them "
          f"(`{files.summary}`):")
    doc.table(gap_table(summary))
    doc.fig(files.gap, "Unsupervised vs supervised")


def _config_name(config) -> str:
    return str(config.get("name", config)) if isinstance(config, dict) else str(config)


def label_issue_table(images: pd.DataFrame, top: int = TOP_IMAGES) -> pd.DataFrame:
    """The ``top`` most suspicious labels: rank, path, given -> suggested class, scores."""
    rows = images[images["is_label_issue"]].sort_values("label_issue_rank").head(top)
    return pd.DataFrame({
        "rank": rows["label_issue_rank"].to_numpy(), "path": rows["path"].to_numpy(),
        "given -> suggested": [f"{g} -> {s}" for g, s in zip(rows["class"],
                                                              rows["suggested_class"])],
        "suggested probability": rows["suggested_probability"].to_numpy(),
        "label quality": rows["label_quality"].to_numpy(),
        "cluster majority": rows["cluster_majority_class"].to_numpy()})


def duplicate_table(pairs: pd.DataFrame, top: int = TOP_IMAGES) -> pd.DataFrame:
    """The ``top`` pairs, label conflicts first, then by score."""
    rows = pairs.sort_values(["label_conflict", "score"], ascending=[False, False],
                             kind="stable").head(top)
    return pd.DataFrame({"image a": rows["path_a"].to_numpy(),
                         "class a": rows["class_a"].to_numpy(),
                         "image b": rows["path_b"].to_numpy(),
                         "class b": rows["class_b"].to_numpy(),
                         "kind": rows["kind"].to_numpy(), "score": rows["score"].to_numpy()})


QUALITY_TEXT = {
    "blurry": "little fine detail for the image's size (out of focus, motion blur, upscaled)",
    "dark": "most pixels near black (under-exposed)",
    "light": "most pixels near white (over-exposed, washed out)",
    "low_information": "nearly uniform: a blank or almost empty picture",
    "grayscale": "no colour in an RGB file",
    "odd_size": "far smaller or larger than the folder's typical image",
    "odd_aspect_ratio": "far wider or taller than the folder's typical image",
}


def audit_overview(audit: pd.DataFrame, n: int) -> pd.DataFrame:
    """The audit table for the report: issue type, images, share, most severe example."""
    return pd.DataFrame({"issue": audit["issue"].str.replace("_", " ").to_numpy(),
                         "images": audit["images"].to_numpy(),
                         "share": [_pct(v) for v in audit["share"]],
                         "most severe": audit["example"].to_numpy(),
                         "its score": audit["example_score"].to_numpy()})


def section_quality(doc: Doc, images: pd.DataFrame, audit: pd.DataFrame, files: ReportFiles):
    """One sub-section per image-quality flag: what it means, how many, the flagged images."""
    for r in audit.itertuples():
        if r.issue not in QUALITY_TEXT:
            continue
        doc.h(3, f"Image quality: {r.issue.replace('_', ' ')}")
        doc.p(f"{QUALITY_TEXT[r.issue].capitalize()}: **{r.images:,}** images "
              f"({_pct(r.share)}). Flagged images stay in the pipeline; the score is in "
              f"`{files.images}` (`{r.issue}_score`, higher = more severe).")
        doc.fig(files.audit_quality.format(kind=r.issue),
                f"{r.issue.replace('_', ' ').capitalize()} images, most severe first")


def outlier_table(images: pd.DataFrame, top: int = TOP_IMAGES) -> pd.DataFrame:
    """The ``top`` most atypical images: rank, path, class, score, cluster."""
    rows = images.sort_values("outlier_rank", kind="stable").head(top)
    return pd.DataFrame({"rank": rows["outlier_rank"].to_numpy(), "path": rows["path"].to_numpy(),
                         "class": rows["class"].to_numpy(),
                         "outlier score": rows["outlier_score"].to_numpy(),
                         "cluster": rows["cluster"].to_numpy()})


def leak_rate_table(rates: dict) -> pd.DataFrame:
    """Per pair of splits: images of the later split, those with a copy in the earlier one,
    the rate, copy pairs, label conflicts, same-scene pairs."""
    rows = list((rates or {}).get("by_split_pair", {}).values())
    return pd.DataFrame({
        "splits": [f"{r['earlier']} -> {r['later']}" for r in rows],
        "images (later)": [r["images"] for r in rows],
        "with a copy": [r["images_with_copy"] for r in rows],
        "leak rate": [_pct(r["rate"]) for r in rows],
        "copy pairs": [r["copy_pairs"] for r in rows],
        "label conflicts": [r["label_conflicts"] for r in rows],
        "same-scene pairs": [r["same_scene_pairs"] for r in rows]})


def leak_table(leaks: pd.DataFrame, top: int = TOP_IMAGES) -> pd.DataFrame:
    """The ``top`` leaks, label conflicts first, then by score."""
    rows = leaks.sort_values(["label_conflict", "score"], ascending=[False, False],
                             kind="stable").head(top)
    return pd.DataFrame({"image a": rows["path_a"].to_numpy(), "class a": rows["class_a"].to_numpy(),
                         "image b": rows["path_b"].to_numpy(), "class b": rows["class_b"].to_numpy(),
                         "kind": rows["kind"].to_numpy(),
                         "conflict": ["yes" if c else "" for c in rows["label_conflict"].to_numpy(bool)]})


def section_leaks(doc: Doc, neighbours: dict, leaks: pd.DataFrame | None, files: ReportFiles):
    """Copies across splits: the leak rate per pair of splits and the worst leaks."""
    doc.h(3, "Leaks between splits")
    if not neighbours.get("splits"):
        doc.p("The folder has no splits (`data.splits`; `root/<split>/<class>/<image>` with "
              "train, val or test folders is read as splits), so nothing can leak.")
        return
    overall = (neighbours.get("leaks") or {}).get("overall", {})
    doc.p(f"Verified copies across splits ({' -> '.join(neighbours['splits'])}): "
          f"**{overall.get('images_with_copy', 0):,} of {overall.get('images', 0):,}** images "
          f"outside the training split ({_pct(overall.get('rate'))}) have a copy in an earlier "
          f"split; every score measured on them is inflated. All pairs, with their kind and "
          f"whether the labels conflict: `{files.leaks}`.")
    doc.table(leak_rate_table(neighbours.get("leaks")))
    if leaks is not None and len(leaks):
        doc.table(leak_table(leaks), pick=("image a", "image b"))


def section_images(doc: Doc, images: pd.DataFrame, label_issues: dict, neighbours: dict,
                   pairs: pd.DataFrame, audit: pd.DataFrame, files: ReportFiles,
                   leaks: pd.DataFrame | None = None):
    """Section 8: images to check: the audit's table of issue types, suspected label issues
    (given -> suggested), near-duplicate pairs by kind, shots of the same scene, image-quality
    flags, the most atypical images, and each cluster's representatives."""
    doc.h(2, "8. Images to check")
    doc.p(f"Every image on one row, in index order (cluster, its majority class, distance to "
          f"the cluster's centre, 2-D coordinates, label quality, duplicate group, outlier "
          f"score, and a flag and a score for every issue type): `{files.images}`. The issue "
          f"types at a glance (`{files.audit}`):")
    doc.table(audit_overview(audit, len(images)))
    doc.h(3, "Suspected label issues")
    n_issues = int(images["is_label_issue"].sum())
    doc.p(f"cleanlab on out-of-fold predicted probabilities ({label_issues.get('folds')} folds "
          f"of a strongly penalised logistic regression, "
          f"`{_config_name(label_issues.get('config'))}`; out-of-fold accuracy "
          f"{_fmt(label_issues.get('oof_accuracy'))}) flags **{n_issues:,} of "
          f"{len(images):,} images** ({_pct(n_issues / max(len(images), 1))}); estimated "
          "label noise "
          f"{_pct(label_issues.get('noise_rate'))}." + (" The most suspicious:" if n_issues
                                                            else ""))
    if label_issues.get("warning"):
        doc.p(f"**Warning:** {label_issues['warning']}.")
    if label_issues.get("skipped"):
        doc.p(f"No label-issue search: {label_issues['skipped']}.")
    excluded_paragraph(doc, label_issues.get("excluded_classes", []), "the label-issue search "
                       "(their images get no verdict)")
    if n_issues:
        doc.table(label_issue_table(images), pick=("path",))
    doc.fig(files.audit_label_issues, "Suspected label issues: given class -> suggested class")
    doc.h(3, "Near-duplicates")
    copies = pairs[pairs["kind"] != "same_scene"]
    scenes = pairs[pairs["kind"] == "same_scene"]
    kinds = ", ".join(f"{k.replace('_', ' ')} {neighbours.get('pairs_' + k, 0):,}"
                      for k in ("exact", "resized", "crop", "mirror"))
    doc.p(f"Candidate pairs (perceptual hashes, the nearest feature neighbours, equal bytes: "
          f"{neighbours.get('candidate_pairs', 0):,}) are each aligned and compared on the "
          f"pixels. Copies: **{neighbours.get('duplicate_pairs', len(copies)):,}** pairs ({kinds}), "
          f"in {neighbours.get('duplicate_groups', 0):,} groups holding "
          f"{neighbours.get('images_in_groups', 0):,} images; pairs whose two labels differ: "
          f"**{neighbours.get('label_conflicts', 0):,}** (all in `{files.near_duplicates}`).")
    if len(copies):
        doc.table(duplicate_table(copies), pick=("image a", "image b"))
    doc.fig(files.audit_near_duplicates, "Near-duplicate pairs side by side, with their kind "
                                         "(red: the labels differ)")
    doc.h(3, "Shots of the same scene")
    doc.p(f"Pairs that are not copies but show one scene (a burst, a person photographed twice "
          f"against the same wall, a recoloured copy): **{len(scenes):,}**. Keep or drop them as "
          "the use of the data needs.")
    doc.fig(files.audit_same_scene, "Two shots of the same scene, side by side")
    section_leaks(doc, neighbours, leaks, files)
    section_quality(doc, images, audit, files)
    doc.h(3, "Outliers")
    doc.p(f"The images with the highest outlier score (the most atypical: far from their "
          f"{neighbours.get('k')} nearest neighbours in the backbone features):")
    doc.table(outlier_table(images), pick=("path",))
    doc.fig(files.audit_outliers, "The most atypical images")
    doc.h(3, "Cluster representatives")
    doc.p("For each of the largest clusters of the selected model: the members nearest its "
          "centre (PCA space), then its doubtful members (another class than the cluster's "
          "majority, or far from the centre).")
    doc.fig(files.audit_representatives, "Each cluster's members nearest its centre, then its "
                                         "doubtful members")


def section_explorer(doc: Doc, explorer: str | None, note: str, files: ReportFiles):
    """The explorer: interactive maps and cluster galleries in the HTML page; in the markdown,
    a line pointing to it."""
    doc.h(2, "Explorer: the images on the map, and each cluster's gallery")
    if explorer is None:
        doc.p("*(no explorer: it is built from `" + files.images + "`)*")
        return
    doc.p(note)
    doc.raw(explorer, "Open `report.html` in a browser for the interactive maps (hover over a "
                      "point to see its image, colour by class, cluster, macro group or "
                      "suspected label issue), each cluster's gallery, and the corrections "
                      "panel (select images, relabel, exclude or keep them, and download "
                      "`corrections.csv`).")


# --------------------------------------------------------------------------- the document
def build_report(data: ReportData, files: ReportFiles) -> Doc:
    """Build the whole report.

    Parameters
    ----------
    data : ReportData
        The loaded results of the other stages.
    files : ReportFiles
        Where the figures are, and the file names the text points the reader to.

    Returns
    -------
    Doc
        Title and summary line, the table of contents, the explorer, then sections 1-8.
    """
    clustering, index = data.clustering, data.index
    sel = clustering["selected"]
    fine = data.summary.get("fine", {})
    doc = Doc()
    doc.h(1, f"clusterlens report: {Path(str(data.root)).name}")
    doc.p(f"{index['images']:,} images, {index['classes']} classes. Selected clustering "
          f"`{sel['method']}/{sel['point']}` ({sel['metric']} {sel['value']:.3f}); supervised "
          f"upper bound {fine.get('supervised_test_accuracy', float('nan')):.3f} test accuracy.")
    doc.toc()
    section_explorer(doc, data.explorer, data.explorer_note, files)
    section_data(doc, data.root, index, data.rejected, files)
    section_corrections(doc, index, data.corrections, files)
    section_features(doc, data.extract, data.cnn, files)
    section_reduce(doc, data.reduce, files)
    section_clustering(doc, clustering, data.linkages, files)
    section_feature_sets(doc, data.fusion, data.fusion_table, data.captions, data.caption_rows,
                         data.feature_set, files)
    section_selected(doc, clustering, data.composition, files, umap=bool(
        "umap_x" in data.images and data.images["umap_x"].notna().any()))
    section_macro(doc, data.macro, data.groups, data.purity, files)
    section_upper(doc, data.upper, data.upper_configs, data.summary, files)
    section_images(doc, data.images, data.label_issues, data.neighbours, data.near_duplicates,
                   data.audit, files, leaks=data.leaks)
    return doc
