"""Feature-set fusion: visual, text, concat and weighted sets, and the kappa comparison table."""
import numpy as np
import pandas as pd
import pytest

from clusterlens.config.base import parse_section, parse_stage
from clusterlens.config.fusion import METHOD_NAMES, FusionParams, parse_fusion
from clusterlens.core.errors import DataError, ParamError
from clusterlens.core.io import load_npy, read_json, save_npy, write_table
from clusterlens.features import fusion as fu
from clusterlens.features import sets
from stages import fusion as fusion_stage


# --------------------------------------------------------------------------- fusion
def _blobs(n_per=40, k=3, seed=0):
    """Text separates the k classes; visual is pure noise."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(k), n_per)
    centres = rng.normal(0, 1, (k, 24))
    text = centres[y] + rng.normal(0, 0.15, (len(y), 24))
    visual = rng.normal(0, 1, (len(y), 40)) * 5.0
    return visual.astype(np.float32), text.astype(np.float32), y


def test_fusion_shapes_and_norms():
    visual, text, _ = _blobs()
    n = len(visual)
    assert np.allclose(np.linalg.norm(fu.l2_normalize(visual), axis=1), 1.0, atol=1e-6)
    assert not fu.l2_normalize(np.zeros((2, 3))).any()  # zero rows stay zero
    c = fu.fuse_concat(visual, text)
    assert c.shape == (n, 64) and c.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(c[:, :40], axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(c[:, 40:], axis=1), 1.0, atol=1e-6)
    w = fu.fuse_weighted(visual, text, 0.5, dim=384, seed=0)
    assert w.shape == (n, 24)  # min(dim, D_v, D_t, N)
    assert fu.fuse_weighted(visual, text, 0.5, dim=8).shape == (n, 8)
    assert fu.fuse_weighted(visual[:5], text[:5], 0.5, dim=384).shape == (5, 5)
    assert np.array_equal(w, fu.fuse_weighted(visual, text, 0.5, dim=384, seed=0))
    assert (np.linalg.norm(w, axis=1) <= 1.0 + 1e-6).all()
    for name, dim in [("visual", 40), ("text", 24), ("concat", 64), ("weighted", 10)]:
        assert fu.feature_set(name, visual, text, 0.3, 10).shape == (n, dim)


def test_weighted_fusion_at_the_ends_is_one_part_alone():
    visual, text, _ = _blobs()
    alone_v = fu.pca_project(visual, 16, seed=0)
    alone_t = fu.pca_project(text, 16, seed=0)
    assert np.array_equal(fu.fuse_weighted(visual, text, 1.0, dim=16), alone_v)
    assert np.array_equal(fu.fuse_weighted(visual, text, 0, dim=16), alone_t)
    np.testing.assert_allclose(np.linalg.norm(alone_v, axis=1), 1.0, atol=1e-6)
    mid = fu.fuse_weighted(visual, text, 0.25, dim=16)
    np.testing.assert_allclose(mid, 0.25 * alone_v + 0.75 * alone_t, atol=1e-6)


@pytest.mark.parametrize("name, weight, dim, key", [
    ("fused", 0.5, 10, "fusion.set"), ("concat", 1.5, 10, "fusion.weight"),
    ("concat", -0.1, 10, "fusion.weight"), ("concat", True, 10, "fusion.weight"),
    ("concat", "half", 10, "fusion.weight"), ("weighted", 0.5, 0, "fusion.dim"),
    ("weighted", 0.5, 2.5, "fusion.dim"),
])
def test_feature_set_validates_params(name, weight, dim, key):
    visual, text, _ = _blobs(n_per=5)
    with pytest.raises(ValueError):
        fu.feature_set(name, visual, text, weight, dim)
    with pytest.raises(ParamError) as err:
        parse_section({"fusion": {"set": name, "weight": weight, "dim": dim}}, "fusion",
                      FusionParams)
    assert err.value.key == key


def test_fusion_params_defaults_and_names():
    assert parse_fusion({}) == FusionParams(set="visual", weight=0.5, dim=384,
                                            methods=["kmeans", "gmm"])
    assert parse_fusion({"fusion": {"set": "concat"}}).set == "concat"
    assert parse_fusion({"fusion": {"weight": 1}}).weight == 1.0
    assert set(FusionParams.model_fields["set"].annotation.__args__) == set(fu.FEATURE_SETS)
    assert METHOD_NAMES == fu.METHODS and fu.FEATURE_SETS == sets.FEATURE_SETS
    for methods in (["dbscan"], [], "kmeans"):
        with pytest.raises(ParamError) as err:
            parse_fusion({"fusion": {"methods": methods}})
        assert err.value.key == "fusion.methods"
    with pytest.raises(ParamError, match="did you mean `fusion.weight`"):
        parse_fusion({"fusion": {"weigth": 0.5}})


def test_fusion_rejects_misaligned_rows():
    visual, text, _ = _blobs(n_per=5)
    with pytest.raises(DataError):
        fu.fuse_concat(visual, text[:-1])


def test_kappa_table_ranks_the_informative_features_first():
    visual, text, y = _blobs()
    sets = {name: fu.feature_set(name, visual, text, 0.5, 16) for name in fu.FEATURE_SETS}
    table = fu.kappa_table(sets, y, k=3, seed=0, n_init=3, progress=False)
    assert list(table.columns) == ["features", "method", "label", "kappa", "nmi", "ari"]
    assert len(table) == 4 * 3
    assert table["label"].iloc[0] == "K-Means (Visual)"
    kappa = table.set_index(["features", "method"])["kappa"]
    for method in fu.METHODS:
        assert kappa["text", method] > 0.95
        assert kappa["visual", method] < 0.3
        assert kappa["text", method] > kappa["visual", method] + 0.5
    assert kappa["concat", "kmeans"] > kappa["visual", "kmeans"]
    again = fu.kappa_table(sets, y, k=3, seed=0, n_init=3, progress=False)
    pd.testing.assert_frame_equal(table, again)  # seeded: identical
    with pytest.raises(ValueError, match="spectral"):
        fu.kappa_table(sets, y, 3, methods=("kmeans", "spectral"), progress=False)
    with pytest.raises(ValueError, match="more than the"):
        fu.kappa_table({"text": text[:2]}, y[:2], 3, methods=("kmeans",), progress=False)


def test_kappa_table_reuses_the_cluster_metrics_kappa():
    from clusterlens.clustering.metrics import kappa_after_majority_vote

    _, text, y = _blobs(n_per=20)
    table = fu.kappa_table({"text": text}, y, 3, seed=0, methods=("kmeans",), n_init=2,
                           progress=False)
    labels = fu.cluster_labels(text, "kmeans", 3, seed=0, n_init=2)
    assert table["kappa"].iloc[0] == kappa_after_majority_vote(y, labels)


def test_fusion_stage_writes_fused_features_and_table(in_tmp_cwd):
    visual, text, y = _blobs(n_per=15)
    save_npy("data/features.npy", visual)
    save_npy("data/text_features.npy", fu.l2_normalize(text))
    write_table("data/index.parquet", pd.DataFrame({"path": [f"{i}.png" for i in range(len(y))],
                                                    "label": y}))
    params = {"seed": 0, "fusion": {"set": "weighted", "weight": 0.5, "dim": 8,
                                    "methods": ["kmeans", "ward"]},
              "kmeans": {"k": [3], "n_init": 2, "max_iter": 100}}
    m = fusion_stage.run(parse_stage(params, fusion_stage.Params))
    assert load_npy("data/fused.npy").shape == (len(y), 8)
    table = pd.read_csv("metrics/fusion.csv")
    assert len(table) == 8 and set(table["method"]) == {"kmeans", "ward"}
    assert m["text"]["kmeans"] > m["visual"]["kmeans"]
    assert m["best"]["features"] != "visual" and m["k"] == 3
    assert read_json("metrics/fusion.json") == m
    assert set(m) == {*fu.FEATURE_SETS, "best", "k", "weighted_dim"} and m["weighted_dim"] == 8
    with pytest.raises(ParamError) as err:
        fusion_stage.run(parse_stage({**params, "fusion": {**params["fusion"], "methods": ["dbscan"]}},
                                     fusion_stage.Params))
    assert err.value.key == "fusion.methods"
    with pytest.raises(ParamError, match="kmeans.k"):  # the grid's K-Means settings are parsed
        fusion_stage.run(parse_stage({**params, "kmeans": {"n_init": 2, "max_iter": 100}}, fusion_stage.Params))
    with pytest.raises(ParamError, match="gmm"):  # gmm in the table needs the gmm section
        fusion_stage.run(parse_stage({**params, "fusion": {**params["fusion"], "methods": ["gmm"]}},
                                     fusion_stage.Params))


def test_comparison_rows_stratify_and_keep_a_class_subset_when_classes_are_many():
    y = np.random.default_rng(0).permutation(np.arange(20_000) % 1000)
    rows = sets.comparison_rows(y, 2000, 0)
    kept, counts = np.unique(y[rows], return_counts=True)
    assert len(rows) == 2000 and len(kept) == 200 and (counts == 10).all()
    assert np.array_equal(rows, np.sort(rows)) and np.array_equal(rows, sets.comparison_rows(y, 2000, 0))
    y = np.arange(900) % 30
    _, counts = np.unique(y[sets.comparison_rows(y, 300, 1)], return_counts=True)
    assert len(counts) == 30 and (counts == 10).all()
    assert np.array_equal(sets.comparison_rows(y, 900, 0), np.arange(900))
    assert sets.sample_route(y, None, 0) == (None, {})


def _stage_inputs(visual, text, y):
    save_npy("data/features.npy", visual)
    save_npy("data/text_features.npy", text)
    write_table("data/index.parquet", pd.DataFrame({"path": [f"{i}.png" for i in range(len(y))],
                                                    "label": y}))


def test_fusion_stage_below_the_switch_compares_every_image(in_tmp_cwd):
    visual, text, y = _blobs(n_per=15)
    _stage_inputs(visual, fu.l2_normalize(text), y)
    params = {"seed": 0, "fusion": {"set": "visual", "dim": 8, "methods": ["kmeans"]},
              "kmeans": {"k": [3], "n_init": 2, "max_iter": 100}}
    m = fusion_stage.run(parse_stage(params, fusion_stage.Params))  # fusion.max_n: 2,000
    every = {name: fu.feature_set(name, visual, fu.l2_normalize(text), 0.5, 8, 0) for name in fu.FEATURE_SETS}
    ref = fu.kappa_table(every, y, 3, 0, ["kmeans"], n_init=2, max_iter=100, progress=False)
    assert "route" not in m
    np.testing.assert_array_equal(pd.read_csv("metrics/fusion.csv")["kappa"], ref["kappa"].round(6))


def test_fusion_stage_above_the_switch_compares_a_stratified_sample(in_tmp_cwd):
    visual, text, y = _blobs(n_per=20)
    _stage_inputs(visual, fu.l2_normalize(text), y)
    params = {"seed": 0, "fusion": {"set": "concat", "dim": 8, "methods": ["kmeans"], "max_n": 30},
              "kmeans": {"k": [3], "n_init": 5, "max_iter": 100}}
    m = fusion_stage.run(parse_stage(params, fusion_stage.Params))
    assert m["route"] == "sample" and m["sample"] == 30 and m["images_total"] == 60
    assert m["n_init"] == 1 and m["k"] == 3 and m["text"]["kmeans"] > 0.9
    assert load_npy("data/fused.npy").shape == (60, visual.shape[1] + text.shape[1])  # every image


def test_fusion_stage_on_the_captions_sample_needs_the_visual_set(in_tmp_cwd):
    visual, text, y = _blobs(n_per=20)
    rows = sets.comparison_rows(y, 30, 0)
    _stage_inputs(visual, fu.l2_normalize(text)[rows], y)  # as captions writes at max_n 30
    params = {"seed": 0, "fusion": {"set": "visual", "dim": 8, "methods": ["kmeans"]},
              "captions": {"max_n": 50, "sample": 30}, "kmeans": {"k": [3], "n_init": 5, "max_iter": 100}}
    m = fusion_stage.run(parse_stage(params, fusion_stage.Params))
    assert m["route"] == "sample" and m["sample"] == m["captions_sample"] == 30
    assert load_npy("data/fused.npy").shape == (60, 0)
    with pytest.raises(ParamError, match="fusion.set.*captions.max_n"):
        fusion_stage.run(parse_stage({**params, "fusion": {**params["fusion"], "set": "text"}},
                                     fusion_stage.Params))
    with pytest.raises(DataError, match="captions' sample"):
        fusion_stage.run(parse_stage({**params, "captions": {"max_n": 50, "sample": 40}}, fusion_stage.Params))
    _stage_inputs(visual, np.zeros((60, 0), np.float32), y)  # captions off above captions.max_n
    assert fusion_stage.run(parse_stage({**params, "captions": {"max_n": 50}}, fusion_stage.Params)) == {
        "enabled": False, "route": "off", "captions_max_n": 50}
    with pytest.raises(ParamError, match="fusion.set.*captions.max_n = 50"):
        fusion_stage.run(parse_stage({**params, "captions": {"max_n": 50},
                                      "fusion": {**params["fusion"], "set": "concat"}}, fusion_stage.Params))
