"""Zero-shot captions and their sentence embeddings."""
import socket

import numpy as np
import pandas as pd
import pytest
import torch

from clusterlens.config.base import parse_section, parse_stage
from clusterlens.config.captions import CaptionsParams
from clusterlens.core.errors import DataError, ParamError
from clusterlens.core.io import load_npy, read_json, save_npy, write_table
from clusterlens.features import captions as cap
from clusterlens.features.backbones import LITE0
from stages import captions as stage
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
    with pytest.raises(ParamError) as err:
        parse_section({"captions": {"template": template}}, "captions", CaptionsParams)
    assert err.value.key == "captions.template"


def test_captions_params_defaults_and_errors():
    p = parse_section({"captions": {}}, "captions", CaptionsParams)
    assert (p.template, p.batch_size, p.enabled) == ("seed003", 256, True)
    custom = parse_section({"captions": {"template": "{a1}"}}, "captions", CaptionsParams)
    assert custom.template == "{a1}"
    with pytest.raises(ParamError, match="captions.batch_size"):
        parse_section({"captions": {"batch_size": 0}}, "captions", CaptionsParams)
    with pytest.raises(ParamError, match="captions.enabled"):
        parse_section({"captions": {"enabled": "yes"}}, "captions", CaptionsParams)
    with pytest.raises(ParamError, match="did you mean `captions.template`"):
        parse_section({"captions": {"templates": "top1"}}, "captions", CaptionsParams)


def test_make_captions_rejects_mismatched_inputs():
    idx, probs = cap.top_k_labels(np.eye(5)[:2])
    with pytest.raises(ValueError):
        cap.make_captions(idx, probs[:, :2], NAMES)
    with pytest.raises(ValueError):
        cap.make_captions(idx, probs, NAMES[:1])


# --------------------------------------------------------------------------- classifier head
def _images(size: int) -> torch.Tensor:
    from clusterlens.features.extraction import preprocess

    rng = np.random.default_rng(0)
    return torch.stack([preprocess(make_image(i, rng), size, "squash", (0.5,) * 3, (0.25,) * 3)
                        for i in range(4)])


def test_lite0_head_logits_equal_the_full_model():
    from clusterlens.features.backbones import build_lite0

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

    from clusterlens.features.backbones import build_backbone

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
    with pytest.raises(ValueError, match="batch_size"):
        cap.embed_texts(texts, batch_size=0)


def _extract_section(**over) -> dict:
    e = {"backbone": "efficientnet_lite0", "weights": "DEFAULT", "image_size": "auto",
         "resize": "center_crop", "batch_size": 2, "device": "cpu", "workers": 0,
         "precision": "fp32", "jit": False, "store": "none"}
    return {**e, **over}


def test_captions_stage_writes_table_embeddings_and_metrics(in_tmp_cwd):
    rng = np.random.default_rng(1)
    feats = np.abs(rng.normal(0, 1, (6, 1280))).astype(np.float32)
    save_npy("data/features.npy", feats)
    write_table("data/index.parquet", pd.DataFrame({"path": [f"c{i % 2}/{i}.png"
                                                             for i in range(6)],
                                                    "class": ["a", "b"] * 3,
                                                    "label": [0, 1] * 3}))
    params = {"seed": 0, "data": {"root": "."}, "extract": _extract_section(),
              "captions": {"template": "seed003", "batch_size": 4}}
    m = stage.run(parse_stage(params, stage.Params))
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
        stage.run(parse_stage({**params, "captions": {"template": "{nope}"}}, stage.Params))
    assert err.value.key == "captions.template"


def test_captions_disabled_means_visual_only(in_tmp_cwd):
    from stages import fusion

    save_npy("data/features.npy", np.ones((6, 5), np.float32))
    write_table("data/index.parquet", pd.DataFrame({"path": [f"{i}.png" for i in range(6)],
                                                    "class": ["a", "b"] * 3, "label": [0, 1] * 3}))
    params = {"seed": 0, "data": {"root": "."}, "extract": _extract_section(),
              "captions": {"enabled": False, "template": "seed003", "batch_size": 4},
              "fusion": {"set": "visual", "weight": 0.5, "dim": 8, "methods": ["kmeans"]},
              "kmeans": {"k": [2], "n_init": 1, "max_iter": 10}}
    assert stage.run(parse_stage(params, stage.Params)) == {"enabled": False, "images": 6}
    assert np.load("data/text_features.npy").shape == (6, 0)
    assert len(pd.read_parquet("data/captions.parquet")) == 0
    assert fusion.run(parse_stage(params, fusion.Params)) == {"enabled": False}
    assert np.load("data/fused.npy").shape == (6, 0)
    with pytest.raises(ParamError, match="fusion.set.*captions.enabled"):
        fusion.run(parse_stage({**params, "fusion": {**params["fusion"], "set": "concat"}}, fusion.Params))


