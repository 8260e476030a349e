"""Zero-shot captions, sentence embeddings and fusion (SPEC E6, seed 003)."""
import socket

import numpy as np
import pandas as pd
import pytest
import torch

from clusterlens import captions as cap
from clusterlens import fusion as fu
from clusterlens.common import DataError, ParamError, load_npy, read_json
from tests.conftest import MOBILENET_WEIGHTS, make_image

NAMES = ["cat", "eagle", "dog", "owl", "umbrella"]


# --------------------------------------------------------------------------- captions
def test_imagenet_class_names_are_the_standard_1000():
    names = cap.imagenet_class_names()
    assert len(names) == 1000
    assert names[0] == "tench" and names[1] == "goldfish" and names[999] == "toilet tissue"
    assert names[207] == "golden retriever" and names[404] == "airliner"


def test_top_k_labels_order_probabilities_and_ties():
    logits = np.array([[0.0, 3.0, 1.0, 2.0, -1.0],
                       [5.0, 5.0, 0.0, 5.0, 0.0]])  # row 2: a three-way tie
    idx, probs = cap.top_k_labels(logits, k=3)
    assert idx.dtype == np.int64 and idx.shape == probs.shape == (2, 3)
    assert idx.tolist() == [[1, 3, 2], [0, 1, 3]]  # ties: the lower class index first
    e = np.exp(logits[0] - 3.0)
    np.testing.assert_allclose(probs[0], e[[1, 3, 2]] / e.sum(), rtol=1e-12)
    assert np.all(np.diff(probs, axis=1) <= 0)
    np.testing.assert_allclose(probs[1], np.full(3, 1 / (3 + 2 * np.exp(-5.0))))
    big = cap.top_k_labels(np.array([[1000.0, 999.0, 0.0]]), k=2)[1]  # no overflow
    np.testing.assert_allclose(big[0], [1 / (1 + np.exp(-1)), np.exp(-1) / (1 + np.exp(-1))])
    with pytest.raises(ValueError):
        cap.top_k_labels(logits, k=6)


def test_seed003_captions_for_known_logits():
    logits = np.array([[0.0, 9.0, 0.0, 0.0, 0.0],     # eagle, confident
                       [2.0, 0.0, 1.9, 1.8, 0.0],     # cat / dog / owl, unsure
                       [0.0, 0.0, 0.0, 1.0, 1.05]])   # umbrella / owl / cat (tie: lowest)
    idx, probs = cap.top_k_labels(logits)
    assert cap.make_captions(idx, probs, NAMES) == [
        "This is an eagle.",
        "This might be a cat, but could also be a dog or an owl.",
        "This might be an umbrella, but could also be an owl or a cat.",
    ]
    assert probs[0, 0] > 0.5 and probs[1, 0] < 0.5
    assert cap.make_captions(idx, probs, NAMES, "top3")[1] == "a photo of a cat, a dog or an owl."
    assert cap.make_captions(idx, probs, NAMES, "top1")[0] == "a photo of an eagle."
    custom = cap.make_captions(idx, probs, NAMES, "{c1} ({p1:.2f}) or {c2}")
    assert custom[0] == f"eagle ({probs[0, 0]:.2f}) or cat"


def test_imagenet_captions_and_articles():
    names = cap.imagenet_class_names()
    logits = np.zeros((1, 1000))
    logits[0, 404] = 20.0  # airliner
    assert cap.make_captions(*cap.top_k_labels(logits), names) == ["This is an airliner."]
    assert cap.with_article("unicycle") == "a unicycle"
    assert cap.with_article("hourglass") == "an hourglass"
    assert cap.with_article("Egyptian cat") == "an Egyptian cat"


@pytest.mark.parametrize("template", ["", "no fields", "{x1} here", "{c1", 3, None])
def test_bad_templates_name_the_key(template):
    with pytest.raises(ParamError) as err:
        cap.check_template(template)
    assert err.value.key == "captions.template"


