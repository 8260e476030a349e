"""The selected model's composition table, heatmap, montage and 2-D views; t-SNE; dendrogram."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.cluster.hierarchy import fcluster

from clusterlens.analysis import composition
from clusterlens.audit.representatives import centre_distances, representatives
from clusterlens.clustering import selection, trees
from clusterlens.clustering.grid import point_path
from clusterlens.clustering.selection import selected_labels
from clusterlens.config.base import parse_section, parse_stage
from clusterlens.config.composition import CompositionParams
from clusterlens.core.errors import DataError, ParamError
from clusterlens.core.io import load_npy, save_npy, write_json, write_table
from clusterlens.report.figures import composition as composition_plots
from clusterlens.report.figures.clustering import plot_dendrogram
from clusterlens.report.figures.style import matplotlib_setup
from stages import clustering, tsne
from stages import composition as stage
from tests.conftest import make_tree, run_point, write_umap


def test_composition_table_counts_shares_and_entropy():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1, -1, -1])
    classes = np.array(["a", "a", "b", "b", "c", "c", "c", "c", "c", "a", "a", "b"])
    t = composition.composition_table(labels, classes)
    assert t["cluster"].tolist() == [1, 0, -1]  # largest first, noise last
    c1 = t.iloc[0]
    assert (c1["size"], c1["top1_class"], c1["top1_count"], c1["top2_class"]) == (6, "c", 5, "a")
    assert c1["top1_pct"] == pytest.approx(83.33)
    assert c1["share_pct"] == pytest.approx(50.0)
    p = np.array([5, 1]) / 6
    assert c1["entropy_bits"] == pytest.approx(-(p * np.log2(p)).sum(), abs=1e-4)
    c0 = t.iloc[1]
    assert c0["entropy_bits"] == pytest.approx(1.0)  # a 50/50 cluster holds one bit
    assert c0["classes"] == 2 and c0["top3_class"] == "" and c0["top3_count"] == 0
    assert composition.entropy_bits(np.array([7, 0])) == 0.0


def test_row_normalised_rows_sum_to_one_in_class_order():
    labels = np.array([0, 0, 1, 1, 1])
    classes = np.array(["b", "a", "a", "a", "c"])
    shares = composition.row_normalised(labels, classes, ["a", "b", "c", "d"])
    assert list(shares.columns) == ["a", "b", "c", "d"]
    np.testing.assert_allclose(shares.sum(axis=1), 1.0)
    assert shares.loc[1, "a"] == pytest.approx(2 / 3) and shares.loc[0, "d"] == 0


def test_mismatched_lengths_are_an_error():
    with pytest.raises(DataError, match="3 cluster labels but 2 images"):
        composition.composition_table(np.array([0, 1, 1]), np.array(["a", "b"]))


@pytest.mark.parametrize("section, match", [
    ({"montage_clusters": 0, "montage_images": 4}, r"composition.montage_clusters` must be >= 1"),
    ({"montage_clusters": 2, "montage_images": "4"}, "composition.montage_images"),
    ({"montage_clusters": 2}, "composition.montage_images` is missing"),
    ({"montage_clusters": 2, "montage_image": 4}, "did you mean `composition.montage_images`"),
])
def test_composition_params_errors_name_the_key(section, match):
    with pytest.raises(ParamError, match=match):
        parse_section({"composition": section}, "composition", CompositionParams)


def test_selected_labels_follow_the_grid_layout(tmp_path):
    assert point_path("kmeans", "k10", tmp_path, ".npy") == tmp_path / "kmeans" / "k10.npy"
    assert point_path("agglomerative", "ward_k10", tmp_path, ".npy") == \
        tmp_path / "agglomerative" / "ward" / "k10.npy"
    save_npy(tmp_path / "agglomerative" / "ward" / "k3.npy", np.array([0, 1, 2]))
    sel = {"selected": {"method": "agglomerative", "point": "ward_k3"}}
    name, labels = selected_labels(sel, tmp_path)
    assert name == "agglomerative/ward_k3" and labels.tolist() == [0, 1, 2]
    with pytest.raises(DataError, match="the selected model's labels.*missing"):
        selected_labels({"selected": {"method": "kmeans", "point": "k9"}}, tmp_path)


def test_montage_shows_the_representatives_nearest_first(monkeypatch, in_tmp_cwd):
    """Each row shows its cluster's representatives in their order (nearest the centre
    first), cut at ``per_cluster``; noise gets no row."""
    shown = []
    monkeypatch.setattr(composition_plots, "thumbnail_cell",
                        lambda ax, path=None: shown.append(None if path is None
                                                           else Path(path).name))
    index = pd.DataFrame({"path": [f"a/{i}.png" for i in range(6)],
                          "class": ["a", "a", "a", "b", "b", "a"]})
    labels = np.array([0, 0, 0, 1, 1, -1])
    table = composition.composition_table(labels, index["class"].to_numpy())
    matplotlib_setup()
    composition_plots.plot_montage(table, {0: [2, 0, 1], 1: [4]}, index, "root", "m.png",
                                   clusters=3, per_cluster=2, title="t")
    assert shown == ["2.png", "0.png", "4.png", None]
    assert Image.open("m.png").size[0] > 200


def test_dendrogram_cut_heights_leave_k_clusters(in_tmp_cwd):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(60, 4))
    Z = trees.linkage_tree(X, "ward")
    for k, h in trees.cut_heights(Z, [2, 5, 9]).items():
        assert len(np.unique(fcluster(Z, h, criterion="distance"))) == k
    plot_dendrogram(Z, [2, 5, 9], "plots/d.png", "ward")
    assert Image.open("plots/d.png").size[0] > 800


def test_recommended_k_by_silhouette_and_elbow():
    km = {f"k{k}": {"k": k, "inertia": i, "silhouette": s} for k, i, s in
          [(2, 1000, 0.3), (4, 300, 0.5), (6, 250, 0.4), (8, 220, 0.35), (10, 200, 0.3)]}
    assert selection.recommended_k(km) == {"by_silhouette": 4, "by_elbow": 4}
    assert selection.elbow_k([2, 3], [5, 4]) is None


PARAMS = {"seed": 0, "data": {"root": "images"},
          "composition": {"montage_clusters": 2, "montage_images": 4}}


def _write_representatives(model: str, labels: np.ndarray, X: np.ndarray, rows: list,
                           classes: list) -> list[dict]:
    reps = representatives(labels, centre_distances(X, labels), rows, classes, 4, 2)
    write_json("data/representatives.json", {"model": model, "clusters": reps})
    return reps


def test_composition_stage_on_a_given_selection(tmp_path, in_tmp_cwd):
    """The stage alone: an agglomerative selection with noise, its labels in the per-linkage
    folder; the table puts noise last and the figures are written; the montage needs the
    selected model's representatives."""
    root = make_tree(tmp_path / "images", {"apple": 6, "berry": 5, "cherry": 4})
    rows = sorted(p.relative_to(root).as_posix() for p in root.glob("*/*.png"))
    cls = [r.split("/")[0] for r in rows]
    write_table("data/index.parquet", pd.DataFrame({"path": rows, "class": cls}))
    labels = np.array([{"apple": 0, "berry": 1, "cherry": 2}[c] for c in cls])
    labels[[0, 7]] = -1
    save_npy("data/clusters/agglomerative/ward/k3.npy", labels)
    write_json("metrics/clustering.json", {"selected": {
        "method": "agglomerative", "point": "ward_k3", "metric": "nmi", "value": 0.8,
        "reason": "highest nmi"}})
    rng = np.random.default_rng(0)
    save_npy("data/pca_2d.npy", rng.normal(size=(len(rows), 2)).astype(np.float32))
    np.savez("data/tsne.npz", embedding=rng.normal(size=(6, 2)), rows=np.arange(0, 12, 2))
    write_umap(rows=np.arange(1, 15, 2))  # a UMAP of every other image
    captioned = [r for i, r in enumerate(rows) if i % 2]  # captions of a sample
    write_table("data/captions.parquet", pd.DataFrame({
        "path": captioned, "label1": [f"{r.split('/')[0]} pie" for r in captioned]}))
    with pytest.raises(DataError, match="representatives.json is missing: run `dvc repro images`"):
        stage.run(parse_stage({**PARAMS, "data": {"root": str(root)}}, stage.Params))
    _write_representatives("kmeans/k3", labels, rng.normal(size=(len(rows), 3)), rows, cls)
    with pytest.raises(DataError, match="not of the selected model 'agglomerative/ward_k3'"):
        stage.run(parse_stage({**PARAMS, "data": {"root": str(root)}}, stage.Params))
    _write_representatives("agglomerative/ward_k3", labels, rng.normal(size=(len(rows), 3)),
                           rows, cls)
    table = stage.run(parse_stage({**PARAMS, "data": {"root": str(root)}}, stage.Params))
    assert table["cluster"].tolist() == [0, 1, 2, -1]
    assert table["name"].tolist() == ["apple pie", "berry pie", "cherry pie", ""]
    assert table["size"].tolist() == [5, 4, 4, 2]
    assert pd.read_csv(stage.OUT_TABLE, keep_default_na=False)["name"].tolist() == [
        "apple pie", "berry pie", "cherry pie", ""]
    for png in [stage.OUT_HEATMAP, stage.OUT_MONTAGE, stage.OUT_TSNE, stage.OUT_PCA]:
        assert Image.open(png).size[0] > 300, png
    assert Image.open(stage.OUT_UMAP).size == Image.open(stage.OUT_TSNE).size  # a side-by-side


