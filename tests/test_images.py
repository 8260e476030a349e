"""The per-image table, the cluster representatives, the thumbnails of images to check, and
the `images` stage (with small stand-ins for the label_issues and neighbours outputs)."""
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from clusterlens.audit import image_table as it
from clusterlens.audit.issues import ISSUE_TYPES
from clusterlens.audit.representatives import (
    centre_distances,
    cluster_majority,
    nearest_rows,
    representatives,
)
from clusterlens.clustering.selection import selected_labels
from clusterlens.config.base import parse_section, parse_stage
from clusterlens.config.images import ImagesParams
from clusterlens.core.errors import DataError, ParamError
from clusterlens.core.io import read_json, save_npy, write_json, write_table
from clusterlens.report.explorer import maps_from_table
from clusterlens.report.figures import audit
from clusterlens.report.figures.style import matplotlib_setup
from stages import images as stage
from tests.conftest import make_tree, write_umap

IMAGES = {"representatives": 3, "doubtful": 2, "show": 6, "pairs": 4, "clusters": 3}


# --------------------------------------------------------------------------- library
def test_centre_distances_are_to_the_cluster_mean_and_nan_for_noise():
    X = np.array([[0, 0], [2, 0], [10, 10], [10, 14], [5, 5.0]])
    d = centre_distances(X, np.array([0, 0, 1, 1, -1]))
    np.testing.assert_allclose(d[:4], [1, 1, 2, 2])
    assert np.isnan(d[4])
    with pytest.raises(DataError, match="3 cluster labels"):
        centre_distances(X, np.array([0, 0, 1]))


def test_majority_ties_go_to_the_first_class_in_sorted_order():
    maj = cluster_majority(np.array([0, 0, 1, 1, 1, -1]), np.array(["b", "a", "c", "c", "a", "a"]))
    assert maj == {0: ("a", 1), 1: ("c", 2)}  # noise has no majority


def test_representatives_are_the_members_nearest_the_centre():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], [9, 6, 4])
    labels[5] = -1
    X = rng.normal(size=(len(labels), 3)) + labels[:, None] * 5
    classes = np.array(["a"] * 9 + ["b"] * 6 + ["c"] * 4, dtype=object)
    classes[[1, 10]] = ["c", "a"]  # one odd class in cluster 0, one in cluster 1
    paths = [f"{c}/{i}.png" for i, c in enumerate(classes)]
    d = centre_distances(X, labels)
    reps = representatives(labels, d, paths, classes, nearest=3, doubtful=2)
    assert [r["cluster"] for r in reps] == [0, 1, 2]  # largest first, noise skipped
    for r in reps:
        members = np.flatnonzero(labels == r["cluster"])
        brute = sorted(members, key=lambda i: np.linalg.norm(X[i] - X[members].mean(axis=0)))
        assert [m["row"] for m in r["nearest"]] == [int(i) for i in brute[:3]]
        assert all(m["path"] == paths[m["row"]] for m in r["nearest"])
        far = [m["distance"] for m in r["doubtful"] if m["agrees"]]
        assert far == sorted(far, reverse=True)
    assert reps[0]["size"] == 8 and reps[0]["majority_class"] == "a"
    assert reps[0]["doubtful"][0]["row"] == 1 and not reps[0]["doubtful"][0]["agrees"]
    assert reps[1]["doubtful"][0]["row"] == 10
    assert reps[0]["majority_share"] == pytest.approx(7 / 8)
    assert len(reps[2]["nearest"]) == 3 and len(reps[2]["doubtful"]) == 2
    assert nearest_rows({"model": "kmeans/k3", "clusters": reps}, "kmeans/k3")[1] == \
        [m["row"] for m in reps[1]["nearest"]]
    with pytest.raises(DataError, match="not of the selected model 'kmeans/k4'"):
        nearest_rows({"model": "kmeans/k3", "clusters": reps}, "kmeans/k4")
    with pytest.raises(ValueError, match="nearest >= 1"):
        representatives(labels, d, paths, classes, nearest=0, doubtful=1)


def test_tsne_columns_are_nan_outside_the_sample():
    xy = it.tsne_columns(5, np.array([3, 0]), np.array([[1.0, 2.0], [3.0, 4.0]]))
    np.testing.assert_array_equal(xy[[0, 3]], [[3, 4], [1, 2]])
    assert np.isnan(xy[[1, 2, 4]]).all()
    with pytest.raises(DataError, match="t-SNE rows"):
        it.tsne_columns(3, np.array([0, 5]), np.zeros((2, 2)))


