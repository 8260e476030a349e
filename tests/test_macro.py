"""Macro-categories (library, figures, the `macro` and `macro_purity` stages) on a generated
two-level hierarchy: 4 families x 3 classes, classes are small perturbations of their family's
prototype, images scatter around the classes."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.cluster.hierarchy import cophenet, fcluster, leaves_list, linkage
from scipy.spatial.distance import pdist

from clusterlens.analysis import macro
from clusterlens.clustering.metrics import purity
from clusterlens.config.base import parse_section, parse_stage
from clusterlens.config.macro import MacroParams
from clusterlens.core.errors import DataError, ParamError
from clusterlens.core.io import save_npy, write_table
from clusterlens.report.figures import macro as plots
from clusterlens.report.figures.style import matplotlib_setup
from stages import macro as macro_stage
from stages import macro_purity as purity_stage

FAMILIES = {"bird": ["duck", "goose", "swan"], "car": ["cab", "sedan", "van"],
            "planet": ["mars", "saturn", "venus"], "tool": ["axe", "drill", "saw"]}
PARAMS = {"seed": 0, "kmeans": {"k": [2, 4, 12], "n_init": 3, "max_iter": 100},
          "macro": {"linkage": "ward", "groups": [4, 2, 5, 30], "height_ratios": [0.3, 0.6, 0.9],
                    "color_threshold": 0.5, "heatmap_classes": 50}}


def make_hierarchy(per_class=15, dim=8, seed=0, noise=0.5):
    """(X, labels, class names, family of each class): classes sorted by name as the index is.
    X is centred, as PCA scores are."""
    rng = np.random.default_rng(seed)
    protos = rng.normal(0, 20, (len(FAMILIES), dim))
    fam_of = {c: f for f, cs in FAMILIES.items() for c in cs}
    names = sorted(fam_of)
    fams = sorted(FAMILIES)
    centers = np.stack([protos[fams.index(fam_of[c])] + rng.normal(0, 2, dim) for c in names])
    y = np.repeat(np.arange(len(names)), per_class)
    X = centers[y] + rng.normal(0, noise, (len(y), dim))
    return (X - X.mean(axis=0)).astype(np.float32), y, names, [fam_of[c] for c in names]


def write_inputs(X, y, names):
    save_npy("data/pca.npy", X)
    write_table("data/index.parquet", pd.DataFrame({
        "path": [f"{names[v]}/{i:03d}.png" for i, v in enumerate(y)],
        "class": [names[v] for v in y], "label": y}))


@pytest.fixture
def hierarchy(in_tmp_cwd):
    X, y, names, fams = make_hierarchy()
    write_inputs(X, y, names)
    return X, y, names, fams


def _params(**macro_overrides):
    return {**PARAMS, "macro": {**PARAMS["macro"], **macro_overrides}}


def _partition(labels, names):
    return {frozenset(n for n, g in zip(names, labels) if g == v) for v in set(labels)}


def test_cut_at_the_number_of_families_recovers_them(hierarchy):
    _, _, names, fams = hierarchy
    macro_stage.run(parse_stage(_params(), macro_stage.Params))
    table = pd.read_csv("data/macro/class_groups.csv")
    assert table["class"].tolist() == names
    assert _partition(table["g4"], names) == _partition(fams, names)
    listing = json.load(open("data/macro/groups.json"))
    members = {frozenset(v) for v in listing["cuts"]["g4"]["groups"].values()}
    assert members == {frozenset(cs) for cs in FAMILIES.values()}


def test_groups_equal_an_independent_scipy_ward_linkage(hierarchy):
    X, y, names, _ = hierarchy
    out = macro_stage.run(parse_stage(_params(), macro_stage.Params))
    centroids = np.stack([X[y == c].astype(np.float64).mean(axis=0) for c in range(len(names))])
    Z = linkage(centroids, "ward")
    table = pd.read_csv("data/macro/class_groups.csv")
    for n in (2, 4, 5):
        np.testing.assert_array_equal(table[f"g{n}"], fcluster(Z, n, "maxclust") - 1)
        assert out["groups"][f"g{n}"] == n
    np.testing.assert_allclose(np.load("data/macro/linkage.npy"), Z, rtol=1e-10)
    assert out["cophenetic_correlation"] == pytest.approx(cophenet(Z, pdist(centroids))[0],
                                                          abs=1e-6)
    listing = json.load(open("data/macro/groups.json"))
    assert listing["leaf_order"] == [names[i] for i in leaves_list(Z)]


def test_height_ratio_cuts_give_the_documented_group_counts(hierarchy):
    X, y, names, _ = hierarchy
    out = macro_stage.run(parse_stage(_params(height_ratios=[0.001, 0.3, 0.6, 0.9, 1.0]), macro_stage.Params))
    centroids = np.stack([X[y == c].astype(np.float64).mean(axis=0) for c in range(len(names))])
    Z = linkage(centroids, "ward")
    top = Z[:, 2].max()
    expected = {r: len(set(fcluster(Z, r * top, "distance"))) for r in (0.001, 0.3, 0.6, 0.9, 1.0)}
    got = out["groups_at_height"]
    assert got == {"h0.1": expected[0.001], "h30": expected[0.3], "h60": expected[0.6],
                   "h90": expected[0.9], "h100": 1}
    assert got["h0.1"] == 12  # below every merge: each class alone
    counts = list(got.values())
    assert counts == sorted(counts, reverse=True)
    heights = pd.read_csv("plots/macro/height_cuts.csv")
    assert heights["groups"].tolist() == counts
    # a cut between the 4-family level and the 3-group level gives the 4 families
    r = (Z[-4, 2] + Z[-3, 2]) / 2 / top
    labels, _ = macro.cut_at_height(Z, r)
    assert len(set(labels)) == 4


def test_groups_not_below_the_class_count_are_skipped(hierarchy, caplog):
    out = macro_stage.run(parse_stage(_params(groups=[4, 12, 20]), macro_stage.Params))
    assert out["skipped_groups"] == [12, 20]
    assert list(out["groups"]) == ["g4"]
    table = pd.read_csv("data/macro/class_groups.csv")
    assert [c for c in table.columns if c.startswith("g")] == ["g4"]
    assert "skipped" in caplog.text


def test_macro_writes_every_declared_output(hierarchy):
    macro_stage.run(parse_stage(_params(), macro_stage.Params))
    m = macro_stage
    for path in (m.OUT_GROUPS, m.OUT_CLASS_GROUPS, m.OUT_LINKAGE, m.OUT_CENTROIDS, m.OUT_METRICS,
                 m.OUT_HEIGHT_CUTS, m.OUT_DENDROGRAM, m.OUT_HEATMAP):
        assert Path(path).is_file(), path
    assert np.load(m.OUT_CENTROIDS).shape == (12, 8)


def test_other_linkages_are_honoured(hierarchy):
    X, y, names, _ = hierarchy
    macro_stage.run(parse_stage(_params(linkage="average"), macro_stage.Params))
    centroids = np.stack([X[y == c].astype(np.float64).mean(axis=0) for c in range(len(names))])
    Z = linkage(centroids, "average")
    np.testing.assert_array_equal(pd.read_csv("data/macro/class_groups.csv")["g4"],
                                  fcluster(Z, 4, "maxclust") - 1)


@pytest.mark.parametrize("key, value, match", [
    ("linkage", "wards", "macro.linkage"),
    ("groups", 5, "macro.groups"),
    ("groups", [5, 1], "macro.groups"),
    ("groups", [5, 2.5], "macro.groups"),
    ("height_ratios", [0.5, 1.5], "macro.height_ratios"),
    ("height_ratios", [0.0], "macro.height_ratios"),
    ("height_ratios", "0.5", "macro.height_ratios"),
    ("color_threshold", 2, "macro.color_threshold"),
    ("heatmap_classes", 1, "macro.heatmap_classes"),
])
def test_invalid_params_name_the_key(key, value, match):
    with pytest.raises(ParamError, match=match.replace(".", r"\.")):
        parse_section(_params(**{key: value}), "macro", MacroParams)


def test_missing_keys_and_section_name_the_key():
    with pytest.raises(ParamError, match=r"`macro\.linkage` is missing"):
        parse_section({"macro": {k: v for k, v in PARAMS["macro"].items() if k != "linkage"}},
                      "macro", MacroParams)
    with pytest.raises(ParamError, match="`macro` is missing"):
        parse_section({"seed": 0}, "macro", MacroParams)
    with pytest.raises(ParamError, match=r"macro\.groupz.*did you mean `macro\.groups`"):
        parse_section({"macro": {**PARAMS["macro"], "groupz": [2]}}, "macro", MacroParams)
    with pytest.raises(ParamError, match="`macro` is missing"):
        macro_stage.run(parse_stage({"seed": 0}, macro_stage.Params))


def test_params_lists_come_out_sorted_without_duplicates():
    p = parse_section(_params(groups=[5, 2, 5], height_ratios=[0.9, 0.3, 1, 0.3]), "macro",
                      MacroParams)
    assert p.groups == [2, 5]
    assert p.height_ratios == [0.3, 0.9, 1.0] and isinstance(p.height_ratios[-1], float)


def test_layout_scales_with_the_class_count():
    small, big = plots.dendrogram_layout(10, 8), plots.dendrogram_layout(250, 20)
    assert small["orientation"] == "top" and big["orientation"] == "left"
    assert big["figsize"][1] > 30 > small["figsize"][1]  # one readable row per leaf
    assert big["font"] >= 6


def test_dendrogram_renders_many_classes(in_tmp_cwd):
    rng = np.random.default_rng(1)
    names = [f"class-{i:03d}" for i in range(60)]
    Z = linkage(rng.normal(size=(60, 5)), "ward")
    matplotlib_setup()
    plots.plot_dendrogram(Z, names, 0.5, "d.png")
    shown = plots.plot_centroid_distances(rng.normal(size=(60, 5)), Z, names, 40, "h.png")
    assert len(shown) == 40 and shown[0] == names[leaves_list(Z)[0]]


# --------------------------------------------------------------------------- library in-process
def test_library_tree_and_cuts_equal_scipy():
    X, y, names, fams = make_hierarchy()
    centroids = macro.class_centroids(X, y, len(names))
    assert centroids.dtype == np.float64 and centroids.shape == (12, 8)
    Z = macro.build_tree(centroids, "complete")
    np.testing.assert_allclose(Z, linkage(centroids, "complete"), rtol=1e-12)
    kept, skipped = macro.split_granularities([2, 4, 12, 20], len(names))
    assert (kept, skipped) == ([2, 4], [12, 20])
    cuts = macro.make_cuts(Z, kept, [0.5])
    assert list(cuts) == ["g2", "g4", "h50"]
    np.testing.assert_array_equal(cuts["g4"]["labels"], fcluster(Z, 4, "maxclust") - 1)
    assert cuts["h50"]["height"] == pytest.approx(0.5 * Z[:, 2].max())
    assert macro.height_cut_name(0.001) == "h0.1" and macro.group_cut_name(5) == "g5"
    table = macro.class_groups_table(names, y, cuts)
    assert table.columns.tolist() == ["class", "label", "images", "g2", "g4", "h50"]
    assert table["images"].tolist() == [15] * 12
    listing = macro.groups_listing(Z, names, cuts, "complete")
    assert sum(len(v) for v in listing["cuts"]["g4"]["groups"].values()) == 12
    summary = macro.tree_summary(Z, centroids, cuts, "complete", 0.5, skipped, 12)
    assert summary["groups"] == {"g2": 2, "g4": 4} and summary["skipped_groups"] == [12, 20]
    assert summary["color_threshold"] == pytest.approx(0.5 * Z[:, 2].max())
    assert summary["groups_at_color_threshold"] == macro.groups_at(Z, 0.5)
    with pytest.raises(DataError, match="at least 2 classes"):
        macro.build_tree(centroids[:1])


def test_class_names_checks_the_label_map():
    index = pd.DataFrame({"class": ["b", "a", "b"], "label": [1, 0, 1]})
    assert macro.class_names(index) == ["a", "b"]
    with pytest.raises(DataError, match="idx.parquet: labels and class names"):
        macro.class_names(pd.DataFrame({"class": ["a", "b"], "label": [0, 0]}), "idx.parquet")
    with pytest.raises(DataError, match="0..C-1"):
        macro.class_names(pd.DataFrame({"class": ["a", "b"], "label": [0, 2]}))


def test_purity_table_and_summary_in_process():
    fine = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    cuts = {"g2": np.array([0, 0, 1, 1]), "g3": np.array([0, 1, 2, 2])}
    labels = {2: fine // 2, 4: fine.copy()}
    table = macro.purity_table(labels, fine, cuts)
    assert table.columns.tolist() == ["k", "fine", "g2", "g3"]
    assert table["g2"].tolist() == pytest.approx([1.0, 1.0])
    assert table["fine"].tolist() == pytest.approx([purity(fine, fine // 2), 1.0])
    targets = macro.purity_targets({"g3": cuts["g3"], "g2": cuts["g2"]}, 4)
    assert targets == {"g2": 2, "g3": 3, "fine": 4} and list(targets) == ["g2", "g3", "fine"]
    out = macro.purity_summary(table, targets, 4, ["k2", "k4"])
    assert list(out) == ["classes", "targets", "k2", "k4", "best"]
    assert out["best"]["g2"] == {"k": 2, "purity": 1.0}  # a tie goes to the first K
    assert out["best"]["fine"]["k"] == 4


# --------------------------------------------------------------------------- macro_purity
def _kmeans_files(y, fams, names):
    """Stand-in K-Means outputs: k4 = the families, k12 = the classes, k2 = half/half."""
    fam_id = np.array([sorted(FAMILIES).index(fams[c]) for c in y])
    save_npy("data/clusters/kmeans/k4.npy", fam_id.astype(np.int64))
    save_npy("data/clusters/kmeans/k12.npy", y.astype(np.int64))
    save_npy("data/clusters/kmeans/k2.npy", (np.arange(len(y)) % 2).astype(np.int64))
    save_npy("data/clusters/kmeans/k7.npy", np.zeros(len(y), np.int64))  # stale, not in params
    return fam_id


def test_purity_against_macro_and_fine_labels(hierarchy):
    X, y, names, fams = hierarchy
    macro_stage.run(parse_stage(_params(), macro_stage.Params))
    fam_id = _kmeans_files(y, fams, names)
    out = purity_stage.run(parse_stage(_params(), purity_stage.Params))
    assert set(k for k in out if k.startswith("k")) == {"k2", "k4", "k12"}  # stale k7 ignored
    assert out["targets"] == {"g2": 2, "g4": 4, "g5": 5, "fine": 12}
    assert out["k4"]["g4"] == pytest.approx(1.0)
    assert out["k12"]["fine"] == pytest.approx(1.0)
    assert out["k4"]["fine"] == pytest.approx(purity(y, fam_id), abs=1e-6)
    table = pd.read_csv("data/macro/class_groups.csv")
    g2 = table["g2"].to_numpy()[y]
    k2 = np.arange(len(y)) % 2
    assert out["k2"]["g2"] == pytest.approx(purity(g2, k2), abs=1e-6)
    assert out["best"]["g4"]["purity"] == pytest.approx(1.0)
    assert not Path("data/clusters/kmeans/k7.npy").exists()  # pruned: not in the grid
    csv = pd.read_csv(purity_stage.OUT_TABLE)
    assert csv.columns.tolist() == ["k", "fine", "g2", "g4", "g5"]
    assert csv["k"].tolist() == [2, 4, 12]
    for path in (purity_stage.OUT_METRICS, purity_stage.OUT_LINES, purity_stage.OUT_HEATMAP):
        assert Path(path).is_file(), path


def test_purity_names_a_missing_grid_point(hierarchy):
    X, y, names, fams = hierarchy
    macro_stage.run(parse_stage(_params(), macro_stage.Params))
    _kmeans_files(y, fams, names)
    with pytest.raises(DataError, match="k9"):
        purity_stage.run(parse_stage({**PARAMS, "kmeans": {**PARAMS["kmeans"], "k": [4, 9]}}, purity_stage.Params))
    with pytest.raises(ParamError, match=r"kmeans\.k"):
        purity_stage.run(parse_stage({**PARAMS, "kmeans": {**PARAMS["kmeans"], "k": []}}, purity_stage.Params))
    with pytest.raises(ParamError, match=r"kmeans\.k"):
        purity_stage.run(parse_stage({**PARAMS, "kmeans": {**PARAMS["kmeans"], "k": [4, 1]}}, purity_stage.Params))


def test_purity_needs_the_macro_map_of_the_same_classes(hierarchy):
    with pytest.raises(DataError, match="dvc repro macro"):
        purity_stage.run(parse_stage(_params(), purity_stage.Params))
    X, y, names, fams = hierarchy
    macro_stage.run(parse_stage(_params(), macro_stage.Params))
    write_inputs(X, y, [n.upper() for n in names])  # the index changed since the macro map
    with pytest.raises(DataError, match="class_groups.csv"):
        purity_stage.run(parse_stage(_params(), purity_stage.Params))
