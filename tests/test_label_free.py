"""Label-free selection: silhouettes in UMAP and PCA space, and the comparison with NMI."""
import numpy as np
import pytest

from clusterlens.clustering import label_free, selection
from clusterlens.core.io import save_npy
from clusterlens.core.sampling import sample_rows


def blobs(n_per=60, k=4, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 6, (k, dim))
    y = np.repeat(np.arange(k), n_per)
    return (centers[y] + rng.normal(0, 1, (len(y), dim))).astype(np.float32), y


def test_silhouettes_rank_the_true_partition_over_a_random_one_and_count_noise_as_a_cluster():
    from sklearn.metrics import silhouette_samples, silhouette_score

    X, y = blobs()
    rng = np.random.default_rng(1)
    rows = np.sort(rng.choice(len(y), 150, replace=False))
    noisy = y.copy()  # the 30 hardest images of the sample called noise
    noisy[rows[np.argsort(silhouette_samples(X[rows], y[rows]))[:30]]] = -1
    labelings = {"true": y, "random": rng.integers(0, 4, len(y)), "noisy": noisy,
                 "one": np.zeros(len(y), int), "one_and_noise": np.where(noisy < 0, -1, 0)}
    s = label_free.silhouettes(X[rows], labelings, rows)
    assert s["true"] == pytest.approx(silhouette_score(X[rows], y[rows]), rel=1e-6)
    assert s["true"] > 0.5 > s["random"] and s["one"] is None
    # the noise is one more cluster: discarding the hard images as noise lowers the score,
    # where leaving the noise out would raise it
    assert s["noisy"] == pytest.approx(silhouette_score(X[rows], noisy[rows]), rel=1e-6)
    keep = noisy[rows] != -1
    assert s["noisy"] < s["true"] < silhouette_score(X[rows][keep], y[rows][keep])
    assert s["one_and_noise"] is None  # one cluster and its noise choose nothing


def test_the_label_free_choice_finds_the_planted_k_and_is_compared_with_nmi(in_tmp_cwd):
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score as nmi

    X, y = blobs()
    results = {"kmeans": {}}
    for k in (2, 3, 4, 6, 8):
        labels = KMeans(k, n_init=3, random_state=0).fit_predict(X)
        save_npy(f"data/clusters/kmeans/k{k}.npy", labels)
        results["kmeans"][f"k{k}"] = {"k": k, "nmi": nmi(y, labels), "noise_fraction": 0.0}
    # UMAP off: silhouette_pca on a seeded sample, silhouette_umap None everywhere
    free = label_free.add_scores(results, "data/clusters", pca=X, umap_rows=np.zeros(0, int),
                                 umap_reduced=np.zeros((0, 10)), seed=0)
    assert free == "silhouette_pca"
    assert all(m["silhouette_umap"] is None for m in results["kmeans"].values())
    assert max(results["kmeans"], key=lambda p: results["kmeans"][p]["silhouette_pca"]) == "k4"
    comp = label_free.comparison(results, lambda r, m: selection.select_model(r, m, 0.3),
                                 label_free=free)
    assert comp["label_free"]["point"] == comp["label_based"]["point"] == "k4"
    assert comp["agree"] and comp["nmi_lost"] == 0.0
    assert "the same model" in label_free.describe(comp)
    # a UMAP sample: silhouette_umap on its rows and embedding (here 3 of the 8 dimensions)
    rows = sample_rows(len(y), 100, 0)
    free = label_free.add_scores(results, "data/clusters", pca=X, umap_rows=rows,
                                 umap_reduced=X[rows, :3], seed=0)
    assert free == "silhouette_umap"
    labels = np.load("data/clusters/kmeans/k4.npy")
    assert results["kmeans"]["k4"]["silhouette_umap"] == pytest.approx(
        label_free.silhouettes(X[rows, :3], {"k": labels}, rows)["k"])
    assert results["kmeans"]["k4"]["silhouette_pca"] == pytest.approx(
        label_free.silhouettes(X[rows], {"k": labels}, rows)["k"])


def test_a_disagreement_reports_both_models_and_the_nmi_lost():
    results = {"kmeans": {"k2": {"nmi": 0.4, "silhouette_pca": 0.7, "noise_fraction": 0.0},
                          "k5": {"nmi": 0.9, "silhouette_pca": 0.3, "noise_fraction": 0.0}}}
    comp = label_free.comparison(results, lambda r, m: selection.select_model(r, m, 0.3),
                                 label_free="silhouette_pca")
    assert (comp["label_free"]["point"], comp["label_based"]["point"]) == ("k2", "k5")
    assert not comp["agree"] and comp["nmi_lost"] == pytest.approx(0.5)
    assert "kmeans/k2 (NMI 0.4000)" in label_free.describe(comp)


def test_evenness_is_the_effective_share_of_the_clusters():
    from clusterlens.clustering.metrics import evenness

    assert evenness(np.repeat(np.arange(4), 25)) == pytest.approx(1.0)
    giant = np.r_[np.zeros(97, int), 1, 2, 3]
    assert evenness(giant) == pytest.approx(-(0.97 * np.log(0.97) + 0.03 * np.log(0.01))
                                            / np.log(4))
    assert evenness(np.r_[giant, -np.ones(50, int)]) == evenness(giant)  # noise left out
    assert evenness(-np.ones(5, int)) == 0.0 and evenness(np.zeros(5, int)) == 1.0
    # whatever K: one giant cluster is near 0, a 60/30/10 split is not
    assert evenness(np.r_[np.zeros(998, int), 1, 2]) < 0.05
    assert evenness(np.repeat([0, 1, 2], [60, 30, 10])) > 0.8


def test_the_label_free_choice_passes_over_one_giant_cluster_with_outliers(in_tmp_cwd):
    """Three far outliers as their own clusters and everything else one: the silhouette rates
    it above the planted clusters, the label-free choice skips it (and says so), NMI does not
    apply the rule."""
    from sklearn.cluster import KMeans

    X, y = blobs()
    X = np.r_[X, np.full((3, X.shape[1]), 80.0) * np.array([[1], [-1], [2]])]
    y = np.r_[y, 0, 0, 0]
    planted = KMeans(4, n_init=3, random_state=0).fit_predict(X[:-3])
    labelings = {"ward_k4": np.r_[planted, 0, 0, 0], "single_k4": np.r_[np.zeros(len(X) - 3, int), 1, 2,
                                                                 3]}
    results = {"agglomerative": {}}
    for name, labels in labelings.items():
        save_npy(f"data/clusters/agglomerative/{name.replace('_', '/')}.npy", labels)
        results["agglomerative"][name] = {"k": 4, "noise_fraction": 0.0,
                                          "nmi": 0.9 if name == "single_k4" else 0.5}
    label_free.add_scores(results, "data/clusters", pca=X, umap_rows=np.zeros(0, int),
                          umap_reduced=np.zeros((0, 10)), seed=0)
    giant, k4 = (results["agglomerative"][p] for p in ("single_k4", "ward_k4"))
    assert giant["silhouette_pca"] > k4["silhouette_pca"]
    assert giant["evenness"] < selection.MIN_EVENNESS < k4["evenness"]
    chosen = selection.select_model(results, "silhouette_pca", 0.3)
    assert chosen["point"] == "ward_k4"
    assert "agglomerative/single_k4 (evenness 0.06)" in chosen["reason"]
    assert selection.select_model(results, "nmi", 0.3)["point"] == "single_k4"
    del results["agglomerative"]["ward_k4"]
    with pytest.raises(Exception, match="evenness of at least 0.5"):
        selection.select_model(results, "silhouette_pca", 0.3)
