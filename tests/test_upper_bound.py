"""The supervised upper bound (library and `upper_bound` stage): the logistic regressions equal
an independent scikit-learn run on the same stratified split; macro labels, per-class table,
params errors, declared outputs."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from clusterlens.analysis import upper_bound as ub
from clusterlens.config.base import parse_section, parse_stage
from clusterlens.config.upper_bound import LogRegConfig, UpperBoundParams
from clusterlens.core.errors import DataError, ParamError
from clusterlens.core.io import save_npy
from stages import macro as macro_stage
from stages import upper_bound as ub_stage
from tests.test_macro import make_hierarchy, write_inputs

CONFIGS = [{"name": "lr_C1", "C": 1.0, "class_weight": None, "features": "raw"},
           {"name": "lr_C01", "C": 0.1, "class_weight": None, "features": "raw"},
           {"name": "lr_C01_balanced", "C": 0.1, "class_weight": "balanced", "features": "raw"},
           {"name": "pca_C01", "C": 0.1, "class_weight": None, "features": "pca"}]
PARAMS = {"seed": 3, "kmeans": {"k": [4], "n_init": 3, "max_iter": 100},
          "macro": {"linkage": "ward", "groups": [2, 4], "height_ratios": [0.5],
                    "color_threshold": 0.5, "heatmap_classes": 50},
          "upper_bound": {"test_size": 0.25, "max_iter": 500, "configs": CONFIGS},
          "data": {"root": ".", "splits": "auto"}}


@pytest.fixture
def data(in_tmp_cwd):
    """Hierarchy classes in an 8-D 'PCA' space; 'raw' features = a noisy 40-D linear lift with
    very different feature scales, hard enough that accuracies are not all 1."""
    X, y, names, fams = make_hierarchy(per_class=20, seed=1, noise=2.0)
    rng = np.random.default_rng(2)
    raw = (X @ rng.normal(size=(8, 40)) + rng.normal(0, 25, (len(y), 40))) * rng.uniform(
        0.01, 100, 40)
    X = X / 10  # PCA-score-like scale (lbfgs converges in a few dozen iterations)
    write_inputs(X, y, names)
    save_npy("data/features.npy", raw.astype(np.float32))
    macro_stage.run(parse_stage(PARAMS, macro_stage.Params))
    return raw.astype(np.float32), X, y, names


def _independent(X, y, cfg, test_size, seed, max_iter, scale):
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=test_size, random_state=seed,
                                              stratify=y)
    if scale:
        s = StandardScaler().fit(X_tr)
        X_tr, X_te = s.transform(X_tr), s.transform(X_te)
    m = LogisticRegression(C=cfg["C"], class_weight=cfg["class_weight"], max_iter=max_iter)
    m.fit(X_tr, y_tr)
    p_tr, p_te = m.predict(X_tr), m.predict(X_te)
    return {"train_accuracy": accuracy_score(y_tr, p_tr),
            "test_accuracy": accuracy_score(y_te, p_te),
            "macro_f1": f1_score(y_te, p_te, average="macro"),
            "weighted_f1": f1_score(y_te, p_te, average="weighted")}, y_te, p_te


def test_accuracies_equal_an_independent_sklearn_run(data):
    raw, pca, y, names = data
    out = ub_stage.run(parse_stage(PARAMS, ub_stage.Params))
    accs = []
    for cfg in CONFIGS:
        X = raw.astype(np.float64) if cfg["features"] == "raw" else pca.astype(np.float64)
        ref, _, _ = _independent(X, y, cfg, 0.25, 3, 500, scale=cfg["features"] == "raw")
        got = out["configs"][cfg["name"]]
        for key, value in ref.items():
            assert got[key] == pytest.approx(value, abs=1e-6), (cfg["name"], key)
        assert got["gap"] == pytest.approx(ref["train_accuracy"] - ref["test_accuracy"], abs=1e-6)
        assert got["converged"] is True
        accs.append(ref["test_accuracy"])
    assert 0.3 < min(accs) and max(accs) < 1.0  # a non-trivial problem
    best = CONFIGS[int(np.argmax(accs))]["name"]  # argmax: first on a tie, as the stage
    assert out["best"]["config"] == best
    assert out["split"] == {"images": len(y), "classes": 12, "train": 180, "test": 60,
                            "source": "stratified", "train_split": None, "test_split": None,
                            "test_size": 0.25, "seed": 3}


def test_macro_labels_use_the_same_split_and_the_best_config(data):
    raw, pca, y, names = data
    out = ub_stage.run(parse_stage(PARAMS, ub_stage.Params))
    best = next(c for c in CONFIGS if c["name"] == out["best"]["config"])
    X = raw.astype(np.float64) if best["features"] == "raw" else pca.astype(np.float64)
    table = pd.read_csv("data/macro/class_groups.csv")
    idx = np.arange(len(y))
    tr, te = train_test_split(idx, test_size=0.25, random_state=3, stratify=y)
    for cut in ("g2", "g4"):
        y_macro = table[cut].to_numpy()[y]
        Xtr, Xte = X[tr], X[te]
        if best["features"] == "raw":
            s = StandardScaler().fit(Xtr)
            Xtr, Xte = s.transform(Xtr), s.transform(Xte)
        m = LogisticRegression(C=best["C"], class_weight=best["class_weight"], max_iter=500)
        m.fit(Xtr, y_macro[tr])
        got = out["macro"][cut]
        assert got["test_accuracy"] == pytest.approx(accuracy_score(y_macro[te], m.predict(Xte)),
                                                     abs=1e-6)
        assert got["groups"] == int(cut[1:])
        assert got["random_baseline"] == pytest.approx(1 / got["groups"])
    plot = pd.read_csv(ub_stage.OUT_MACRO_CSV)
    assert plot["target"].tolist() == ["g2", "g4", "fine"]
    assert plot["groups"].tolist() == [2, 4, 12]
    assert plot["test_accuracy"].iloc[-1] == pytest.approx(out["best"]["test_accuracy"])
    assert out["macro"]["g4"]["test_accuracy"] == pytest.approx(1.0)  # the families separate


def test_per_class_table_and_summary(data):
    names = data[3]
    out = ub_stage.run(parse_stage(PARAMS, ub_stage.Params))
    table = pd.read_csv(ub_stage.OUT_PER_CLASS)
    assert sorted(table["class"]) == names
    assert table["test_count"].sum() == 60 and table["train_count"].sum() == 180
    np.testing.assert_allclose(table["accuracy"], table["correct"] / table["test_count"],
                               atol=1e-6)
    assert table["accuracy"].is_monotonic_decreasing
    acc = table["accuracy"]
    assert out["per_class"]["mean"] == pytest.approx(acc.mean(), abs=1e-6)
    assert out["per_class"]["median"] == pytest.approx(acc.median(), abs=1e-6)
    assert out["per_class"]["std"] == pytest.approx(acc.std(), abs=1e-6)
    assert len(out["best_classes"]) == 10 and len(out["worst_classes"]) == 10
    assert list(out["best_classes"].values()) == sorted(out["best_classes"].values(), reverse=True)
    assert list(out["worst_classes"].values()) == sorted(out["worst_classes"].values())
    preds = pd.read_parquet(ub_stage.OUT_PREDICTIONS)
    assert (preds["split"] == "test").sum() == 60
    test_correct = preds.loc[preds["split"] == "test", "correct"].mean()
    assert test_correct == pytest.approx(out["best"]["test_accuracy"], abs=1e-6)


def test_per_class_accuracy_function():
    y = np.array([0, 0, 1, 1, 1, 2])
    pred = np.array([0, 1, 1, 1, 0, 2])
    df = ub.per_class_accuracy(y, pred, ["a", "b", "c", "d"])
    assert df["class"].tolist() == ["c", "b", "a", "d"]  # d has no test image: last, NaN
    assert df["accuracy"].iloc[:3].tolist() == pytest.approx([1.0, 2 / 3, 0.5])
    assert np.isnan(df["accuracy"].iloc[3])
    s = ub.per_class_summary(df)
    assert s["classes_without_test_images"] == 1 and s["classes_at_1"] == 1


def test_run_writes_every_declared_output(data):
    ub_stage.run(parse_stage(PARAMS, ub_stage.Params))
    for path in (ub_stage.OUT_METRICS, ub_stage.OUT_CONFIGS, ub_stage.OUT_PER_CLASS, ub_stage.OUT_PREDICTIONS,
                 ub_stage.OUT_CONFIGS_PNG, ub_stage.OUT_PER_CLASS_PNG, ub_stage.OUT_MACRO_CSV, ub_stage.OUT_MACRO_PNG):
        assert Path(path).is_file(), path
    assert pd.read_csv(ub_stage.OUT_CONFIGS)["config"].tolist() == [c["name"] for c in CONFIGS]


def test_without_macro_granularities_it_still_writes_the_fine_row(data):
    # every cut skipped
    macro_stage.run(parse_stage({**PARAMS, "macro": {**PARAMS["macro"], "groups": [50]}}, macro_stage.Params))
    out = ub_stage.run(parse_stage(PARAMS, ub_stage.Params))
    assert out["macro"] == {}
    assert pd.read_csv(ub_stage.OUT_MACRO_CSV)["target"].tolist() == ["fine"]


def test_non_convergence_is_recorded(data):
    out = ub_stage.run(parse_stage({**PARAMS, "upper_bound": {**PARAMS["upper_bound"], "max_iter": 2}},
                                   ub_stage.Params))
    assert out["configs"]["lr_C1"]["converged"] is False
    assert out["configs"]["lr_C1"]["iterations"] == 2
    assert out["all_converged"] is False


def test_best_config_ties_go_to_the_first():
    res = {"a": {"test_accuracy": 0.5}, "b": {"test_accuracy": 0.7}, "c": {"test_accuracy": 0.7}}
    assert ub.best_config(res) == "b"


def _with(**ub_overrides):
    return {**PARAMS, "upper_bound": {**PARAMS["upper_bound"], **ub_overrides}}


@pytest.mark.parametrize("override, match", [
    ({"test_size": 1.5}, r"upper_bound\.test_size"),
    ({"test_size": 0}, r"upper_bound\.test_size"),
    ({"max_iter": 0}, r"upper_bound\.max_iter"),
    ({"configs": []}, r"upper_bound\.configs"),
    ({"test_size": 1}, r"upper_bound\.test_size"),
    ({"max_iter": True}, r"upper_bound\.max_iter"),
    ({"configs": [{**CONFIGS[0], "C": 0}]}, r"upper_bound\.configs\.0\.C"),
    ({"configs": [{**CONFIGS[0], "C": True}]}, r"upper_bound\.configs\.0\.C"),
    ({"configs": [CONFIGS[0], {**CONFIGS[1], "features": "pixels"}]},
     r"upper_bound\.configs\.1\.features"),
    ({"configs": [{**CONFIGS[0], "class_weight": "auto"}]},
     r"configs\.0\.class_weight` must be null or balanced"),
    ({"configs": [CONFIGS[0], CONFIGS[0]]}, r"configs`.*'lr_C1' is used twice \(entries 0 and 1\)"),
    ({"configs": [{**CONFIGS[0], "name": "lr_C0.1"}]}, r"configs\.0\.name"),
    ({"configs": [{**CONFIGS[0], "penalty": "l1"}]}, r"configs\.0\.penalty` is not a known key"),
    ({"configs": [{"C": 1.0}]}, r"configs\.0\.name` is missing"),
    ({"tests_size": 0.2}, r"upper_bound\.tests_size.*did you mean `upper_bound\.test_size`"),
])
def test_invalid_params_name_the_key(override, match):
    with pytest.raises(ParamError, match=match):
        parse_section(_with(**override), "upper_bound", UpperBoundParams)


def test_config_defaults():
    p = parse_section(_with(configs=[{"name": "a", "C": 2}]), "upper_bound", UpperBoundParams)
    assert p.configs == [LogRegConfig(name="a", C=2.0, class_weight=None, features="raw")]
    assert isinstance(p.configs[0].C, float)


def test_split_needs_two_images_per_class_and_enough_test_images(data):
    with pytest.raises(DataError, match="at least 2 images"):
        ub.check_stratifiable(np.array([0, 0, 1, 1, 2]))
    ub.check_stratifiable(np.array([0, 0, 1, 1]))
    with pytest.raises(ValueError, match="5 test and 45 training images.*10 classes"):
        ub.check_test_size(np.repeat(np.arange(10), 5), 0.1)  # 5 test images for 10 classes
    assert ub.check_test_size(np.repeat(np.arange(10), 5), 0.2) == 0.2
    with pytest.raises(ParamError, match=r"upper_bound\.test_size` = 0\.01 gives 3 test"):
        ub_stage.run(parse_stage(_with(test_size=0.01), ub_stage.Params))  # 3 test images for 12 classes


def test_library_split_views_and_fits_in_process():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 10)
    X = rng.normal(size=(30, 4)) + y[:, None] * 3
    tr, te = ub.stratified_split(y, 0.2, 0)
    ref_tr, ref_te = train_test_split(np.arange(30), test_size=0.2, random_state=0, stratify=y)
    np.testing.assert_array_equal(tr, ref_tr)
    np.testing.assert_array_equal(te, ref_te)
    views = ub.feature_views(X * 100, X[:, :2], tr)
    np.testing.assert_allclose(views["raw"][tr].mean(axis=0), 0, atol=1e-12)  # train stats only
    assert views["pca"].dtype == np.float64
    cfg = LogRegConfig(name="a", C=0.5, class_weight="balanced", features="pca")
    res, p_tr, p_te = ub.evaluate_config(cfg, views, y, tr, te, 200, 0)
    assert list(res) == ["train_accuracy", "test_accuracy", "gap", "macro_f1", "weighted_f1",
                         "features", "dim", "C", "class_weight", "iterations", "converged"]
    assert res["dim"] == 2 and res["class_weight"] == "balanced" and len(p_te) == len(te)
    macro = ub.macro_scores(cfg, views, y, {"g2": np.array([0, 0, 1])}, tr, te, 200, 0)
    assert macro.columns.tolist() == ub.MACRO_COLUMNS and macro["groups"].tolist() == [2]
    both = ub.with_fine_row(macro, res, y, tr, te, 3)
    assert both["target"].tolist() == ["g2", "fine"]
    assert both["random_baseline"].tolist() == pytest.approx([0.5, 1 / 3])
    preds = ub.predictions_table(pd.DataFrame({"path": [f"{i}.png" for i in range(30)],
                                               "class": [str(v) for v in y]}),
                                 ["0", "1", "2"], y, tr, te, p_tr, p_te)
    assert (preds["split"] == "test").sum() == len(te)
    assert preds.loc[preds["split"] == "test", "correct"].mean() == pytest.approx(
        res["test_accuracy"])


# --------------------------------------------------------------------------- small classes
def test_excluded_classes_and_the_split_of_the_others():
    y = np.array([0] * 10 + [1] + [2] * 2 + [3] * 10)
    names = ["ant", "lonely", "pair", "zebra"]
    excluded = ub.excluded_classes(y, names)
    assert ub.public(excluded) == [{"class": "lonely", "images": 1,
                                    "reason": "fewer than 2 images: a stratified split needs 2"}]
    rows = ub.split_rows(y, excluded)
    assert 10 not in rows and len(rows) == len(y) - 1
    tr, te = ub.stratified_split(y, 0.25, 0, rows)
    ref_tr, ref_te = train_test_split(rows, test_size=0.25, random_state=0, stratify=y[rows])
    np.testing.assert_array_equal(tr, ref_tr)
    np.testing.assert_array_equal(te, ref_te)
    assert 1 not in y[tr] and 1 not in y[te]  # lonely: in neither part
    assert np.sum(y[tr] == 2) >= 1 and np.sum(y[tr] == 2) + np.sum(y[te] == 2) == 2
    with pytest.raises(ValueError):  # what the stage no longer asks of scikit-learn
        train_test_split(np.arange(len(y)), test_size=0.25, random_state=0, stratify=y)
    # no class left out: the same split as before rows existed
    same = np.array([0] * 10 + [1] * 10)
    for a, b in zip(ub.stratified_split(same, 0.2, 3), ub.stratified_split(
            same, 0.2, 3, ub.split_rows(same, ub.excluded_classes(same, ["a", "b"])))):
        np.testing.assert_array_equal(a, b)


def _small_class_inputs(raw, X, y, names):
    """The fixture's data with class 0 cut to 1 image and class 1 to 2 images."""
    first = {c: np.flatnonzero(y == c) for c in (0, 1)}
    drop = np.concatenate([first[0][1:], first[1][2:]])
    keep = np.setdiff1d(np.arange(len(y)), drop)
    raw, X, y = raw[keep], X[keep], y[keep]
    write_inputs(X, y, names)
    save_npy("data/features.npy", raw)
    macro_stage.run(parse_stage(PARAMS, macro_stage.Params))
    return raw, X, y


