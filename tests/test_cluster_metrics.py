"""Every external metric against values computed by hand on small label vectors."""
import numpy as np
import pytest
from sklearn import metrics as skm

from clusterlens.clustering import metrics as cm

Y = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 2])


def test_purity_by_hand():
    pred = np.array([0, 0, 1, 1, 1, 1, 2, 2, 2, 0])
    # cluster 0 = {0,0,2} -> 2, cluster 1 = {0,1,1,1} -> 3, cluster 2 = {2,2,2} -> 3
    assert cm.purity(Y, pred) == pytest.approx(8 / 10)
    assert cm.purity(Y, np.arange(10)) == 1.0  # more clusters than classes: every point pure
    assert cm.purity(Y, np.zeros(10, int)) == pytest.approx(4 / 10)  # one cluster


def test_hungarian_accuracy_by_hand():
    pred = np.array([5, 5, 5, 7, 7, 7, 9, 9, 9, 9])  # a relabelling
    assert cm.hungarian_accuracy(Y, pred) == 1.0
    # more clusters than classes: 5 clusters, only 3 can be matched
    pred = np.array([0, 0, 1, 2, 2, 3, 4, 4, 4, 4])
    # best matching: 0->class0 (2), 2->class1 (2), 4->class2 (4) = 8 of 10
    assert cm.hungarian_accuracy(Y, pred) == pytest.approx(8 / 10)
    # fewer clusters than classes: 2 clusters
    pred = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
    # 0->class0 (3) or class1 (3), 1->class2 (4) = 7
    assert cm.hungarian_accuracy(Y, pred) == pytest.approx(7 / 10)
    assert cm.purity(Y, pred) == pytest.approx(7 / 10)


def test_kappa_after_majority_vote_by_hand():
    pred = np.array([0, 0, 1, 1, 1, 1, 2, 2, 2, 0])
    # majority: cluster0 -> 0 (tie 0,0 vs 2: two 0s), cluster1 -> 1, cluster2 -> 2
    mapped = np.array([0, 0, 1, 1, 1, 1, 2, 2, 2, 0])
    assert cm.majority_mapping(Y, pred) == {0: 0, 1: 1, 2: 2}
    po = np.mean(mapped == Y)  # 0.8
    pe = sum(np.mean(Y == k) * np.mean(mapped == k) for k in range(3))
    assert cm.kappa_after_majority_vote(Y, pred) == pytest.approx((po - pe) / (1 - pe))


def test_information_metrics_by_hand():
    perfect = cm.external_metrics(Y, Y + 10)
    for key in ["nmi", "ami", "ari", "homogeneity", "completeness", "v_measure", "purity",
                "hungarian_accuracy", "kappa"]:
        assert perfect[key] == pytest.approx(1.0), key
    # one cluster: completeness 1, homogeneity 0, NMI 0, ARI 0
    one = cm.external_metrics(Y, np.zeros(10, int))
    assert one["homogeneity"] == pytest.approx(0) and one["completeness"] == pytest.approx(1)
    assert one["nmi"] == pytest.approx(0) and one["ari"] == pytest.approx(0)
    # singletons: homogeneity 1; completeness = H(Y)/H(C) computed by hand
    single = cm.external_metrics(Y, np.arange(10))
    p = np.array([3, 3, 4]) / 10
    h_y = -(p * np.log(p)).sum()
    assert single["homogeneity"] == pytest.approx(1)
    assert single["completeness"] == pytest.approx(h_y / np.log(10))


def test_ari_by_hand_on_pairs():
    y = np.array([0, 0, 1, 1])
    pred = np.array([0, 0, 0, 1])
    # pairs: same-same 1 (0,1); index = 1; expected = (1 * 3) / 6 = 0.5 (sum_a=2 pairs, sum_b=3)
    sum_a, sum_b, n_pairs, index = 2, 3, 6, 1
    expected = sum_a * sum_b / n_pairs
    ari = (index - expected) / ((sum_a + sum_b) / 2 - expected)
    assert cm.external_metrics(y, pred)["ari"] == pytest.approx(ari)


def test_internal_metrics_skip_noise_and_sample_silhouette():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(0, 0.1, (50, 2)), rng.normal(5, 0.1, (50, 2))])
    labels = np.repeat([0, 1], 50)
    full = cm.internal_metrics(X, labels, silhouette_sample=1000)
    assert full["silhouette"] == pytest.approx(skm.silhouette_score(X, labels))
    noisy = labels.copy()
    noisy[:5] = cm.NOISE
    m = cm.internal_metrics(X, noisy)
    assert m["silhouette"] == pytest.approx(skm.silhouette_score(X[5:], labels[5:]))
    assert cm.describe(noisy) == {"n_clusters": 2, "noise_fraction": 0.05}
    a = cm.internal_metrics(X, labels, silhouette_sample=30, seed=3)
    b = cm.internal_metrics(X, labels, silhouette_sample=30, seed=3)
    assert a == b and a["silhouette"] > 0.9
    assert cm.internal_metrics(X, np.zeros(100, int))["silhouette"] is None


def test_shared_sample_distances_give_the_same_silhouettes():
    """The cuts of one tree share `silhouette_distances`: the same numbers as each silhouette
    computing its own distances, on a sample and on all points; noise falls back."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(400, 6)).astype(np.float32)
    X[:200] += 3
    cuts = [np.repeat([0, 1], 200), rng.integers(0, 4, 400), (X[:, 0] > 1.5).astype(int)]
    for sample in (150, 400):
        D = cm.silhouette_distances(X, sample, seed=2)
        assert D.shape == (sample, sample) and np.all(np.diag(D) == 0)
        for labels in cuts:
            assert cm.internal_metrics(X, labels, sample, 2, sample_distances=D) == \
                cm.internal_metrics(X, labels, sample, 2)
    noisy = cuts[0].copy()
    noisy[:10] = cm.NOISE  # other points, so other distances: the shared matrix is not used
    D = cm.silhouette_distances(X, 150, seed=2)
    assert cm.internal_metrics(X, noisy, 150, 2, sample_distances=D) == \
        cm.internal_metrics(X, noisy, 150, 2)
    with pytest.raises(ValueError, match="silhouette sample has 400 points"):
        cm.internal_metrics(X, cuts[0], 1000, 2, sample_distances=D)
    assert cm.silhouette_distances(X, 400, 2, max_bytes=400 * 400 * 4 - 1) is None


def test_ami_above_its_switch_is_computed_on_a_seeded_sample():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 20, 3000)
    p = np.where(rng.random(3000) < 0.3, rng.integers(0, 20, 3000), y)
    exact = cm.external_metrics(y, p)
    assert "ami_sample" not in exact
    sampled = cm.external_metrics(y, p, seed=1, ami_max_n=1000)
    assert sampled["ami_sample"] == 1000 and sampled["ami"] != exact["ami"]
    assert abs(sampled["ami"] - exact["ami"]) < 0.05
    assert {k: v for k, v in sampled.items() if k not in ("ami", "ami_sample")} == \
        {k: v for k, v in exact.items() if k != "ami"}
    assert cm.external_metrics(y, p, seed=1, ami_max_n=1000) == sampled