def _quality(n: int, rng) -> dict:
    """Stand-in size and image-quality columns of the index: the first image flagged blurry."""
    from clusterlens.data.quality import KINDS

    out = {"width": np.full(n, 40), "height": np.full(n, 32)}
    out.update({f"{k}_score": rng.uniform(0, 0.5, n) for k in KINDS})
    out.update({f"is_{k}": np.zeros(n, bool) for k in KINDS})
    out["blurry_score"][0], out["is_blurry"][0] = 0.9, True
    return out


def _scores(paths, classes, rng):
    """Stand-ins for data/label_issues.parquet and data/neighbours.parquet."""
    n = len(paths)
    quality = rng.uniform(size=n)
    issue = quality < 0.3
    rank = np.zeros(n, dtype=np.int64)
    rank[np.flatnonzero(issue)[np.argsort(quality[issue])]] = np.arange(1, issue.sum() + 1)
    names = sorted(set(classes))
    suggested = [names[(names.index(c) + 1) % len(names)] if i else c
                 for c, i in zip(classes, issue)]
    label_issues = pd.DataFrame({
        "path": paths, "class": classes, "label_quality": quality, "suggested_class": suggested,
        "suggested_probability": rng.uniform(0.4, 1, n), "is_label_issue": issue,
        "label_issue_rank": rank})
    score = rng.uniform(size=n)
    group = np.full(n, -1)
    group[:2] = 0
    neighbours = pd.DataFrame({
        "path": paths, "class": classes, "duplicate_group": group, "outlier_score": score,
        "outlier_rank": (np.argsort(np.argsort(-score)) + 1),
        "outlier_rank_in_class": np.ones(n, dtype=np.int64),
        "is_near_duplicate": group >= 0, "near_duplicate_kind": np.where(group >= 0, "crop", ""),
        "near_duplicate_score": np.where(group >= 0, 0.97, 0.0), "is_same_scene": np.zeros(n, bool),
        "same_scene_score": np.zeros(n), "is_leak": np.zeros(n, bool), "leak_score": np.zeros(n)})
    return label_issues, neighbours