def test_stage_leaves_a_single_image_class_out_and_keeps_a_two_image_class(data):
    names = data[3]
    raw, X, y = _small_class_inputs(*data)
    out = ub_stage.run(parse_stage(PARAMS, ub_stage.Params))
    assert out["excluded_classes"] == [
        {"class": names[0], "images": 1,
         "reason": "fewer than 2 images: a stratified split needs 2"}]
    keep = y != 0
    assert out["split"]["images"] == int(keep.sum()) and out["split"]["classes"] == 11
    cfg = CONFIGS[3]  # pca_C01: the same fit as scikit-learn's on the images left in
    ref, _, _ = _independent(X[keep].astype(np.float64), y[keep], cfg, 0.25, 3, 500, False)
    assert out["configs"][cfg["name"]]["test_accuracy"] == pytest.approx(ref["test_accuracy"],
                                                                         abs=1e-6)
    per_class = pd.read_csv(ub_stage.OUT_PER_CLASS)
    assert names[0] not in set(per_class["class"]) and len(per_class) == 11
    pair = per_class.set_index("class").loc[names[1]]
    assert (pair["train_count"], pair["test_count"]) in ((1, 1), (2, 0))
    preds = pd.read_parquet(ub_stage.OUT_PREDICTIONS)
    lonely = preds[preds["class"] == names[0]]
    assert lonely["split"].tolist() == ["excluded"] and lonely["predicted"].isna().all()
    assert lonely["correct"].isna().all() and preds["correct"].notna().sum() == keep.sum()
    assert Path(ub_stage.OUT_PER_CLASS_PNG).is_file()


