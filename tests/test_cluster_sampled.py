"""K-Means, GMM and NMF at large N: the sample routes above `<section>.max_exact_n`, and the
unchanged exact routes below it."""
import json
import logging

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from clusterlens.clustering import kmeans_engines, methods, nmf
from clusterlens.config.base import parse_stage
from clusterlens.core.errors import ParamError
from clusterlens.core.io import save_npy
from stages import nmf as nmf_stage
from tests.conftest import run_point
from tests.test_cluster import blobs  # noqa: F401 - the fixture
from tests.test_nmf import parts  # noqa: F401 - the fixture


def _blobs(n: int, k: int = 8, dim: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-10, 10, size=(k, dim))
    y = rng.integers(0, k, n)
    return (centres[y] + rng.normal(size=(n, dim))).astype(np.float32), y


def test_kmeans_and_gmm_below_the_switch_are_the_exact_methods():
    X, _ = _blobs(600)
    full, extra = methods.run_kmeans(X, 8, 3, 100, 0)
    (labels, info), = methods.kmeans_point(X, 8, 0, n_init=3, max_iter=100,
                                           max_exact_n=600).points.values()
    assert np.array_equal(labels, full) and info == {"k": 8, **extra}  # no route recorded
    full, extra = methods.run_gmm(X, 8, "diag", 100, 0)
    (labels, info), = methods.gmm_point(X, 8, 0, covariance_type="diag", max_iter=100,
                                        max_exact_n=600).points.values()
    assert np.array_equal(labels, full) and info == {"k": 8, **extra}
    assert methods.kmeans_route(600, 8, None, 1) is None  # null: never


def test_kmeans_above_the_switch_fits_a_sample_and_assigns_every_point():
    X, y = _blobs(2500)
    full, exact = methods.run_kmeans(X, 8, 3, 100, 0)
    (labels, info), = methods.kmeans_point(X, 8, 0, n_init=3, max_iter=100, max_exact_n=500,
                                           sample_n_init=2).points.values()
    assert info["route"] == "sample" and info["sample"] == 500 and info["n_init"] == 2
    assert info["engine"] == "faiss" and labels.dtype == np.int64 and len(labels) == len(X)
    assert adjusted_rand_score(full, labels) >= 0.98 and adjusted_rand_score(y, labels) >= 0.95
    assert info["inertia"] <= 1.02 * exact["inertia"]  # measured on every point
    # 40 points per cluster at least: K = 20 trains on 800
    assert methods.kmeans_route(2500, 20, 500, 1) == {"sample": 800, "n_init": 1}
    (again, _), = methods.kmeans_point(X, 8, 0, n_init=3, max_iter=100, max_exact_n=500,
                                       sample_n_init=2).points.values()
    assert np.array_equal(again, labels)  # seeded
    W = np.abs(X[:, :4])
    (_, info), = methods.nmf_point(X, 8, 0, W=W, n_init=3, max_iter=100,
                                   max_exact_n=500).points.values()
    assert info["route"] == "sample" and info["sample"] == 500 and info["nmf_components"] == 4


def test_gmm_above_the_switch_fits_a_sample_and_labels_every_point():
    X, y = _blobs(2500)
    full, exact = methods.run_gmm(X, 8, "diag", 100, 0)
    (labels, info), = methods.gmm_point(X, 8, 0, covariance_type="diag", max_iter=100,
                                        max_exact_n=600).points.values()
    assert info["route"] == "sample" and info["sample"] == 600 and info["converged"]
    assert adjusted_rand_score(full, labels) >= 0.98 and len(labels) == len(X)
    assert info["bic"] == pytest.approx(exact["bic"], rel=0.01)  # on every point
    # blocks of rows label and score the same as one block
    one, info1 = methods.gmm_sampled(X, 8, "diag", 100, 0, sample=600, block=len(X))
    assert np.array_equal(one, labels) and info1["bic"] == pytest.approx(info["bic"], rel=1e-12)


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_gmm_start_from_labels_is_scikit_learns_kmeans_start(covariance_type):
    from sklearn.mixture._gaussian_mixture import _estimate_gaussian_parameters

    X, _ = _blobs(300, k=4, dim=3)
    X = X.astype(np.float64)
    labels = np.arange(300) % 4
    init = methods.gmm_init_from_labels(X, labels, 4, covariance_type, 1e-6)
    resp = np.eye(4)[labels]
    weights, means, cov = _estimate_gaussian_parameters(X, resp, 1e-6, covariance_type)
    np.testing.assert_allclose(init["weights_init"], weights / 300)
    np.testing.assert_allclose(init["means_init"], means)
    prec = 1 / cov if covariance_type in ("diag", "spherical") else np.linalg.inv(cov)
    np.testing.assert_allclose(init["precisions_init"], prec, rtol=1e-8)