def test_composition_stage_checks_its_params_first(in_tmp_cwd):
    with pytest.raises(ParamError, match="composition.montage_images` must be >= 1"):
        stage.run(parse_stage({**PARAMS, "composition": {"montage_clusters": 2, "montage_images": 0}}, stage.Params))
    with pytest.raises(ParamError, match="`data` is missing"):
        stage.run(parse_stage({k: v for k, v in PARAMS.items() if k != "data"}, stage.Params))


@pytest.fixture
def selected_run(tmp_path, in_tmp_cwd):
    """A tiny image tree, its PCA-like features, the whole grid and the aggregate."""
    root = make_tree(tmp_path / "images", {"apple": 12, "berry": 10, "cherry": 8})
    rows = sorted(p.relative_to(root).as_posix() for p in root.glob("*/*.png"))
    cls = [r.split("/")[0] for r in rows]
    code = {c: i for i, c in enumerate(sorted(set(cls)))}
    y = np.array([code[c] for c in cls])
    rng = np.random.default_rng(0)
    X = (np.eye(3)[y] * 8 + rng.normal(0, 0.5, (len(y), 3))).astype(np.float32)
    save_npy("data/pca.npy", X)
    write_umap()
    write_table("data/captions.parquet", pd.DataFrame({"path": [], "label1": []}))
    save_npy("data/pca_2d.npy", X[:, :2])
    write_table("data/index.parquet", pd.DataFrame({"path": rows, "class": cls, "label": y}))
    params = {"seed": 0, "data": {"root": str(root)}, "metrics": {"silhouette_sample": 100},
              "kmeans": {"k": [2, 3], "n_init": 3, "max_iter": 100},
              "agglomerative": {"linkage": ["ward"], "k": [3]},
              "gmm": {"k": [], "covariance_type": "diag", "max_iter": 200},
              "dbscan": {"eps_percentile": [], "min_samples": 10},
              "hdbscan": {"min_cluster_size": [], "min_samples": None},
              "nmf": {"k": [], "n_components": 10, "max_iter": 300, "negative": "shift"},
              "select": {"metric": "nmi", "max_noise": 0.3},
              "tsne": {"sample": 20, "perplexity": 5, "max_iter": 250},
              "composition": {"montage_clusters": 2, "montage_images": 4}}
    for k in (2, 3):
        run_point("kmeans", k, params)
    run_point("agglomerative", "ward", params)
    clustering.run(parse_stage(params, clustering.Params))
    tsne.run(parse_stage(params, tsne.Params))
    return params, y


