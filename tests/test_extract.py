import copy
import io
import json
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from clusterlens.config.base import parse_section, parse_stage
from clusterlens.config.extract import ExtractParams
from clusterlens.core.errors import ParamError
from clusterlens.core.io import write_table
from clusterlens.data import images
from clusterlens.data.index import build_index
from clusterlens.features import extraction as ex
from clusterlens.features import precision as pr
from clusterlens.features.backbones import LITE0, build_backbone, lite0_weights_path
from stages import extract as stage
from tests.conftest import MOBILENET_WEIGHTS, make_image, make_tree

RNG = np.random.default_rng(2)


# --------------------------------------------------------------------------- images
def test_to_rgb_handles_every_mode():
    rgba = Image.new("RGBA", (4, 4), (10, 20, 30, 0))  # fully transparent -> white
    assert images.to_rgb(rgba).getpixel((0, 0)) == (255, 255, 255)
    half = Image.new("RGBA", (4, 4), (0, 0, 0, 255))
    assert images.to_rgb(half).getpixel((0, 0)) == (0, 0, 0)
    gray16 = Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16))
    assert gray16.mode.startswith("I;16")
    assert images.to_rgb(gray16).getpixel((0, 0)) == (255, 255, 255)
    assert images.to_rgb(Image.new("L", (4, 4), 100)).getpixel((1, 1)) == (100, 100, 100)
    cmyk = Image.new("CMYK", (4, 4), (0, 0, 0, 0))
    assert images.to_rgb(cmyk).getpixel((0, 0)) == (255, 255, 255)
    pal = Image.new("RGB", (4, 4), (200, 10, 10)).convert("P")
    assert images.to_rgb(pal).mode == "RGB"


def test_load_rgb_applies_exif_orientation_and_first_frame(tmp_path):
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(tmp_path / "r.jpg", exif=exif.tobytes())
    assert images.load_rgb(tmp_path / "r.jpg").size == (20, 40)
    frames = [Image.new("RGB", (8, 8), c) for c in [(255, 0, 0), (0, 0, 255)]]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    r, g, b = images.load_rgb(tmp_path / "a.gif").getpixel((2, 2))
    assert r > 200 and b < 50


def test_preprocess_normalises_with_backbone_statistics():
    img = Image.new("RGB", (30, 50), (255, 127, 0))
    t = ex.preprocess(img, 16, "squash", mean=(0.5, 0.5, 0.5), std=(0.5, 0.25, 0.5))
    assert t.shape == (3, 16, 16) and t.dtype == torch.float32
    np.testing.assert_allclose(t[:, 3, 3].numpy(), [1.0, (127 / 255 - 0.5) / 0.25, -1.0],
                               atol=1e-6)


def test_center_crop_keeps_the_centre_and_squash_keeps_everything():
    arr = np.zeros((100, 300, 3), dtype=np.uint8)
    arr[:, 100:200] = 255  # white centre third, black sides
    img = Image.fromarray(arr)
    crop = ex.preprocess(img, 32, "center_crop", (0, 0, 0), (1, 1, 1), resize_ratio=1.0)
    squash = ex.preprocess(img, 32, "squash", (0, 0, 0), (1, 1, 1))
    assert crop.shape == squash.shape == (3, 32, 32)
    assert crop[:, :, 1:-1].min() > 0.95  # only the white centre survives the crop
    assert squash[:, :, 0].max() < 0.05 and squash[:, :, 16].min() > 0.95
    with pytest.raises(ValueError, match="resize must be one of"):
        ex.preprocess(img, 32, "stretch", (0, 0, 0), (1, 1, 1))


# --------------------------------------------------------------------------- device
def test_resolve_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert ex.resolve_device("auto").type == "cpu"
    assert ex.resolve_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="CUDA is not available"):
        ex.resolve_device("cuda")
    with pytest.raises(ValueError, match="auto, cpu, cuda or cuda:N"):
        ex.resolve_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert ex.resolve_device("auto") == torch.device("cuda")
    with pytest.raises(ValueError, match="only 1 CUDA"):
        ex.resolve_device("cuda:3")


