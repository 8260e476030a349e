"""Real data: ImageNet features separate CIFAR-10 classes far better than chance."""
import shutil

import pytest
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.neighbors import NearestCentroid

from stages.backbones import LITE0, build_backbone
from stages.extract import extract_features
from stages.index import build_index
from stages.reduce import fit_pca
from tests.conftest import CIFAR, MOBILENET_WEIGHTS

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not CIFAR.is_dir(), reason="../shared CIFAR-10 absent")]
PER_CLASS = 40


@pytest.fixture(scope="module")
def cifar_subset(tmp_path_factory):
    """The first 40 images of each class, copied (never modified in place)."""
    root = tmp_path_factory.mktemp("cifar")
    for cls_dir in sorted(p for p in CIFAR.iterdir() if p.is_dir()):
        (root / cls_dir.name).mkdir()
        for f in sorted(cls_dir.glob("*.jpg"))[:PER_CLASS]:
            shutil.copy(f, root / cls_dir.name / f.name)
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