def test_make_captions_rejects_mismatched_inputs():
    idx, probs = cap.top_k_labels(np.eye(5)[:2])
    with pytest.raises(ValueError):
        cap.make_captions(idx, probs[:, :2], NAMES)
    with pytest.raises(ValueError):
        cap.make_captions(idx, probs, NAMES[:1])


# --------------------------------------------------------------------------- classifier head
def _images(size: int) -> torch.Tensor:
    from clusterlens.features import preprocess

    rng = np.random.default_rng(0)
    return torch.stack([preprocess(make_image(i, rng), size, "squash", (0.5,) * 3, (0.25,) * 3)
                        for i in range(4)])


def test_lite0_head_logits_equal_the_full_model():
    from clusterlens.backbones import build_lite0

    backbone = build_lite0("DEFAULT", 64)
    x = _images(64)
    with torch.no_grad():
        feats = backbone.model(x).numpy()
        full = backbone.model.net(x).numpy()  # the whole network, classifier included
    W, b = cap.classifier_head("efficientnet_lite0", "DEFAULT")
    assert W.shape == (1000, 1280) and b.shape == (1000,) and W.dtype == np.float32
    logits = cap.head_logits(feats, W, b)
    np.testing.assert_allclose(logits, full, atol=1e-3, rtol=1e-4)
    assert (logits.argmax(1) == full.argmax(1)).all()


@pytest.mark.skipif(not MOBILENET_WEIGHTS.is_file(), reason="shared MobileNetV2 weights absent")
def test_mobilenet_v2_head_logits_equal_the_full_model():
    import torchvision

    from clusterlens.backbones import build_backbone

    backbone = build_backbone("mobilenet_v2", str(MOBILENET_WEIGHTS))
    full_model = torchvision.models.mobilenet_v2()
    full_model.load_state_dict(torch.load(MOBILENET_WEIGHTS, weights_only=True))
    x = _images(64)
    with torch.no_grad():
        feats = backbone.model.eval()(x).numpy()
        full = full_model.eval()(x).numpy()
    W, b = cap.classifier_head("mobilenet_v2", str(MOBILENET_WEIGHTS))
    assert W.shape == (1000, 1280)
    np.testing.assert_allclose(cap.head_logits(feats, W, b), full, atol=1e-3, rtol=1e-4)


def test_classifier_head_refuses_random_weights_and_wrong_dims(tmp_path):
    for name in ("efficientnet_lite0", "resnet18"):
        with pytest.raises(ParamError) as err:
            cap.classifier_head(name, "none")
        assert err.value.key == "extract.weights"
    with pytest.raises(ParamError) as err:
        cap.classifier_head("resnet18", str(tmp_path / "missing.pth"))
    assert err.value.key == "extract.weights"
    with pytest.raises(DataError):
        cap.head_logits(np.zeros((2, 512)), np.zeros((1000, 1280)), np.zeros(1000))