@pytest.mark.filterwarnings("ignore:CUDA is not available")
def test_autocast_float16_only_on_cuda_and_bf16_on_request():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    with pr.autocast_for(cpu, "auto"):
        y = torch.ones(2, 2) @ torch.ones(2, 2)
    assert y.dtype == torch.float32  # auto never autocasts on CPU
    with pr.autocast_for(cpu, "bf16"):
        y = torch.ones(2, 2) @ torch.ones(2, 2)
    assert y.dtype == torch.float32  # on CPU bf16 casts the model instead of autocasting
    assert pr.cast_dtype(cpu, "bf16") == torch.bfloat16 and pr.cast_dtype(cpu, "auto") is None
    assert pr.cast_dtype(cuda, "bf16") is None
    assert isinstance(pr.autocast_for(cuda, "bf16"), torch.autocast)
    for jit in (False, True):  # the model runs in bfloat16 (fed float32), eager or traced
        f, engine = pr.prepare_model(torch.nn.Conv2d(3, 4, 3), cpu, (2, 3, 8, 8), "bf16", jit)
        assert f(torch.ones(2, 3, 8, 8)).dtype == torch.bfloat16
        assert engine == ("jit" if jit else "eager")
    assert pr.compute_dtype(cuda, "auto") == "fp16" and pr.compute_dtype(cpu, "auto") == "fp32"
    assert isinstance(pr.autocast_for(cuda, "auto"), torch.autocast)
    assert not isinstance(pr.autocast_for(cuda, "fp32"), torch.autocast)
    assert ex.resolve_workers("auto", cpu) == 0 and ex.resolve_workers(3, cpu) == 3


# --------------------------------------------------------------------------- backbones
@pytest.fixture(scope="module")
def lite0():
    return build_backbone(LITE0, "DEFAULT", 64)


def test_lite0_features_match_an_independent_computation(lite0, tmp_path):
    """Recompute Lite0 features by hand from the documented preprocessing."""
    from efficientnet_lite_pytorch import EfficientNet

    paths = []
    for i in range(3):
        p = tmp_path / f"{i}.png"
        make_image(i, RNG, size=(50 + 10 * i, 40)).save(p)
        paths.append(p.name)
    ours, info = ex.extract_features(lite0, tmp_path, paths, 64, "squash", batch_size=2,
                                     device="cpu", progress=False)
    assert ours.shape == (3, 1280) and ours.dtype == np.float32
    net = EfficientNet.from_name("efficientnet-lite0", image_size=64)
    net.load_state_dict(torch.load(lite0_weights_path(), weights_only=True))
    net.eval()
    batch = []
    for name in paths:
        img = Image.open(tmp_path / name).convert("RGB").resize((64, 64), Image.BILINEAR)
        x = (np.asarray(img, dtype=np.float32) - 127.0) / 128.0
        batch.append(x.transpose(2, 0, 1))
    with torch.no_grad():
        ref = net.extract_features(torch.from_numpy(np.stack(batch))).mean(dim=(2, 3)).numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)
    assert info["images_per_s"] > 0 and info["device"] == "cpu"


def test_batch_size_does_not_change_features(lite0, image_tree):
    index, _, _ = build_index(image_tree)
    paths = index["path"].tolist()[:5]
    a, _ = ex.extract_features(lite0, image_tree, paths, 64, batch_size=1, device="cpu",
                               progress=False)
    b, _ = ex.extract_features(lite0, image_tree, paths, 64, batch_size=4, device="cpu",
                               workers=1, progress=False)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_torchvision_backbone_without_weights_gives_penultimate_features():
    bb = build_backbone("resnet18", "none")
    assert bb.dim == 512 and bb.weights.startswith("none")
    assert bb.mean == (0.485, 0.456, 0.406) and bb.native_size == 224
    out = bb.model(torch.zeros(2, 3, 64, 64))
    assert out.shape == (2, 512)


