"""Issue 8 items 2-3: the raw-pixel backbone (seed 004) and NMF + K-Means (seed 004)."""
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.cluster import KMeans
from sklearn.decomposition import NMF

from clusterlens import clustering as cluster, nmf
from clusterlens.backbones import RAW, build_backbone
from clusterlens.common import DataError, ParamError, save_npy, write_table
from clusterlens.features import extract_features


# --------------------------------------------------------------------------- raw pixels
def test_raw_pixels_are_the_resized_image_scaled_and_flattened(image_tree):
    paths = sorted(p.relative_to(image_tree).as_posix() for p in image_tree.rglob("*.png"))[:5]
    bb = build_backbone(RAW, "none", 12)
    assert bb.dim == 3 * 12 * 12
    feats, _ = extract_features(bb, image_tree, paths, 12, "squash", batch_size=2, device="cpu",
                                workers=0, precision="fp32", progress=False, jit=True)
    for row, rel in zip(feats, paths):
        img = Image.open(image_tree / rel).convert("RGB").resize((12, 12), Image.BILINEAR)
        want = (np.asarray(img, dtype=np.float32) / 255.0).transpose(2, 0, 1).reshape(-1)
        np.testing.assert_allclose(row, want, atol=1e-6)
    assert feats.min() >= 0 and feats.max() <= 1


def test_raw_pixels_native_size_and_no_weights():
    assert build_backbone(RAW, "DEFAULT", None).dim == 3 * 32 * 32  # image_size: auto
    with pytest.raises(ParamError, match="extract.weights.*raw_pixels.*no weights"):
        build_backbone(RAW, "/some/file.pth", 32)


# --------------------------------------------------------------------------- NMF
def test_make_nonnegative_shifts_only_negative_columns():
    X = np.array([[1.0, -2.0, 0.0], [3.0, 1.0, 5.0]], dtype=np.float32)
    Y, shifted = nmf.make_nonnegative(X, "shift")
    assert shifted == 1
    np.testing.assert_array_equal(Y, [[1.0, 0.0, 0.0], [3.0, 3.0, 5.0]])
    same, none = nmf.make_nonnegative(np.abs(X), "shift")
    assert none == 0 and np.array_equal(same, np.abs(X))
    with pytest.raises(ParamError, match="nmf.negative.*1 of 3 feature columns"):
        nmf.make_nonnegative(X, "error")
    with pytest.raises(DataError, match="non-finite"):
        nmf.make_nonnegative(np.array([[np.nan, 1.0]]), "shift")


@pytest.fixture
def parts(in_tmp_cwd):
    """Non-negative data built from 3 'parts': each class is one part plus noise."""
    rng = np.random.default_rng(1)
    H = rng.uniform(0, 1, (3, 40)) * (rng.uniform(0, 1, (3, 40)) > 0.6)
    y = np.repeat([0, 1, 2], 30)
    X = (H[y] * rng.uniform(0.8, 1.2, (90, 1)) + rng.uniform(0, 0.02, (90, 40))).astype(np.float32)
    save_npy("data/features.npy", X)
    save_npy("data/pca.npy", (X - X.mean(0))[:, :10])
    write_table("data/index.parquet", pd.DataFrame({"path": [f"{i}.png" for i in range(90)],
                                                    "class": [f"c{v}" for v in y], "label": y}))
    params = {"seed": 0, "metrics": {"silhouette_sample": 1000},
              "kmeans": {"n_init": 5, "max_iter": 100},
              "nmf": {"k": [3], "n_components": 3, "max_iter": 400, "negative": "shift"}}
    return X, y, params


def test_nmf_stage_equals_sklearn_and_kmeans_on_w_recovers_the_parts(parts):
    X, y, params = parts
    out = nmf.run(params)
    W = np.load("data/nmf.npz")["W"]
    ref = NMF(3, init="nndsvda", max_iter=400, random_state=0)
    np.testing.assert_allclose(W, ref.fit_transform(X), rtol=1e-4, atol=1e-6)
    assert out["reconstruction_error"] == pytest.approx(ref.reconstruction_err_, rel=1e-5)
    assert json.load(open("metrics/nmf.json"))["shifted_columns"] == 0
    point = cluster.run("nmf", 3, params)["k3"]
    labels = np.load("data/clusters/nmf/k3.npy")
    np.testing.assert_array_equal(
        labels, KMeans(3, n_init=5, max_iter=100, random_state=0).fit(W).labels_)
    assert point["ari"] == pytest.approx(1.0) and point["nmf_components"] == 3
    nmf.run(params)  # seeded: the same W again
    np.testing.assert_array_equal(np.load("data/nmf.npz")["W"], W)


def test_nmf_params_are_checked(parts):
    _, _, params = parts
    with pytest.raises(ParamError, match="nmf.n_components.*larger than min"):
        nmf.run({**params, "nmf": {**params["nmf"], "n_components": 500}})
    with pytest.raises(ParamError, match="nmf.negative"):
        nmf.run({**params, "nmf": {**params["nmf"], "negative": "clip"}})