def test_stage_with_fewer_than_two_classes_left_writes_outputs_saying_so(data):
    raw, X, y, names = data
    two = np.flatnonzero(y == 0).tolist() + [int(np.flatnonzero(y == 1)[0])]
    names2 = names[:2]
    write_inputs(X[two], y[two], names2)
    save_npy("data/features.npy", raw[two])
    macro_stage.run(parse_stage({**PARAMS, "macro": {**PARAMS["macro"], "groups": [2]}}, macro_stage.Params))
    out = ub_stage.run(parse_stage(PARAMS, ub_stage.Params))
    assert out["skipped"] == "1 class(es) of 2+ images; a classifier needs 2"
    assert out["best"]["test_accuracy"] is None and out["configs"] == {}
    assert [e["class"] for e in out["excluded_classes"]] == [names[1]]
    for path in (ub_stage.OUT_CONFIGS_PNG, ub_stage.OUT_PER_CLASS_PNG, ub_stage.OUT_MACRO_PNG,
                 ub_stage.OUT_CONFIGS, ub_stage.OUT_PER_CLASS, ub_stage.OUT_PREDICTIONS):
        assert Path(path).is_file(), path
    assert pd.read_parquet(ub_stage.OUT_PREDICTIONS)["split"].eq("excluded").all()


