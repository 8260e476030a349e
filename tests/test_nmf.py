"""NMF + K-Means on W, and the stages that read the selected feature set."""
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.cluster import KMeans
from sklearn.decomposition import NMF

from clusterlens import clustering as cluster, nmf
from clusterlens.backbones import RAW, build_backbone
from clusterlens.common import DataError, ParamError, save_npy, write_table
from clusterlens.features import extract_features


# --------------------------------------------------------------------------- NMF
def test_make_nonnegative_shifts_only_negative_columns():
    X = np.array([[1.0, -2.0, 0.0], [3.0, 1.0, 5.0]], dtype=np.float32)
    Y, shifted = nmf.make_nonnegative(X, "shift")
    assert shifted == 1
    np.testing.assert_array_equal(Y, [[1.0, 0.0, 0.0], [3.0, 3.0, 5.0]])
    same, none = nmf.make_nonnegative(np.abs(X), "shift")
    assert none == 0 and np.array_equal(same, np.abs(X))
    with pytest.raises(ParamError, match="nmf.negative.*1 of 3 feature columns"):
        nmf.make_nonnegative(X, "error")
    with pytest.raises(DataError, match="non-finite"):
        nmf.make_nonnegative(np.array([[np.nan, 1.0]]), "shift")


@pytest.fixture
def parts(in_tmp_cwd):
    """Non-negative data built from 3 'parts': each class is one part plus noise."""
    rng = np.random.default_rng(1)
    H = rng.uniform(0, 1, (3, 40)) * (rng.uniform(0, 1, (3, 40)) > 0.6)
    y = np.repeat([0, 1, 2], 30)
    X = (H[y] * rng.uniform(0.8, 1.2, (90, 1)) + rng.uniform(0, 0.02, (90, 40))).astype(np.float32)
    save_npy("data/features.npy", X)
    save_npy("data/pca.npy", (X - X.mean(0))[:, :10])
    write_table("data/index.parquet", pd.DataFrame({"path": [f"{i}.png" for i in range(90)],
                                                    "class": [f"c{v}" for v in y], "label": y}))
    params = {"seed": 0, "metrics": {"silhouette_sample": 1000},
              "kmeans": {"n_init": 5, "max_iter": 100},
              "nmf": {"k": [3], "n_components": 3, "max_iter": 400, "negative": "shift"}}
    return X, y, params


def test_nmf_stage_equals_sklearn_and_kmeans_on_w_recovers_the_parts(parts):
    X, y, params = parts
    out = nmf.run(params)
    W = np.load("data/nmf.npz")["W"]
    ref = NMF(3, init="nndsvda", max_iter=400, random_state=0)
    np.testing.assert_allclose(W, ref.fit_transform(X), rtol=1e-4, atol=1e-6)
    assert out["reconstruction_error"] == pytest.approx(ref.reconstruction_err_, rel=1e-5)
    assert json.load(open("metrics/nmf.json"))["shifted_columns"] == 0
    point = cluster.run("nmf", 3, params)["k3"]
    labels = np.load("data/clusters/nmf/k3.npy")
    np.testing.assert_array_equal(
        labels, KMeans(3, n_init=5, max_iter=100, random_state=0).fit(W).labels_)
    assert point["ari"] == pytest.approx(1.0) and point["nmf_components"] == 3
    nmf.run(params)  # seeded: the same W again
    np.testing.assert_array_equal(np.load("data/nmf.npz")["W"], W)


def test_nmf_params_are_checked(parts):
    _, _, params = parts
    with pytest.raises(ParamError, match="nmf.n_components.*larger than min"):
        nmf.run({**params, "nmf": {**params["nmf"], "n_components": 500}})
    with pytest.raises(ParamError, match="nmf.negative"):
        nmf.run({**params, "nmf": {**params["nmf"], "negative": "clip"}})


# --------------------------------------------------------------------------- feature sets
def test_reduce_nmf_and_upper_bound_read_the_selected_feature_set(in_tmp_cwd):
    from clusterlens import fusion, reduce

    rng = np.random.default_rng(0)
    visual = np.abs(rng.normal(size=(40, 12))).astype(np.float32)
    fused = rng.normal(size=(40, 7)).astype(np.float32)
    save_npy("data/features.npy", visual)
    save_npy("data/fused.npy", fused)
    write_table("data/index.parquet", pd.DataFrame({"path": [f"{i}.png" for i in range(40)],
                                                    "class": ["a", "b"] * 20,
                                                    "label": [0, 1] * 20}))
    X, where = fusion.load_selected({"fusion": {"set": "concat"}})
    assert np.array_equal(X, fused) and "fusion.set: concat" in where
    X, _ = fusion.load_selected({})  # params without a fusion section: the visual features
    assert np.array_equal(X, visual)
    params = {"seed": 0, "fusion": {"set": "weighted"},
              "reduce": {"standardize": True, "n_components": 3}}
    reduce.run(params)
    assert json.load(open("metrics/reduce.json"))["input_dim"] == 7
    out = nmf.run({**params, "nmf": {"n_components": 2, "max_iter": 50, "negative": "shift"}})
    assert out["shifted_columns"] == 7  # the fused columns all have negative values
    save_npy("data/fused.npy", np.zeros((40, 0), np.float32))  # written for fusion.set: visual
    with pytest.raises(DataError, match="holds no 'weighted' features.*dvc repro fusion"):
        fusion.load_selected(params)


