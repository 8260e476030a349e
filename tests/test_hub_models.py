"""timm and open_clip backbones, offline: random weights and locally saved checkpoints."""
import importlib
import importlib.util
import json

import numpy as np
import pytest
import torch

from clusterlens.core.errors import ParamError
from clusterlens.features import captions as cap
from clusterlens.features import hub_models as hm
from clusterlens.features.backbones import build_backbone, unknown_backbone
from clusterlens.features.extraction import extract_features, store_spec
from clusterlens.features.preprocessing import build_for_input
from tests.conftest import make_image

pytestmark = pytest.mark.skipif(not all(importlib.util.find_spec(m) for m in ("timm", "open_clip")),
                                reason="timm or open_clip is not installed")


class _Imported:
    """A module imported on first use, so that collecting the suite does not import it."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr):
        return getattr(importlib.import_module(self._name), attr)


timm, open_clip = _Imported("timm"), _Imported("open_clip")

TIMM_VIT = "timm:test_vit.r160_in1k"  # timm's own tiny test models: seconds on a CPU
TIMM_CNN = "timm:test_convnext.r160_in1k"
CLIP_ARCH = "clusterlens-tiny-clip"  # a tiny CLIP config registered below (random weights)
CLIP = f"open_clip:{CLIP_ARCH}"
TINY_CLIP = {"embed_dim": 32,
             "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8,
                            "head_width": 32},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2,
                          "layers": 2}}


@pytest.fixture(scope="module", autouse=True)
def tiny_clip_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / f"{CLIP_ARCH}.json"
    path.write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(path)


def features(backbone, side: int, seed: int = 0) -> np.ndarray:
    x = torch.randn(3, 3, side, side, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return backbone.model(x).numpy()


# --------------------------------------------------------------------------- names
@pytest.mark.parametrize("name, problem", [
    ("timm:", "put its name after the colon"),
    ("timm:convnext_tinyy", "Did you mean timm:convnext_tiny"),
    ("open_clip:ViT-B-322", "Did you mean open_clip:ViT-B-32"),
])
def test_unknown_hub_names_say_what_is_close(name, problem):
    assert problem in unknown_backbone(name)


def test_known_hub_names_pass():
    assert unknown_backbone("timm:vit_small_patch14_dinov2.lvd142m") is None
    assert unknown_backbone("timm:convnext_tiny") is None
    assert unknown_backbone("open_clip:ViT-B-32") is None


# --------------------------------------------------------------------------- timm
@pytest.mark.parametrize("name", [TIMM_VIT, TIMM_CNN])
def test_a_timm_model_gives_its_pre_logits_with_its_own_preprocessing(name):
    torch.manual_seed(0)
    b = build_backbone(name, "none", None)
    model = timm.create_model(name.split(":", 1)[1], pretrained=False)
    cfg = timm.data.resolve_model_data_config(model)
    assert b.native_size == cfg["input_size"][-1] and b.weights == "none (random init)"
    assert b.mean == pytest.approx(cfg["mean"]) and b.std == pytest.approx(cfg["std"])
    assert b.resize_ratio == pytest.approx(1 / cfg["crop_pct"])
    torch.manual_seed(0)  # the same random weights, the full model: its pre-logits
    model = timm.create_model(name.split(":", 1)[1], pretrained=False).eval()
    x = torch.randn(2, 3, b.native_size, b.native_size)
    with torch.no_grad():
        want = model.forward_head(model.forward_features(x), pre_logits=True)
        np.testing.assert_allclose(b.model(x).numpy(), want.numpy(), rtol=1e-5, atol=1e-6)
    assert b.dim == want.shape[1]
    assert store_spec(b, b.native_size, torch.device("cpu"), resize="center_crop",
                      precision="fp32", jit=False, batch_size=8, seed=0)["libraries"] == {
        "timm": timm.__version__}


def test_a_timm_vision_transformer_takes_any_side():
    torch.manual_seed(0)
    b = build_backbone(TIMM_VIT, "none", None)
    assert features(b, 64).shape == features(b, b.native_size).shape == (3, b.dim)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_a_local_timm_checkpoint_is_loaded_safely_with_or_without_its_classifier(tmp_path, suffix):
    from safetensors.torch import save_file

    torch.manual_seed(1)
    model = timm.create_model(TIMM_CNN.split(":", 1)[1], pretrained=False, num_classes=7).eval()
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    path = tmp_path / f"w{suffix}"
    (save_file if suffix == ".safetensors" else torch.save)(sd, path)
    b = build_backbone(TIMM_CNN, str(path), None)  # 7 classes in the file, 1000 in the model
    assert b.weights == f"file {path}" and len(b.weights_sha256) == 64
    x = torch.randn(2, 3, b.native_size, b.native_size)
    with torch.no_grad():
        want = model.forward_head(model.forward_features(x), pre_logits=True)
        np.testing.assert_allclose(b.model(x).numpy(), want.numpy(), rtol=1e-5, atol=1e-6)
    other = tmp_path / "other.pth"
    torch.save(timm.create_model("test_vit", pretrained=False).state_dict(), other)
    with pytest.raises(ParamError, match=r"`extract.weights`.*does not fit backbone timm:"):
        build_backbone(TIMM_CNN, str(other), None)
    wider = tmp_path / "wider.pth"  # the same layer names, other widths
    torch.save(timm.create_model("test_convnext2", pretrained=False).state_dict(), wider)
    with pytest.raises(ParamError, match=r"`extract.weights`.*does not fit backbone timm:"):
        build_backbone(TIMM_CNN, str(wider), None)
    (tmp_path / "evil.pth").write_bytes(b"\x80\x04cos\nsystem\n(S'echo hi'\ntR.")
    with pytest.raises(ParamError, match="extract.weights"):
        build_backbone(TIMM_CNN, str(tmp_path / "evil.pth"), None)


def test_timm_default_weights_offline_name_the_key(monkeypatch):
    monkeypatch.setattr(hm, "hub_file", lambda *a: (_ for _ in ()).throw(
        ParamError("extract.weights", "= DEFAULT: could not get it (offline)")))
    with pytest.raises(ParamError, match=r"`extract.weights` = DEFAULT: could not get"):
        build_backbone(TIMM_CNN, "DEFAULT", None)
    with pytest.raises(ParamError, match="name the pretrained tag in extract.backbone"):
        build_backbone(TIMM_CNN, "in1k", None)


def test_a_timm_classifier_captions_and_a_headless_one_falls_back(tmp_path):
    torch.manual_seed(0)
    name = TIMM_CNN.split(":", 1)[1]
    model = timm.create_model(name, pretrained=False).eval()  # 1000 ImageNet outputs
    torch.save(model.state_dict(), tmp_path / "head.pth")
    c = cap.choose_captioner(TIMM_CNN, str(tmp_path / "head.pth"))
    assert c.fallback is None and c.W.shape == (1000, model.num_features)
    x = torch.randn(2, 3, c.native_size, c.native_size)
    with torch.no_grad():  # the head over the extracted features gives the model's logits
        logits = cap.head_logits(c.backbone(c.native_size).model(x).numpy(), c.W, c.b)
        np.testing.assert_allclose(logits, model(x).numpy(), rtol=1e-4, atol=1e-4)
    headless = timm.create_model(name, pretrained=False, num_classes=0)
    torch.save(headless.state_dict(), tmp_path / "headless.pth")
    c = cap.choose_captioner(TIMM_CNN, str(tmp_path / "headless.pth"))
    assert c.name == "efficientnet_lite0" and "no linear classifier" in c.fallback
    with pytest.raises(ParamError, match="random init"):  # random weights caption nothing
        cap.classifier_head(TIMM_CNN, "none")


# --------------------------------------------------------------------------- open_clip
def save_tiny_clip(path, seed: int = 0):
    torch.manual_seed(seed)
    model = open_clip.create_model(CLIP_ARCH, pretrained=None).eval()
    torch.save(model.state_dict(), path)
    return model


def test_clip_features_are_the_normalised_image_embedding_at_its_own_size(tmp_path):
    model = save_tiny_clip(tmp_path / "clip.pt")
    b = build_backbone(CLIP, str(tmp_path / "clip.pt"), None)
    assert (b.dim, b.native_size, b.resize_ratio) == (32, 32, 1.0)
    assert b.mean == pytest.approx(open_clip.OPENAI_DATASET_MEAN)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = torch.nn.functional.normalize(model.encode_image(x), dim=-1)
        np.testing.assert_allclose(b.model(x).numpy(), want.numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ParamError, match=r"`extract.image_size` = 64, but .* takes 32 px"):
        build_for_input(CLIP, str(tmp_path / "clip.pt"), 64, "auto")
    assert build_for_input(CLIP, str(tmp_path / "clip.pt"), "auto", "auto")[1].image_size == 32
    with pytest.raises(ParamError, match="pretrained tags"):
        build_backbone(CLIP, "laion_nothing", None)


def test_clip_captions_are_zero_shot_over_imagenet_names_with_its_text_tower(tmp_path):
    import logging

    model = save_tiny_clip(tmp_path / "clip.pt")
    root = logging.getLogger()
    handlers, root.handlers = root.handlers, []  # as in a stage process
    try:
        c = cap.choose_captioner(CLIP, str(tmp_path / "clip.pt"))
        assert root.handlers == []  # open_clip's root records configured nothing
    finally:
        root.handlers = handlers
    assert c.fallback is None and c.names == cap.clip_class_names() and len(c.names) == 1000
    tok = open_clip.get_tokenizer(CLIP_ARCH)
    with torch.no_grad():
        text = torch.nn.functional.normalize(model.encode_text(tok(
            [f"a photo of {n}." for n in c.names[:5]])), dim=-1)
    scale = float(model.logit_scale.detach().exp())
    np.testing.assert_allclose(c.W[:5], scale * text.numpy(), rtol=1e-4, atol=1e-5)
    assert not c.b.any()
    # the captions' text features: CLIP's text tower on each caption, unit rows
    encode = cap.text_encoder(c, "cpu")
    texts = ["This is a tabby.", "This might be a goldfish, but could also be a tench or a cat."]
    emb = cap.embed_texts(texts * 2, 8, "cpu", 0, progress=False, encoder=encode)
    with torch.no_grad():
        want = torch.nn.functional.normalize(model.encode_text(tok(texts)), dim=-1).numpy()
    np.testing.assert_allclose(emb, np.concatenate([want, want]), rtol=1e-4, atol=1e-5)
    # random CLIP weights caption nothing: Lite0 captions instead, with the sentence model
    fallback = cap.choose_captioner(CLIP, "none")
    assert fallback.name == "efficientnet_lite0" and fallback.text_encoder is None


def test_the_clip_zero_shot_head_is_read_back_from_the_store(tmp_path, monkeypatch):
    """The 1000 prompt embeddings are encoded once per model: the next captioner reads them
    from the store, with the bytes of a run without it; other weights get their own."""
    save_tiny_clip(tmp_path / "clip.pt")
    save_tiny_clip(tmp_path / "other.pt", seed=1)
    real, encoded = hm.clip_text_encoder, []

    def counting(model, arch, **kw):
        encode = real(model, arch, **kw)
        return lambda texts: (encoded.append(len(texts)), encode(texts))[1]

    monkeypatch.setattr(hm, "clip_text_encoder", counting)
    store = tmp_path / "store"
    first = cap.choose_captioner(CLIP, str(tmp_path / "clip.pt"), store=store)
    again = cap.choose_captioner(CLIP, str(tmp_path / "clip.pt"), store=store)
    assert encoded == [1000]
    plain = cap.choose_captioner(CLIP, str(tmp_path / "clip.pt"))
    assert first.W.tobytes() == again.W.tobytes() == plain.W.tobytes()
    other = cap.choose_captioner(CLIP, str(tmp_path / "other.pt"), store=store)
    assert encoded == [1000, 1000, 1000] and not np.allclose(other.W, first.W)
    assert len(list(store.glob("*/fingerprint.json"))) == 2


def test_clip_features_of_a_folder_are_deterministic(tmp_path):
    save_tiny_clip(tmp_path / "clip.pt")
    root = tmp_path / "imgs"
    (root / "a").mkdir(parents=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(6):
        make_image(i, rng, size=(40 + i, 36)).save(root / "a" / f"{i}.png")
        paths.append(f"a/{i}.png")
    runs = []
    for _ in range(2):
        b, recipe = build_for_input(CLIP, str(tmp_path / "clip.pt"), "auto", "auto")
        runs.append(extract_features(b, root, paths, recipe.image_size, recipe.resize,
                                     batch_size=4, progress=False)[0])
    assert runs[0].shape == (6, 32) and runs[0].tobytes() == runs[1].tobytes()
    np.testing.assert_allclose(np.linalg.norm(runs[0], axis=1), 1, rtol=1e-5)


# --------------------------------------------------------------------------- the stages
def photo_params(tmp_path, backbone: str, weights: str) -> dict:
    from clusterlens.config.base import load_params
    from tests.conftest import PROJECT

    rng = np.random.default_rng(3)
    for i in range(12):
        folder = tmp_path / "photos" / ("cats", "dogs", "owls")[i % 3]
        folder.mkdir(parents=True, exist_ok=True)
        make_image(i % 3, rng, (60 + 5 * i, 48)).save(folder / f"{i}.jpg", quality=90)
    params = load_params(PROJECT / "params.yaml")
    params["data"]["root"] = str(tmp_path / "photos")
    params["extract"].update(backbone=backbone, weights=weights, batch_size=8, jit=False,
                             store="none")
    params["fusion"]["dim"] = 8
    return params


def test_a_clip_checkpoint_runs_extract_captions_and_fusion_on_clip_text(tmp_path, in_tmp_cwd):
    """extract, captions and fusion in-process with a saved tiny CLIP: the image tower's
    features, zero-shot captions over the ImageNet names, CLIP text features of the captions,
    and the fusion comparison on them."""
    from clusterlens.config.base import parse_stage
    from clusterlens.core.io import load_npy, read_json, read_table
    from stages import captions as captions_stage
    from stages import extract as extract_stage
    from stages import fusion as fusion_stage
    from stages import index as index_stage

    model = save_tiny_clip(tmp_path / "clip.pt")
    params = photo_params(tmp_path, CLIP, str(tmp_path / "clip.pt"))
    index_stage.run(parse_stage(params, index_stage.Params))
    m = extract_stage.run(parse_stage(params, extract_stage.Params))
    assert (m["image_size"], m["resize"]) == (32, "center_crop")
    feats = load_npy("data/features.npy")
    assert feats.shape == (12, 32)
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1, rtol=1e-5)
    c = captions_stage.run(parse_stage(params, captions_stage.Params))
    assert c["reused_extract_features"] and "CLIP zero-shot head" in c["captioner"]
    assert c["text_dim"] == 32
    table = read_table("data/captions.parquet")
    assert set(table["label1"]) <= set(cap.clip_class_names())
    text = load_npy("data/text_features.npy")
    tok = open_clip.get_tokenizer(CLIP_ARCH)
    with torch.no_grad():
        want = torch.nn.functional.normalize(model.encode_text(tok(
            table["caption"].tolist())), dim=-1).numpy()
    np.testing.assert_allclose(text, want, rtol=1e-4, atol=1e-5)
    f = fusion_stage.run(parse_stage(params, fusion_stage.Params))
    assert f == read_json("metrics/fusion.json") and set(f["text"]) == {"kmeans", "gmm"}
    assert f["k"] == 3 and 0 <= f["text"]["kmeans"] <= 1


def test_a_random_timm_vit_runs_extract_and_captions_fall_back(tmp_path, in_tmp_cwd):
    from clusterlens.config.base import parse_stage
    from clusterlens.core.io import load_npy
    from stages import captions as captions_stage
    from stages import extract as extract_stage
    from stages import index as index_stage

    params = photo_params(tmp_path, TIMM_VIT, "none")
    params["captions"]["preprocessing"] = "native"
    index_stage.run(parse_stage(params, index_stage.Params))
    runs = []
    for _ in range(2):  # the random weights come from the seed: the same bytes again
        m = extract_stage.run(parse_stage(params, extract_stage.Params))
        runs.append(load_npy("data/features.npy"))
    assert m["backbone"] == TIMM_VIT and runs[0].shape == (12, m["dim"])
    assert m["image_size"] == 160 and runs[0].tobytes() == runs[1].tobytes()
    c = captions_stage.run(parse_stage(params, captions_stage.Params))
    assert "efficientnet_lite0" in c["captioner"] and "fallback" in c["captioner"]
    assert c["text_dim"] == cap.TEXT_DIM