def test_the_stage_records_and_logs_the_sample_route(blobs, caplog):  # noqa: F811
    X, y, params = blobs
    params["kmeans"]["max_exact_n"] = 60
    params["gmm"]["max_exact_n"] = 60
    with caplog.at_level(logging.WARNING, logger="clusterlens.cluster"):
        out = run_point("kmeans", 3, params)["k3"]
        gmm = run_point("gmm", 3, params)["k3"]
    point = json.load(open("data/clusters/kmeans/k3.json"))
    assert point["route"] == out["route"] == gmm["route"] == "sample"
    assert point["sample"] == 120 and point["engine"] == "faiss"  # 40 x K = 120: every point
    assert out["ari"] == pytest.approx(1.0) and gmm["ari"] == pytest.approx(1.0)
    assert any("kmeans.max_exact_n" in r.getMessage() for r in caplog.records)
    assert any("gmm.max_exact_n" in r.getMessage() for r in caplog.records)
    for section, bad in (("kmeans", 1), ("gmm", "many")):
        with pytest.raises(ParamError, match=f"{section}.max_exact_n"):
            run_point(section, 3, {**params, section: {**params[section], "max_exact_n": bad}})


def test_nmf_sampled_reads_blocks_of_a_memory_map_and_recovers_the_parts(parts,  # noqa: F811
                                                                         tmp_path):
    X, y, params = parts
    exact, full = nmf.fit_nmf(X, 3, 400, 0)
    save_npy(tmp_path / "x.npy", X)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    W, info = nmf.fit_nmf_sampled(mm, 3, 400, 0, sample=45, block=16)
    W2, _ = nmf.fit_nmf_sampled(X, 3, 400, 0, sample=45, block=16)
    assert np.array_equal(W, W2) and W.shape == (90, 3) and W.dtype == np.float32
    assert info["route"] == "sample" and info["sample"] == 45
    assert info["reconstruction_error"] <= 1.2 * full["reconstruction_error"]
    from sklearn.cluster import KMeans

    assert adjusted_rand_score(y, KMeans(3, n_init=5, random_state=0).fit(W).labels_) == 1.0
    # a shifted column: the shift is applied to the sample and to every block alike
    shifted = X.copy()
    shifted[:, 0] -= 5.0
    shift = nmf.column_shift(shifted)
    assert shift[0] == pytest.approx(shifted[:, 0].min()) and not shift[1:].any()
    W3, _ = nmf.fit_nmf_sampled(shifted, 3, 400, 0, sample=45, shift=shift, block=16)
    np.testing.assert_allclose(W3, W, rtol=1e-3, atol=1e-4)


def test_nmf_stage_above_the_switch(parts, caplog):  # noqa: F811
    X, y, params = parts
    params["nmf"]["max_exact_n"] = 50
    with caplog.at_level(logging.WARNING, logger="clusterlens.nmf"):
        out = nmf_stage.run(parse_stage(params, nmf_stage.Params))
    assert out["route"] == "sample" and out["sample"] == 50
    assert any("nmf.max_exact_n" in r.getMessage() for r in caplog.records)
    assert np.load("data/nmf.npz")["W"].shape == (90, 3)


def test_sample_size_rule():
    assert kmeans_engines.sample_size(10**6, 2000, 20_000) == 80_000
    assert kmeans_engines.sample_size(10**6, 100, 20_000) == 20_000
    assert kmeans_engines.sample_size(30_000, 1000, 20_000) == 30_000
