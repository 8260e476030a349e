"""Large-N clustering (clusterlens.clustering.kmeans_engines and .two_step,
clusterlens.core.io.load_features): faiss K-Means engine, memory-mapped features, the
two-step agglomerative route and its route choice. Generated data only; about 10 s."""
import logging

import fastcluster
import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score
from threadpoolctl import threadpool_limits

from clusterlens.clustering import kmeans_engines, two_step
from clusterlens.clustering.methods import cut_tree_at, linkage_tree
from clusterlens.config.agglomerative import AgglomerativeParams
from clusterlens.config.base import parse_section
from clusterlens.config.kmeans import KMeansParams
from clusterlens.config.large_n import LargeNParams
from clusterlens.core.errors import DataError, ParamError
from clusterlens.core.io import load_features

needs_faiss = pytest.mark.skipif(not kmeans_engines.faiss_available(),
                                 reason="faiss not installed (pip install faiss-cpu)")


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(3000, n_features=16, centers=8, cluster_std=1.0, random_state=0)
    return X.astype(np.float32), y


@pytest.fixture(scope="module")
def separated():
    """5 far-apart blobs of 400 points in 10-D (between-centre distance >> spread)."""
    rng = np.random.default_rng(1)
    centers = rng.normal(0, 30, (5, 10))
    y = np.repeat(np.arange(5), 400)
    X = centers[y] + rng.normal(0, 1.0, (len(y), 10))
    perm = rng.permutation(len(y))
    return X[perm].astype(np.float32), y[perm]


# --------------------------------------------------------------------------- K-Means engines
@needs_faiss
def test_faiss_objective_within_1pct_of_sklearn(blobs):
    X, y = blobs
    labels_f, info_f = kmeans_engines.kmeans_faiss(X, 8, n_init=3, max_iter=100, seed=0)
    _, info_s = kmeans_engines.kmeans_sklearn(X, 8, n_init=3, max_iter=100, seed=0)
    assert info_f["inertia"] <= 1.01 * info_s["inertia"]
    assert adjusted_rand_score(y, labels_f) > 0.99
    assert labels_f.dtype == np.int64 and labels_f.shape == (len(X),)
    assert set(np.unique(labels_f)) == set(range(8))


