"""Grid-point stages, the clustering aggregate and the grid methods on generated features."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from clusterlens.clustering import methods as cl
from clusterlens.clustering import selection
from clusterlens.config.base import parse_stage
from clusterlens.core.errors import DataError, ParamError
from clusterlens.core.io import save_npy, write_table
from stages import clustering, nmf
from tests.conftest import run_point, write_umap


@pytest.fixture
def blobs(in_tmp_cwd):
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 10, (3, 5))
    X = np.concatenate([c + rng.normal(0, 0.5, (40, 5)) for c in centers]).astype(np.float32)
    y = np.repeat([0, 1, 2], 40)
    save_npy("data/pca.npy", X)
    write_umap()
    write_table("data/index.parquet", pd.DataFrame({"path": [f"{i}.png" for i in range(120)],
                                                    "class": [f"c{v}" for v in y], "label": y}))
    params = {"seed": 0, "metrics": {"silhouette_sample": 50},
              "kmeans": {"k": [2, 3], "n_init": 4, "max_iter": 100},
              "agglomerative": {"linkage": ["ward", "single"], "k": [2, 3]},
              "gmm": {"k": [3], "covariance_type": "diag", "max_iter": 100},
              "dbscan": {"eps_percentile": [50], "min_samples": 5},
              "hdbscan": {"min_cluster_size": [10], "min_samples": None},
              "nmf": {"k": [3], "n_components": 4, "max_iter": 300, "negative": "shift"},
              "select": {"metric": "nmi", "max_noise": 0.3}}
    return X, y, params


def test_kmeans_point_matches_sklearn(blobs):
    X, y, params = blobs
    out = run_point("kmeans", 3, params)["k3"]
    labels = np.load("data/clusters/kmeans/k3.npy")
    ref = KMeans(3, n_init=4, max_iter=100, random_state=0).fit(X)
    np.testing.assert_array_equal(labels, ref.labels_)
    assert out["inertia"] == pytest.approx(ref.inertia_, rel=1e-5)
    assert out["nmi"] == pytest.approx(normalized_mutual_info_score(y, labels), abs=1e-6)
    assert out["ari"] == pytest.approx(adjusted_rand_score(y, labels), abs=1e-6)
    assert json.load(open("data/clusters/kmeans/k3.json")) == out


def test_agglomerative_builds_one_tree_and_cuts_every_k(blobs):
    X, y, params = blobs
    out = run_point("agglomerative", "ward", params)
    assert set(out) == {"ward_k2", "ward_k3"}
    Z = np.load("data/clusters/agglomerative/ward/tree.npy")
    assert Z.shape == (119, 4)
    for k in (2, 3):
        labels = np.load(f"data/clusters/agglomerative/ward/k{k}.npy")
        assert len(np.unique(labels)) == k and labels.shape == (120,)
    assert out["ward_k3"]["ari"] == pytest.approx(1.0)


@pytest.mark.parametrize("linkage", cl.LINKAGES)
def test_cut_tree_at_gives_scipy_cut_tree_labels(linkage):
    from scipy.cluster.hierarchy import cut_tree

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 5))
    X = np.concatenate([X, X[:40]])  # exact duplicates: the first 40 merges tie at height 0
    Z = cl.linkage_tree(X, linkage)
    ks = [2, 5, 17, 100, 300]
    ref = cut_tree(Z, n_clusters=ks)
    got = cl.cut_tree_at(Z, ks + [339])
    for i, k in enumerate(ks):
        np.testing.assert_array_equal(got[k], ref[:, i])
        assert got[k].dtype == np.int64
    # A cut between merges of equal height (here 1 of the 40 at height 0) takes the tree's own
    # merge order (scipy's cut_tree may pick another of the tied merges): still K clusters.
    assert len(np.unique(got[339])) == 339


def test_density_methods_report_noise(blobs):
    _, _, params = blobs
    out = run_point("dbscan", 50.0, params)["eps_p50"]
    assert 0 <= out["noise_fraction"] <= 1 and out["eps"] > 0
    out = run_point("hdbscan", 10, params)["mcs10"]
    assert out["n_clusters"] == 3


def test_k_larger_than_images_names_the_key(blobs):
    _, _, params = blobs
    with pytest.raises(ParamError, match="kmeans.k.*larger than the number of images"):
        run_point("kmeans", 500, params)


def test_aggregate_reads_the_grid_from_params_and_selects(blobs):
    _, _, params = blobs
    for k in (2, 3):
        run_point("kmeans", k, params)
    for link in ("ward", "single"):
        run_point("agglomerative", link, params)
    run_point("gmm", 3, params)
    run_point("dbscan", 50.0, params)
    run_point("hdbscan", 10, params)
    nmf.run(parse_stage(params, nmf.Params), features_path="data/pca.npy")
    run_point("nmf", 3, params)
    run_point("kmeans", 2, {**params, "kmeans": {**params["kmeans"]}})
    save_npy("data/clusters/kmeans/k7.npy", np.zeros(120, np.int64))  # stale, not in params
    (open("data/clusters/kmeans/k7.json", "w")).write('{"nmi": 5}')
    out = clustering.run(parse_stage(params, clustering.Params))
    assert set(out["kmeans"]) == {"k2", "k3"}  # the stale k7 is ignored
    assert out["selected"]["value"] == pytest.approx(1.0)
    assert out["selected"]["metric"] == "nmi"
    table = pd.read_csv("metrics/clustering_table.csv")
    assert len(table) == 2 + 4 + 1 + 1 + 1 + 1
    assert out["nmf"]["k3"]["nmf_components"] == 4
    params["kmeans"]["k"] = [2, 3, 4]
    with pytest.raises(DataError, match="k4"):
        clustering.run(parse_stage(params, clustering.Params))


def test_selection_skips_noisy_density_points():
    results = {"kmeans": {"k3": {"nmi": 0.5, "noise_fraction": 0.0}},
               "dbscan": {"eps_p10": {"nmi": 0.9, "noise_fraction": 0.6}}}
    sel = selection.select_model(results, "nmi", 0.3)
    assert (sel["method"], sel["point"]) == ("kmeans", "k3")
    assert "dbscan/eps_p10" in sel["reason"]
    assert selection.select_model(results, "nmi", 0.7)["method"] == "dbscan"
    sel = selection.select_model({"kmeans": {"k2": {"davies_bouldin": 2.0, "noise_fraction": 0},
                                              "k3": {"davies_bouldin": 0.5,
                                                     "noise_fraction": 0}}},
                                  "davies_bouldin", 0.3)
    assert sel["point"] == "k3"  # lower is better


def test_prune_stale_keeps_exactly_the_grid(blobs):
    _, _, params = blobs
    for k in (2, 3):
        run_point("kmeans", k, params)
    run_point("agglomerative", "ward", params)
    save_npy("data/clusters/kmeans/k7.npy", np.zeros(3, np.int64))  # a removed grid point
    open("data/clusters/kmeans/.k3.npy.abc.tmp", "w").write("half")  # an interrupted write
    open("data/clusters/kmeans/.gitignore", "w").write("/k2.npy\n")
    save_npy("data/clusters/agglomerative/single/k2.npy", np.zeros(3, np.int64))
    grid = {"kmeans": ["k2", "k3"], "agglomerative": ["ward_k2", "ward_k3"]}
    removed = selection.prune_stale(grid, "data/clusters")
    assert sorted(removed) == ["agglomerative/single/k2.npy", "kmeans/.k3.npy.abc.tmp",
                               "kmeans/k7.npy"]
    left = sorted(p.relative_to("data/clusters").as_posix()
                  for p in Path("data/clusters").rglob("*") if p.is_file())
    assert left == ["agglomerative/ward/k2.json", "agglomerative/ward/k2.npy",
                    "agglomerative/ward/k3.json", "agglomerative/ward/k3.npy",
                    "agglomerative/ward/tree.npy", "kmeans/.gitignore", "kmeans/k2.json",
                    "kmeans/k2.npy", "kmeans/k3.json", "kmeans/k3.npy"]


def test_gmm_retries_a_collapsed_covariance_with_more_regularisation(monkeypatch):
    from sklearn.mixture import GaussianMixture

    fit = GaussianMixture.fit
    tried = []

    def fragile(self, X, y=None):
        tried.append(self.reg_covar)
        if self.reg_covar < 1e-4:
            raise ValueError("Fitting the mixture model failed because some components have "
                             "ill-defined empirical covariance (for instance ...)")
        return fit(self, X, y)

    monkeypatch.setattr(GaussianMixture, "fit", fragile)
    X = np.random.default_rng(0).normal(size=(60, 3))
    labels, info = cl.run_gmm(X, 2, "diag", 50, 0)
    assert info["reg_covar"] == pytest.approx(1e-4) and len(tried) == 3
    assert len(np.unique(labels)) == 2
    monkeypatch.setattr(GaussianMixture, "fit", lambda self, X, y=None: fragile(
        self.set_params(reg_covar=0.0), X))
    with pytest.raises(DataError, match="gmm at K = 2.*reg_covar"):
        cl.run_gmm(X, 2, "diag", 50, 0)


# --------------------------------------------------------------------------- params
def test_grid_params_name_the_dotted_key_and_value():
    from clusterlens.config.base import parse_section
    from clusterlens.config.dbscan import DBSCANParams
    from clusterlens.config.gmm import GMMParams
    from clusterlens.config.hdbscan import HDBSCANParams
    from clusterlens.config.kmeans import KMeansParams
    from clusterlens.config.metrics import MetricsParams
    from clusterlens.config.select import SelectParams

    km = {"k": [2, 3], "n_init": 4, "max_iter": 100}
    for section, model, bad, match in [
            ("kmeans", KMeansParams, {**km, "k": 5},
             r"`kmeans.k` must be a list of integers >= 2, `classes` \(the number of classes\) "
             r"or `classes_x<f>` .*, got 5"),
            ("kmeans", KMeansParams, {**km, "k": [1, 3]}, r"`kmeans.k` must be a list"),
            ("kmeans", KMeansParams, {**km, "n_init": 0}, r"`kmeans.n_init` must be >= 1, got 0"),
            ("kmeans", KMeansParams, {**km, "max_iter": True}, r"`kmeans.max_iter` must be an int"),
            ("kmeans", KMeansParams, {**km, "n_inits": 4}, r"did you mean `kmeans.n_init`"),
            ("gmm", GMMParams, {"k": [3], "covariance_type": "round", "max_iter": 10},
             r"`gmm.covariance_type` must be one of full, tied, diag, spherical; got 'round'"),
            ("dbscan", DBSCANParams, {"eps_percentile": [0], "min_samples": 5},
             r"`dbscan.eps_percentile` values must be numbers in \(0, 100\]"),
            ("hdbscan", HDBSCANParams, {"min_cluster_size": [10], "min_samples": 0},
             r"`hdbscan.min_samples` must be >= 1"),
            ("metrics", MetricsParams, {"silhouette_sample": 1},
             r"`metrics.silhouette_sample` must be >= 2"),
            ("select", SelectParams, {"metric": "inertia", "max_noise": 0.3},
             r"`select.metric` must be one of"),
            ("select", SelectParams, {"metric": "nmi", "max_noise": 1.5},
             r"`select.max_noise` must be a fraction in \[0, 1\], got 1.5")]:
        with pytest.raises(ParamError, match=match):
            parse_section({section: bad}, section, model)
    assert parse_section({"hdbscan": {"min_cluster_size": [10], "min_samples": None}},
                         "hdbscan", HDBSCANParams).min_samples is None


def test_select_metrics_are_the_scored_metrics():
    from clusterlens.clustering.metrics import HIGHER_IS_BETTER
    from clusterlens.config.select import SELECT_METRICS

    assert SELECT_METRICS == tuple(k for k in HIGHER_IS_BETTER if k != "inertia")


def test_every_method_has_a_grid_function_and_options(blobs):
    _, _, params = blobs
    with pytest.raises(ParamError, match="unknown clustering method 'spectral'"):
        run_point("spectral", 3, params)
    with pytest.raises(ParamError, match="agglomerative.linkage"):
        run_point("agglomerative", "centroid", params)
    with pytest.raises(ParamError, match="`agglomerative.k` must be a non-empty list"):
        run_point("agglomerative", "ward", {**params, "agglomerative": {
            **params["agglomerative"], "k": []}})
    with pytest.raises(ParamError, match="dbscan.min_samples.*larger than the number of images"):
        run_point("dbscan", 50.0, {**params, "dbscan": {**params["dbscan"], "min_samples": 500}})


def test_grid_functions_in_process(blobs):
    X, y, _ = blobs
    res = cl.GRID_METHODS["kmeans"](X, 3, 0, n_init=4, max_iter=100)
    labels, extra = res.points["k3"]
    np.testing.assert_array_equal(labels, KMeans(3, n_init=4, max_iter=100,
                                                 random_state=0).fit(X).labels_)
    assert extra["k"] == 3 and res.tree is None
    res = cl.agglomerative_points(X, "average", 0, ks=[2, 3])
    assert list(res.points) == ["average_k2", "average_k3"] and res.tree.shape == (119, 4)
    scores = cl.score_points(X, y, res, 50, 0)
    assert scores["average_k3"]["ari"] == pytest.approx(1.0)
    assert scores["average_k3"]["route"] == "exact"


def test_the_aggregate_selects_without_labels_and_compares_with_nmi(blobs):
    X, y, params = blobs
    params.update(agglomerative={**params["agglomerative"], "linkage": ["ward"]},
                  gmm={**params["gmm"], "k": []}, dbscan={**params["dbscan"], "eps_percentile": []},
                  hdbscan={**params["hdbscan"], "min_cluster_size": []}, nmf={**params["nmf"], "k": []})
    params["kmeans"]["k"] = [2, 3, 5]
    for k in (2, 3, 5):
        run_point("kmeans", k, params)
    run_point("agglomerative", "ward", params)
    out = clustering.run(parse_stage(params, clustering.Params))
    assert out["label_free"]["label_free"]["metric"] == "silhouette_pca"  # UMAP is off
    assert out["label_free"]["agree"] and out["label_free"]["label_based"]["nmi"] == 1.0
    assert all(out["kmeans"][p]["silhouette_umap"] is None for p in out["kmeans"])
    table = pd.read_csv("metrics/clustering_table.csv")
    assert {"silhouette_pca", "silhouette_umap"} <= set(table.columns)
    params["select"]["metric"] = "silhouette_pca"
    out = clustering.run(parse_stage(params, clustering.Params))
    assert out["selected"]["metric"] == "silhouette_pca" and out["selected"]["value"] > 0.8
    params["select"]["metric"] = "silhouette_umap"
    with pytest.raises(ParamError, match="`select.metric` is silhouette_umap, but umap.enabled"):
        clustering.run(parse_stage(params, clustering.Params))
    write_umap(rows=np.arange(0, 120, 2), reduced=X[::2, :3])  # a UMAP of every other image
    out = clustering.run(parse_stage(params, clustering.Params))
    assert out["selected"]["metric"] == "silhouette_umap" and out["selected"]["point"] in (
        "k3", "ward_k3")
