"""The large-N settings in the grid stages: kmeans.engine and agglomerative.route."""
import json

import numpy as np
import pytest

from clusterlens.clustering import selection
from clusterlens.config.base import parse_stage
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
