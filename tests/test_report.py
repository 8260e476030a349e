"""The report: its renderers (markdown and self-contained HTML), its sections, and the stage."""
import base64
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clusterlens.audit.issues import ISSUE_TYPES
from clusterlens.config.base import parse_stage
from clusterlens.core.errors import ParamError
from clusterlens.core.io import read_json, write_json, write_table
from clusterlens.report import colours, document, explorer
from stages import report as stage
from tests.conftest import make_image


def _doc(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    png = Path("plots") / "fig.png"  # stages write relative paths, from the project root
    png.parent.mkdir()
    make_image(0, np.random.default_rng(0)).save(png)
    doc = document.Doc()
    doc.h(1, "Title <x>")
    doc.p("some `code` and **bold** & more")
    doc.items(["one", "two"])
    doc.table(pd.DataFrame({"method": ["kmeans", "a|b"], "nmi": [0.123456, None]}))
    doc.fig(png, "A figure")
    doc.fig(Path("plots") / "absent.png", "gone")
    return doc, png


def test_markdown_links_figures_relatively_and_escapes_tables(tmp_path, monkeypatch):
    doc, png = _doc(tmp_path, monkeypatch)
    md = document.render_markdown(doc, tmp_path / "report")
    assert md.startswith("# Title <x>\n")
    assert "| method | nmi |" in md and "| kmeans | 0.1235 |" in md and "a\\|b" in md
    assert "![A figure](../plots/fig.png)" in md and md.count("![") == 1
    assert "- one\n- two" in md
    assert "absent.png` is missing" in md
    assert "![A figure](../plots/fig.png)" in document.render_markdown(doc, "report")
    absolute = document.Doc()
    absolute.fig(png.resolve(), "abs")
    assert f"![abs]({png.resolve().as_posix()})" in document.render_markdown(absolute, "report")


def test_html_is_self_contained_and_escaped(tmp_path, monkeypatch):
    doc, png = _doc(tmp_path, monkeypatch)
    page = document.render_html(doc, "t")
    assert "<h1>Title &lt;x&gt;</h1>" in page
    assert "<code>code</code>" in page and "<strong>bold</strong>" in page and "&amp;" in page
    data = base64.b64encode(png.read_bytes()).decode()
    assert f"data:image/png;base64,{data}" in page
    assert page.count("<img") == 1 and "src=\"../" not in page
    assert "<td>-</td>" in page  # missing values shown as a dash


def test_markdown_cells_escape_pipes_backslashes_and_newlines():
    df = pd.DataFrame({"path": ["a|b/x.png", "c\nd\r.png", "e\\f.png"], "n": [1, 2, 3]})
    lines = document._md_table(df).split("\n")
    assert len(lines) == 5  # header, rule, one line per row: no row broken by its name
    assert lines[2:] == ["| a\\|b/x.png | 1 |", "| c\\nd\\r.png | 2 |", "| e\\\\f.png | 3 |"]


def test_toc_links_every_section_by_its_anchor(tmp_path, monkeypatch):
    doc, _ = _doc(tmp_path, monkeypatch)
    doc.blocks.insert(1, ("toc",))
    doc.h(2, "5. The selected model: kmeans/k10")
    doc.h(2, "Explorer: each cluster's gallery")
    md = document.render_markdown(doc, "report")
    assert ("**Contents**\n\n- [5. The selected model: kmeans/k10](#5-the-selected-model-kmeansk10)"
            "\n- [Explorer: each cluster's gallery](#explorer-each-clusters-gallery)") in md
    page = document.render_html(doc, "t")
    assert '<nav class="toc" id="contents">' in page
    assert '<a href="#5-the-selected-model-kmeansk10">' in page
    assert '<h2 id="5-the-selected-model-kmeansk10">5. The selected model: kmeans/k10' in page
    assert '<div class="tw"><table>' in page  # tables scroll inside the page, not the page


def test_features_section_describes_a_trained_cnn_and_only_one():
    extract = {"backbone": "scratch_cnn", "weights": "models/backbone", "dim": 256,
               "image_size": 32, "resize": "squash", "device": "cpu", "precision": "fp32"}
    cnn = {"trained": True, "epochs_run": 3, "best_epoch": 2, "best_val_acc": 0.875,
           "best_val_loss": 0.4321, "lr_reductions": 1, "stopped_early": False}
    doc = document.Doc()
    document.section_features(doc, extract, cnn, stage.FILES)
    text = [b[1] for b in doc.blocks if b[0] == "p"]
    assert len(text) == 2 and "Backbone **scratch_cnn**" in text[0]
    assert "trained from scratch: 3 epochs, best epoch 2" in text[1]
    assert "validation accuracy 0.875, loss 0.432; 1 learning-rate reductions)" in text[1]
    assert "`dvclive/cnn`" in text[1] and "`metrics/cnn_history.csv`" in text[1]
    doc = document.Doc()
    document.section_features(doc, extract, {"trained": False}, stage.FILES)  # other backbone
    assert [b[0] for b in doc.blocks] == ["h", "p"]


# --------------------------------------------------------------------------- the stage
METRIC = {"nmi": 0.9, "ami": 0.89, "ari": 0.45, "purity": 0.95, "hungarian_accuracy": 0.9,
          "kappa": 0.8, "silhouette": 0.12345, "davies_bouldin": 1.5, "noise_fraction": 0.05,
          "n_clusters": 3}
JSONS = {
    "metrics/clustering.json": {
        "kmeans": {"k3": METRIC}, "agglomerative": {"ward_k3": METRIC},
        "best": {"kmeans": {"point": "k3"}, "agglomerative": {"point": "ward_k3"}},
        "selected": {"method": "agglomerative", "point": "ward_k3", "metric": "nmi",
                     "value": 0.9, "reason": "highest nmi (0.9)"},
        "kmeans_recommended_k": {"by_silhouette": 3, "by_elbow": 3}},
    "metrics/index.json": {
        "images": 1797, "classes": 3, "empty_classes": 0, "per_class_min": 5,
        "per_class_median": 6.0, "per_class_max": 7, "imbalance_ratio": 1.4, "rejected": 2,
        "rejected_by_reason": {"corrupt": 2}, "duplicates": 0,
        "cross_class_duplicate_groups": 0, "width_median": 40.0, "height_median": 32.0},
    "metrics/summary.json": {"fine": {"classes": 3, "supervised_test_accuracy": 0.93,
                                      "kmeans_best_purity": 0.9, "random_baseline": 1 / 3}},
    "metrics/extract.json": {"backbone": "raw_pixels", "weights": "none", "dim": 12,
                             "image_size": 2, "resize": "squash", "device": "cpu"},
    "metrics/reduce.json": {"n_components": 5, "input_dim": 12, "variance_retained": 0.9,
                            "variance_at_2": 0.5, "variance_at_10": 1.0, "variance_at_50": 1.0,
                            "variance_at_100": 1.0},
    "metrics/fusion.json": {"enabled": False},
    "metrics/captions.json": {"enabled": False},
    "metrics/macro.json": {"classes": 3, "linkage": "ward", "cophenetic_correlation": 0.9},
    "data/macro/groups.json": {"cuts": {"g2": {"n_groups": 2, "groups": {
        "0": ["apple", "berry"], "1": ["cherry"]}}, "h50": {"n_groups": 2}}},
    "metrics/macro_purity.json": {"best": {"g2": {"k": 3, "purity": 1.0}}},
    "metrics/label_issues.json": {"issues": 1, "noise_rate": 0.05, "oof_accuracy": 0.9,
                                  "folds": 3, "config": {"name": "lr_C1", "features": "raw"}},
    "metrics/neighbours.json": {"duplicate_pairs": 1, "duplicate_groups": 1,
                                "images_in_groups": 2, "label_conflicts": 1, "k": 5,
                                "candidate_pairs": 3, "pairs_exact": 0, "pairs_resized": 1,
                                "pairs_crop": 0, "pairs_mirror": 0, "pairs_same_scene": 0},
    "metrics/upper_bound.json": {
        "split": {"train": 14, "test": 4, "seed": 0},
        "best": {"config": "lr_C1", "test_accuracy": 0.93, "train_accuracy": 1.0,
                 "macro_f1": 0.92},
        "per_class": {"mean": 0.9, "median": 0.9, "std": 0.1},
        "worst_classes": {"berry": 0.8, "apple": 1.0}},
}
TABLES = {
    "data/rejected.csv": pd.DataFrame({"path": ["a/x.png", "b/y.png"],
                                       "reason": ["corrupt", "corrupt"], "detail": ["bad", None]}),
    "metrics/fusion.csv": pd.DataFrame({"method": [], "features": [], "kappa": []}),
    "data/captions.parquet": pd.DataFrame({"path": ["a/0.png"], "caption": ["x"]}),
    "metrics/composition.csv": pd.DataFrame({
        "cluster": [0, 1], "size": [10, 8], "share_pct": [55.56, 44.44],
        "entropy_bits": [0.0, 0.5436], "top1_class": ["apple", "berry"], "top1_pct": [100.0, 87.5],
        "top2_class": ["", "cherry"], "top2_pct": [0.0, 12.5], "top3_class": ["", ""],
        "top3_pct": [0.0, 0.0]}),
    "metrics/upper_bound_configs.csv": pd.DataFrame({"config": ["lr_C1"], "C": [1.0],
                                                     "test_accuracy": [0.93]}),
    "data/images.parquet": pd.DataFrame({
        "path": ["apple/0.png", "berry/1.png", "cherry/2.png"],
        "class": ["apple", "berry", "cherry"], "cluster": [0, 1, 1],
        "cluster_majority_class": ["apple", "berry", "berry"], "agrees": [True, True, False],
        "centre_distance": [0.0, 0.5, 0.4], "pca_x": [0.0, 1.0, 2.0], "pca_y": [0.5, 1.5, 0.0],
        "tsne_x": [1.0, np.nan, 3.0], "tsne_y": [2.0, np.nan, 1.0],
        "label_quality": [0.9, 0.8, 0.01], "suggested_class": ["apple", "berry", "berry"],
        "suggested_probability": [0.9, 0.8, 0.97], "is_label_issue": [False, False, True],
        "label_issue_rank": [0, 0, 1], "duplicate_group": [0, 0, -1],
        "outlier_score": [0.1, 0.2, 0.7], "outlier_rank": [3, 2, 1]}),
    "data/near_duplicates.csv": pd.DataFrame({
        "row_a": [0], "row_b": [1], "path_a": ["apple/0.png"], "path_b": ["berry/1.png"],
        "class_a": ["apple"], "class_b": ["berry"], "kind": ["resized"], "score": [0.98],
        "similarity": [0.981], "coverage": [1.0], "label_conflict": [True], "group": [0]}),
    "data/corrections_applied.csv": pd.DataFrame(
        {c: pd.Series(dtype=object) for c in ["path", "split", "action", "given_class", "class",
                                              "note", "status"]}),
    "data/leaks.csv": pd.DataFrame({c: pd.Series(dtype=object) for c in [
        "path_a", "split_a", "class_a", "path_b", "split_b", "class_b", "kind",
        "label_conflict", "score"]}),
    "data/audit.csv": pd.DataFrame({
        "issue": list(ISSUE_TYPES), "images": [2, 0, 1] + [0] * (len(ISSUE_TYPES) - 3),
        "share": [2 / 3, 0.0, 1 / 3] + [0.0] * (len(ISSUE_TYPES) - 3),
        "example": ["apple/0.png", "", "cherry/2.png"] + [""] * (len(ISSUE_TYPES) - 3),
        "example_score": [0.98, np.nan, 0.99] + [np.nan] * (len(ISSUE_TYPES) - 3)}),
}
PARAMS = {"seed": 0, "data": {"root": "data/fruit"},
          "agglomerative": {"linkage": ["ward", "single"], "k": [3]},
          "report": {"thumbnails": 2, "thumbnail_px": 32, "max_points": 1000}}


@pytest.fixture
def inputs(in_tmp_cwd):
    for path, obj in JSONS.items():
        write_json(path, obj)
    for path, df in TABLES.items():
        write_table(path, df)
    Path("plots/summary").mkdir(parents=True)
    make_image(1, np.random.default_rng(0)).save("plots/summary/gap.png")
    for i, path in enumerate(TABLES["data/images.parquet"]["path"]):
        Path("data/fruit", path).parent.mkdir(parents=True, exist_ok=True)
        make_image(i, np.random.default_rng(i)).save(Path("data/fruit", path))
    return in_tmp_cwd


def test_report_stage_writes_markdown_and_html(inputs):
    doc = stage.run(parse_stage(PARAMS, stage.Params))
    md = Path("report/report.md").read_text(encoding="utf-8")
    page = Path("report/report.html").read_text(encoding="utf-8")
    assert md.startswith("# clusterlens report: fruit\n")
    assert "1,797 images, 3 classes. Selected clustering `agglomerative/ward_k3` (nmi 0.900); " \
           "supervised upper bound 0.930 test accuracy." in md
    assert "First rejected files (all 2 in `data/rejected.csv`)" in md
    assert "the pipeline runs on the visual features only" in md  # captions off
    assert "dendrogram_single.png` is missing" in md and "dendrogram_complete" not in md
    assert "| 1 | 8 | 44.44 | 0.5436 | berry 88%, cherry 12% |" in md
    assert "![Unsupervised vs supervised](../plots/summary/gap.png)" in md
    assert md.count("![") == 1 and page.count("<figure><img alt=\"") == 1
    # the images to check: given -> suggested, the pair, the outliers; figures named
    assert "## 8. Images to check" in md and "`data/images.parquet`" in md
    assert "flags **1 of 3 images** (33.3%); estimated label noise 5.0%" in md
    assert "labels differ: **1** (all in `data/near_duplicates.csv`)" in md
    assert "| 1 | cherry/2.png | cherry -> berry | 0.97 | 0.01 | berry |" in md
    assert "| apple/0.png | apple | berry/1.png | berry | resized | 0.98 |" in md
    assert "| near duplicate | 2 | 66.7% | apple/0.png | 0.98 |" in md   # the audit table
    assert "### Image quality: blurry" in md and "### Shots of the same scene" in md
    assert "| 1 | cherry/2.png | cherry | 0.7 | 1 |" in md
    assert "plots/images/label_issues.png` is missing" in md
    assert "Throughput" not in md and "feature store" not in md  # no timing log
    assert sum(b[0] == "img" for b in doc.blocks) == 1
    # the explorer: in the page; in the markdown, a pointer to it
    assert "**t-SNE**, 2 images; **PCA-2D**, 3 images" in md
    assert "Open `report.html` in a browser for the interactive maps" in md
    assert "a sample of 2 (`report.thumbnails`" in md
    assert '<div class="cl-fig" id="cl-map-0">' in page and "Plotly.newPlot" in page
    assert "<script src=" not in page and 'src="http' not in page  # works offline
    assert "- [1. Data](#1-data)" in md and "[8. Images to check](#8-images-to-check)" in md
    assert not list(Path("report").glob("*.tmp*"))


def test_report_stage_is_deterministic_and_leaves_run_to_run_timings_out(inputs):
    write_json("logs/extract_timing.json", {"seconds": 2.0, "images_per_s": 50.0, "images": 100})
    stage.run(parse_stage(PARAMS, stage.Params))
    first = Path("report/report.md").read_bytes(), Path("report/report.html").read_bytes()
    assert not any(re.search(rb"\d images/s", f) for f in first)
    write_json("logs/extract_timing.json", {"seconds": 9.0, "images_per_s": 11.0, "images": 100})
    stage.run(parse_stage(PARAMS, stage.Params))
    assert (Path("report/report.md").read_bytes(), Path("report/report.html").read_bytes()) == first
    assert first[1].count(b"data:image/webp;base64,") == 2  # report.thumbnails: 2 of 3


def test_rejected_file_names_with_newlines_and_pipes_keep_the_table_whole(inputs):
    write_table("data/rejected.csv", pd.DataFrame({"path": ["a/x\ny.png", "b/p|q.png"],
                                                   "reason": ["corrupt", "corrupt"],
                                                   "detail": ["bad", "bad"]}))
    stage.run(parse_stage(PARAMS, stage.Params))
    md = Path("report/report.md").read_text(encoding="utf-8")
    assert "| a/x\\ny.png | corrupt | bad |" in md and "| b/p\\|q.png | corrupt | bad |" in md


def test_small_classes_left_out_and_a_skipped_bound_are_reported_by_name(inputs):
    lonely = [{"class": "lonely", "images": 1, "reason": "fewer than 2 images: a stratified "
                                                        "split needs 2"}]
    none = dict.fromkeys(("test_accuracy", "train_accuracy", "gap", "macro_f1", "weighted_f1"))
    write_json("metrics/upper_bound.json", {
        "skipped": "fewer than 2 classes with enough images", "split": {"train": 0, "test": 0,
                                                                        "seed": 0},
        "best": {"config": None, **none}, "per_class": dict.fromkeys(("mean", "median", "std")),
        "worst_classes": {}, "excluded_classes": lonely})
    write_table("metrics/upper_bound_configs.csv", pd.DataFrame(columns=["config"]))
    write_json("metrics/label_issues.json", {
        "skipped": "fewer than 2 classes with enough images", "issues": 0, "noise_rate": None,
        "oof_accuracy": None, "folds": None, "config": None, "excluded_classes": lonely})
    stage.run(parse_stage(PARAMS, stage.Params))
    md = Path("report/report.md").read_text(encoding="utf-8")
    assert "No supervised bound: fewer than 2 classes with enough images." in md
    assert "No label-issue search: fewer than 2 classes with enough images." in md
    assert ("left out of the supervised upper bound: `lonely` (1 image: fewer than 2 images: "
            "a stratified split needs 2)") in md
    assert "left out of the label-issue search (their images get no verdict): `lonely`" in md
    assert "Per-class test accuracy" not in md


def test_an_implausibly_long_label_issue_list_is_warned_about(inputs):
    from clusterlens.audit.label_issues import plausibility_warning

    metrics = read_json("metrics/label_issues.json")
    stage.run(parse_stage(PARAMS, stage.Params))
    assert "**Warning:**" not in Path("report/report.md").read_text(encoding="utf-8")
    write_json("metrics/label_issues.json", metrics | {"warning": plausibility_warning(0.91)})
    stage.run(parse_stage(PARAMS, stage.Params))
    md = Path("report/report.md").read_text(encoding="utf-8")
    assert "**Warning:** 91% of the scored images are suspected label issues" in md


def test_the_label_free_choice_is_shown_beside_the_label_based_one(inputs):
    clustering = read_json("metrics/clustering.json")
    clustering["label_free"] = {
        "label_free": {"metric": "silhouette_pca", "method": "kmeans", "point": "k3", "nmi": 0.7},
        "label_based": {"metric": "nmi", "method": "agglomerative", "point": "ward_k3",
                        "nmi": 0.9}, "agree": False, "nmi_lost": 0.2}
    write_json("metrics/clustering.json", clustering)
    stage.run(parse_stage(PARAMS, stage.Params))
    md = Path("report/report.md").read_text(encoding="utf-8")
    assert "**Without labels.** Selecting by `silhouette_pca` (the silhouette in PCA space" in md
    assert "`umap.enabled: true` adds the silhouette in UMAP space" in md
    assert "cuts into one giant cluster and a few outliers are passed over" in md
    assert "picks another model than `nmi` does" in md
    assert "| silhouette_pca (no labels) | kmeans/k3 | 0.7 |" in md
    assert "| nmi (labels) | agglomerative/ward_k3 | 0.9 |" in md


def test_the_umap_figure_is_shown_only_when_the_umap_stage_ran(inputs):
    import shutil

    stage.run(parse_stage(PARAMS, stage.Params))
    assert "umap.png" not in Path("report/report.md").read_text(encoding="utf-8")  # not asked for
    images = pd.read_parquet("data/images.parquet")
    write_table("data/images.parquet", images.assign(umap_x=np.arange(len(images), dtype=float),
                                                     umap_y=0.0))
    stage.run(parse_stage(PARAMS, stage.Params))
    md = Path("report/report.md").read_text(encoding="utf-8")
    assert "*(figure `plots/composition/umap.png` is missing)*" in md  # asked for now
    Path("plots/composition").mkdir(parents=True)
    shutil.copy("plots/summary/gap.png", "plots/composition/umap.png")
    stage.run(parse_stage(PARAMS, stage.Params))
    md = Path("report/report.md").read_text(encoding="utf-8")
    assert "UMAP by true class and by cluster" in md and "umap.png` is missing" not in md


def test_report_stage_feature_set_comes_from_fusion_set(inputs):
    write_json("metrics/fusion.json", {"k": 3, "best": {"method": "kmeans", "features": "text",
                                                        "kappa": 0.5}})
    write_table("metrics/fusion.csv", pd.DataFrame({
        "method": ["kmeans", "kmeans"], "features": ["text", "visual"], "kappa": [0.5, 0.4]}))
    write_json("metrics/captions.json", {"captioner": "c", "template": "t",
                                         "unique_captions": 1, "confident_fraction": 0.5})
    stage.run(parse_stage({**PARAMS, "fusion": {"set": "text"}}, stage.Params))
    md = Path("report/report.md").read_text(encoding="utf-8")
    assert "runs on the **text** features (`fusion.set`)" in md
    assert "| kmeans | 0.4 | 0.5 |" in md  # visual column first
    stage.run(parse_stage(PARAMS, stage.Params))  # no fusion section: visual
    assert "runs on the **visual** features" in Path("report/report.md").read_text()


def test_report_stage_params_errors_name_the_key(inputs):
    with pytest.raises(ParamError, match="agglomerative.linkage"):
        stage.run(parse_stage({**PARAMS, "agglomerative": {"linkage": ["wrd"], "k": [3]}}, stage.Params))
    with pytest.raises(ParamError, match="`data` is missing"):
        stage.run(parse_stage({"agglomerative": PARAMS["agglomerative"]}, stage.Params))
    with pytest.raises(ParamError, match="report.thumbnail_px"):
        stage.run(parse_stage({**PARAMS, "report": {**PARAMS["report"], "thumbnail_px": 8}},
                              stage.Params))
    with pytest.raises(ParamError, match="report.thumbnails"):
        stage.run(parse_stage({**PARAMS, "report": {**PARAMS["report"], "thumbnails": -1}},
                              stage.Params))
    with pytest.raises(ParamError, match="report.max_points"):
        stage.run(parse_stage({**PARAMS, "report": {**PARAMS["report"], "max_points": 10}},
                              stage.Params))


# --------------------------------------------------------------------------- the explorer
def test_clusters_take_the_colour_of_their_matched_class():
    classes = np.array(["cat"] * 6 + ["dog"] * 6 + ["emu"] * 3, dtype=object)
    labels = np.array([5] * 6 + [2] * 4 + [7] * 2 + [-1] * 3)  # 7: a second, smaller dog cluster
    styles = colours.cluster_styles(labels, classes, ["cat", "dog", "emu"])
    by_class = colours.class_colours(["cat", "dog", "emu"])
    assert set(styles) == {2, 5, 7}  # noise has no style
    assert styles[5] == colours.ClusterStyle(by_class["cat"], 0, "cat", True)
    assert styles[2] == colours.ClusterStyle(by_class["dog"], 0, "dog", True)
    assert styles[7].colour == by_class["dog"] and styles[7].marker != 0
    assert not styles[7].matched and styles[7].name(7) == "c7 ~ dog"
    assert styles[5].name(5) == "c5 = cat"
    assert len(set(colours.palette(30))) == 30 and colours.palette(3) == colours.TAB10[:3]


def test_the_cluster_legend_carries_each_clusters_caption_name():
    table = pd.DataFrame({"class": ["cat"] * 6 + ["dog"] * 6,
                          "cluster": [5] * 6 + [2] * 4 + [-1] * 2})
    paints = explorer.colourings(table, {}, ["cat", "dog"], {5: "tabby / tiger cat", 2: ""})
    legend = next(c for c in paints if c["source"] == "cluster")["cats"]
    assert [name for name, _, _ in legend] == ["c2 = dog", "c5 = cat: tabby / tiger cat", "noise"]


def test_thumbnail_rows_sample_above_the_cap_keeping_the_priority_rows():
    np.testing.assert_array_equal(explorer.thumbnail_rows(5, 5, 0), np.arange(5))
    rows = explorer.thumbnail_rows(100, 10, 3, first=[97, 4, 97])
    assert len(rows) == 10 and len(set(rows)) == 10 and {4, 97} <= set(rows.tolist())
    np.testing.assert_array_equal(rows, explorer.thumbnail_rows(100, 10, 3, first=[97, 4]))
    assert not np.array_equal(rows, explorer.thumbnail_rows(100, 10, 4, first=[97, 4]))
    assert len(explorer.thumbnail_rows(100, 0, 3, first=[1])) == 0


def _explorer_table(n=12):
    classes = np.array(["apple", "berry", "cherry"] * (n // 3), dtype=object)
    labels = np.array([0, 1, 1] * (n // 3))
    labels[-1] = -1
    issue = np.zeros(n, bool)
    issue[2] = True
    return pd.DataFrame({
        "path": [f"{c}/{i}.png" for i, c in enumerate(classes)], "class": classes,
        "cluster": labels, "cluster_majority_class": np.where(labels == 0, "apple", "berry"),
        "centre_distance": np.where(labels >= 0, np.arange(n)[::-1] / n, np.nan),
        "pca_x": np.arange(n, dtype=float), "pca_y": np.ones(n),
        "tsne_x": np.where(np.arange(n) < n - 2, np.arange(n), np.nan), "tsne_y": np.zeros(n),
        "is_label_issue": issue, "suggested_class": ["berry"] * n, "label_issue_rank": issue * 1})


def _category(paint: dict, cols: dict, i: int) -> str | None:
    """The legend name a colouring gives page row ``i`` (None: not drawn), as the page does."""
    if paint["source"] == "flags":
        k = (int(cols["flags"][i]) >> paint["lookup"][0]) & 1
    else:
        k = paint["lookup"][int(cols[paint["source"]][i]) + paint["shift"]]
    return paint["cats"][k][0] if k >= 0 else None


def test_explorer_page_stores_each_point_once_and_colourings_as_code_lookups():
    table = _explorer_table()
    maps = explorer.maps_from_table(table)
    assert [(m.name, len(m.rows)) for m in maps] == [("t-SNE", 10), ("PCA-2D", 12)]
    macro = explorer.macro_cuts({"cuts": {"g2": {"groups": {"0": ["apple"],
                                                            "1": ["berry", "cherry"]}},
                                          "g1": {"groups": {"0": ["apple", "berry"]}},
                                          "h50": {"groups": {"0": ["apple"]}}}})
    assert macro == {"g2": {"apple": "group 0", "berry": "group 1", "cherry": "group 1"}}
    thumbs = {0: "data:image/webp;base64,AAAA", 5: "data:image/webp;base64,BBBB"}
    page = explorer.explorer_html(table, maps, macro, thumbs, plotly_js="/*plotly*/")
    assert page == explorer.explorer_html(table, maps, macro, thumbs, plotly_js="/*plotly*/")
    data, cols = explorer.page_columns(page)
    # each map's coordinates once, as float32; the t-SNE map names its sample's page rows
    t_sne, pca = data["figures"]["cl-map-0"], data["figures"]["cl-map-1"]
    np.testing.assert_array_equal(cols[t_sne["x"]], table["tsne_x"][:10].astype(np.float32))
    np.testing.assert_array_equal(cols[t_sne["rows"]], np.arange(10))
    assert pca["rows"] is None and len(cols[pca["y"]]) == 12 and cols[pca["y"]].dtype == "<f4"
    assert cols["path"] == table["path"].tolist()
    # the colourings: one button each, and a lookup from a column's codes to a category
    paints = data["colourings"]
    assert [c["label"] for c in paints] == ["class", "cluster", "macro g2", "label issue"]
    assert ('<select id="cl-colour-select"><option value="0">class</option><option value="1">'
            'cluster</option><option value="2">macro g2</option>') in page
    named = [[_category(c, cols, i) for i in range(12)] for c in paints]
    assert named[0] == table["class"].tolist()
    assert named[1][:3] == ["c0 = apple", "c1 = berry", "c1 = berry"] and named[1][-1] == "noise"
    assert named[2][:3] == ["group 0: apple", "group 1: berry, cherry", "group 1: berry, cherry"]
    assert named[3].count("suspected label issue") == 1 and named[3][2] == "suspected label issue"
    assert len(json.dumps(paints)) < 800  # no per-point data
    assert page.count("base64,AAAA") == 1 and page.count("base64,BBBB") == 1  # stored once
    assert "2 of 12 images have a thumbnail" in page
    assert '<option value="c1">cluster 1: 7 images, 57% berry</option>' in page
    assert '<option value="issues">suspected label issues: 1 images</option>' in page
    # the issue, then the largest cluster's two nearest members, then the next cluster's
    assert explorer.priority_rows(table, per_cluster=2) == [2, 10, 8, 9, 6]


def test_a_umap_sample_is_a_third_map_with_its_own_rows():
    table = _explorer_table()
    umap_rows = np.array([1, 4, 7, 11])
    xy = np.full((len(table), 2), np.nan)
    xy[umap_rows] = np.arange(8).reshape(4, 2)
    table = table.assign(umap_x=xy[:, 0], umap_y=xy[:, 1])
    maps = explorer.maps_from_table(table)
    assert [(m.name, len(m.rows)) for m in maps] == [("t-SNE", 10), ("UMAP", 4), ("PCA-2D", 12)]
    page = explorer.explorer_html(table, maps, {}, {}, plotly_js="/*plotly*/")
    data, cols = explorer.page_columns(page)
    umap = data["figures"]["cl-map-1"]
    np.testing.assert_array_equal(cols[umap["rows"]], umap_rows)
    np.testing.assert_array_equal(cols[umap["x"]], xy[umap_rows, 0].astype(np.float32))
    assert '<option value="cl-map-1">UMAP' in page


def test_page_rows_sample_above_the_cap_and_keep_the_flagged_images():
    n = 5000
    table = pd.DataFrame({"is_label_issue": np.arange(n) % 97 == 0,
                          "is_blurry": np.arange(n) % 89 == 1,
                          "outlier_rank": np.arange(n)[::-1] + 1})
    np.testing.assert_array_equal(explorer.page_rows(table, n, 0), np.arange(n))
    rows = explorer.page_rows(table, 1000, 0, keep=[3, 4])
    flagged = np.flatnonzero(table["is_label_issue"] | table["is_blurry"])
    assert len(rows) == 1000 and np.all(np.diff(rows) > 0)
    assert set(flagged) | {3, 4} | set(range(n - explorer.GALLERY_MAX, n)) <= set(rows.tolist())
    np.testing.assert_array_equal(rows, explorer.page_rows(table, 1000, 0, keep=[3, 4]))
    assert not np.array_equal(rows, explorer.page_rows(table, 1000, 1, keep=[3, 4]))
    # more flagged images than the cap: the cap shared among the flags, each flag's most
    # severe first (by its score; row order without one), and the most outlying; no sample
    issues = np.flatnonzero(table["is_label_issue"])
    blurry = np.flatnonzero(table["is_blurry"])
    outlying = np.arange(n - explorer.GALLERY_MAX, n)
    np.testing.assert_array_equal(explorer.page_rows(table, 10, 0), np.union1d(
        np.union1d(issues[:5], blurry[:5]), outlying))
    table["blurry_score"] = np.arange(n, dtype=float)          # the last blurry rows worst
    rows = explorer.page_rows(table, 10, 0, keep=[3])
    np.testing.assert_array_equal(rows, np.union1d(np.union1d(issues[:5], blurry[-5:]),
                                                   np.union1d(outlying, [3])))


def test_packed_columns_round_trip_and_are_deterministic():
    cols = {"a": np.array([1.5, -2], np.float32), "b": np.array([7, -1, 3], np.int32),
            "c": np.array([1, 2, 3], np.uint8)}
    text, layout = explorer.pack_columns(cols, {"path": ["x/1.png", "é/2.png"]})
    assert (text, layout) == explorer.pack_columns(cols, {"path": ["x/1.png", "é/2.png"]})
    assert all(off % 8 == 0 for kind, off, _ in layout.values() if kind != "text")
    back = explorer.unpack_columns(text, layout)
    for name, arr in cols.items():
        np.testing.assert_array_equal(back[name], arr)
    assert back["path"] == ["x/1.png", "é/2.png"]
    with pytest.raises(TypeError, match="'d'"):
        explorer.pack_columns({"d": np.zeros(2)}, {})


# --------------------------------------------------------------------------- corrections
def _page_data(page: str) -> dict:
    """The explorer's data (``window.CL_DATA``) embedded in a page."""
    return explorer.page_columns(page)[0]


def test_correction_rows_are_strings_sorted_by_path_one_row_per_path():
    fixes = pd.DataFrame({"path": ["b/2.png", "a/1.png", "b/2.png"],
                          "action": ["exclude", "relabel", "keep"],
                          "class": [None, "berry", np.nan], "note": ["x", "", "fine"]})
    assert explorer.correction_rows(fixes) == [["a/1.png", "relabel", "berry", ""],
                                               ["b/2.png", "keep", "", "fine"]]
    assert explorer.correction_rows(None) == [] == explorer.correction_rows(fixes.iloc[:0])


def test_explorer_embeds_the_corrections_in_force_and_the_columns_they_need():
    table = _explorer_table()
    maps = explorer.maps_from_table(table)
    fixes = pd.DataFrame({"path": ["cherry/2.png", "apple/0.png", "gone/9.png"],
                          "action": ["relabel", "keep", "exclude"],
                          "class": ["berry", "", ""], "note": ['a, "b"\nc', "", "<x>"]})
    # a table without the columns the index stage adds for corrections
    page = explorer.explorer_html(table, maps, {}, {}, plotly_js="", corrections=fixes)
    assert page == explorer.explorer_html(table, maps, {}, {}, plotly_js="", corrections=fixes)
    data = _page_data(page)
    assert data["fixes"] == [["apple/0.png", "keep", "", ""], ["cherry/2.png", "relabel", "berry",
                                                               'a, "b"\nc'],
                             ["gone/9.png", "exclude", "", "<x>"]]
    cols = explorer.page_columns(page)[1]
    assert (cols["given"] == cols["cls"]).all() and (cols["dup"] == -1).all()
    assert "pixels" not in cols
    # the table of the corrections in force, the controls and the instructions
    assert '<b id="cl-fix-count">3 corrections, 0 changed here</b>' in page
    assert ('<tr><td>cherry/2.png</td><td>relabel</td><td>berry</td><td>a, "b"\nc</td></tr>'
            '<tr><td>gone/9.png</td><td>exclude</td><td></td><td>&lt;x&gt;</td></tr>') in page
    assert '<a id="cl-fix-download" download="corrections.csv" href="#">' in page
    for id_ in ("cl-sel-count", "cl-sel-clear", "cl-fix-accept", "cl-fix-relabel", "cl-fix-class",
                "cl-fix-exclude", "cl-fix-keep", "cl-fix-undo", "cl-fix-note", "cl-fix-table"):
        assert page.count(f'id="{id_}"') == 1, id_
    assert ('<select id="cl-fix-class" aria-label="new class"><option value="apple">apple</option>'
            '<option value="berry">berry</option><option value="cherry">cherry</option></select>'
            ) in page
    assert "<code>data.corrections</code>" in page and "<code>dvc repro</code>" in page
    # no corrections: an empty list; the new columns, when present, are embedded
    table["class"] = table["class"].where(table.index != 2, "berry")  # 2: relabelled
    table = table.assign(given_class=["apple", "berry", "cherry"] * 4,
                         correction=[""] * 2 + ["relabel"] + [""] * 9,
                         duplicate_group=[0, 0] + [-1] * 10, width=[40, 80] + [40] * 10,
                         height=32)
    data, cols = explorer.page_columns(explorer.explorer_html(table, maps, {}, {}, plotly_js=""))
    assert data["fixes"] == [] and cols["dup"][:3].tolist() == [0, 0, -1]
    assert cols["pixels"][:2].tolist() == [1280, 2560]
    assert data["classes"] == ["apple", "berry", "cherry"]
    assert cols["cls"][2] == 1 and cols["given"][2] == 2
    assert cols["given"][:2].tolist() == cols["cls"][:2].tolist()


def test_html_tables_put_a_checkbox_by_each_image_path_and_markdown_none(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    doc = document.Doc()
    doc.table(pd.DataFrame({"path": ['a/"x"<1>.png', None], "n": [1, 2]}), pick=("path",))
    page = document.render_html(doc, "t")
    assert ('<td><label><input type="checkbox" class="cl-pick" data-path="a/&quot;x&quot;&lt;1&gt;'
            '.png">a/&quot;x&quot;&lt;1&gt;.png</label></td><td>1</td>') in page
    assert page.count("<input") == 1  # not on a missing path
    assert ".cl-pick{display:none}" in page  # shown only by the explorer's style
    assert document.render_markdown(doc, "report").startswith('| path | n |\n| --- | --- |\n'
                                                              '| a/"x"<1>.png | 1 |')


def test_report_stage_passes_the_corrections_in_force_and_ticks_audit_images(inputs):
    stage.run(parse_stage(PARAMS, stage.Params))  # no corrections in force
    page = Path("report/report.html").read_text(encoding="utf-8")
    assert _page_data(page)["fixes"] == [] and "No corrections in force" in page
    applied = pd.DataFrame({
        "path": ["apple/0.png", "berry/1.png", "gone/9.png"], "split": "",
        "action": ["keep", "relabel", "exclude"], "given_class": ["apple", "berry", "gone"],
        "class": ["", "NA", ""], "note": ['ok, "1"', "", ""],
        "status": ["applied", "applied", "applied"]})
    write_table("data/corrections_applied.csv", applied)
    write_json("metrics/index.json", {**JSONS["metrics/index.json"],
                                      "corrections": {"relabel": 1, "exclude": 1, "keep": 1,
                                                      "not_applied": 0}})
    stage.run(parse_stage(PARAMS, stage.Params))
    first = Path("report/report.md").read_bytes(), Path("report/report.html").read_bytes()
    page, md = first[1].decode("utf-8"), first[0].decode("utf-8")
    assert _page_data(page)["fixes"] == [["apple/0.png", "keep", "", 'ok, "1"'],
                                         ["berry/1.png", "relabel", "NA", ""],
                                         ["gone/9.png", "exclude", "", ""]]
    # the report lists what was applied
    assert "**1** relabelled, **1** excluded, **1** kept" in md
    assert "| berry/1.png | relabel | berry -> NA |  | applied |" in md
    # the audit tables' images can be ticked in the page, not in the markdown
    box = '<label><input type="checkbox" class="cl-pick" data-path="{}">'
    assert page.count(box.format("cherry/2.png")) == 2  # label issues, outliers
    assert page.count(box.format("berry/1.png")) == 2  # near-duplicates (image b), outliers
    assert "cl-pick" not in md and "<input" not in md
    assert "| 1 | cherry/2.png | cherry -> berry | 0.97 | 0.01 | berry |" in md
    stage.run(parse_stage(PARAMS, stage.Params))
    assert (Path("report/report.md").read_bytes(), Path("report/report.html").read_bytes()) == first


def test_large_figures_are_embedded_as_webp_and_small_ones_as_they_are(tmp_path):
    """A figure over EMBED_PNG_MAX (a noisy 600 x 500 heatmap) goes into the page as WebP of the
    same size on white, several times smaller; a small PNG goes in byte for byte."""
    import io

    from PIL import Image

    rng = np.random.default_rng(0)
    big, small = tmp_path / "big.png", tmp_path / "small.png"
    pixels = rng.integers(0, 256, (600, 500, 4), dtype=np.uint8)
    pixels[..., 3] = 255
    pixels[:100, :100, 3] = 0                                  # a transparent corner
    Image.fromarray(pixels, "RGBA").save(big)
    Image.new("RGB", (200, 100), "white").save(small)
    assert big.stat().st_size > document.EMBED_PNG_MAX
    assert document.embedded_figure(small) == ("image/png", small.read_bytes())
    mime, raw = document.embedded_figure(big)
    assert mime == "image/webp" and len(raw) < big.stat().st_size / 2
    with Image.open(io.BytesIO(raw)) as img:
        assert img.format == "WEBP" and img.size == (500, 600)
        assert img.convert("RGB").getpixel((5, 5)) == (255, 255, 255)   # on white
    assert document.embedded_figure(big) == (mime, raw)                  # deterministic