@needs_faiss
def test_inertia_is_sklearns_definition(blobs):
    X, _ = blobs
    labels, info = kmeans_engines.kmeans_sklearn(X, 5, n_init=2, max_iter=50, seed=3)
    ref = KMeans(5, n_init=2, max_iter=50, random_state=3).fit(X)
    np.testing.assert_array_equal(labels, ref.labels_)
    assert info["inertia"] == pytest.approx(ref.inertia_, rel=1e-5)
    assert info["iterations"] == ref.n_iter_
    # faiss: the float64 sum of squared distances to the assigned centroid, recomputed by hand
    labels_f, info_f = kmeans_engines.kmeans_faiss(X, 5, n_init=2, max_iter=50, seed=3, return_centroids=True)
    assert "centroids" not in kmeans_engines.kmeans_faiss(X, 5, n_init=1, max_iter=5, seed=3)[1]  # JSON-ready
    C = info_f["centroids"].astype(np.float64)
    by_hand = float(((X.astype(np.float64) - C[labels_f]) ** 2).sum())
    assert info_f["inertia"] == pytest.approx(by_hand, rel=1e-12)
    assert info_f["inertia"] == min(info_f["run_inertias"]) and len(info_f["run_inertias"]) == 2
    # every label is the nearest centroid
    d2 = ((X[:, None, :].astype(np.float64) - C[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(labels_f, d2.argmin(1))
    assert 1 <= info_f["iterations"] <= 50 and info_f["device"] == "cpu"


@needs_faiss
def test_faiss_deterministic_for_a_seed_and_across_threads(blobs):
    import faiss

    X, _ = blobs
    a, ia = kmeans_engines.kmeans_faiss(X, 12, n_init=2, max_iter=30, seed=7)
    b, ib = kmeans_engines.kmeans_faiss(X, 12, n_init=2, max_iter=30, seed=7)
    np.testing.assert_array_equal(a, b)
    assert ia["inertia"] == ib["inertia"]
    with threadpool_limits(1):  # the cluster stage's setting: reaches faiss' own libgomp
        assert faiss.omp_get_max_threads() == 1
        c, ic = kmeans_engines.kmeans_faiss(X, 12, n_init=2, max_iter=30, seed=7)
    np.testing.assert_array_equal(a, c)
    assert ic["inertia"] == pytest.approx(ia["inertia"], rel=1e-12)
    d, _ = kmeans_engines.kmeans_faiss(X, 12, n_init=2, max_iter=30, seed=8)
    assert not np.array_equal(a, d)  # the seed matters (12 clusters on 8 blobs: ambiguous)


@needs_faiss
def test_faiss_takes_a_memmap_without_copying(tmp_path, blobs):
    X, _ = blobs
    np.save(tmp_path / "f.npy", X)
    mm = load_features(tmp_path / "f.npy", 0)
    assert isinstance(mm, np.memmap)
    assert np.shares_memory(kmeans_engines._as_float32(mm), mm)
    np.testing.assert_array_equal(kmeans_engines.kmeans_faiss(mm, 8, 1, 20, 0)[0],
                                  kmeans_engines.kmeans_faiss(X, 8, 1, 20, 0)[0])


def test_engine_dispatch(blobs, monkeypatch):
    X, _ = blobs
    lab, info = kmeans_engines.run_kmeans_engine("sklearn", X, 4, 1, 20, 0)
    np.testing.assert_array_equal(lab, kmeans_engines.kmeans_sklearn(X, 4, 1, 20, 0)[0])
    assert info["engine"] == "sklearn"
    if kmeans_engines.faiss_available():
        lab, info = kmeans_engines.run_kmeans_engine("faiss", X, 4, 1, 20, 0)
        np.testing.assert_array_equal(lab, kmeans_engines.kmeans_faiss(X, 4, 1, 20, 0)[0])
        assert info["engine"] == "faiss"
    with pytest.raises(ParamError, match=r"`kmeans.engine` must be one of sklearn, faiss"):
        kmeans_engines.run_kmeans_engine("cuml", X, 4, 1, 20, 0)
    monkeypatch.setattr(kmeans_engines, "faiss_available", lambda: False)
    with pytest.raises(ParamError, match=r"`kmeans.engine` = faiss.*pip install faiss-cpu"):
        kmeans_engines.run_kmeans_engine("faiss", X, 4, 1, 20, 0)
    with pytest.raises(ParamError, match="kmeans.engine"):
        two_step.two_step_agglomerative(X, "ward", [3], 50, 0, engine="faiss")


# --------------------------------------------------------------------------- memory maps
def test_load_features_memmaps_above_threshold(tmp_path):
    X = np.random.default_rng(0).normal(size=(500, 20)).astype(np.float32)  # 40,000 bytes
    path = tmp_path / "features.npy"
    np.save(path, X)
    size = path.stat().st_size
    big = load_features(path, size - 1)
    assert isinstance(big, np.memmap) and big.mode == "r"
    np.testing.assert_array_equal(big, X)
    with pytest.raises(ValueError):
        big[0, 0] = 1.0  # read-only: the features file cannot be changed by accident
    for threshold in (size, None):
        small = load_features(path, threshold)
        assert not isinstance(small, np.memmap)
        np.testing.assert_array_equal(small, X)
    with pytest.raises(ValueError):
        load_features(path, -1)
    with pytest.raises(FileNotFoundError):
        load_features(tmp_path / "missing.npy", 0)


# --------------------------------------------------------------------------- weighted linkage
@pytest.mark.parametrize("method", two_step.LINKAGES)
def test_weighted_linkage_with_unit_weights_is_fastclusters_tree(method):
    X = np.random.default_rng(2).normal(size=(250, 6))
    Z = two_step.weighted_linkage(X, np.ones(len(X)), method)
    ref = fastcluster.linkage(X, method=method, metric="euclidean")
    np.testing.assert_array_equal(Z[:, [0, 1, 3]], ref[:, [0, 1, 3]])
    np.testing.assert_allclose(Z[:, 2], ref[:, 2], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("method", two_step.LINKAGES)
def test_weighted_linkage_equals_the_tree_of_the_repeated_points(method):
    """A leaf of weight w is w points at the same place: the tree above those duplicates (whose
    own merges happen at height 0) has the weighted tree's heights."""
    rng = np.random.default_rng(3)
    P = rng.normal(size=(40, 3))
    w = rng.integers(1, 6, len(P))
    Z = two_step.weighted_linkage(P, w, method)
    ref = fastcluster.linkage(np.repeat(P, w, axis=0), method=method, metric="euclidean")
    np.testing.assert_allclose(Z[:, 2], ref[-(len(P) - 1):, 2], rtol=1e-9)
    if method in ("single", "complete"):  # sizes do not enter these linkages
        np.testing.assert_array_equal(Z, two_step.weighted_linkage(P, np.ones(len(P)), method))
    else:
        assert not np.allclose(Z[:, 2], two_step.weighted_linkage(P, np.ones(len(P)), method)[:, 2])


def test_spread_makes_leaf_distances_the_rms_of_their_points_distances():
    rng = np.random.default_rng(5)
    A, B = rng.normal(0, 1, (7, 4)), rng.normal(3, 2, (4, 4))
    means = np.stack([A.mean(0), B.mean(0)])
    spread = [((A - A.mean(0)) ** 2).sum(1).mean(), ((B - B.mean(0)) ** 2).sum(1).mean()]
    rms = np.sqrt((((A[:, None] - B[None]) ** 2).sum(-1)).mean())
    for method in ("average", "complete", "single"):
        Z = two_step.weighted_linkage(means, [7, 4], method, spread)
        assert Z[0, 2] == pytest.approx(rms, rel=1e-12)
    # ward: the merge cost from means and sizes alone is already exact (spread is not used)
    Z = two_step.weighted_linkage(means, [7, 4], "ward", spread)
    both = np.concatenate([A, B])
    def ss(P):
        return ((P - P.mean(0)) ** 2).sum()

    assert Z[0, 2] == pytest.approx(np.sqrt(2 * (ss(both) - ss(A) - ss(B))), rel=1e-12)
    with pytest.raises(ValueError):
        two_step.weighted_linkage(means, [7, 4], "average", [1.0, -1.0])


@needs_faiss
def test_cell_spread_matters_for_average_linkage_in_high_dimension():
    """Noisy 128-D blobs: means of small cells sit closer to everything than their points do,
    and average linkage over plain means lumps almost everything together."""
    rng = np.random.default_rng(0)
    y = rng.permutation(np.arange(2000) % 10)
    X = (0.5 * rng.normal(size=(10, 128))[y] + rng.normal(size=(2000, 128))).astype(np.float32)
    with_spread = two_step.two_step_agglomerative(X, "average", [10], 300, seed=0, engine="faiss")[10]
    plain = two_step.two_step_agglomerative(X, "average", [10], 300, seed=0, engine="faiss",
                                      cell_spread=False)[10]
    assert adjusted_rand_score(y, with_spread) > 0.8
    assert adjusted_rand_score(y, plain) < 0.1


# --------------------------------------------------------------------------- two-step route
@pytest.mark.parametrize("linkage,engine", [
    pytest.param("ward", "faiss", marks=needs_faiss), ("ward", "sklearn"),
    pytest.param("single", "faiss", marks=needs_faiss), ("single", "sklearn")])
def test_two_step_recovers_separated_blobs(separated, linkage, engine):
    X, y = separated
    out = two_step.two_step_agglomerative(X, linkage, [5, 3], n_centroids=60, seed=0, engine=engine)
    assert sorted(out) == [3, 5]
    assert adjusted_rand_score(y, out[5]) == 1.0
    assert len(np.unique(out[3])) == 3
    # K=3 merges whole blobs: every blob stays within one cluster
    assert all(len(np.unique(out[3][y == c])) == 1 for c in range(5))
    assert out[5][0] == 0 and out[5].dtype == np.int64  # numbered by first point


@pytest.mark.parametrize("linkage", two_step.LINKAGES)
def test_two_step_with_a_cell_per_point_is_the_exact_tree(linkage):
    X = np.random.default_rng(4).normal(size=(300, 5)).astype(np.float32)
    ks = [2, 5, 9]
    res = two_step.two_step_tree(X, linkage, n_centroids=len(X), seed=0)
    assert res.info["cells"] == len(X) and "skipped" in res.info["kmeans"]
    exact = cut_tree_at(linkage_tree(X, linkage), ks)
    two = two_step.two_step_agglomerative(X, linkage, ks, n_centroids=len(X) + 10, seed=0)
    for k in ks:
        np.testing.assert_array_equal(two[k], exact[k])


@needs_faiss
def test_two_step_ward_with_many_cells_is_close_to_exact(blobs):
    X, _ = blobs
    exact = cut_tree_at(linkage_tree(X, "ward"), [8])[8]
    res = two_step.two_step_tree(X, "ward", n_centroids=300, seed=0, engine="faiss")
    two = two_step.cut_two_step(res, [8])[8]
    assert adjusted_rand_score(exact, two) > 0.98
    assert res.info["cells"] <= 300 and res.sizes.sum() == len(X)
    # cell means are the means of their points; within-cell SS is the reported figure
    np.testing.assert_allclose(res.centroids[res.assign[0]],
                               X[res.assign == res.assign[0]].astype(np.float64).mean(0))
    assert res.info["within_cell_ss"] == pytest.approx(
        kmeans_engines.kmeans_inertia(X, res.assign, res.centroids))


@needs_faiss
def test_two_step_is_deterministic_and_reads_memmaps(tmp_path, separated):
    X, _ = separated
    np.save(tmp_path / "x.npy", X)
    mm = load_features(tmp_path / "x.npy", 0)
    a = two_step.two_step_agglomerative(X, "average", [4], 80, seed=5, engine="faiss",
                                  points_per_centroid=10)
    b = two_step.two_step_agglomerative(mm, "average", [4], 80, seed=5, engine="faiss",
                                  points_per_centroid=10)
    np.testing.assert_array_equal(a[4], b[4])


def test_two_step_param_errors(separated):
    X, _ = separated
    with pytest.raises(ParamError, match=r"`agglomerative.k` values \[80\] exceed"):
        two_step.two_step_agglomerative(X, "ward", [5, 80], n_centroids=50, seed=0)
    with pytest.raises(ParamError, match="agglomerative.n_centroids"):
        two_step.two_step_agglomerative(X, "ward", [5], n_centroids=two_step.MAX_CENTROIDS + 1, seed=0)
    with pytest.raises(ParamError, match="agglomerative.linkage"):
        two_step.two_step_agglomerative(X, "centroid", [5], n_centroids=50, seed=0)
    res = two_step.two_step_tree(X[:100], "ward", n_centroids=10, seed=0)
    with pytest.raises(DataError, match="raise agglomerative.n_centroids"):
        two_step.cut_two_step(res, [res.info["cells"] + 1])


# --------------------------------------------------------------------------- route choice
GIB = 2**30


def test_route_auto_thresholds_per_linkage(caplog):
    mem = 24 * GIB
    for linkage, limit in two_step.DEFAULT_MAX_EXACT_N.items():
        with caplog.at_level(logging.INFO, logger="clusterlens.clustering.two_step"):
            caplog.clear()
            below = two_step.choose_agglomerative_route(limit, linkage, "auto", memory_bytes=mem)
            assert below["route"] == "exact" and "auto" in below["reason"]
            caplog.clear()
            above = two_step.choose_agglomerative_route(limit + 1, linkage, "auto", memory_bytes=mem)
        assert above["route"] == "two_step" and "max_exact_n" in above["reason"]
        # never silent: the switch is a warning naming the route and why
        assert any(r.levelno == logging.WARNING and "two_step" in r.getMessage()
                   for r in caplog.records)
    # 10^5 images take the two-step route with every linkage (ward's exact tree: ~7 minutes)
    assert max(two_step.DEFAULT_MAX_EXACT_N.values()) < 100_000


def test_route_max_exact_n_forms():
    mem = 24 * GIB
    r = two_step.choose_agglomerative_route(5_000, "ward", "auto", 1_000, memory_bytes=mem)
    assert r["route"] == "two_step" and r["max_exact_n"] == 1_000
    r = two_step.choose_agglomerative_route(5_000, "ward", "auto", {"complete": 10}, memory_bytes=mem)
    assert r["route"] == "exact" and r["max_exact_n"] == two_step.DEFAULT_MAX_EXACT_N["ward"]
    assert two_step.choose_agglomerative_route(5_000, "complete", "auto", {"complete": 10},
                                         memory_bytes=mem)["route"] == "two_step"
    with pytest.raises(ParamError, match="agglomerative.max_exact_n"):
        two_step.choose_agglomerative_route(10, "ward", "auto", {"centroid": 5})
    with pytest.raises(ParamError, match="agglomerative.max_exact_n"):
        two_step.choose_agglomerative_route(10, "ward", "auto", "many")


def test_route_auto_also_respects_memory():
    # a generous max_exact_n cannot make auto choose a tree that does not fit
    r = two_step.choose_agglomerative_route(60_000, "average", "auto", 10**6, memory_bytes=24 * GIB)
    assert r["route"] == "two_step" and "GiB" in r["reason"]


def test_route_exact_refuses_what_does_not_fit():
    with pytest.raises(ParamError) as err:
        two_step.choose_agglomerative_route(100_000, "complete", "exact", memory_bytes=24 * GIB)
    msg = str(err.value)
    assert "`agglomerative.route` = exact" in msg and "74.5 GiB" in msg and "two_step" in msg
    # ward's vector routine is O(N) memory: allowed (with a warning) far above max_exact_n
    r = two_step.choose_agglomerative_route(1_000_000, "ward", "exact", memory_bytes=24 * GIB)
    assert r["route"] == "exact" and r["exact_peak_bytes"] < GIB
    assert two_step.choose_agglomerative_route(40_000, "complete", "exact",
                                         memory_bytes=24 * GIB)["route"] == "exact"


def test_route_two_step_and_bad_values():
    r = two_step.choose_agglomerative_route(100, "single", "two_step")
    assert r["route"] == "two_step" and r["reason"] == "requested"
    with pytest.raises(ParamError, match="`agglomerative.route` must be one of exact, two_step"):
        two_step.choose_agglomerative_route(100, "ward", "fast")
    with pytest.raises(ParamError, match="agglomerative.linkage"):
        two_step.choose_agglomerative_route(100, "median", "auto")


def test_large_n_params():
    """The large-N keys, their defaults and the dotted key of every bad value."""
    km = {"k": [2], "n_init": 1, "max_iter": 10}
    agg = {"linkage": ["ward"], "k": [2]}
    assert parse_section({"kmeans": km}, "kmeans", KMeansParams).engine == "sklearn"
    a = parse_section({"agglomerative": agg}, "agglomerative", AgglomerativeParams)
    assert (a.route, a.n_centroids, a.max_exact_n) == ("auto", 2000, None)
    lp = parse_section({"large_n": {}}, "large_n", LargeNParams)
    assert lp.mmap_threshold_bytes == 1024 * 2**20
    assert parse_section({"kmeans": {**km, "engine": "faiss"}}, "kmeans",
                         KMeansParams).engine == "faiss"
    a = parse_section({"agglomerative": {**agg, "route": "two_step", "n_centroids": 500,
                                         "max_exact_n": {"ward": 5000}}},
                      "agglomerative", AgglomerativeParams)
    assert a.route == "two_step" and two_step.max_exact_for("ward", a.max_exact_n) == 5000
    assert parse_section({"large_n": {"mmap_threshold_mb": None}}, "large_n",
                         LargeNParams).mmap_threshold_bytes is None
    for section, model, bad, key, match in [
            ("kmeans", KMeansParams, {**km, "engine": "gpu"}, "kmeans.engine",
             "must be one of sklearn, faiss"),
            ("agglomerative", AgglomerativeParams, {**agg, "route": "exactly"},
             "agglomerative.route", "must be one of exact, two_step, auto"),
            ("agglomerative", AgglomerativeParams, {**agg, "n_centroids": 1},
             "agglomerative.n_centroids", ">= 2"),
            ("agglomerative", AgglomerativeParams, {**agg, "n_centroids": two_step.MAX_CENTROIDS + 1},
             "agglomerative.n_centroids", "GiB"),
            ("agglomerative", AgglomerativeParams, {**agg, "max_exact_n": {"ward": 1.5}},
             "agglomerative.max_exact_n", "ward: 1.5"),
            ("agglomerative", AgglomerativeParams, {**agg, "max_exact_n": {"centroid": 5}},
             "agglomerative.max_exact_n", "unknown linkages"),
            ("large_n", LargeNParams, {"mmap_threshold_mb": -1}, "large_n.mmap_threshold_mb",
             ">= 0")]:
        with pytest.raises(ParamError, match=match) as err:
            parse_section({section: bad}, section, model)
        assert err.value.key == key


def test_config_constants_match_the_library():
    from clusterlens.config import agglomerative, kmeans

    assert kmeans.ENGINES == kmeans_engines.ENGINES
    assert agglomerative.LINKAGES == two_step.LINKAGES and agglomerative.ROUTES == two_step.ROUTES
    assert agglomerative.MAX_CENTROIDS == two_step.MAX_CENTROIDS
    assert parse_section({"agglomerative": {"linkage": ["ward"], "k": [2]}}, "agglomerative",
                         AgglomerativeParams).n_centroids == two_step.DEFAULT_N_CENTROIDS
