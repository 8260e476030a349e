"""Label issues: out-of-fold probabilities, cleanlab's findings, the stage's outputs and errors."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from cleanlab.count import estimate_joint
from cleanlab.filter import find_label_issues
from cleanlab.rank import get_label_quality_scores
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler

from clusterlens.audit import label_issues as li
from clusterlens.config.base import parse_stage
from clusterlens.config.upper_bound import LogRegConfig
from clusterlens.core.errors import DataError, ParamError
from clusterlens.core.io import read_json, write_json
from stages import label_issues as stage
from tests.conftest import CIFAR

RAW = LogRegConfig(name="lr_C1", C=1.0, features="raw")
PCA = LogRegConfig(name="pca_C01", C=0.1, features="pca")


def noisy_blobs(n_per: int = 80, k: int = 5, dim: int = 20, sep: float = 1.5,
                noise: float = 0.05, seed: int = 0):
    """Gaussian blobs (features, true labels) and given labels with a seeded ``noise``
    fraction moved to another class; also the moved rows."""
    rng = np.random.default_rng(seed)
    centers = sep * rng.standard_normal((k, dim))
    y = np.repeat(np.arange(k), n_per)
    X = (centers[y] + rng.standard_normal((len(y), dim))).astype(np.float32)
    moved = rng.choice(len(y), int(round(noise * len(y))), replace=False)
    given = y.copy()
    given[moved] = (y[moved] + rng.integers(1, k, len(moved))) % k
    return X, y, given, moved


def precision_recall(found: np.ndarray, moved: np.ndarray) -> tuple[float, float]:
    truth = np.zeros(len(found), dtype=bool)
    truth[moved] = True
    tp = int((found & truth).sum())
    return tp / max(1, int(found.sum())), tp / len(moved)


# --------------------------------------------------------------------------- detection
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_injected_label_errors_are_found_with_high_precision_and_recall(seed):
    X, y, given, moved = noisy_blobs(seed=seed)
    oof = li.out_of_fold_probabilities(X, given, RAW, folds=5, max_iter=1000, seed=0)
    issues = li.find_issues(given, oof.probabilities)
    precision, recall = precision_recall(issues.is_issue, moved)
    # chance: flagging at random gives precision 0.05 (the moved fraction)
    assert precision >= 0.7 and recall >= 0.7, (precision, recall)
    assert 0.025 <= issues.noise_rate <= 0.1
    # the moved images are the least trustworthy labels
    assert np.median(issues.quality[moved]) < np.quantile(issues.quality, 0.1)


def test_the_issue_list_is_cleanlabs_own_on_the_same_probabilities():
    X, _, given, _ = noisy_blobs(noise=0.08)
    oof = li.out_of_fold_probabilities(X, given, PCA, folds=4, max_iter=1000, seed=3)
    for filter_by, rank_by in [("prune_by_noise_rate", "self_confidence"),
                               ("both", "normalized_margin")]:
        issues = li.find_issues(given, oof.probabilities, filter_by, rank_by)
        direct = find_label_issues(given, oof.probabilities, filter_by=filter_by,
                                   return_indices_ranked_by=rank_by)
        assert len(direct) > 0
        ranked = np.flatnonzero(issues.is_issue)[np.argsort(issues.rank[issues.is_issue])]
        np.testing.assert_array_equal(ranked, direct)
        np.testing.assert_array_equal(issues.rank[direct], np.arange(1, len(direct) + 1))
        assert (issues.rank[~issues.is_issue] == 0).all()
        np.testing.assert_allclose(issues.quality, get_label_quality_scores(
            given, oof.probabilities, method=rank_by))
        joint = estimate_joint(given, oof.probabilities)
        assert issues.noise_rate == pytest.approx(1 - np.trace(joint))


def test_every_image_is_scored_by_a_model_that_never_saw_it():
    X, _, given, _ = noisy_blobs(n_per=30, k=3)
    oof = li.out_of_fold_probabilities(X, given, RAW, folds=3, max_iter=1000, seed=7)
    assert oof.probabilities.shape == (90, 3)
    np.testing.assert_allclose(oof.probabilities.sum(axis=1), 1.0)
    assert sorted(set(oof.fold.tolist())) == [0, 1, 2] and len(oof.iterations) == 3
    # fold 1 by hand: the scaler fit on the other folds only, the same lbfgs regression
    splits = list(StratifiedKFold(3, shuffle=True, random_state=7).split(X, given))
    tr, te = splits[1]
    np.testing.assert_array_equal(np.flatnonzero(oof.fold == 1), np.sort(te))
    scaler = StandardScaler().fit(X[tr].astype(np.float64))
    model = LogisticRegression(C=1.0, max_iter=1000, random_state=7).fit(
        scaler.transform(X[tr].astype(np.float64)), given[tr])
    expected = model.predict_proba(scaler.transform(X[te].astype(np.float64)))
    np.testing.assert_allclose(oof.probabilities[te], expected, rtol=1e-6, atol=1e-9)


def test_tables_follow_the_index_order():
    X, _, given, _ = noisy_blobs(n_per=20, k=3, noise=0.1)
    names = ["ant", "bee", "cat"]
    index = pd.DataFrame({"path": [f"{names[c]}/{i}.png" for i, c in enumerate(given)],
                          "class": [names[c] for c in given], "label": given})
    oof = li.out_of_fold_probabilities(X, given, PCA, 5, 1000, 0)
    issues = li.find_issues(given, oof.probabilities)
    table = li.issues_table(index, names, oof.probabilities, issues)
    assert list(table.columns) == li.ISSUE_COLUMNS
    assert table["path"].tolist() == index["path"].tolist()
    best = oof.probabilities.argmax(axis=1)
    assert table["suggested_class"].tolist() == [names[b] for b in best]
    np.testing.assert_allclose(table["suggested_probability"], oof.probabilities.max(axis=1))
    per_class = li.per_class_table(given, names, issues)
    assert list(per_class.columns) == li.PER_CLASS_COLUMNS
    assert per_class["images"].tolist() == np.bincount(given).tolist()
    assert per_class["issues"].sum() == issues.is_issue.sum()


# --------------------------------------------------------------------------- small classes
def test_folds_are_lowered_only_to_the_largest_class_and_a_single_image_is_refused():
    assert li.check_folds(np.array([0, 0, 0, 1, 1]), 3) == 3  # class 1 has fewer than 3: kept
    assert li.check_folds(np.array([0, 0, 0, 1, 1]), 5) == 3
    with pytest.raises(ValueError, match="a class has 1 image"):
        li.check_folds(np.array([0, 0, 0, 1]), 2)
    with pytest.raises(ValueError, match="a class has 1 image"):
        li.out_of_fold_probabilities(np.zeros((4, 2)), np.array([0, 0, 0, 1]), PCA, 2, 100, 0)


def test_with_no_small_class_score_labels_is_the_two_steps_on_every_image():
    X, _, given, _ = noisy_blobs(n_per=20, k=3, noise=0.1)
    names = ["ant", "bee", "cat"]
    scored = li.score_labels(X, given, names, RAW, 4, 1000, 0)
    oof = li.out_of_fold_probabilities(X, given, RAW, 4, 1000, 0)
    issues = li.find_issues(given, oof.probabilities)
    np.testing.assert_array_equal(scored.probabilities, oof.probabilities)
    np.testing.assert_array_equal(scored.issues.quality, issues.quality)
    np.testing.assert_array_equal(scored.issues.rank, issues.rank)
    assert scored.excluded == [] and scored.folds == 4 and len(scored.rows) == len(given)


def test_a_single_image_class_gets_no_verdict_and_a_two_image_class_is_scored():
    """'lonely' (1 image) is left out; 'pair' (2 images, fewer than the 5 folds) is scored,
    each of its images by a model that saw the other; the other classes get exactly what the
    two steps give on the images without 'lonely'."""
    X, _, given, _ = noisy_blobs(n_per=20, k=3, noise=0.1)
    rng = np.random.default_rng(4)
    X = np.vstack([X, rng.normal(size=(3, X.shape[1])).astype(np.float32)])
    labels = np.concatenate([given, [3, 4, 4]])  # 3 = lonely, 4 = pair
    names = ["ant", "bee", "cat", "lonely", "pair"]
    scored = li.score_labels(X, labels, names, RAW, 5, 1000, 0)
    assert scored.excluded == [{"class": "lonely", "label": 3, "images": 1,
                                "reason": "fewer than 2 images: an out-of-fold score needs 2"}]
    assert scored.folds == 5
    lonely = len(given)
    assert np.isnan(scored.probabilities[lonely]).all() and np.isnan(scored.issues.quality[lonely])
    assert not scored.issues.is_issue[lonely] and scored.issues.rank[lonely] == 0
    assert (scored.probabilities[np.arange(len(labels)) != lonely, 3] == 0).all()
    for i in (lonely + 1, lonely + 2):  # the pair: its own class was in the training folds
        assert scored.probabilities[i, 4] > 0 and not np.isnan(scored.issues.quality[i])
    keep = np.arange(len(labels)) != lonely
    y = np.where(labels[keep] == 4, 3, labels[keep])  # relabelled 0..3
    oof = li.out_of_fold_probabilities(X[keep], y, RAW, 5, 1000, 0)
    issues = li.find_issues(y, oof.probabilities)
    np.testing.assert_array_equal(scored.probabilities[keep][:, [0, 1, 2, 4]], oof.probabilities)
    np.testing.assert_array_equal(scored.issues.rank[keep], issues.rank)
    assert scored.issues.noise_rate == pytest.approx(issues.noise_rate)
    index = pd.DataFrame({"path": [f"{i}.png" for i in range(len(labels))],
                          "class": [names[c] for c in labels], "label": labels})
    table = li.issues_table(index, names, scored.probabilities, scored.issues)
    assert pd.isna(table.loc[lonely, "suggested_class"])
    assert np.isnan(table.loc[lonely, "suggested_probability"])
    assert table["suggested_class"].notna().sum() == len(labels) - 1
    per_class = li.per_class_table(labels, names, scored.issues)
    assert np.isnan(per_class.loc[3, "noise_rate"]) and per_class.loc[3, "images"] == 1
    with pytest.raises(DataError, match="1 class"):
        li.score_labels(X[-3:], np.array([0, 1, 1]), ["a", "b"], RAW, 5, 100, 0)


def stage_inputs(work, given, X, best="lr_C1"):
    from clusterlens.core.io import save_npy, write_table

    names = [f"class{c}" for c in range(int(given.max()) + 1)]
    index = pd.DataFrame({"path": [f"{names[c]}/{i:04d}.png" for i, c in enumerate(given)],
                          "class": [names[c] for c in given], "label": given})
    write_table("data/index.parquet", index)
    save_npy("data/features.npy", X)
    save_npy("data/fused.npy", np.zeros((len(X), 0), np.float32))
    save_npy("data/pca.npy", X[:, :5])
    write_json("metrics/upper_bound.json", {"best": {"config": best}})
    return index, {"seed": 0, "fusion": {"set": "visual", "weight": 0.5, "dim": 384,
                                         "methods": ["kmeans"]},
                   "upper_bound": {"test_size": 0.2, "max_iter": 1000, "configs": [
                       {"name": "lr_C1", "C": 1.0, "class_weight": None, "features": "raw"},
                       {"name": "pca_C01", "C": 0.1, "class_weight": None,
                        "features": "pca"}]},
                   "label_issues": {"folds": 5, "filter_by": "prune_by_noise_rate",
                                    "rank_by": "self_confidence"}}


def test_stage_writes_the_documented_outputs(in_tmp_cwd):
    X, _, given, moved = noisy_blobs()
    index, params = stage_inputs(in_tmp_cwd, given, X)
    metrics = stage.run(parse_stage(params, stage.Params))
    assert set(metrics) == {"images", "classes", "scored_images", "issues", "issue_fraction",
                            "noise_rate", "oof_accuracy", "folds", "folds_requested",
                            "filter_by", "rank_by", "config", "converged", "excluded_classes"}
    assert metrics["excluded_classes"] == [] and metrics["scored_images"] == len(given)
    assert metrics["config"] == {"name": "lr_C1", "features": "raw", "C": 1.0,
                                 "class_weight": "none"}
    assert metrics == read_json(stage.OUT_METRICS) and metrics["folds"] == 5
    table = pd.read_parquet(stage.OUT_ISSUES)
    assert list(table.columns) == li.ISSUE_COLUMNS
    assert table["path"].tolist() == index["path"].tolist()
    assert str(table["is_label_issue"].dtype) == "bool"
    assert str(table["label_issue_rank"].dtype) == "int64"
    assert metrics["issues"] == int(table["is_label_issue"].sum())
    ranks = table.loc[table["is_label_issue"], "label_issue_rank"]
    assert sorted(ranks) == list(range(1, metrics["issues"] + 1))
    probs = np.load(stage.OUT_PROBABILITIES)
    assert probs.dtype == np.float32 and probs.shape == (len(index), 5)
    assert metrics["oof_accuracy"] == pytest.approx(np.mean(probs.argmax(1) == given), abs=1e-6)
    per_class = pd.read_csv(stage.OUT_PER_CLASS)
    assert list(per_class.columns) == li.PER_CLASS_COLUMNS and len(per_class) == 5
    precision, recall = precision_recall(table["is_label_issue"].to_numpy(), moved)
    assert precision >= 0.7 and recall >= 0.7, (precision, recall)


def test_stage_lowers_folds_refuses_bad_params_and_a_stale_best_config(in_tmp_cwd):
    X, _, given, _ = noisy_blobs(n_per=6, k=3, noise=0.0)
    _, params = stage_inputs(in_tmp_cwd, given, X)
    params["label_issues"]["folds"] = 7  # above every class's 6 images: lowered to 6
    metrics = stage.run(parse_stage(params, stage.Params))
    assert (metrics["folds"], metrics["folds_requested"]) == (6, 7)
    for key, value, match in [("folds", 1, "label_issues.folds"),
                              ("filter_by", "nope", "label_issues.filter_by"),
                              ("rankby", "x", "did you mean `label_issues.rank_by`")]:
        bad = {**params, "label_issues": {"folds": 3, key: value}}
        with pytest.raises(ParamError, match=match):
            stage.run(parse_stage(bad, stage.Params))
    params["label_issues"]["folds"] = 3
    write_json("metrics/upper_bound.json", {"best": {"config": "gone"}})
    with pytest.raises(DataError, match="'gone' is not in upper_bound.configs"):
        stage.run(parse_stage(params, stage.Params))


def test_stage_leaves_a_single_image_class_out_and_says_so(in_tmp_cwd):
    X, _, given, _ = noisy_blobs(n_per=6, k=3, noise=0.0)
    given[0] = 3  # class3 has one image
    index, params = stage_inputs(in_tmp_cwd, given, X)
    metrics = stage.run(parse_stage(params, stage.Params))
    assert metrics["excluded_classes"] == [
        {"class": "class3", "images": 1,
         "reason": "fewer than 2 images: an out-of-fold score needs 2"}]
    assert metrics["scored_images"] == len(given) - 1 and metrics["classes"] == 4
    assert metrics["folds"] == 5  # every kept class has 5 or 6 images
    table = pd.read_parquet(stage.OUT_ISSUES)
    assert np.isnan(table.loc[0, "label_quality"]) and pd.isna(table.loc[0, "suggested_class"])
    assert not table.loc[0, "is_label_issue"] and table["label_quality"].notna().sum() == 17
    assert np.isnan(np.load(stage.OUT_PROBABILITIES)[0]).all()


def test_stage_with_fewer_than_two_scorable_classes_writes_outputs_saying_so(in_tmp_cwd):
    X, _, given, _ = noisy_blobs(n_per=6, k=2, noise=0.0)
    given[0] = 1  # class0 keeps 5 images, class1 7; then class1 -> a single image
    given[given == 1] = 0
    given[0] = 1
    index, params = stage_inputs(in_tmp_cwd, given, X, best=None)
    metrics = stage.run(parse_stage(params, stage.Params))
    assert metrics["skipped"] == "1 class(es) of 2+ images; finding label issues needs 2"
    assert metrics["issues"] is None and metrics["scored_images"] == 0
    assert [e["class"] for e in metrics["excluded_classes"]] == ["class1"]
    table = pd.read_parquet(stage.OUT_ISSUES)
    assert len(table) == len(index) and table["label_quality"].isna().all()
    assert not table["is_label_issue"].any()
    assert read_json(stage.OUT_METRICS) == metrics


# --------------------------------------------------------------------------- real data
@pytest.mark.slow
@pytest.mark.skipif(not CIFAR.is_dir(), reason="../shared CIFAR-10 absent")
def test_moved_cifar_labels_are_found_far_above_chance():
    """500 CIFAR-10 images (50 per class), Lite0 ImageNet features at 64 px, a seeded 5% of
    the labels moved to another class; the raw-feature logistic regression with C=0.1 (``lr_C01``
    of the default configs)."""
    from clusterlens.features.backbones import LITE0, build_backbone
    from clusterlens.features.extraction import extract_features

    classes = sorted(p.name for p in CIFAR.iterdir() if p.is_dir())
    paths, y = [], []
    for c, name in enumerate(classes):
        files = sorted((CIFAR / name).glob("*.jpg"))[:50]
        paths += [f"{name}/{f.name}" for f in files]
        y += [c] * len(files)
    y = np.array(y)
    feats, _ = extract_features(build_backbone(LITE0, "DEFAULT", 64), CIFAR, paths, 64,
                                "squash", batch_size=50, device="cpu", progress=False)
    rng = np.random.default_rng(0)
    moved = rng.choice(len(y), len(y) // 20, replace=False)
    given = y.copy()
    given[moved] = (y[moved] + rng.integers(1, len(classes), len(moved))) % len(classes)
    cfg = LogRegConfig(name="lr_C01", C=0.1, features="raw")
    oof = li.out_of_fold_probabilities(feats, given, cfg, folds=5, max_iter=1000, seed=0)
    issues = li.find_issues(given, oof.probabilities)
    precision, recall = precision_recall(issues.is_issue, moved)
    top = (issues.rank >= 1) & (issues.rank <= len(moved))  # the 25 most suspicious
    top_precision = precision_recall(top, moved)[0]
    print(f"CIFAR-10 500 images, 25 moved: {int(issues.is_issue.sum())} issues, precision "
          f"{precision:.2f}, recall {recall:.2f}, precision of the top 25 {top_precision:.2f}, "
          f"noise rate {issues.noise_rate:.3f}, out-of-fold accuracy "
          f"{np.mean(oof.probabilities.argmax(1) == given):.3f}")
    # Chance precision is 0.05. At about 50% out-of-fold accuracy cleanlab also flags many
    # genuinely ambiguous images, so the whole list is long; its head is mostly moved labels.
    assert recall >= 0.7 and precision >= 0.08, (precision, recall)
    assert top_precision >= 0.3, top_precision
    assert np.median(issues.quality[moved]) < np.quantile(issues.quality, 0.25)
