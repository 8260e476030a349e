"""NMF + K-Means on W, and the stages that read the selected feature set."""
import json

import numpy as np
import pandas as pd
import pytest
from sklearn.cluster import KMeans
from sklearn.decomposition import NMF

from clusterlens.clustering import nmf
from clusterlens.config.base import parse_section, parse_stage
from clusterlens.config.nmf import NMFParams
from clusterlens.core.errors import DataError, ParamError
from clusterlens.core.io import save_npy, write_table
from clusterlens.features.sets import load_feature_set
from stages import nmf as nmf_stage
from stages import reduce as reduce_stage
from stages import upper_bound as upper_bound_stage
from tests.conftest import run_point


# --------------------------------------------------------------------------- NMF
def test_make_nonnegative_shifts_only_negative_columns():
    X = np.array([[1.0, -2.0, 0.0], [3.0, 1.0, 5.0]], dtype=np.float32)
    Y, shifted = nmf.make_nonnegative(X)
    assert shifted == 1
    np.testing.assert_array_equal(Y, [[1.0, 0.0, 0.0], [3.0, 3.0, 5.0]])
    same, none = nmf.make_nonnegative(np.abs(X))
    assert none == 0 and np.array_equal(same, np.abs(X))
    np.testing.assert_array_equal(nmf.negative_columns(X), [False, True, False])
    with pytest.raises(DataError, match="non-finite"):
        nmf.make_nonnegative(np.array([[np.nan, 1.0]]))
    with pytest.raises(DataError, match="non-finite"):
        nmf.negative_columns(np.array([[np.inf, 1.0]]))


def test_negative_error_mode_stops_the_stage(in_tmp_cwd):
    X = np.array([[1.0, -2.0, 0.0], [3.0, 1.0, 5.0]], dtype=np.float32)
    save_npy("data/features.npy", X)
    params = {"seed": 0, "nmf": {"k": [2], "n_components": 1, "max_iter": 50,
                                 "negative": "error"}}
    with pytest.raises(ParamError, match="nmf.negative.*1 of 3 feature columns"):
        nmf_stage.run(parse_stage(params, nmf_stage.Params))


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
              "kmeans": {"k": [3], "n_init": 5, "max_iter": 100},
              "nmf": {"k": [3], "n_components": 3, "max_iter": 400, "negative": "shift"}}
    return X, y, params


def test_nmf_stage_equals_sklearn_and_kmeans_on_w_recovers_the_parts(parts):
    X, y, params = parts
    out = nmf_stage.run(parse_stage(params, nmf_stage.Params))
    W = np.load("data/nmf.npz")["W"]
    ref = NMF(3, init="nndsvda", max_iter=400, random_state=0)
    np.testing.assert_allclose(W, ref.fit_transform(X), rtol=1e-4, atol=1e-6)
    assert out["reconstruction_error"] == pytest.approx(ref.reconstruction_err_, rel=1e-5)
    assert json.load(open("metrics/nmf.json"))["shifted_columns"] == 0
    point = run_point("nmf", 3, params)["k3"]
    labels = np.load("data/clusters/nmf/k3.npy")
    np.testing.assert_array_equal(
        labels, KMeans(3, n_init=5, max_iter=100, random_state=0).fit(W).labels_)
    assert point["ari"] == pytest.approx(1.0) and point["nmf_components"] == 3
    nmf_stage.run(parse_stage(params, nmf_stage.Params))  # seeded: the same W again
    np.testing.assert_array_equal(np.load("data/nmf.npz")["W"], W)


def test_nmf_params_are_checked(parts):
    _, _, params = parts
    with pytest.raises(ParamError, match="nmf.n_components.*larger than min"):
        nmf_stage.run(parse_stage({**params, "nmf": {**params["nmf"], "n_components": 500}}, nmf_stage.Params))
    with pytest.raises(ParamError, match="nmf.negative"):
        nmf_stage.run(parse_stage({**params, "nmf": {**params["nmf"], "negative": "clip"}}, nmf_stage.Params))