# --------------------------------------------------------------------------- feature sets
def test_reduce_nmf_and_upper_bound_read_the_selected_feature_set(in_tmp_cwd):
    from clusterlens import fusion, reduce

    rng = np.random.default_rng(0)
    visual = np.abs(rng.normal(size=(40, 12))).astype(np.float32)
    fused = rng.normal(size=(40, 7)).astype(np.float32)
    save_npy("data/features.npy", visual)
    save_npy("data/fused.npy", fused)
    write_table("data/index.parquet", pd.DataFrame({"path": [f"{i}.png" for i in range(40)],
                                                    "class": ["a", "b"] * 20,
                                                    "label": [0, 1] * 20}))
    X, where = fusion.load_selected({"fusion": {"set": "concat"}})
    assert np.array_equal(X, fused) and "fusion.set: concat" in where
    X, _ = fusion.load_selected({})  # params without a fusion section: the visual features
    assert np.array_equal(X, visual)
    params = {"seed": 0, "fusion": {"set": "weighted"},
              "reduce": {"standardize": True, "n_components": 3}}
    reduce.run(params)
    assert json.load(open("metrics/reduce.json"))["input_dim"] == 7
    out = nmf.run({**params, "nmf": {"n_components": 2, "max_iter": 50, "negative": "shift"}})
    assert out["shifted_columns"] == 7  # the fused columns all have negative values
    save_npy("data/fused.npy", np.zeros((40, 0), np.float32))  # written for fusion.set: visual
    with pytest.raises(DataError, match="holds no 'weighted' features.*dvc repro fusion"):
        fusion.load_selected(params)


def test_captions_disabled_means_visual_only(in_tmp_cwd):
    from clusterlens import captions, fusion

    save_npy("data/features.npy", np.ones((6, 5), np.float32))
    write_table("data/index.parquet", pd.DataFrame({"path": [f"{i}.png" for i in range(6)],
                                                    "class": ["a", "b"] * 3, "label": [0, 1] * 3}))
    params = {"seed": 0, "extract": {"backbone": "efficientnet_lite0", "weights": "DEFAULT",
                                     "device": "cpu"},
              "captions": {"enabled": False, "template": "seed003", "batch_size": 4},
              "fusion": {"set": "visual", "weight": 0.5, "dim": 8, "methods": ["kmeans"]},
              "kmeans": {"n_init": 1, "max_iter": 10}}
    assert captions.run(params) == {"enabled": False, "images": 6}
    assert np.load("data/text_features.npy").shape == (6, 0)
    assert len(pd.read_parquet("data/captions.parquet")) == 0
    assert fusion.run(params) == {"enabled": False}
    assert np.load("data/fused.npy").shape == (6, 0)
    with pytest.raises(ParamError, match="fusion.set.*captions.enabled"):
        fusion.run({**params, "fusion": {**params["fusion"], "set": "concat"}})


def test_captions_fall_back_to_lite0_when_the_backbone_has_no_imagenet_head(image_tree,
                                                                             in_tmp_cwd):
    from clusterlens import captions

    paths = sorted(p.relative_to(image_tree).as_posix() for p in image_tree.rglob("*.png"))
    write_table("data/index.parquet", pd.DataFrame({
        "path": paths, "class": [p.split("/")[0] for p in paths],
        "label": pd.factorize(pd.Series([p.split("/")[0] for p in paths]), sort=True)[0],
        "sha256": [f"{i:064x}" for i in range(len(paths))]}))
    save_npy("data/features.npy", np.zeros((len(paths), 3 * 32 * 32), np.float32))  # raw pixels
    params = {"seed": 0, "data": {"root": str(image_tree)},
              "extract": {"backbone": "raw_pixels", "weights": "DEFAULT", "image_size": 32,
                          "resize": "squash", "batch_size": 8, "device": "cpu", "workers": 0,
                          "precision": "fp32", "jit": False, "store": "none"},
              "captions": {"template": "top1", "batch_size": 8}}
    m = captions.run(params)
    assert "efficientnet_lite0" in m["captioner"] and "fallback" in m["captioner"]
    table = pd.read_parquet("data/captions.parquet")
    assert len(table) == len(paths) and table["caption"].str.startswith("a photo of ").all()
    assert np.load("data/text_features.npy").shape == (len(paths), 384)


def test_captions_reuse_features_only_at_the_classifier_native_size(monkeypatch):
    """The ImageNet head reads 224 px centre-cropped Lite0 features: extracted features at
    another size are not reused (captions of squashed 64 px images are nonsense)."""
    from clusterlens import captions, features as extract

    calls = []
    monkeypatch.setattr(extract, "features_for_index",
                        lambda ep, bb, index, size, device: calls.append((size, ep.resize))
                        or (np.zeros((2, 1280), np.float32), {}))
    p = {"backbone": "efficientnet_lite0", "weights": "DEFAULT"}
    feats = np.ones((2, 1280), np.float32)
    index = pd.DataFrame({"path": ["a.png", "b.png"], "sha256": ["0" * 64, "1" * 64]})
    base = {"seed": 0, "data": {"root": "."},
            "extract": {"backbone": "efficientnet_lite0", "weights": "DEFAULT",
                        "image_size": "auto", "resize": "center_crop", "batch_size": 2,
                        "device": "cpu", "workers": 0, "precision": "fp32", "jit": False,
                        "store": "none"}}
    got, W, _, desc = captions.captioner_features(base, p, feats, index)
    assert got is feats and calls == [] and "the extracted features" in desc
    assert W.shape == (1000, 1280)
    small = {**base, "extract": {**base["extract"], "image_size": 64, "resize": "squash"}}
    got, _, _, desc = captions.captioner_features(small, p, feats, index)
    assert calls == [(224, "center_crop")] and "224 px centre crop" in desc
    assert not got.any()
