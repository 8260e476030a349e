import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

from clusterlens.clustering.reduction import (
    check_n_components,
    fit_pca,
    fix_signs,
    plane_coords,
    reduce_metrics,
    variance_curve,
)
from clusterlens.config.base import parse_section, parse_stage
from clusterlens.config.reduce import ReduceParams
from clusterlens.core.errors import ParamError
from clusterlens.core.io import save_npy, write_table
from clusterlens.core.numerics import pin_applies
from stages.reduce import Params, run
from tests.code_deps import PROJECT


def _data(n=300, d=40, seed=0):
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 5)) * [10, 6, 4, 2, 1]
    X = latent @ rng.normal(size=(5, d)) + rng.normal(0, 0.3, (n, d))
    return (X * rng.uniform(0.1, 50, d)).astype(np.float32)


def _match_up_to_sign(a, b):
    signs = np.sign((a * b).sum(axis=0))
    np.testing.assert_allclose(a, b * signs, rtol=1e-3, atol=1e-3)


def test_pca_equals_sklearn_standardize_then_pca():
    X = _data()
    res = fit_pca(X, 7, standardize=True)
    ref = PCA(7).fit(StandardScaler().fit_transform(X.astype(np.float64)))
    _match_up_to_sign(res.scores, ref.transform(StandardScaler().fit_transform(X)))
    np.testing.assert_allclose(res.explained_variance_ratio[:7], ref.explained_variance_ratio_,
                               rtol=1e-6)
    assert res.scores.dtype == np.float32 and res.scores.shape == (300, 7)
    assert res.cumulative[-1] == pytest.approx(1.0)


def test_variance_fraction_keeps_the_fewest_components_reaching_it():
    X = _data()
    res = fit_pca(X, 0.9)
    cum = res.cumulative
    assert cum[res.n_components - 1] >= 0.9 > cum[res.n_components - 2]
    assert res.scores.shape[1] == res.n_components


def test_without_standardize_large_features_dominate():
    X = _data()
    raw = fit_pca(X, 2, standardize=False)
    ref = PCA(2).fit(X.astype(np.float64))
    _match_up_to_sign(raw.scores, ref.transform(X))


def test_metrics_report_variance_at_fixed_counts():
    X = _data(d=40)
    res = fit_pca(X, 10)
    m = reduce_metrics(res, 40)
    assert m["variance_at_2"] < m["variance_at_10"] <= m["variance_at_50"]
    assert m["variance_at_50"] == pytest.approx(1.0) == m["variance_at_100"]  # 40 dims
    assert m["variance_retained"] == m["variance_at_10"]


@pytest.mark.parametrize("bad", [0, 41, 1.5, 0.0, "half", True, None])
def test_invalid_n_components_is_refused(bad):
    with pytest.raises(ValueError):
        check_n_components(bad, 300, 40)
    with pytest.raises(ValueError):
        fit_pca(_data(), bad)


@pytest.mark.parametrize("bad", [0, 1.5, 0.0, "half", True, None])
def test_invalid_n_components_names_the_key(bad):
    with pytest.raises(ParamError, match="reduce.n_components"):
        parse_section({"reduce": {"standardize": True, "n_components": bad}}, "reduce",
                      ReduceParams)


def test_unknown_reduce_key_gets_a_hint():
    with pytest.raises(ParamError, match="did you mean `reduce.standardize`"):
        parse_section({"reduce": {"standardise": True, "n_components": 2}}, "reduce",
                      ReduceParams)


def test_plane_coords_and_variance_curve():
    X = _data()
    res = fit_pca(X, 1)
    coords = plane_coords(X, res)
    assert coords.shape == (300, 2) and coords.flags.c_contiguous
    np.testing.assert_array_equal(coords, fit_pca(X, 2).scores)
    two = fit_pca(X, 3)
    np.testing.assert_array_equal(plane_coords(X, two), two.scores[:, :2])
    curve = variance_curve(res)
    assert list(curve.columns) == ["component", "explained_variance", "cumulative_variance"]
    assert len(curve) == 40 and curve["component"].iloc[-1] == 40


def test_component_signs_are_fixed():
    X = _data()
    res = fit_pca(X, 7)
    comp = res.components
    pivot = comp[np.arange(7), np.abs(comp).argmax(axis=1)]
    assert (pivot > 0).all()
    flipped = comp * np.array([1, -1, 1, -1, -1, 1, -1])[:, None]
    np.testing.assert_array_equal(fix_signs(flipped), comp)
    assert fix_signs(np.array([[0.5, -0.5]]))[0, 0] == 0.5  # a tie: the first entry decides


KERNEL_CHILD = """
import hashlib, sys, numpy as np, threadpoolctl
from clusterlens.clustering.reduction import fit_pca
X = np.load(sys.argv[1])
res = fit_pca(X, 10)
h = lambda a: hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()
arch = {i.get("architecture") for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"}
print(",".join(sorted(map(str, arch))), h(res.scores), h(res.components))
"""