def test_composition_stage_writes_table_and_figures(selected_run):
    params, y = selected_run
    sel = json.load(open("metrics/clustering.json"))["selected"]
    name, labels = selected_labels({"selected": sel}, "data/clusters")
    index = pd.read_parquet("data/index.parquet")
    _write_representatives(name, labels, load_npy("data/pca.npy"), index["path"].tolist(),
                           index["class"].tolist())
    table = stage.run(parse_stage(params, stage.Params))
    assert sel["value"] == pytest.approx(1.0)  # three well separated blobs
    assert sorted(table["size"].tolist(), reverse=True) == [12, 10, 8]
    assert (table["top1_pct"] == 100).all() and (table["entropy_bits"] == 0).all()
    assert (table["name"] == "").all()  # no captions
    on_disk = pd.read_csv("metrics/composition.csv")
    assert on_disk["size"].tolist() == table["size"].tolist()
    for png in [stage.OUT_HEATMAP, stage.OUT_MONTAGE, stage.OUT_TSNE, stage.OUT_PCA]:
        assert Image.open(png).size[0] > 500, png
    assert Image.open(stage.OUT_UMAP).size[0] < 800  # UMAP off: a one-line notice
    assert Image.open("plots/clustering/dendrogram_ward.png").size[0] > 800


