"""Defaults that follow the data: K grids of `classes` / `classes_x<f>` values and
`macro.groups: auto`, from the library through the stages to one `dvc repro`."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from clusterlens.analysis import macro
from clusterlens.clustering import grid, selection
from clusterlens.clustering.selection import selected_labels
from clusterlens.config.agglomerative import AgglomerativeParams
from clusterlens.config.base import parse_section, parse_stage
from clusterlens.config.gmm import GMMParams
from clusterlens.config.kmeans import KMeansParams
from clusterlens.config.macro import MacroParams
from clusterlens.config.nmf import NMFParams
from clusterlens.core.errors import ParamError
from stages import clustering, grid_point, macro_purity, nmf
from stages import macro as macro_stage
from tests.conftest import PROJECT, e2e_copy, make_tree, run_point, sh
from tests.test_cluster import blobs  # noqa: F401 - the fixture
from tests.test_macro import hierarchy  # noqa: F401 - the fixture

K_SECTIONS = {"kmeans": KMeansParams, "gmm": GMMParams, "nmf": NMFParams,
              "agglomerative": AgglomerativeParams}
DEFAULTS = yaml.safe_load((PROJECT / "params.yaml").read_text())


# --------------------------------------------------------------------------- resolving
@pytest.mark.parametrize("n_classes,ks", [(5, [3, 5, 8, 10]), (7, [4, 7, 11, 14]),
                                          (10, [5, 10, 15, 20]), (101, [51, 101, 152, 202])])
def test_every_default_k_grid_holds_the_class_count(n_classes, ks):
    for section, model in K_SECTIONS.items():
        values = parse_section(DEFAULTS, section, model).k
        got = [g.k for g in grid.resolve_grid(values, n_classes)]
        assert got == ks, section  # halves round up: 0.5 x 5 = 2.5 -> 3, 0.5 x 7 -> 4
        assert n_classes in got


def test_resolving_rounds_halves_up_and_never_goes_below_two():
    assert [grid.resolve_k(v, 3) for v in ("classes", "classes_x0.5", "classes_x1.5",
                                             "classes_x0.1", 17)] == [3, 2, 5, 2, 17]
    assert grid.resolve_k("classes_x0.25", 10) == 3  # 2.5 -> 3, not Python's banker's 2
    assert grid.resolve_k("classes_x1.5", 1) == 2
    assert grid.parse_k_value("10") == 10 and grid.parse_k_value("classes_x2") == "classes_x2"


def test_values_with_the_same_k_are_one_point():
    got = grid.resolve_grid(["classes_x0.5", 2, "classes", "classes", 4, 3], 4)
    assert [(g.value, g.k, g.same_as) for g in got] == [
        ("classes_x0.5", 2, None), (2, 2, "classes_x0.5"), ("classes", 4, None),
        (4, 4, "classes"), (3, 3, None)]  # the repeated `classes` is listed once


@pytest.mark.parametrize("bad", [5, "classes", ["a"], [1, 3], [True], [2.0], ["classes_x0"],
                                 ["classes_x-1"], ["classes x2"], ["Classes"], ["classes_x"],
                                 ["classes/2"], [None]])
@pytest.mark.parametrize("section", sorted(K_SECTIONS))
def test_a_bad_k_grid_names_the_key_and_the_accepted_forms(section, bad):
    good = parse_section(DEFAULTS, section, K_SECTIONS[section]).model_dump()
    with pytest.raises(ParamError) as err:
        parse_section({section: {**good, "k": bad}}, section, K_SECTIONS[section])
    msg = str(err.value)
    assert f"`{section}.k` must be a list of integers >= 2, `classes`" in msg
    assert "`classes_x<f>`" in msg and msg.endswith(f"got {bad!r}")


def test_symbolic_values_are_safe_in_dvc_names_and_files():
    for section, model in K_SECTIONS.items():
        for v in parse_section(DEFAULTS, section, model).k:
            assert isinstance(v, str) and all(c.isalnum() or c in "_." for c in v)


# --------------------------------------------------------------------------- macro.groups auto
@pytest.mark.parametrize("n_classes,groups", [(2, []), (3, [2]), (4, [2, 3]), (5, [2, 3, 4]),
                                              (7, [2, 3, 4]), (10, [2, 3, 4, 5]),
                                              (101, [2, 4, 10, 22, 50])])
def test_auto_groups_fit_the_class_count(n_classes, groups):
    assert macro.auto_groups(n_classes) == groups
    assert macro.resolve_groups("auto", n_classes) == groups
    assert macro.resolve_groups([5, 2], n_classes) == [5, 2]  # a list stays as given


def test_auto_groups_are_always_real_cuts():
    for n in range(3, 400):
        got = macro.auto_groups(n)
        assert got == sorted(set(got)) and 1 <= len(got) <= macro.AUTO_CUTS
        assert got[0] == 2 and got[-1] < n, n
        assert len(got) > 1 or n == 3


def test_macro_groups_accepts_auto_and_lists_and_names_the_key():
    base = {k: v for k, v in DEFAULTS["macro"].items() if k != "groups"}
    assert parse_section({"macro": base}, "macro", MacroParams).groups == "auto"  # the default
    assert parse_section({"macro": {**base, "groups": [7, 3, 3]}}, "macro",
                         MacroParams).groups == [3, 7]
    for bad in ("automatic", [1, 3], 5):
        with pytest.raises(ParamError, match=r"`macro.groups` must be `auto` or a list of "
                                             r"integers >= 2, got"):
            parse_section({"macro": {**base, "groups": bad}}, "macro", MacroParams)


def test_macro_stage_records_the_auto_groups(hierarchy):  # noqa: F811 - 12 classes
    params = {"macro": {**DEFAULTS["macro"], "groups": "auto"}}
    out = macro_stage.run(parse_stage(params, macro_stage.Params))
    assert out["groups_auto"] is True and out["groups_resolved"] == [2, 3, 5, 6]
    assert list(out["groups"]) == ["g2", "g3", "g5", "g6"] and out["skipped_groups"] == []
    assert json.load(open(macro_stage.OUT_METRICS)) == out
    out = macro_stage.run(parse_stage({"macro": {**DEFAULTS["macro"], "groups": [4, 12]}}, macro_stage.Params))
    assert out["groups_auto"] is False and out["groups_resolved"] == [4, 12]
    assert out["skipped_groups"] == [12]


# --------------------------------------------------------------------------- the stages
def test_a_symbolic_point_is_named_by_its_k_and_its_files_by_its_value(blobs):  # noqa: F811
    _, _, params = blobs  # 3 classes
    out = run_point("kmeans", "classes", params)
    assert list(out) == ["k3"] and out["k3"]["k"] == 3 and out["k3"]["grid_value"] == "classes"
    assert json.load(open("data/clusters/kmeans/kclasses.json")) == out["k3"]
    assert np.load("data/clusters/kmeans/kclasses.npy").shape == (120,)
    assert not Path("data/clusters/kmeans/k3.npy").exists()
    assert run_point("gmm", "classes_x0.5", params)["k2"]["grid_value"] == "classes_x0.5"
    # one value is checked by the section's model, as a one-value grid
    with pytest.raises(ParamError, match=r"`kmeans.k` must be a list of integers >= 2, "
                                         r"`classes` .*, got \['classes_x'\]"):
        run_point("kmeans", "classes_x", params)


def test_the_aggregate_keeps_one_point_per_k_and_finds_its_files(blobs):  # noqa: F811
    _, _, params = blobs  # 3 classes
    params["kmeans"]["k"] = ["classes_x0.5", 2, "classes", 3]
    params["agglomerative"].update(linkage=["ward"], k=["classes", 3, 2])
    params["gmm"]["k"] = ["classes"]
    params["nmf"]["k"] = ["classes_x1.5"]
    for v in params["kmeans"]["k"]:
        run_point("kmeans", v, params)
    out = run_point("agglomerative", "ward", params)
    assert set(out) == {"ward_k3", "ward_k2"}  # one tree, two cuts, three files
    assert {p.name for p in Path("data/clusters/agglomerative/ward").glob("k*.npy")} == {
        "kclasses.npy", "k3.npy", "k2.npy"}
    run_point("gmm", "classes", params)
    run_point("dbscan", 50.0, params)
    run_point("hdbscan", 10, params)
    nmf.run(parse_stage(params, nmf.Params), features_path="data/pca.npy")
    run_point("nmf", "classes_x1.5", params)
    res = clustering.run(parse_stage(params, clustering.Params))
    assert list(res["kmeans"]) == ["k2", "k3"]
    assert res["kmeans"]["k2"]["grid_value"] == "classes_x0.5"
    assert res["kmeans"]["k2"]["same_k_values"] == [2]
    assert res["kmeans"]["k3"]["same_k_values"] == [3]
    assert list(res["agglomerative"]) == ["ward_k3", "ward_k2"]
    assert res["agglomerative"]["ward_k3"]["same_k_values"] == [3]
    assert list(res["gmm"]) == ["k3"] and list(res["nmf"]) == ["k5"]
    assert res["selected"]["value"] == pytest.approx(1.0)
    assert selection.resolved_grids(res)["kmeans"] == "classes_x0.5=2, 2=2, classes=3, 3=3"
    table = pd.read_csv(clustering.OUT_TABLE)
    assert table.query("method == 'kmeans'")["grid_value"].tolist() == ["classes_x0.5", "classes"]
    # whichever point is selected, its labels are found under its value's file name
    for method, point, file in [("kmeans", "k3", "kmeans/kclasses.npy"),
                                ("agglomerative", "ward_k3", "agglomerative/ward/kclasses.npy"),
                                ("nmf", "k5", "nmf/kclasses_x1.5.npy")]:
        name, labels = selected_labels({**res, "selected": {"method": method, "point": point}},
                                       "data/clusters")
        assert name == f"{method}/{point}"
        np.testing.assert_array_equal(labels, np.load(f"data/clusters/{file}"))


def test_macro_purity_reads_the_k_of_symbolic_points(hierarchy):  # noqa: F811 - 12 classes
    _, y, _, _ = hierarchy
    params = {"seed": 0, "metrics": {"silhouette_sample": 100},
              "kmeans": {"k": ["classes_x0.5", "classes", 12], "n_init": 2, "max_iter": 50},
              "macro": {**DEFAULTS["macro"], "groups": "auto"}}
    for v in params["kmeans"]["k"]:
        run_point("kmeans", v, params)
    macro_stage.run(parse_stage(params, macro_stage.Params))
    out = macro_purity.run(parse_stage(params, macro_purity.Params))
    assert [k for k in out if k.startswith("k")] == ["k6", "k12"]  # 12 and `classes` are one
    assert list(out["targets"]) == ["g2", "g3", "g5", "g6", "fine"]
    assert pd.read_csv(macro_purity.OUT_TABLE)["k"].tolist() == [6, 12]


def test_the_command_line_reads_and_checks_a_k_value(blobs, capsys):  # noqa: F811
    _, _, params = blobs
    Path("params.yaml").write_text(yaml.safe_dump(params))
    grid_point.main(["kmeans", "--k", "classes_x0.5"])
    assert json.load(open("data/clusters/kmeans/kclasses_x0.5.json"))["k"] == 2
    grid_point.main(["kmeans", "--k", "3"])
    assert json.load(open("data/clusters/kmeans/k3.json"))["grid_value"] == 3
    with pytest.raises(ParamError, match=r"`kmeans.k`.*`classes_x<f>`.*got \['half'\]"):
        grid_point.main(["kmeans", "--k", "half"])


# --------------------------------------------------------------------------- end to end
def test_a_seven_class_folder_gets_k_seven_and_five_classes_get_macro_cuts(e2e_base, tmp_path):
    """Only data.root changes: the default symbolic grids give K = 7 on a 7-class folder
    (smaller grids here to keep the run short), and `macro.groups: auto` cuts a 5-class tree
    more than once."""
    e2e = e2e_copy(e2e_base, tmp_path / "copy")
    repo = e2e.repo
    photos = make_tree(tmp_path / "seven", {f"c{i}": 3 for i in range(7)}, fmt="jpg",
                       size=(48, 36))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"]["root"] = str(photos)
    for section in ("kmeans", "gmm", "nmf"):
        params[section]["k"] = ["classes"]
    params["agglomerative"].update(linkage=["ward"], k=["classes_x0.5", "classes", 7])
    params["macro"]["groups"] = "auto"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert "grid/dvc.yaml:kmeans@classes" in sh(repo, "dvc", "stage", "list", "--all")
    sh(repo, "dvc", "repro", "clustering", "macro")
    res = json.loads((repo / "metrics/clustering.json").read_text())
    for method in ("kmeans", "gmm", "nmf"):
        assert list(res[method]) == ["k7"] and res[method]["k7"]["grid_value"] == "classes"
        assert (repo / f"data/clusters/{method}/kclasses.npy").is_file()
    assert list(res["agglomerative"]) == ["ward_k4", "ward_k7"]
    assert res["agglomerative"]["ward_k7"]["same_k_values"] == [7]
    assert json.loads((repo / "metrics/macro.json").read_text())["groups_resolved"] == [2, 3, 4]
    for name in ("c5", "c6"):  # the same folder with 5 classes
        for f in (photos / name).iterdir():
            f.unlink()
        (photos / name).rmdir()
    sh(repo, "dvc", "repro", "macro")
    m = json.loads((repo / "metrics/macro.json").read_text())
    assert m["classes"] == 5 and m["groups_resolved"] == [2, 3, 4]
    assert list(m["groups"]) == ["g2", "g3", "g4"] and m["skipped_groups"] == []