@pytest.mark.skipif(not pin_applies(), reason="OpenBLAS kernel choice on x86-64 with AVX2")
def test_float32_scores_are_the_same_under_every_blas_kernel(tmp_path):
    # The float64 computation differs in the last bits between OpenBLAS' kernels (and thread
    # counts); the float32 scores, rounded once at the end, come out byte-identical.
    rng = np.random.default_rng(0)
    latent = rng.normal(size=(400, 8)) * np.geomspace(10, 0.5, 8)
    X = latent @ rng.normal(size=(8, 64)) + rng.normal(0, 0.3, (400, 64))
    np.save(tmp_path / "X.npy", (X * rng.uniform(0.1, 50, 64)).astype(np.float32))
    runs = {}
    for core, threads in [("Haswell", "2"), ("Prescott", "1")]:
        env = {**os.environ, "OPENBLAS_CORETYPE": core, "OPENBLAS_NUM_THREADS": threads}
        out = subprocess.run([sys.executable, "-c", KERNEL_CHILD, str(tmp_path / "X.npy")],
                             cwd=PROJECT, env=env, check=True, capture_output=True, text=True,
                             timeout=120).stdout.split()
        runs[core] = out
    if len({arch for arch, _, _ in runs.values()}) < 2:
        pytest.skip("this OpenBLAS does not switch kernels with OPENBLAS_CORETYPE")
    assert len({comp for _, _, comp in runs.values()}) == 2  # float64 differs by kernel
    assert len({scores for _, scores, _ in runs.values()}) == 1  # float32 does not


def test_pca_is_deterministic():
    X = _data()
    a, b = fit_pca(X, 5, seed=1), fit_pca(X, 5, seed=1)
    np.testing.assert_array_equal(a.scores, b.scores)


def test_run_writes_outputs(in_tmp_cwd):
    X = _data(n=120, d=30)
    save_npy("data/features.npy", X)
    write_table("data/index.parquet",
                pd.DataFrame({"path": [f"c{i % 3}/{i}.png" for i in range(120)],
                              "class": [f"c{i % 3}" for i in range(120)],
                              "label": [i % 3 for i in range(120)]}))
    params = {"seed": 0, "reduce": {"standardize": True, "n_components": 8}}
    metrics = run(parse_stage(params, Params))
    assert np.load("data/pca.npy").shape == (120, 8)
    assert np.load("data/pca_2d.npy").shape == (120, 2)
    np.testing.assert_array_equal(np.load("data/pca_2d.npy"), np.load("data/pca.npy")[:, :2])
    model = np.load("data/pca_model.npz", allow_pickle=False)
    assert model["components"].shape == (8, 30)
    assert json.loads(open("metrics/reduce.json").read()) == metrics
    curve = pd.read_csv("plots/reduce/explained_variance.csv")
    assert list(curve.columns) == ["component", "explained_variance", "cumulative_variance"]
    assert len(curve) == 30 and curve["cumulative_variance"].is_monotonic_increasing
    for png in ["plots/reduce/pca_2d.png", "plots/reduce/explained_variance.png"]:
        assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ParamError, match="reduce.n_components.*min\\(120, 30\\)"):
        run(parse_stage({**params, "reduce": {"standardize": True, "n_components": 31}}, Params))
    save_npy("data/features.npy", X[:100])
    with pytest.raises(ValueError, match="100 rows"):
        run(parse_stage(params, Params))


def test_blocked_route_matches_the_exact_pca_and_is_the_same_from_a_memory_map(tmp_path):
    X = _data(n=500, d=20)
    for standardize in (True, False):
        exact = fit_pca(X, 6, standardize)
        assert exact.route == "exact"
        blocked = fit_pca(X, 6, standardize, max_exact_n=499, block_rows=64)
        assert blocked.route == "blocked" and blocked.n_components == 6
        np.testing.assert_allclose(blocked.scores, exact.scores, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(blocked.explained_variance_ratio, exact.explained_variance_ratio,
                                   atol=1e-12)
        np.testing.assert_allclose(blocked.components, exact.components, atol=1e-9)
        np.testing.assert_allclose(blocked.scaler_scale, exact.scaler_scale, rtol=1e-12)
    np.save(tmp_path / "X.npy", X)
    mapped = fit_pca(np.load(tmp_path / "X.npy", mmap_mode="r"), 0.9, max_exact_n=10, block_rows=64)
    in_memory = fit_pca(X, 0.9, max_exact_n=10, block_rows=64)
    assert mapped.n_components == in_memory.n_components == fit_pca(X, 0.9).n_components
    np.testing.assert_array_equal(mapped.scores, in_memory.scores)


def test_stage_below_the_switch_is_the_exact_pca_and_above_records_the_blocked_route(in_tmp_cwd):
    X = _data(n=120, d=30)
    save_npy("data/features.npy", X)
    write_table("data/index.parquet",
                pd.DataFrame({"path": [f"c{i % 3}/{i}.png" for i in range(120)],
                              "class": [f"c{i % 3}" for i in range(120)],
                              "label": [i % 3 for i in range(120)]}))
    params = {"seed": 0, "reduce": {"standardize": True, "n_components": 8}}  # max_exact_n 100,000
    metrics = run(parse_stage(params, Params))
    assert "route" not in metrics
    assert np.load("data/pca.npy").tobytes() == fit_pca(X, 8).scores.tobytes()
    exact = np.load("data/pca.npy")
    params = {**params, "reduce": {**params["reduce"], "max_exact_n": 100},
              "large_n": {"mmap_threshold_mb": 0}}  # memory-mapped input
    metrics = run(parse_stage(params, Params))
    assert metrics["route"] == "blocked" and metrics["n_components"] == 8
    np.testing.assert_allclose(np.load("data/pca.npy"), exact, rtol=1e-4, atol=1e-4)
    with pytest.raises(ParamError, match="reduce.max_exact_n"):
        parse_stage({**params, "reduce": {**params["reduce"], "max_exact_n": 0}}, Params)