@pytest.mark.parametrize("override, key", [
    ({"k": [1]}, "nmf.k"), ({"k": 3}, "nmf.k"), ({"n_components": 0}, "nmf.n_components"),
    ({"max_iter": True}, "nmf.max_iter"), ({"negative": "clip"}, "nmf.negative"),
    ({"n_component": 3}, "nmf.n_component"),
])
def test_nmf_section_is_validated(override, key):
    section = {"k": [2, 3], "n_components": 3, "max_iter": 10, "negative": "shift", **override}
    with pytest.raises(ParamError) as err:
        parse_section({"nmf": section}, "nmf", NMFParams)
    assert err.value.key == key
    ok = {"k": [], "n_components": 3, "max_iter": 10, "negative": "shift"}  # k may be empty
    assert parse_section({"nmf": ok}, "nmf", NMFParams).k == []


# --------------------------------------------------------------------------- feature sets
def test_reduce_nmf_and_upper_bound_read_the_selected_feature_set(in_tmp_cwd):
    rng = np.random.default_rng(0)
    visual = np.abs(rng.normal(size=(40, 12))).astype(np.float32)
    fused = rng.normal(size=(40, 7)).astype(np.float32)
    save_npy("data/features.npy", visual)
    save_npy("data/fused.npy", fused)
    save_npy("data/pca.npy", visual[:, :3])
    write_table("data/index.parquet", pd.DataFrame({"path": [f"{i}.png" for i in range(40)],
                                                    "class": ["a", "b"] * 20,
                                                    "label": [0, 1] * 20}))
    X, where = load_feature_set("concat", "data/features.npy", "data/fused.npy")
    assert np.array_equal(X, fused) and "fusion.set: concat" in where
    X, _ = load_feature_set("visual", "data/features.npy", "data/fused.npy")
    assert np.array_equal(X, visual)
    with pytest.raises(ValueError, match="unknown feature set"):
        load_feature_set("fused", "data/features.npy", "data/fused.npy")
    params = {"seed": 0, "fusion": {"set": "weighted"}, "data": {"root": "."},
              "reduce": {"standardize": True, "n_components": 3},
              "upper_bound": {"test_size": 0.25, "max_iter": 100,
                              "configs": [{"name": "lr", "features": "raw"}]}}
    reduce_stage.run(parse_stage(params, reduce_stage.Params))
    assert json.load(open("metrics/reduce.json"))["input_dim"] == 7
    no_fusion = {k: v for k, v in params.items() if k != "fusion"}  # no section: visual
    reduce_stage.run(parse_stage(no_fusion, reduce_stage.Params))
    assert json.load(open("metrics/reduce.json"))["input_dim"] == 12
    out = nmf_stage.run(parse_stage({**params, "nmf": {"k": [2], "n_components": 2, "max_iter": 50,
                                                       "negative": "shift"}}, nmf_stage.Params))
    assert out["shifted_columns"] == 7  # the fused columns all have negative values
    save_npy("data/fused.npy", fused[:39])  # upper_bound reads the fused set, not the visual one
    with pytest.raises(DataError, match="data/fused.npy.*39 rows"):
        upper_bound_stage.run(parse_stage(params, upper_bound_stage.Params))
    save_npy("data/fused.npy", np.zeros((40, 0), np.float32))  # written for fusion.set: visual
    for stage in (reduce_stage, nmf_stage, upper_bound_stage):
        with pytest.raises(DataError, match="holds no 'weighted' features.*dvc repro fusion"):
            stage.run(parse_stage({**params, "nmf": {"k": [2], "n_components": 2, "max_iter": 50,
                                                     "negative": "shift"}}, stage.Params))
    with pytest.raises(DataError, match="missing.*dvc repro fusion"):
        load_feature_set("text", "data/features.npy", "data/none.npy")


def test_fit_nmf_is_the_same_whatever_the_blas_thread_count():
    from threadpoolctl import threadpool_limits

    X = np.abs(np.random.default_rng(3).normal(size=(600, 120))).astype(np.float32)
    with threadpool_limits(4, user_api="blas"):
        W_many, info_many = nmf.fit_nmf(X, 10, 50, seed=0)
    with threadpool_limits(1, user_api="blas"):
        W_one, info_one = nmf.fit_nmf(X, 10, 50, seed=0)
    assert W_many.tobytes() == W_one.tobytes()
    assert info_many == info_one
