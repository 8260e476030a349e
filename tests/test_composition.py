"""The selected model's composition table, heatmap, montage and 2-D views; t-SNE; dendrogram."""
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.cluster.hierarchy import fcluster

from clusterlens import clustering as cluster, selection as clustering, composition, tsne
from clusterlens.common import DataError, ParamError, save_npy, write_table
from tests.conftest import make_tree


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



def test_dendrogram_cut_heights_leave_k_clusters(in_tmp_cwd):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(60, 4))
    Z = cluster.linkage_tree(X, "ward")
    for k, h in cluster.cut_heights(Z, [2, 5, 9]).items():
        assert len(np.unique(fcluster(Z, h, criterion="distance"))) == k
    cluster.plot_dendrogram(Z, [2, 5, 9], "plots/d.png", "ward")
    assert Image.open("plots/d.png").size[0] > 800


def test_recommended_k_by_silhouette_and_elbow():
    km = {f"k{k}": {"k": k, "inertia": i, "silhouette": s} for k, i, s in
          [(2, 1000, 0.3), (4, 300, 0.5), (6, 250, 0.4), (8, 220, 0.35), (10, 200, 0.3)]}
    assert clustering.recommended_k(km) == {"by_silhouette": 4, "by_elbow": 4}
    assert clustering.elbow_k([2, 3], [5, 4]) is None


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
    save_npy("data/pca_2d.npy", X[:, :2])
    write_table("data/index.parquet", pd.DataFrame({"path": rows, "class": cls, "label": y}))
    params = {"seed": 0, "data": {"root": str(root)}, "metrics": {"silhouette_sample": 100},
              "kmeans": {"k": [2, 3], "n_init": 3, "max_iter": 100},
              "agglomerative": {"linkage": ["ward"], "k": [3]},
              "gmm": {"k": []}, "dbscan": {"eps_percentile": []},
              "hdbscan": {"min_cluster_size": []}, "nmf": {"k": []},
              "select": {"metric": "nmi", "max_noise": 0.3},
              "tsne": {"sample": 20, "perplexity": 5, "max_iter": 250},
              "composition": {"montage_clusters": 2, "montage_images": 4}}
    for k in (2, 3):
        cluster.run("kmeans", k, params)
    cluster.run("agglomerative", "ward", params)
    clustering.run(params)
    tsne.run(params)
    return params, y


def test_composition_stage_writes_table_and_figures(selected_run):
    params, y = selected_run
    table = composition.run(params)
    sel = json.load(open("metrics/clustering.json"))["selected"]
    assert sel["value"] == pytest.approx(1.0)  # three well separated blobs
    assert sorted(table["size"].tolist(), reverse=True) == [12, 10, 8]
    assert (table["top1_pct"] == 100).all() and (table["entropy_bits"] == 0).all()
    on_disk = pd.read_csv("metrics/composition.csv")
    assert on_disk["size"].tolist() == table["size"].tolist()
    for png in [composition.OUT_HEATMAP, composition.OUT_MONTAGE, composition.OUT_TSNE,
                composition.OUT_PCA]:
        assert Image.open(png).size[0] > 500, png
    assert Image.open("plots/clustering/dendrogram_ward.png").size[0] > 800


def test_composition_without_a_selection_is_a_clear_error(selected_run):
    params, _ = selected_run
    json.dump({"best": {}}, open("metrics/clustering.json", "w"))
    with pytest.raises(DataError, match="no selected model"):
        composition.run(params)