# --------------------------------------------------------------------------- text embeddings
def test_embed_texts_offline_unit_deterministic_and_semantic(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")

    def no_network(*args, **kwargs):
        raise AssertionError("the sentence model tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    cap._MODELS.clear()  # load from the package folder, inside this test
    texts = ["a photo of a dog", "a photo of a puppy", "a photo of a truck", "a photo of a dog"]
    e = cap.embed_texts(texts, batch_size=2, device="cpu", progress=False)
    assert e.shape == (4, 384) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(e[0], e[3])  # identical captions, identical rows
    again = cap.embed_texts(list(reversed(texts)), batch_size=2, device="cpu", progress=False)
    assert np.array_equal(again[::-1], e)  # same bytes, whatever the order asked
    assert e[0] @ e[1] > e[0] @ e[2] + 0.2 and e[0] @ e[1] > e[1] @ e[2] + 0.2
    for text, row in zip(texts, e):  # rows follow the input order (batched by length inside)
        np.testing.assert_allclose(cap.embed_texts([text], device="cpu", progress=False)[0], row,
                                   atol=1e-5)
    assert cap.embed_texts([], device="cpu").shape == (0, 384)
    with pytest.raises(ParamError):
        cap.embed_texts(texts, batch_size=0)


def test_captions_stage_writes_table_embeddings_and_metrics(in_tmp_cwd):
    from clusterlens.common import save_npy, write_table

    rng = np.random.default_rng(1)
    feats = np.abs(rng.normal(0, 1, (6, 1280))).astype(np.float32)
    save_npy("data/features.npy", feats)
    write_table("data/index.parquet", pd.DataFrame({"path": [f"c{i % 2}/{i}.png"
                                                             for i in range(6)],
                                                    "class": ["a", "b"] * 3,
                                                    "label": [0, 1] * 3}))
    params = {"seed": 0, "extract": {"backbone": "efficientnet_lite0", "weights": "DEFAULT",
                                     "device": "cpu"},
              "captions": {"template": "seed003", "batch_size": 4}}
    m = cap.run(params)
    table = pd.read_parquet("data/captions.parquet")
    emb = load_npy("data/text_features.npy")
    assert list(table.columns[:2]) == ["path", "caption"] and len(table) == 6
    assert emb.shape == (6, 384)
    assert table["caption"].str.startswith("This ").all()
    assert m["images"] == 6 and read_json("metrics/captions.json") == m
    W, b = cap.classifier_head("efficientnet_lite0")
    top = cap.head_logits(feats, W, b).argmax(1)
    assert table["label1"].tolist() == [cap.imagenet_class_names()[i] for i in top]
    with pytest.raises(ParamError) as err:
        cap.run({**params, "captions": {"template": "{nope}"}})
    assert err.value.key == "captions.template"


# --------------------------------------------------------------------------- fusion
def _blobs(n_per=40, k=3, seed=0):
    """Text separates the k classes; visual is pure noise."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(k), n_per)
    centres = rng.normal(0, 1, (k, 24))
    text = centres[y] + rng.normal(0, 0.15, (len(y), 24))
    visual = rng.normal(0, 1, (len(y), 40)) * 5.0
    return visual.astype(np.float32), text.astype(np.float32), y


def test_fusion_shapes_and_norms():
    visual, text, _ = _blobs()
    n = len(visual)
    assert np.allclose(np.linalg.norm(fu.l2_normalize(visual), axis=1), 1.0, atol=1e-6)
    assert not fu.l2_normalize(np.zeros((2, 3))).any()  # zero rows stay zero
    c = fu.fuse_concat(visual, text)
    assert c.shape == (n, 64) and c.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(c[:, :40], axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(c[:, 40:], axis=1), 1.0, atol=1e-6)
    w = fu.fuse_weighted(visual, text, 0.5, dim=384, seed=0)
    assert w.shape == (n, 24)  # min(dim, D_v, D_t, N)
    assert fu.fuse_weighted(visual, text, 0.5, dim=8).shape == (n, 8)
    assert fu.fuse_weighted(visual[:5], text[:5], 0.5, dim=384).shape == (5, 5)
    assert np.array_equal(w, fu.fuse_weighted(visual, text, 0.5, dim=384, seed=0))
    assert (np.linalg.norm(w, axis=1) <= 1.0 + 1e-6).all()
    for name, dim in [("visual", 40), ("text", 24), ("concat", 64), ("weighted", 10)]:
        assert fu.feature_set(name, visual, text, 0.3, 10).shape == (n, dim)


def test_weighted_fusion_at_the_ends_is_one_part_alone():
    visual, text, _ = _blobs()
    alone_v = fu.pca_project(visual, 16, seed=0)
    alone_t = fu.pca_project(text, 16, seed=0)
    assert np.array_equal(fu.fuse_weighted(visual, text, 1.0, dim=16), alone_v)
    assert np.array_equal(fu.fuse_weighted(visual, text, 0, dim=16), alone_t)
    np.testing.assert_allclose(np.linalg.norm(alone_v, axis=1), 1.0, atol=1e-6)
    mid = fu.fuse_weighted(visual, text, 0.25, dim=16)
    np.testing.assert_allclose(mid, 0.25 * alone_v + 0.75 * alone_t, atol=1e-6)


@pytest.mark.parametrize("name, weight, dim, key", [
    ("fused", 0.5, 10, "fusion.set"), ("concat", 1.5, 10, "fusion.weight"),
    ("concat", -0.1, 10, "fusion.weight"), ("concat", True, 10, "fusion.weight"),
    ("concat", "half", 10, "fusion.weight"), ("weighted", 0.5, 0, "fusion.dim"),
    ("weighted", 0.5, 2.5, "fusion.dim"),
])
def test_feature_set_validates_params(name, weight, dim, key):
    visual, text, _ = _blobs(n_per=5)
    with pytest.raises(ParamError) as err:
        fu.feature_set(name, visual, text, weight, dim)
    assert err.value.key == key


def test_fusion_rejects_misaligned_rows():
    visual, text, _ = _blobs(n_per=5)
    with pytest.raises(DataError):
        fu.fuse_concat(visual, text[:-1])


def test_kappa_table_ranks_the_informative_features_first():
    visual, text, y = _blobs()
    sets = {name: fu.feature_set(name, visual, text, 0.5, 16) for name in fu.FEATURE_SETS}
    table = fu.kappa_table(sets, y, k=3, seed=0, n_init=3, progress=False)
    assert list(table.columns) == ["features", "method", "label", "kappa", "nmi", "ari"]
    assert len(table) == 4 * 3
    assert table["label"].iloc[0] == "K-Means (Visual)"
    kappa = table.set_index(["features", "method"])["kappa"]
    for method in fu.METHODS:
        assert kappa["text", method] > 0.95
        assert kappa["visual", method] < 0.3
        assert kappa["text", method] > kappa["visual", method] + 0.5
    assert kappa["concat", "kmeans"] > kappa["visual", "kmeans"]
    again = fu.kappa_table(sets, y, k=3, seed=0, n_init=3, progress=False)
    pd.testing.assert_frame_equal(table, again)  # seeded: identical
    with pytest.raises(ParamError) as err:
        fu.kappa_table(sets, y, 3, methods=("kmeans", "spectral"), progress=False)
    assert err.value.key == "fusion.methods"


def test_kappa_table_reuses_the_cluster_metrics_kappa():
    from clusterlens.metrics import kappa_after_majority_vote

    _, text, y = _blobs(n_per=20)
    table = fu.kappa_table({"text": text}, y, 3, seed=0, methods=("kmeans",), n_init=2,
                           progress=False)
    labels = fu.cluster_labels(text, "kmeans", 3, seed=0, n_init=2)
    assert table["kappa"].iloc[0] == kappa_after_majority_vote(y, labels)


def test_fusion_stage_writes_fused_features_and_table(in_tmp_cwd):
    from clusterlens.common import save_npy, write_table

    visual, text, y = _blobs(n_per=15)
    save_npy("data/features.npy", visual)
    save_npy("data/text_features.npy", fu.l2_normalize(text))
    write_table("data/index.parquet", pd.DataFrame({"path": [f"{i}.png" for i in range(len(y))],
                                                    "label": y}))
    params = {"seed": 0, "fusion": {"set": "weighted", "weight": 0.5, "dim": 8,
                                    "methods": ["kmeans", "ward"]},
              "kmeans": {"n_init": 2, "max_iter": 100}}
    m = fu.run(params)
    assert load_npy("data/fused.npy").shape == (len(y), 8)
    table = pd.read_csv("metrics/fusion.csv")
    assert len(table) == 8 and set(table["method"]) == {"kmeans", "ward"}
    assert m["text"]["kmeans"] > m["visual"]["kmeans"]
    assert m["best"]["features"] != "visual" and m["k"] == 3
    with pytest.raises(ParamError) as err:
        fu.run({**params, "fusion": {**params["fusion"], "methods": ["dbscan"]}})
    assert err.value.key == "fusion.methods"
