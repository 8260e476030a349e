"""Real data: ImageNet features separate CIFAR-10 classes far better than chance."""
import shutil

import pytest
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.neighbors import NearestCentroid

from clusterlens.clustering.reduction import fit_pca
from clusterlens.data.index import build_index
from clusterlens.features.backbones import LITE0, build_backbone
from clusterlens.features.extraction import extract_features
from tests.conftest import CIFAR, MOBILENET_WEIGHTS, run_point

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not CIFAR.is_dir(), reason="../shared CIFAR-10 absent")]
PER_CLASS = 40


def copy_cifar(root, per_class: int):
    """The first ``per_class`` images of each class, copied (never modified in place)."""
    for cls_dir in sorted(p for p in CIFAR.iterdir() if p.is_dir()):
        (root / cls_dir.name).mkdir()
        for f in sorted(cls_dir.glob("*.jpg"))[:per_class]:
            shutil.copy(f, root / cls_dir.name / f.name)
    return root


@pytest.fixture(scope="module")
def cifar_subset(tmp_path_factory):
    """The first 40 images of each class."""
    root = copy_cifar(tmp_path_factory.mktemp("cifar"), PER_CLASS)
    index, rejected, _ = build_index(root)
    assert len(index) == 10 * PER_CLASS and len(rejected) == 0
    return root, index


def nearest_centroid_accuracy(features, labels) -> float:
    z = fit_pca(features, 50, standardize=True).scores
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    return float(cross_val_score(NearestCentroid(), z, labels, cv=cv).mean())


@pytest.mark.parametrize("backbone,weights,resize", [
    (LITE0, "DEFAULT", "squash"),
    pytest.param("mobilenet_v2", str(MOBILENET_WEIGHTS), "center_crop",
                 marks=pytest.mark.skipif(not MOBILENET_WEIGHTS.is_file(),
                                          reason="shared mobilenet weights absent")),
])
def test_imagenet_features_separate_cifar_classes(cifar_subset, backbone, weights, resize):
    root, index = cifar_subset
    bb = build_backbone(backbone, weights, 96)
    feats, _ = extract_features(bb, root, index["path"].tolist(), 96, resize, batch_size=50,
                                device="cpu", progress=False)
    acc = nearest_centroid_accuracy(feats, index["label"].to_numpy())
    # chance is 0.10; random-init features of the same network stay near it
    assert acc > 0.45, f"{backbone}: nearest-centroid accuracy {acc:.3f}"
    rand = build_backbone(backbone, "none", 96)
    rfeats, _ = extract_features(rand, root, index["path"].tolist(), 96, resize,
                                 batch_size=50, device="cpu", progress=False)
    assert acc > nearest_centroid_accuracy(rfeats, index["label"].to_numpy()) + 0.15


# --------------------------------------------------------------------------- clustering on CIFAR
CLUSTER_PER_CLASS = 100


@pytest.fixture(scope="module")
def cifar_pca(tmp_path_factory):
    """Lite0 ImageNet features of 100 images per class, standardized + PCA-50, and labels."""
    root = copy_cifar(tmp_path_factory.mktemp("cifar_clu"), CLUSTER_PER_CLASS)
    index, _, _ = build_index(root)
    feats, _ = extract_features(build_backbone(LITE0, "DEFAULT", 96), root,
                                index["path"].tolist(), 96, "squash", batch_size=50,
                                device="cpu", progress=False)
    return fit_pca(feats, 50).scores, index


def _stage_inputs(X, index):
    from clusterlens.core.io import save_npy, write_table

    save_npy("data/pca.npy", X)
    write_table("data/index.parquet", index)
    return {"seed": 0, "metrics": {"silhouette_sample": 5000},
            "kmeans": {"k": [10], "n_init": 10, "max_iter": 300},
            "agglomerative": {"linkage": ["ward"], "k": [10, 20]}}


def test_kmeans_at_k10_recovers_cifar_classes_far_above_shuffled(cifar_pca, in_tmp_cwd):
    import numpy as np
    from sklearn.metrics import normalized_mutual_info_score


    X, index = cifar_pca
    out = run_point("kmeans", 10, _stage_inputs(X, index))["k10"]
    labels = np.load("data/clusters/kmeans/k10.npy")
    y = index["label"].to_numpy()
    rng = np.random.default_rng(0)
    shuffled = [normalized_mutual_info_score(rng.permutation(y), labels) for _ in range(20)]
    # measured: NMI 0.36 vs shuffled mean 0.019 (max 0.024)
    assert out["nmi"] > 0.25 and out["nmi"] > 5 * max(shuffled), (out["nmi"], max(shuffled))
    assert out["purity"] > 0.3 and out["hungarian_accuracy"] > 0.3


def test_grid_metrics_agree_with_independent_sklearn(cifar_pca, in_tmp_cwd):
    """Independent recomputation of every grid point's numbers on the same PCA features."""
    import numpy as np
    from sklearn import metrics as skm
    from sklearn.cluster import AgglomerativeClustering, KMeans


    X, index = cifar_pca
    y = index["label"].to_numpy()
    params = _stage_inputs(X, index)
    out = run_point("kmeans", 10, params)["k10"]
    labels = np.load("data/clusters/kmeans/k10.npy")
    ref = KMeans(10, n_init=10, random_state=0).fit(X)
    # objective within 1% of scikit-learn's best of n_init, and recomputed from the labels
    assert out["inertia"] == pytest.approx(ref.inertia_, rel=0.01)
    Xd = X.astype(np.float64)
    centres = np.stack([Xd[labels == c].mean(0) for c in range(10)])
    assert out["inertia"] == pytest.approx(((Xd - centres[labels]) ** 2).sum(), rel=1e-4)
    cont = skm.cluster.contingency_matrix(y, labels)
    assert out["purity"] == pytest.approx(cont.max(axis=0).sum() / len(y), abs=1e-6)
    assert out["nmi"] == pytest.approx(skm.normalized_mutual_info_score(y, labels), abs=1e-6)
    assert out["ari"] == pytest.approx(skm.adjusted_rand_score(y, labels), abs=1e-6)
    assert out["ami"] == pytest.approx(skm.adjusted_mutual_info_score(y, labels), abs=1e-6)
    assert out["silhouette"] == pytest.approx(skm.silhouette_score(X, labels), abs=1e-5)
    assert out["davies_bouldin"] == pytest.approx(skm.davies_bouldin_score(X, labels), rel=1e-5)
    # agglomerative ward: one tree cut at K gives scikit-learn's partition
    agg = run_point("agglomerative", "ward", params)
    for k in (10, 20):
        mine = np.load(f"data/clusters/agglomerative/ward/k{k}.npy")
        theirs = AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(X)
        assert skm.adjusted_rand_score(theirs, mine) == pytest.approx(1.0)
        assert agg[f"ward_k{k}"]["nmi"] == pytest.approx(
            skm.normalized_mutual_info_score(y, mine), abs=1e-6)
