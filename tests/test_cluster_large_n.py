"""The large-N settings in the grid stages: kmeans.engine and agglomerative.route."""
import json

import numpy as np
import pytest

from clusterlens.clustering import selection
from clusterlens.config.base import parse_stage
from clusterlens.core import sampling
from clusterlens.core.errors import ParamError
from stages import clustering
from tests.conftest import run_point
from tests.test_cluster import blobs  # noqa: F401 - the fixture


def test_faiss_engine_in_the_kmeans_stage(blobs):  # noqa: F811
    pytest.importorskip("faiss")
    X, y, params = blobs
    sk = run_point("kmeans", 3, params)["k3"]
    params["kmeans"]["engine"] = "faiss"
    fa = run_point("kmeans", 3, params)["k3"]
    assert fa["engine"] == "faiss" and fa["inertia"] <= sk["inertia"] * 1.01
    assert fa["ari"] == pytest.approx(1.0)
    params["kmeans"]["engine"] = "spark"
    with pytest.raises(ParamError, match="kmeans.engine"):
        run_point("kmeans", 3, params)


def test_two_step_route_is_recorded_and_its_files_survive_the_aggregate(blobs):  # noqa: F811
    X, y, params = blobs
    params["agglomerative"].update(route="two_step", n_centroids=20)
    out = run_point("agglomerative", "ward", params)
    point = json.load(open("data/clusters/agglomerative/ward/k3.json"))
    assert point["route"] == "two_step" and point["cells"] <= 20
    assert point["route_reason"] == "requested" and out["ward_k3"]["ari"] == pytest.approx(1.0)
    cells = np.load("data/clusters/agglomerative/ward/cells.npy")
    assert cells.shape == (120,) and cells.max() < 20
    assert np.load("data/clusters/agglomerative/ward/tree.npy").shape[0] == point["cells"] - 1
    grid = clustering.grid_points(parse_stage({**params, "agglomerative": {
        **params["agglomerative"], "linkage": ["ward"]}}, clustering.Params))
    assert "agglomerative/ward/cells.npy" not in selection.prune_stale(grid, "data/clusters")
    # auto keeps the exact tree for small N, and says so
    params["agglomerative"]["route"] = "auto"
    run_point("agglomerative", "single", params)
    point = json.load(open("data/clusters/agglomerative/single/k3.json"))
    assert point["route"] == "exact" and point["route_reason"].startswith("auto: N = 120")


# --------------------------------------------------------------------------- density methods
def _blobs(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-20, 20, size=(6, 8))
    X = centres[rng.integers(0, 6, n)] + rng.normal(size=(n, 8))
    X[: n // 50] = rng.uniform(-30, 30, size=(n // 50, 8))  # scattered noise
    return X


def test_density_methods_below_the_switch_are_unchanged():
    from clusterlens.clustering import methods

    X = _blobs(1200)
    full, extra = methods.run_dbscan(X, 25, 10)
    point = methods.dbscan_point(X, 25, 0, min_samples=10, max_exact_n=1200)
    (labels, info), = point.points.values()
    assert np.array_equal(labels, full) and info == {"eps_percentile": 25.0, **extra}
    full, _ = methods.run_hdbscan(X, 25, None)
    (labels, info), = methods.hdbscan_point(X, 25, 0, min_samples=None,
                                            max_exact_n=5000).points.values()
    assert np.array_equal(labels, full) and info == {"min_cluster_size": 25}


def test_density_methods_above_the_switch_run_on_a_sample_and_assign_the_rest():
    from sklearn.metrics import adjusted_rand_score

    from clusterlens.clustering import methods

    X = _blobs(6000)
    full, _ = methods.run_dbscan(X, 50, 10)
    (labels, info), = methods.dbscan_point(X, 50, 3, min_samples=10,
                                           max_exact_n=1500).points.values()
    assert info["route"] == "sample" and info["sample"] == 1500 and info["eps"] > 0
    assert labels.dtype == np.int64 and len(labels) == len(X)
    # the same six clusters; the points both call clustered are grouped alike; the noise share
    # differs a little (eps from the sparser sample)
    assert len(set(labels) - {-1}) == len(set(full) - {-1}) == 6
    both = (labels >= 0) & (full >= 0)
    assert both.mean() > 0.75 and adjusted_rand_score(full[both], labels[both]) >= 0.99
    assert abs((labels < 0).mean() - (full < 0).mean()) < 0.05
    (again, _), = methods.dbscan_point(X, 50, 3, min_samples=10,
                                       max_exact_n=1500).points.values()
    assert np.array_equal(again, labels)  # seeded
    full, _ = methods.run_hdbscan(X, 25, None)
    (labels, info), = methods.hdbscan_point(X, 25, 3, min_samples=None,
                                            max_exact_n=1500).points.values()
    assert info == {"min_cluster_size": 25, "route": "sample", "sample": 1500}
    assert adjusted_rand_score(full, labels) >= 0.9
    # a point outside the sample takes its nearest sampled point's label, or is noise when
    # farther than that point's core distance: the scattered points stay noise
    from clusterlens.clustering import density

    rows = sampling.sample_rows(len(X), 1500, 3)
    rest = np.setdiff1d(np.arange(len(X)), rows)
    _, idx = density.nearest(X[rows], X, rest)
    same = labels[rest] == labels[rows][idx]
    assert same.mean() > 0.9 and (labels[rest][~same] == -1).all()
    scattered = np.arange(len(X)) < len(X) // 50
    assert (labels[scattered] == -1).mean() >= 0.8 * (full[scattered] == -1).mean()