def test_images_table_joins_back_to_the_index_exactly():
    rng = np.random.default_rng(1)
    n = 12
    index = pd.DataFrame({"path": [f"c{i % 3}/{i:03d}.png" for i in range(n)],
                          "class": [f"c{i % 3}" for i in range(n)], "label": np.arange(n) % 3,
                          **_quality(n, rng)})
    labels = np.arange(n) % 3
    labels[[0, 4]] = [-1, 0]  # noise; a c1 image in cluster 0
    li, nb = _scores(index["path"].tolist(), index["class"].tolist(), rng)
    d = centre_distances(rng.normal(size=(n, 4)), labels)
    tsne = it.tsne_columns(n, np.arange(0, n, 2), rng.normal(size=(n // 2, 2)))
    t = it.images_table(index, labels, d, rng.normal(size=(n, 2)), tsne, li, nb)
    assert list(t.columns) == it.COLUMNS
    assert t["path"].tolist() == index["path"].tolist() and len(t) == n
    assert t["class"].tolist() == index["class"].tolist()
    assert t["cluster"].tolist() == labels.tolist()
    assert t.loc[0, "cluster_majority_class"] == "" and not t.loc[0, "agrees"]
    assert not t.loc[4, "agrees"] and t.loc[3, "agrees"]
    assert np.isnan(t.loc[0, "centre_distance"]) and t["centre_distance"].iloc[1:].notna().all()
    assert t["tsne_x"].isna().tolist() == [i % 2 == 1 for i in range(n)]
    np.testing.assert_array_equal(t["label_quality"], li["label_quality"])
    np.testing.assert_array_equal(t["outlier_rank"], nb["outlier_rank"])
    assert t["is_label_issue"].dtype == bool and t["agrees"].dtype == bool
    head = it.headline(t, "kmeans/k3")
    assert head["images"] == n and head["noise"] == 1 and head["in_duplicate_groups"] == 2
    assert head["label_issues"] == int(li["is_label_issue"].sum())
    # a stale or reordered input is an error, never a silent misjoin
    with pytest.raises(DataError, match="the label issues .* in index order"):
        it.images_table(index, labels, d, np.zeros((n, 2)), tsne, li.iloc[::-1], nb)
    with pytest.raises(DataError, match="the neighbour scores"):
        it.images_table(index, labels, d, np.zeros((n, 2)), tsne, li, nb.iloc[:-1])
    with pytest.raises(DataError, match="no column outlier_score"):
        it.images_table(index, labels, d, np.zeros((n, 2)), tsne, li,
                        nb.drop(columns="outlier_score"))
    with pytest.raises(DataError, match="cluster labels have shape"):
        it.images_table(index, labels[:-1], d, np.zeros((n, 2)), tsne, li, nb)


def test_selected_labels_follow_the_grid_layout(tmp_path):
    save_npy(tmp_path / "agglomerative" / "ward" / "k3.npy", np.array([0, 1, 2]))
    name, labels = selected_labels({"selected": {"method": "agglomerative", "point": "ward_k3"}},
                                   tmp_path)
    assert name == "agglomerative/ward_k3" and labels.tolist() == [0, 1, 2]
    with pytest.raises(DataError, match="no selected model"):
        selected_labels({"best": {}}, tmp_path)


@pytest.mark.parametrize("section, match", [
    ({**IMAGES, "representatives": 0}, "images.representatives` must be >= 1"),
    ({**IMAGES, "doubtful": -1}, "images.doubtful` must be >= 0"),
    ({**IMAGES, "show": "4"}, "images.show"),
    ({k: v for k, v in IMAGES.items() if k != "pairs"}, "images.pairs` is missing"),
    ({**IMAGES, "cluster": 3}, "did you mean `images.clusters`"),
])
def test_images_params_errors_name_the_key(section, match):
    with pytest.raises(ParamError, match=match):
        parse_section({"images": section}, "images", ImagesParams)


def test_figures_without_anything_to_show_are_still_written(in_tmp_cwd):
    matplotlib_setup()
    t = pd.DataFrame({c: [] for c in it.COLUMNS})
    t["is_label_issue"] = t["is_label_issue"].astype(bool)
    pairs = pd.DataFrame({c: [] for c in ["path_a", "path_b", "class_a", "class_b",
                                          "similarity", "label_conflict"]})
    audit.plot_label_issues(t, ".", "a.png", 6, "none")
    audit.plot_near_duplicates(pairs, ".", "b.png", 4, "none")
    audit.plot_outliers(t, ".", "c.png", 6, "none")
    audit.plot_representatives([], ".", "d.png", 3, "none")
    assert all(Image.open(p).size[0] > 200 for p in ["a.png", "b.png", "c.png", "d.png"])
    assert audit.readable("golden_retriever-dog") == "golden retriever…"
    assert audit.readable("cat") == "cat"


# --------------------------------------------------------------------------- the stage
def _inputs(tmp_path):
    """A small image tree, its index, a kmeans selection, PCA, t-SNE and score stand-ins."""
    root = make_tree(tmp_path / "images", {"apple": 7, "berry_bush": 6, "cherry": 5})
    rows = sorted(p.relative_to(root).as_posix() for p in root.glob("*/*.png"))
    cls = [r.split("/")[0] for r in rows]
    y = np.array([sorted(set(cls)).index(c) for c in cls])
    rng = np.random.default_rng(0)
    write_table("data/index.parquet", pd.DataFrame({"path": rows, "class": cls, "label": y,
                                                    **_quality(len(rows), rng)}))
    pca = (np.eye(3)[y] * 6 + rng.normal(0, 0.7, (len(y), 3))).astype(np.float32)
    labels = y.copy()
    labels[0] = 1  # an apple in the berry cluster
    save_npy("data/clusters/kmeans/k3.npy", labels)
    write_json("metrics/clustering.json", {"selected": {
        "method": "kmeans", "point": "k3", "metric": "nmi", "value": 0.9, "reason": "highest"}})
    save_npy("data/pca.npy", pca)
    save_npy("data/pca_2d.npy", pca[:, :2])
    np.savez("data/tsne.npz", embedding=rng.normal(size=(9, 2)), rows=np.arange(0, 18, 2))
    write_umap(rows=np.arange(1, 18, 3), reduced=rng.normal(size=(6, 4)))  # a 6-image UMAP
    li, nb = _scores(rows, cls, rng)
    write_table("data/label_issues.parquet", li)
    write_table("data/neighbours.parquet", nb)
    write_table("data/near_duplicates.csv", pd.DataFrame({
        "row_a": [0, 3], "row_b": [1, 9], "path_a": [rows[0], rows[3]],
        "path_b": [rows[1], rows[9]], "class_a": [cls[0], cls[3]], "class_b": [cls[1], cls[9]],
        "kind": ["resized", "same_scene"], "score": [0.99, 0.8], "similarity": [0.99, 0.97],
        "coverage": [1.0, 1.0], "label_conflict": [cls[0] != cls[1], cls[3] != cls[9]],
        "group": [0, -1]}))
    return {"seed": 0, "data": {"root": str(root)}, "images": IMAGES}, rows, pca, labels


def test_images_stage_writes_the_table_representatives_and_figures(tmp_path, in_tmp_cwd):
    params, rows, pca, labels = _inputs(tmp_path)
    head = stage.run(parse_stage(params, stage.Params))
    t = pd.read_parquet(stage.OUT_TABLE)
    assert t["path"].tolist() == rows  # same paths, same order, no missing rows
    csv = pd.read_csv(stage.OUT_CSV, keep_default_na=False, na_values=[""])
    assert csv["path"].tolist() == rows and list(csv.columns) == list(t.columns)
    np.testing.assert_allclose(csv["centre_distance"], t["centre_distance"])
    assert t["cluster"].tolist() == labels.tolist()
    umap_rows = np.flatnonzero(t["umap_x"].notna().to_numpy())
    assert umap_rows.tolist() == list(range(1, 18, 3))  # the UMAP map's sample, NaN elsewhere
    assert [m.name for m in maps_from_table(t)] == ["t-SNE", "UMAP", "PCA-2D"]
    assert not t.loc[0, "agrees"] and t.loc[0, "cluster_majority_class"] == "berry_bush"
    reps = read_json(stage.OUT_REPRESENTATIVES)
    assert reps["model"] == "kmeans/k3" and reps["space"] == "pca"
    for c in reps["clusters"]:
        members = np.flatnonzero(labels == c["cluster"])
        dist = np.linalg.norm(pca[members] - pca[members].astype(np.float64).mean(axis=0),
                              axis=1)
        assert [m["row"] for m in c["nearest"]] == members[np.argsort(dist)][:3].tolist()
    berry = next(c for c in reps["clusters"] if c["cluster"] == 1)
    assert berry["doubtful"][0] == {**berry["doubtful"][0], "row": 0, "agrees": False}
    assert head == read_json(stage.OUT_METRICS) and head["images"] == len(rows)
    for png in [stage.OUT_LABEL_ISSUES, stage.OUT_DUPLICATES, stage.OUT_SAME_SCENE,
                stage.OUT_OUTLIERS, stage.OUT_REPS_PNG, *stage.OUT_QUALITY.values()]:
        assert Image.open(png).size[0] > 300, png
    # the audit: one row per issue type, counts as flagged, the most severe example named
    audit = pd.read_csv(stage.OUT_AUDIT, keep_default_na=False, na_values=[""])
    assert audit["issue"].tolist() == list(ISSUE_TYPES)
    by = audit.set_index("issue")
    assert by.loc["blurry", "images"] == 1 and by.loc["blurry", "example"] == rows[0]
    assert by.loc["near_duplicate", "images"] == 2 and by.loc["dark", "images"] == 0
    assert head["issues"] == {r.issue: int(r.images) for r in audit.itertuples()}
    assert t["is_blurry"].sum() == 1 and t["label_issue_score"].between(0, 1).all()


def test_images_stage_refuses_stale_scores(tmp_path, in_tmp_cwd):
    params, rows, _, _ = _inputs(tmp_path)
    li = pd.read_parquet("data/label_issues.parquet")
    write_table("data/label_issues.parquet", li.iloc[:-1])
    with pytest.raises(DataError, match="stale"):
        stage.run(parse_stage(params, stage.Params))
    with pytest.raises(ParamError, match="images.show"):
        stage.run(parse_stage({**params, "images": {**IMAGES, "show": 0}}, stage.Params))