@pytest.mark.skipif(not MOBILENET_WEIGHTS.is_file(), reason="shared mobilenet weights absent")
def test_local_weights_file_route_with_real_mobilenet_weights():
    import torchvision

    bb = build_backbone("mobilenet_v2", str(MOBILENET_WEIGHTS))
    assert bb.dim == 1280 and len(bb.weights_sha256) == 64
    ref = torchvision.models.mobilenet_v2()
    ref.load_state_dict(torch.load(MOBILENET_WEIGHTS, weights_only=True))
    ref.eval()
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        feats = bb.model(x)
        # the features are exactly what the original classifier reads
        torch.testing.assert_close(ref.classifier(feats), ref(x), rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not MOBILENET_WEIGHTS.is_file(), reason="shared mobilenet weights absent")
def test_weights_that_do_not_fit_are_a_clear_error():
    with pytest.raises(ParamError, match="extract.weights.*does not fit backbone 'resnet18'"):
        build_backbone("resnet18", str(MOBILENET_WEIGHTS))


def test_bad_weights_files_are_refused_without_unpickling(tmp_path):
    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('executed!')",))

    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"w": Boom()}))
    with pytest.raises(ParamError, match="extract.weights.*not a loadable"):
        build_backbone("resnet18", str(evil))
    with pytest.raises(ParamError, match="extract.weights.*file not found"):
        build_backbone("resnet18", str(tmp_path / "missing.pth"))
    buf = io.BytesIO()
    torch.save([torch.zeros(1)], buf)
    (tmp_path / "list.pth").write_bytes(buf.getvalue())
    with pytest.raises(ParamError, match="does not hold a state_dict"):
        build_backbone("resnet18", str(tmp_path / "list.pth"))


def test_unknown_backbone_suggests_names():
    with pytest.raises(ParamError, match="extract.backbone.*resnet18"):
        build_backbone("resnet_18")


def _params(root, **extract):
    p = {"seed": 0, "data": {"root": str(root)},
         "extract": {"backbone": LITE0, "weights": "DEFAULT", "image_size": 32,
                     "resize": "squash", "batch_size": 8, "device": "auto", "workers": 0,
                     "precision": "auto", "jit": "auto", "store": "none"}}
    p["extract"].update(extract)
    return p


def test_params_are_validated_before_heavy_work(tmp_path):
    def P(params):
        return parse_section(params, "extract", ExtractParams)

    with pytest.raises(ParamError, match="extract.image_size"):
        P(_params(tmp_path, image_size=4))
    with pytest.raises(ParamError, match="extract.resize"):
        P(_params(tmp_path, resize="fit"))
    with pytest.raises(ParamError, match="extract.batch_size"):
        P(_params(tmp_path, batch_size=0))
    with pytest.raises(ParamError, match="extract.backbone"):
        P(_params(tmp_path, backbone="nope"))
    with pytest.raises(ParamError, match="extract.precision"):
        P(_params(tmp_path, precision="fp8"))
    with pytest.raises(ParamError, match="extract.workers"):
        P(_params(tmp_path, workers=-1))
    with pytest.raises(ParamError, match="extract.store"):
        P(_params(tmp_path, store=""))
    with pytest.raises(ParamError, match="extract.jit"):
        P(_params(tmp_path, jit="yes"))
    with pytest.raises(ParamError, match="extract.weights"):
        P(_params(tmp_path, weights=""))
    with pytest.raises(ParamError, match="did you mean `extract.threads`"):
        P(_params(tmp_path, thread=2))
    ok = P(_params(tmp_path, image_size="auto", workers="auto", store="None"))
    assert ok.image_size == "auto" and ok.workers == "auto" and ok.store is None
    assert (ok.threads, ok.processes, ok.nodes) == ("auto", 1, 1) and not ok.distributed