def test_captions_fall_back_to_lite0_when_the_backbone_has_no_imagenet_head(image_tree,
                                                                             in_tmp_cwd):
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
    m = stage.run(parse_stage(params, stage.Params))
    assert "efficientnet_lite0" in m["captioner"] and "fallback" in m["captioner"]
    table = pd.read_parquet("data/captions.parquet")
    assert len(table) == len(paths) and table["caption"].str.startswith("a photo of ").all()
    assert np.load("data/text_features.npy").shape == (len(paths), 384)


def test_captions_reuse_the_extracted_features_whenever_the_preprocessing_matches(monkeypatch):
    """``captions.preprocessing: extract`` (the default) captions the extracted features, at
    whatever size ``auto`` gave them; ``native`` reuses them only when extract fed the
    classifier its own 224 px centre crop, and otherwise extracts at 224 px."""
    calls = []
    monkeypatch.setattr(stage, "features_for_index",
                        lambda bb, index, root, size, device, **kw:
                        calls.append((bb.name, size, kw["resize"]))
                        or (np.zeros((2, 1280), np.float32), {"extracted": 2, "from_store": 0}))
    feats = np.ones((2, 1280), np.float32)

    def folder(w, h):
        return pd.DataFrame({"path": ["a.png", "b.png"], "sha256": ["0" * 64, "1" * 64],
                             "width": [w, w + 10], "height": [h, h]})

    photos, digits = folder(640, 480), folder(8, 8)

    def run(index, preprocessing="extract", **extract):
        params = {"seed": 0, "data": {"root": "."},
                  "extract": _extract_section(**{"image_size": "auto", "resize": "auto",
                                                 **extract}),
                  "captions": {"preprocessing": preprocessing}}
        cfg = parse_stage(params, stage.Params)
        return stage.captioner_features(cfg, feats, index, *stage.check_params_vs_input(cfg, index))

    for mode in ("extract", "native"):  # photos with the defaults: 224 px centre crop, reused
        got, W, _, info, counts = run(photos, mode)
        assert got is feats and W.shape == (1000, 1280) and info["reused_extract_features"]
        assert (info["image_size"], info["resize"], counts["extracted"]) == (224, "center_crop", 0)
    got, _, _, info, _ = run(photos, "native", image_size=224, resize="center_crop")
    assert got is feats and calls == []
    got, _, _, info, _ = run(digits)  # the digits: 64 px squash, captioned as extracted
    assert got is feats and calls == [] and info["preprocessing"] == "extract"
    assert info["captioner"] == ("efficientnet_lite0 (DEFAULT) ImageNet head, 64 px squash, "
                                 "the extracted features")
    got, _, _, info, counts = run(digits, "native")  # native: the classifier's own recipe
    assert calls == [("efficientnet_lite0", 224, "center_crop")] and not got.any()
    assert not info["reused_extract_features"] and counts == {"extracted": 2, "from_store": 0}
    assert info["captioner"] == "efficientnet_lite0 (DEFAULT) ImageNet head, 224 px center_crop"
    calls.clear()
    got, _, _, info, _ = run(photos, "native", image_size=160)  # another size: extracted
    assert calls == [("efficientnet_lite0", 224, "center_crop")]
    with pytest.raises(DataError, match="need the index"):
        stage.check_params_vs_input(parse_stage({
            "seed": 0, "data": {"root": "."}, "extract": _extract_section(image_size=64, resize="squash"),
            "captions": {"preprocessing": "native"}}, stage.Params), None)
    with pytest.raises(ParamError) as err:
        run(photos, "crop")
    assert err.value.key == "captions.preprocessing"