def test_composition_without_a_selection_is_a_clear_error(selected_run):
    params, _ = selected_run
    json.dump({"best": {}}, open("metrics/clustering.json", "w"))
    with pytest.raises(DataError, match="no selected model"):
        stage.run(parse_stage(params, stage.Params))


def test_pca_view_draws_every_image_below_the_switch_and_the_tsne_sample_above(selected_run,
                                                                               monkeypatch):
    params, y = selected_run
    sel = json.load(open("metrics/clustering.json"))["selected"]
    name, labels = selected_labels({"selected": sel}, "data/clusters")
    index = pd.read_parquet("data/index.parquet")
    _write_representatives(name, labels, load_npy("data/pca.npy"), index["path"].tolist(),
                           index["class"].tolist())
    drawn = {}
    monkeypatch.setattr(stage, "plot_side_by_side", lambda xy, cls, lab, axis, title, path:
                        drawn.__setitem__(axis, (len(xy), title)))
    stage.run(parse_stage(params, stage.Params))
    assert drawn["PC"][0] == len(y) and "sampled" not in drawn["PC"][1]
    monkeypatch.setattr(stage, "PCA_VIEW_MAX", len(y) - 1)
    stage.run(parse_stage(params, stage.Params))
    assert drawn["PC"][0] == drawn["t-SNE"][0] == 20 and "of 20 sampled images" in drawn["PC"][1]


def test_heatmap_labels_of_many_classes_do_not_overlap(monkeypatch, tmp_path):
    """1,000 classes x 120 clusters: every few classes get a label, no two labels overlap, and the
    axis says how many are skipped; 12 classes are all labelled."""
    import matplotlib.pyplot as plt

    matplotlib_setup()
    kept = {}
    monkeypatch.setattr(composition_plots, "save_figure",
                        lambda fig, path: kept.setdefault("fig", fig))
    rng = np.random.default_rng(0)
    for n_cls, n_clu, expect_all in ((1000, 120, False), (12, 8, True)):
        shares = pd.DataFrame(rng.dirichlet(np.ones(n_cls), n_clu),
                              columns=[f"class_{i:03d}" for i in range(n_cls)])
        kept.clear()
        composition_plots.plot_heatmap(shares, {c: 10 for c in shares.index}, "t",
                                       tmp_path / "h.png")
        fig = kept["fig"]
        ax = fig.axes[0]
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        for labels, horizontal in ((ax.get_xticklabels(), True), (ax.get_yticklabels(), False)):
            boxes = [t.get_window_extent(renderer) for t in labels if t.get_text()]
            spans = sorted((b.x0, b.x1) if horizontal else (b.y0, b.y1) for b in boxes)
            assert all(a[1] <= b[0] + 0.5 for a, b in zip(spans, spans[1:])), "labels overlap"
        shown = [t.get_text() for t in ax.get_xticklabels()]
        assert (len(shown) == n_cls) == expect_all
        assert ("one label every" in ax.get_xlabel()) != expect_all
        plt.close(fig)


def test_cluster_names_take_the_most_characteristic_caption_labels():
    from clusterlens.analysis.cluster_names import cluster_names

    labels = np.array([0] * 10 + [1] * 10 + [2] * 5 + [-1] * 3)
    words = (["tabby"] * 6 + ["tiger cat"] * 3 + ["dog"]      # cluster 0: two cat labels
             + ["dog"] * 5 + ["wolf"] * 4 + ["tabby"]         # cluster 1
             + ["tabby"] * 3 + ["dog"] * 2                    # cluster 2
             + ["owl"] * 3)                                   # noise: never a name
    names = cluster_names(labels, np.arange(len(labels)), words)
    # tiger cat: 30% of cluster 0, 12% overall, lift 2.5; tabby: 60% there, 40% overall
    assert names == {0: "tiger cat / tabby", 1: "wolf / dog", 2: "tabby / dog"}
    # only some images captioned; a cluster without captioned members gets no name
    some = np.arange(0, 20)
    assert cluster_names(labels, some, words[:20])[2] == ""
    assert cluster_names(labels, np.zeros(0, int), []) == {0: "", 1: "", 2: ""}