# --------------------------------------------------------------------------- routes
OUTPUTS = (ub_stage.OUT_METRICS, ub_stage.OUT_CONFIGS, ub_stage.OUT_PER_CLASS,
           ub_stage.OUT_PREDICTIONS, ub_stage.OUT_MACRO_CSV)


def test_below_the_switch_auto_writes_the_exact_routes_bytes(data):
    out = ub_stage.run(parse_stage(PARAMS, ub_stage.Params))
    assert out["route"] == {"route": "exact", "reason": "180 x 40 x 12 = 8.64e+04 <= max_work 1.5e+09",
                            "max_work": 1_500_000_000, "train_images": 180, "fit_images": 180,
                            "features": "configured"}
    auto = {p: Path(p).read_bytes() for p in OUTPUTS}
    forced = ub_stage.run(parse_stage(_with(route="exact"), ub_stage.Params))
    assert forced["route"]["reason"].startswith("forced")
    assert {**out, "route": None} == {**forced, "route": None}
    for p in OUTPUTS[1:]:
        assert Path(p).read_bytes() == auto[p], p


def test_above_the_switch_every_config_fits_a_sample_on_the_pca_scores(data):
    """``max_work`` below the split's size: one stratified sample of the training split
    (``max_train``), every configuration on the standardised PCA scores (the two that then
    coincide fitted once), the whole test split scored, the route recorded, and the test
    accuracy within 0.15 of the exact route's on this data."""
    raw, pca, y, names = data
    exact = ub_stage.run(parse_stage(PARAMS, ub_stage.Params))
    out = ub_stage.run(parse_stage(_with(max_work=1000, max_train=100), ub_stage.Params))
    route = out["route"]
    assert route["route"] == "bounded" and route["features"] == "pca"
    assert route["train_images"] == 180 and abs(route["fit_images"] - 100) <= 6
    assert out["split"]["test"] == exact["split"]["test"] == 60
    assert {c["features_used"] for c in out["configs"].values()} == {"pca"}
    assert {c["dim"] for c in out["configs"].values()} == {pca.shape[1]}
    lr, pc = out["configs"]["lr_C01"], out["configs"]["pca_C01"]
    assert {**lr, "features": None} == {**pc, "features": None}  # one fit, two names
    preds = pd.read_parquet(ub_stage.OUT_PREDICTIONS)
    assert preds["split"].value_counts().to_dict() == {
        "train": route["fit_images"], "unsampled": 180 - route["fit_images"], "test": 60}
    assert preds["predicted"].notna().all()
    assert out["best"]["test_accuracy"] >= exact["best"]["test_accuracy"] - 0.15
    again = {p: Path(p).read_bytes() for p in OUTPUTS}
    ub_stage.run(parse_stage(_with(max_work=1000, max_train=100), ub_stage.Params))
    assert {p: Path(p).read_bytes() for p in OUTPUTS} == again


@pytest.mark.parametrize("override, match", [
    ({"route": "fast"}, r"upper_bound\.route"), ({"max_work": 0}, r"upper_bound\.max_work"),
    ({"max_train": 1}, r"upper_bound\.max_train")])
def test_invalid_route_params_name_the_key(override, match):
    with pytest.raises(ParamError, match=match):
        parse_section(_with(**override), "upper_bound", UpperBoundParams)