def test_run_writes_features_in_index_order(image_tree, in_tmp_cwd):
    index, _, _ = build_index(image_tree)
    write_table("data/index.parquet", index)
    metrics = stage.run(parse_stage(_params(image_tree), stage.Params))
    feats = np.load("data/features.npy")
    assert feats.shape == (len(index), 1280) and feats.dtype == np.float32
    assert json.loads(open("metrics/extract.json").read()) == metrics
    assert metrics["backbone"] == LITE0 and metrics["dim"] == 1280
    assert metrics["device"] == "cpu" and metrics["image_size"] == 32
    one, _ = ex.extract_features(build_backbone(LITE0, "DEFAULT", 32), image_tree,
                                 [index["path"][4]], 32, device="cpu", progress=False)
    np.testing.assert_allclose(feats[4], one[0], rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- bf16 fold, fusion
class _DataDependent(torch.nn.Module):
    """torch.fx cannot trace this (a Python branch on a tensor value)."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.bn(self.conv(x))
        return y if bool(y.sum() > 0) else -y


def _randomize_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=g))
            m.bias.data.copy_(torch.randn(m.num_features, generator=g))
    return model.eval()


@pytest.mark.parametrize("name", ["mobilenet_v2", LITE0])
def test_fold_batchnorms_removes_every_batchnorm_and_keeps_the_function(name):
    model = build_backbone(name, "none" if name != LITE0 else "DEFAULT", 64).model
    if name != LITE0:  # random weights: give the batch norms non-trivial statistics
        _randomize_bn(model)
    model.eval()
    before = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    folded = pr.fold_batchnorms(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert len(before) >= 20  # Lite0's convolutions are a Conv2d subclass: folded as well
    assert all(isinstance(m, torch.nn.BatchNorm2d) for m in before)  # the original untouched
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref, out = model(x), folded(x)
    assert torch.allclose(out, ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))


def test_fold_batchnorms_leaves_an_untraceable_model_as_a_copy(caplog):
    model = _randomize_bn(_DataDependent())
    with caplog.at_level("INFO", logger="clusterlens.extract"):
        out = pr.fold_batchnorms(model)
    assert out is not model and isinstance(out.bn, torch.nn.BatchNorm2d)
    assert "not folded" in caplog.text
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(out(x), model(x))


def _lite0_batch():
    """Lite0 at 64 px and a channels-last batch of 32 generated images for it."""
    bb = build_backbone(LITE0, "DEFAULT", 64)
    rng = np.random.default_rng(0)
    x = torch.stack([ex.preprocess(make_image(i % 5, rng, size=(64, 64)), 64, "squash", bb.mean,
                                   bb.std, bb.resize_ratio, bb.interpolation)
                     for i in range(32)]).contiguous(memory_format=torch.channels_last)
    return bb, x


def _cosines(a, b) -> np.ndarray:
    """Per-row cosine similarity."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.freeze, as the stage
def test_bf16_model_is_folded_in_float32_before_the_cast():
    """Lite0 in bfloat16 with its batch norms folded in float32 before the cast is closer to
    float32 than the cast model whose trace folds bfloat16 statistics (the earlier route)."""
    bb, x = _lite0_batch()
    cpu = torch.device("cpu")
    with torch.inference_mode():
        ref = bb.model.eval()(x).numpy()
        new, engine = pr.prepare_model(bb.model, cpu, tuple(x.shape), "bf16", True)
        ours = new(x).float().numpy()
    old = pr._CastInput(copy.deepcopy(bb.model).to(torch.bfloat16), torch.bfloat16).eval()
    with torch.no_grad():
        earlier = torch.jit.freeze(torch.jit.trace(old, x, check_trace=False))(x).float().numpy()

    assert engine == "jit"
    gap_ours = 1 - float(_cosines(ref, ours).mean())
    gap_earlier = 1 - float(_cosines(ref, earlier).mean())
    assert 0 < gap_ours < 0.75 * gap_earlier  # measured: 0.00103 against 0.00169
    assert gap_ours < 0.002


def test_cpu_jit_runs_with_onednn_fusion_and_restores_the_flag():
    cpu = torch.device("cpu")
    assert pr.onednn_fusion(cpu, True) and not pr.onednn_fusion(cpu, False)
    assert not pr.onednn_fusion(torch.device("cuda"), True)
    before = torch._C._jit_llga_enabled()
    model = build_backbone("mobilenet_v2", "none", 64).model
    f, engine = pr.prepare_model(model, cpu, (4, 3, 64, 64), "fp32", True)
    assert engine == "jit" and torch._C._jit_llga_enabled() == before
    x = torch.randn(4, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        y1, y2 = f(x), f(x)
        ref = model(x)
    assert torch.equal(y1, y2)  # the warm-up passes were done in prepare_model
    assert torch.allclose(y1, ref, rtol=1e-4, atol=1e-5)
    graph = str(torch.jit.last_executed_optimized_graph())
    assert "LlgaFusionGroup" in graph or "oneDNN" in graph
    spec = ex.store_spec(build_backbone("mobilenet_v2", "none", 32), 32, cpu, resize="squash",
                         precision="fp32", jit="auto", batch_size=4, seed=0)
    assert spec["onednn_fusion"] is True and "bf16_fold" not in spec


def test_a_partition_onednn_cannot_build_falls_back_to_the_plain_trace(caplog, monkeypatch):
    """When oneDNN Graph cannot build a fused partition (it happens for some models and shapes
    on some CPUs), the model is traced again without the fusion, not run eagerly. The failure is
    forced here, so the fallback is checked on every CPU."""
    real_trace, calls = pr._trace, []

    def fused_trace_fails(model, example, device, precision, fusion):
        calls.append(fusion)
        if fusion:
            raise RuntimeError("LLGA: cannot build a partition (forced by the test)")
        return real_trace(model, example, device, precision, fusion)

    monkeypatch.setattr(pr, "_trace", fused_trace_fails)
    model = build_backbone("mobilenet_v2", "none", 32).model
    before = torch._C._jit_llga_enabled()
    with caplog.at_level("INFO", logger="clusterlens.extract"):
        f, engine = pr.prepare_model(model, torch.device("cpu"), (4, 3, 32, 32), "fp32", True)
    assert calls == [True, False]
    assert engine == "jit" and isinstance(f, torch.jit.ScriptModule)
    assert "fusion failed" in caplog.text and "eagerly" not in caplog.text
    assert torch._C._jit_llga_enabled() == before
    x = torch.randn(4, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        assert torch.allclose(f(x), model(x), rtol=1e-4, atol=1e-5)


def test_a_model_that_cannot_be_traced_runs_eagerly(caplog, monkeypatch):
    def no_trace(*args):
        raise RuntimeError("cannot trace (forced by the test)")

    monkeypatch.setattr(pr, "_trace", no_trace)
    model = torch.nn.Conv2d(3, 4, 3)
    with caplog.at_level("INFO", logger="clusterlens.extract"):
        f, engine = pr.prepare_model(model, torch.device("cpu"), (2, 3, 8, 8), "fp32", True)
    assert engine == "eager" and "eagerly" in caplog.text
    x = torch.ones(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(f(x), model(x))


def test_fold_batchnorms_leaves_a_shared_convolution_alone():
    """A convolution called twice (shared weights), once followed by a batch norm: folding that
    batch norm into the weights would change the other call."""

    class Shared(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = torch.nn.Conv2d(3, 3, 3, padding=1), torch.nn.BatchNorm2d(3)

        def forward(self, x):
            return self.bn(self.conv(x)) + self.conv(x)

    model = _randomize_bn(Shared())
    folded = pr.fold_batchnorms(model)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(folded(x), model(x), atol=1e-5)


def test_split_depthwise_keeps_the_function_and_splits_only_depthwise_convolutions():
    model = _randomize_bn(build_backbone("mobilenet_v2", "none", 64).model)
    depthwise = [n for n, m in model.named_modules() if pr.is_depthwise(m)]
    assert len(depthwise) == 17  # one per inverted-residual block, 1x1 convolutions left alone
    split = pr.split_depthwise(pr.fold_batchnorms(model))
    pairs = [m for m in split.modules() if isinstance(m, pr._SplitWeightConv)]
    assert len(pairs) == 17
    assert sum(pr.is_depthwise(m) for m in split.modules()) == 2 * 17  # each pair's hi and lo
    for p in pairs:  # lo is what bfloat16 rounds away from the float32 weight
        w, lo = p.hi.weight.detach(), p.lo.weight.detach()
        assert torch.allclose(w.to(torch.bfloat16).float() + lo, w, rtol=0, atol=1e-12)
        assert p.lo.bias is None and 0 < float(lo.abs().max()) <= 2 ** -8 * float(w.abs().max())
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref, out = model(x), split(x)
    assert torch.allclose(out, ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.freeze, as the stage
def test_bf16_split_is_closer_to_float32_than_bf16():
    """``extract.precision: bf16_split`` (depthwise weights in two bfloat16 parts) against plain
    ``bf16`` on Lite0: closer to float32 on average and on the worst image."""
    bb, x = _lite0_batch()
    cpu = torch.device("cpu")
    with torch.inference_mode():
        ref = bb.model.eval()(x).numpy()
        ours = pr.prepare_model(bb.model, cpu, tuple(x.shape), "bf16_split", False)[0](x).float()
        unsplit = pr.prepare_model(bb.model, cpu, tuple(x.shape), "bf16", False)[0](x).float()

    c_ours, c_plain = _cosines(ref, ours.numpy()), _cosines(ref, unsplit.numpy())
    # measured (1 - cosine, mean / worst of 32): 0.00033 / 0.00096 against 0.00103 / 0.00369
    assert 1 - c_ours.mean() < 0.7 * (1 - c_plain.mean())
    assert 1 - c_ours.min() < 0.7 * (1 - c_plain.min())


def test_bf16_split_has_its_own_store_key_space_and_label(tmp_path):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert pr.split_weights(cpu, "bf16_split") and not pr.split_weights(cpu, "bf16")
    assert not pr.split_weights(cuda, "bf16_split")  # autocast on CUDA: nothing to split
    assert pr.compute_dtype(cuda, "bf16_split") == "bf16"
    assert [pr.precision_label(cpu, v) for v in ("auto", "fp32", "bf16", "bf16_split")] == \
        ["fp32", "fp32", "bf16", "bf16_split"]
    bb = build_backbone(LITE0, "DEFAULT", 32)
    specs = {v: ex.store_spec(bb, 32, cpu, resize="squash", precision=v, jit="auto",
                              batch_size=8, seed=0) for v in ("fp32", "bf16", "bf16_split")}
    assert specs["bf16_split"]["bf16_depthwise"] == "hi+lo"
    assert "bf16_depthwise" not in specs["bf16"] and "bf16_fold" not in specs["fp32"]
    assert len({json.dumps(s, sort_keys=True) for s in specs.values()}) == 3


# --------------------------------------------------------------------------- interrupt hook
class _Held(Exception):
    pass


def test_hold_hook_stops_right_after_the_nth_batch(image_tree, monkeypatch):
    """CLUSTERLENS_HOLD_AFTER_BATCH=n holds after the n-th batch (here: raises instead of
    blocking); unset, extraction runs through."""
    from clusterlens.features.backbones import RAW

    held = []

    def hold(n):
        held.append(n)
        raise _Held

    monkeypatch.setattr(ex, "_hold", hold)
    bb = build_backbone(RAW, "none", 8)
    paths = sorted(p.relative_to(image_tree).as_posix() for p in image_tree.rglob("*.png"))
    kw = dict(batch_size=2, device="cpu", progress=False, jit=False)
    monkeypatch.delenv(ex.HOLD_ENV, raising=False)
    full, _ = ex.extract_features(bb, image_tree, paths, 8, **kw)
    assert held == [] and full.shape == (len(paths), 3 * 8 * 8)
    monkeypatch.setenv(ex.HOLD_ENV, "2")
    with pytest.raises(_Held):
        ex.extract_features(bb, image_tree, paths, 8, **kw)
    assert held == [2]
    monkeypatch.setenv(ex.HOLD_ENV, "0")
    with pytest.raises(ValueError, match=ex.HOLD_ENV):
        ex.extract_features(bb, image_tree, paths, 8, **kw)


def _shard_rows(store) -> int:
    return sum(len(np.load(f)) for f in store.rglob("*.sha.npy"))


def test_extract_stage_killed_at_the_signalled_point_keeps_its_flushes(tmp_path, in_tmp_cwd,
                                                                       caplog):
    """The stage, run as a command, says where it holds on stderr and is SIGKILLed there
    (batch 103 of 110, one image per batch: after the flush every FLUSH_BATCHES = 100
    batches). No output has been written; the store holds the flushed images, k of them; the
    rerun reads those k back and extracts only the other 110 - k, and its features are the
    bytes of an uninterrupted run."""
    import logging
    import os
    import subprocess
    import sys
    import threading

    import yaml

    assert ex.FLUSH_BATCHES == 100  # the docstring's arithmetic
    root = make_tree(tmp_path / "img", {"a": 55, "b": 55}, size=(12, 10))
    index, _, _ = build_index(root, min_side=8)
    write_table("data/index.parquet", index)
    store = tmp_path / "store"
    params = _params(root, backbone="raw_pixels", weights="none", image_size=16, batch_size=1,
                     device="cpu", jit=False, store=str(store))
    (in_tmp_cwd / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, ex.HOLD_ENV: "103"}
    proc = subprocess.Popen([sys.executable, "-m", "stages.extract"], env=env, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # A watchdog ends the process if the line never comes (a failure, not a race). Lines are
    # read straight from the pipe: a select() on it would miss lines already buffered.
    watchdog = threading.Timer(300, proc.kill)
    watchdog.start()
    lines, held = [], False
    try:
        for line in proc.stderr:
            lines.append(line)
            # the line may follow a progress bar's carriage return on the same line
            if line.split("\r")[-1].strip() == "clusterlens: holding after batch 103":
                held = proc.poll() is None  # blocked there, not finished
                break
    finally:
        watchdog.cancel()
        proc.kill()  # SIGKILL
        proc.wait()
    assert held, "the stage did not hold at batch 103:\n" + "".join(lines)
    assert not (in_tmp_cwd / "data/features.npy").exists()
    assert not (in_tmp_cwd / "metrics/extract.json").exists()
    k = _shard_rows(store)
    # 100 by the batch count; a flush by time (FLUSH_SECONDS) on a slow machine moves it
    assert 103 - ex.FLUSH_BATCHES < k <= 103, k

    with caplog.at_level(logging.INFO, logger="clusterlens.extract"):
        stage.run(parse_stage(params, stage.Params))
    assert f"110 images (110 distinct): {k} from the feature store, {110 - k} to extract" \
        in caplog.text
    timing = json.loads(open("logs/extract_timing.json").read())
    assert (timing["from_store"], timing["extracted"]) == (k, 110 - k)
    assert _shard_rows(store) == 110
    resumed = open("data/features.npy", "rb").read()
    uninterrupted = {**params, "extract": {**params["extract"], "store": "none"}}
    stage.run(parse_stage(uninterrupted, stage.Params))
    assert open("data/features.npy", "rb").read() == resumed


# --------------------------------------------------------------------------- image_size / resize auto
def test_auto_input_follows_the_images_size():
    from clusterlens.features.backbones import RAW, SCRATCH_CNN
    from clusterlens.features.preprocessing import median_short_side, resolve_input

    def auto(side, name=LITE0, native=224, image_size="auto", resize="auto"):
        r = resolve_input(name, native, image_size, resize, [side] * 5, [side + 3] * 5)
        return r.image_size, r.resize

    assert auto(8) == (64, "squash")  # the demo's 8x8 digits: 8x their side, the whole image
    assert auto(20) == (160, "squash")
    assert auto(32) == auto(28) == auto(480) == (224, "center_crop")  # CIFAR and photos: native
    assert auto(1) == (16, "squash")  # never below the smallest image_size
    assert auto(8, native=299) == (64, "squash") and auto(480, native=299) == (299, "center_crop")
    assert auto(480, image_size=128) == (128, "squash")  # an explicit size off native: squash
    assert auto(8, image_size=224) == (224, "center_crop")
    assert auto(480, resize="squash") == (224, "squash")  # an explicit resize is kept
    assert auto(8, resize="center_crop") == (64, "center_crop")
    assert auto(480, name=RAW, native=32) == (32, "squash")  # no network: always squash
    assert auto(480, name=SCRATCH_CNN, native=32, image_size=64) == (32, "squash")  # as trained
    # the median is over the shorter side of each image
    assert median_short_side([100, 30, 50, 7], [40, 80, 50, 9]) == 35.0
    mixed = resolve_input(LITE0, 224, "auto", "auto", [12, 640, 9], [9, 480, 600])
    assert (mixed.image_size, mixed.resize, mixed.median_side) == (72, "squash", 9.0)
    assert "8 x median side 9 px, native 224" in mixed.describe()
    # without sizes (an index without width/height) auto is the native size
    unknown = resolve_input(LITE0, 224, "auto", "auto")
    assert (unknown.image_size, unknown.resize, unknown.median_side) == (224, "center_crop", None)
    ok = parse_section({"extract": {k: v for k, v in _params(".")["extract"].items()
                                    if k not in ("image_size", "resize")}}, "extract",
                       ExtractParams)
    assert (ok.image_size, ok.resize) == ("auto", "auto")  # the defaults


def test_backbones_are_built_for_the_resolved_input():
    from clusterlens.features.backbones import RAW
    from clusterlens.features.preprocessing import FIXED_NATIVE_SIZES, build_for_input

    for name, size in FIXED_NATIVE_SIZES.items():  # the constants are the built backbones'
        assert build_backbone(name, "DEFAULT", None).native_size == size
    digits = ([8] * 4, [8] * 4)
    raw, recipe = build_for_input(RAW, "DEFAULT", "auto", "auto", *digits)
    assert (recipe.image_size, recipe.resize, raw.dim) == (32, "squash", 3 * 32 * 32)
    raw, recipe = build_for_input(RAW, "DEFAULT", 16, "auto", *digits)
    assert raw.dim == 3 * 16 * 16 and recipe.requested == (16, "auto")
    lite, recipe = build_for_input(LITE0, "DEFAULT", "auto", "auto", *digits)
    assert (recipe.image_size, recipe.resize) == (64, "squash")
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():  # built at 64 px: Lite0's "same" padding is that of 64 px
        np.testing.assert_array_equal(lite.model(x).numpy(),
                                      build_backbone(LITE0, "DEFAULT", 64).model(x).numpy())


def test_auto_resolves_in_the_stage_and_keys_the_store_by_the_resolved_values(tmp_path,
                                                                              in_tmp_cwd):
    root = make_tree(tmp_path / "tiny", {"a": 3, "b": 3}, size=(8, 8))
    index, _, _ = build_index(root, min_side=8)
    write_table("data/index.parquet", index)
    store = str(tmp_path / "store")
    explicit = stage.run(parse_stage(_params(root, image_size=64, resize="squash", store=store,
                                             jit=False, device="cpu"), stage.Params))
    feats = np.load("data/features.npy")
    auto = stage.run(parse_stage(_params(root, image_size="auto", resize="auto", store=store,
                                         jit=False, device="cpu"), stage.Params))
    assert (auto["image_size"], auto["resize"]) == (64, "squash")
    assert auto["preprocessing"].startswith("64 px squash (image_size auto: 8 x median side 8")
    assert explicit["preprocessing"] == "64 px squash"
    assert np.array_equal(np.load("data/features.npy"), feats)
    timing = json.loads(open("logs/extract_timing.json").read())
    assert (timing["extracted"], timing["from_store"]) == (0, 6)  # the same key: all reused