def test_a_photo_folder_with_only_data_root_set_is_extracted_once(tmp_path, in_tmp_cwd,
                                                                  monkeypatch):
    """params.yaml as shipped, data.root pointed at photo-like images of varied sizes and
    aspect ratios (and a smaller batch, for speed): extract feeds them at 224 px with a centre
    crop, and captions read those features, so every image goes through the network once."""
    from clusterlens.config.base import load_params
    from clusterlens.features import extraction
    from stages import extract as extract_stage
    from stages import index as index_stage
    from tests.conftest import PROJECT

    rng = np.random.default_rng(3)
    sizes = [(96, 72), (80, 120), (150, 100), (200, 90), (72, 72), (128, 96), (90, 160)]
    for i, size in enumerate(sizes):
        folder = tmp_path / "photos" / ("cats", "dogs")[i % 2]
        folder.mkdir(parents=True, exist_ok=True)
        make_image(i % 2, rng, size).save(folder / f"{i}.jpg", quality=90)
    params = load_params(PROJECT / "params.yaml")
    params["data"]["root"] = str(tmp_path / "photos")
    params["extract"].update(batch_size=8, jit=False)  # speed only: 8 images, not a 64 batch
    seen = []
    real = extraction.extract_features
    monkeypatch.setattr(extraction, "extract_features", lambda bb, root, paths, size, resize,
                        *a, **kw: seen.append((bb.name, size, resize, len(paths)))
                        or real(bb, root, paths, size, resize, *a, **kw))
    index_stage.run(parse_stage(params, index_stage.Params))
    extracted = extract_stage.run(parse_stage(params, extract_stage.Params))
    m = stage.run(parse_stage(params, stage.Params))
    assert (extracted["image_size"], extracted["resize"]) == (224, "center_crop")
    assert seen == [(LITE0, 224, "center_crop", len(sizes))]  # once, in extract only
    assert m["reused_extract_features"] and (m["image_size"], m["resize"]) == (224, "center_crop")
    assert read_json("logs/extract_timing.json")["extracted"] == len(sizes)
    timing = read_json("logs/captions_timing.json")
    assert (timing["extracted"], timing["captions"]) == (0, len(sizes))


def test_captions_above_max_n_caption_a_stratified_sample_or_none(in_tmp_cwd, monkeypatch):
    from clusterlens.features.sets import comparison_rows

    rng = np.random.default_rng(2)
    y = np.arange(60) % 3
    feats = np.abs(rng.normal(0, 1, (60, 1280))).astype(np.float32)
    save_npy("data/features.npy", feats)
    write_table("data/index.parquet", pd.DataFrame({"path": [f"c{c}/{i}.png" for i, c in enumerate(y)],
                                                    "class": [f"c{c}" for c in y], "label": y}))
    embedded = []
    monkeypatch.setattr(cap, "load_text_model", lambda device: None)
    monkeypatch.setattr(cap, "embed_texts", lambda texts, *a, **k: embedded.append(len(texts))
                        or np.ones((len(texts), cap.TEXT_DIM), np.float32))
    params = {"seed": 0, "data": {"root": "."}, "extract": _extract_section(),
              "captions": {"template": "seed003", "batch_size": 4, "max_n": 50, "sample": 30}}
    m = stage.run(parse_stage(params, stage.Params))
    rows = comparison_rows(y, 30, 0)
    table = pd.read_parquet("data/captions.parquet")
    assert m["route"] == "sample" and m["sample"] == 30 and m["images_total"] == 60 and m["images"] == 30
    assert m["max_n"] == 50
    assert embedded == [30] and load_npy("data/text_features.npy").shape == (30, cap.TEXT_DIM)
    assert table["path"].tolist() == [f"c{y[r]}/{r}.png" for r in rows]
    W, b = cap.classifier_head("efficientnet_lite0")
    top = cap.head_logits(feats[rows], W, b).argmax(1)
    assert table["label1"].tolist() == [cap.imagenet_class_names()[i] for i in top]
    m = stage.run(parse_stage({**params, "captions": {**params["captions"], "max_n": 60}}, stage.Params))
    assert "route" not in m and m["images"] == 60 and embedded[-1] == 60  # below the switch: all
    m = stage.run(parse_stage({**params, "captions": {"max_n": 50}}, stage.Params))  # sample: 0
    assert m == {"enabled": False, "images": 60, "route": "off", "images_total": 60, "max_n": 50}
    assert len(embedded) == 2 and load_npy("data/text_features.npy").shape == (60, 0)
    assert len(pd.read_parquet("data/captions.parquet")) == 0
