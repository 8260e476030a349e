"""`extract` stage: CNN features for every indexed image (SPEC E1, E2, E5).

Preprocessing, per image (the README documents it so anyone can recompute the features):
1. open with Pillow, apply the EXIF orientation, take the first frame, convert to RGB (alpha is
   composited onto white; 16-bit grayscale is scaled to 8 bits);
2. resize with the backbone's interpolation (Pillow, antialiased):
   ``squash`` -> straight to ``image_size`` x ``image_size`` (aspect ratio not kept, as seed 000);
   ``center_crop`` -> shorter side to ``round(image_size * resize_ratio)`` then a centred
   ``image_size`` square (torchvision's evaluation transform; resize_ratio e.g. 256/224);
3. scale to [0, 1], subtract ``mean`` and divide by ``std`` of the backbone's weights.

Features are float32, one row per index row, in index order.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from clusterlens.backbones import SCRATCH_CNN, Backbone, build_backbone, check_backbone_name
from clusterlens.common import (
    DataError, ParamError, get_logger, load_params, log_block, param, read_table,
    remove_stale_tmp, require_choice, require_int, run_cli, save_npy, write_json,
)

from clusterlens.images import first_frame_rgb, load_rgb, to_rgb  # noqa: E402,F401

log = get_logger("extract")
RESIZE_MODES = ("squash", "center_crop")
_INTERP = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}


# --------------------------------------------------------------------------- images
def preprocess(img: Image.Image, image_size: int, resize: str, mean, std,
               resize_ratio: float = 256 / 224, interpolation: str = "bilinear") -> torch.Tensor:
    """RGB PIL image -> normalised float32 tensor of shape (3, image_size, image_size)."""
    interp = _INTERP[interpolation]
    if resize == "squash":
        img = img.resize((image_size, image_size), interp)
    elif resize == "center_crop":
        short = int(round(image_size * resize_ratio))
        w, h = img.size
        if w <= h:
            new_w, new_h = short, max(short, int(round(h * short / w)))
        else:
            new_w, new_h = max(short, int(round(w * short / h))), short
        img = img.resize((new_w, new_h), interp)
        left = int(round((new_w - image_size) / 2.0))
        top = int(round((new_h - image_size) / 2.0))
        img = img.crop((left, top, left + image_size, top + image_size))
    else:
        raise ParamError("extract.resize", f"must be one of {RESIZE_MODES}, got {resize!r}")
    arr = np.asarray(img, dtype=np.float32) / 255.0
    arr = (arr - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


class ImageFolderDataset(Dataset):
    def __init__(self, root, paths, image_size, resize, backbone: Backbone):
        self.root = Path(root)
        self.paths = list(paths)
        self.kw = dict(image_size=image_size, resize=resize, mean=backbone.mean,
                       std=backbone.std, resize_ratio=backbone.resize_ratio,
                       interpolation=backbone.interpolation)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        path = self.root / self.paths[i]
        try:
            img = load_rgb(path)
        except Exception as exc:  # the index said it was fine: the folder changed since
            raise DataError(f"{path}: cannot be read any more ({type(exc).__name__}: {exc}); "
                            "the folder changed after indexing: run `dvc repro` again") from exc
        return preprocess(img, **self.kw)


# --------------------------------------------------------------------------- device
def resolve_device(spec: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda``/``cuda:N``/``cpu`` as asked."""
    spec = str(spec)
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ParamError("extract.device", f"must be auto, cpu, cuda or cuda:N; got {spec!r}") \
            from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ParamError("extract.device", f"asks for {spec!r} but CUDA is not available on "
                             "this machine; use `auto` or `cpu`")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ParamError("extract.device", f"asks for {spec!r} but only "
                             f"{torch.cuda.device_count()} CUDA device(s) exist")
    elif device.type != "cpu":
        raise ParamError("extract.device", f"must be auto, cpu, cuda or cuda:N; got {spec!r}")
    return device


PRECISIONS = ("auto", "fp32", "bf16", "bf16_split")


def compute_dtype(device: torch.device, precision: str) -> str:
    """What ``extract.precision`` means on this device: ``auto`` is float16 autocast on CUDA and
    float32 on CPU; ``bf16`` is bfloat16 on either (fast on CPUs with AVX512-BF16 / AMX and on
    recent GPUs; ``bf16_split`` too, see ``split_weights``); ``fp32`` never lowers precision."""
    if precision in ("bf16", "bf16_split"):
        return "bf16"
    if precision == "auto" and device.type == "cuda":
        return "fp16"
    return "fp32"


def cast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """On CPU, bfloat16 runs as a bfloat16 model: batch norms folded into the convolutions in
    float32 (``fold_batchnorms``), then weights and inputs cast once. Faster than autocast,
    which re-casts every weight on every call, and as accurate (mobilenet_v2, 64 CIFAR images at
    224 px, without oneDNN Graph fusion: 330-400 against 316 images/s; minimum per-image cosine
    to float32 0.9975 both). Folding in float32 first matters for Lite0 (worst of 256 CIFAR
    images 0.975 -> 0.981 against letting the trace fold bfloat16 statistics), not for
    mobilenet_v2 (unchanged). On CUDA, autocast."""
    if device.type == "cpu" and compute_dtype(device, precision) == "bf16":
        return torch.bfloat16
    return None


def split_weights(device: torch.device, precision: str) -> bool:
    """``bf16_split`` on CPU: the bfloat16 model's depthwise convolutions carry their weights in
    two bfloat16 parts (``split_depthwise``). On CUDA it is plain bfloat16 autocast."""
    return precision == "bf16_split" and cast_dtype(device, precision) is not None


def precision_label(device: torch.device, precision: str) -> str:
    """What metrics and logs call the compute precision: fp32, fp16, bf16 or bf16_split."""
    return "bf16_split" if split_weights(device, precision) else compute_dtype(device, precision)


def autocast_for(device: torch.device, precision: str):
    """The autocast context for ``compute_dtype`` on CUDA (fp16 / bf16); a no-op context for
    float32 and on CPU (where bf16 casts the model instead: ``cast_dtype``)."""
    dtype = compute_dtype(device, precision)
    if dtype == "fp32" or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type,
                          dtype=torch.bfloat16 if dtype == "bf16" else torch.float16)


def prepare_model(model: torch.nn.Module, device: torch.device, example_shape: tuple,
                  precision: str, jit: bool):
    """The model on ``device`` in channels-last (as bfloat16 when ``cast_dtype`` says so), and,
    with ``jit``, traced on the fixed batch shape and frozen (``torch.jit.freeze`` folds batch
    norms into convolutions and lets oneDNN fuse conv + activation: the big CPU win; on CPU the
    frozen graph also runs with oneDNN Graph fusion, see ``onednn_fusion``). Returns
    (callable, "jit" or "eager"); a model that cannot be traced runs eagerly, with a warning.
    The callable takes float32 batches (cast inside) and may return bfloat16."""
    dtype = cast_dtype(device, precision)
    model = model.to(device, memory_format=torch.channels_last).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if dtype is not None:  # a copy: the caller's float32 model stays usable
        model = fold_batchnorms(model)
        if split_weights(device, precision):
            model = split_depthwise(model, dtype)
        model = _CastInput(model.to(dtype), dtype).eval()
    if not jit:
        return model, "eager"
    example = torch.zeros(example_shape, device=device).contiguous(
        memory_format=torch.channels_last)
    fusion = onednn_fusion(device, jit)
    try:
        return _trace(model, example, device, precision, fusion), "jit"
    except Exception as exc:
        if fusion:  # a oneDNN Graph partition it cannot build (e.g. mobilenet_v2 at 32 px,
            # where the last maps are 1 x 1): the same trace without the fusion. Deterministic
            # for a given model, shape and torch, so the store's key space stays consistent.
            log.info("oneDNN Graph fusion failed (%s: %s); tracing without it",
                     type(exc).__name__, _first_line(exc))
            try:
                return _trace(model, example, device, precision, False), "jit"
            except Exception as exc2:
                exc = exc2
        log.warning("torch.jit.trace failed (%s: %s); running the model eagerly",
                    type(exc).__name__, _first_line(exc))
        return model, "eager"


def _first_line(exc: BaseException) -> str:
    lines = [ln for ln in str(exc).splitlines() if ln.strip()]
    text = next((ln for ln in lines if "Error" in ln), lines[0] if lines else "")
    return text[:200]


def _trace(model, example, device: torch.device, precision: str, fusion: bool):
    """Trace ``model`` on ``example`` and freeze it, with or without oneDNN Graph fusion."""
    was_enabled = torch._C._jit_llga_enabled()
    try:
        torch.jit.enable_onednn_fusion(fusion)
        with torch.no_grad(), autocast_for(device, precision), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated upstream;
            # it works on the pinned torch and is the fastest CPU route measured here
            traced = torch.jit.freeze(torch.jit.trace(model, example, check_trace=False))
            if fusion:
                # TorchScript's profiling executor runs a graph once unfused, then compiles the
                # oneDNN Graph partitions on the next call: do both here, on the fixed batch
                # shape, so every real batch goes through the same fused kernels (an image's
                # features must not depend on whether its batch came first) and a partition
                # oneDNN cannot build fails here, not mid-run
                with torch.inference_mode():
                    for _ in range(2):
                        traced(example)
        return traced
    finally:  # the fused plan is kept by the traced graph; leave the global flag as found
        torch.jit.enable_onednn_fusion(was_enabled)


def onednn_fusion(device: torch.device, jit: bool) -> bool:
    """Whether the traced CPU model runs with oneDNN Graph fusion (``torch.jit``'s LLGA pass:
    conv + activation + elementwise chains, residual adds and pooling as fused partitions).
    Measured at 224 px, batch 32, on this 2-core AVX512-BF16 CPU, frozen graph without -> with
    it: mobilenet_v2 float32 118-145 -> 208-250 images/s, bfloat16 293-313 -> 660-680;
    Lite0 float32 58-68 -> 84-87, bfloat16 167-205 -> 235-284. It changes float32 features in
    the last bits (max 4e-6 on mobilenet_v2), so it is part of the feature store's key."""
    return bool(jit) and device.type == "cpu"


class _ConvLeafTracer(torch.fx.Tracer):
    """Keeps every ``Conv2d`` (subclasses too, e.g. Lite0's static-same-padding convolution)
    and ``BatchNorm2d`` as one call, so conv -> batch-norm pairs are visible in the graph."""

    def is_leaf_module(self, m: torch.nn.Module, qualname: str) -> bool:
        return isinstance(m, (torch.nn.Conv2d, torch.nn.BatchNorm2d)) or \
            super().is_leaf_module(m, qualname)


def fold_batchnorms(model: torch.nn.Module) -> torch.nn.Module:
    """A float32 copy of ``model`` (eval mode) with every batch norm that directly follows a
    convolution (and is its only user) folded into that convolution's weight and bias, computed
    in float32. Before a cast to bfloat16 this keeps the folded weights' rounding to one step
    (``torch.jit.freeze`` of a bfloat16 model would fold bfloat16 statistics instead). A model
    that torch.fx cannot trace comes back as an unfolded copy (with a log line)."""
    from torch.nn.utils.fusion import fuse_conv_bn_weights

    model = copy.deepcopy(model).eval()
    try:
        graph = _ConvLeafTracer().trace(model)
    except Exception as exc:  # data-dependent control flow and the like
        log.info("batch norms not folded before the bfloat16 cast (torch.fx: %s: %s)",
                 type(exc).__name__, _first_line(exc))
        return model
    modules = dict(model.named_modules())
    calls: dict[str, int] = {}  # a module called at several places (shared weights) stays
    for node in graph.nodes:    # unfolded: folding one call's batch norm would change the others
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    folded = 0
    for node in list(graph.nodes):
        if node.op != "call_module" or not isinstance(modules.get(node.target),
                                                      torch.nn.BatchNorm2d):
            continue
        src = node.args[0] if node.args else None
        if not (isinstance(src, torch.fx.Node) and src.op == "call_module"
                and isinstance(modules.get(src.target), torch.nn.Conv2d)
                and len(src.users) == 1 and calls[src.target] == 1):
            continue
        conv, bn = modules[src.target], modules[node.target]
        if not bn.track_running_stats or bn.running_mean is None:
            continue
        weight, bias = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean,
                                            bn.running_var, bn.eps, bn.weight, bn.bias)
        conv.weight, conv.bias = weight, bias
        node.replace_all_uses_with(src)
        graph.erase_node(node)
        folded += 1
    if not folded:
        return model
    graph.lint()
    return torch.fx.GraphModule(model, graph).eval()


class _SplitWeightConv(torch.nn.Module):
    """A convolution run as two: ``conv(x, hi) + conv(x, lo)``, where ``hi`` is the weight as
    ``dtype`` will round it and ``lo`` the float32 remainder (rounded in its turn by the cast).
    After the cast the pair carries about 16 mantissa bits of the weight instead of 8."""

    def __init__(self, conv: torch.nn.Conv2d, dtype: torch.dtype):
        super().__init__()
        self.hi, self.lo = conv, copy.deepcopy(conv)
        with torch.no_grad():
            self.lo.weight.copy_(conv.weight - conv.weight.to(dtype).to(conv.weight.dtype))
        self.lo.bias = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.hi(x) + self.lo(x)


def is_depthwise(m: torch.nn.Module) -> bool:
    """A convolution with one group per input channel (each output sees one channel)."""
    return isinstance(m, torch.nn.Conv2d) and 1 < m.groups == m.in_channels


def split_depthwise(model: torch.nn.Module,
                    dtype: torch.dtype = torch.bfloat16) -> torch.nn.Module:
    """``model`` (float32, changed in place and returned) with every depthwise convolution
    replaced by a ``_SplitWeightConv``, before a cast to ``dtype``. A depthwise output sums only
    9 or 25 products, so bfloat16's rounding of those few weights (up to 2^-9 each) is a fixed
    error per channel that does not average out and compounds through the blocks; a 1x1
    convolution sums hundreds. Measured at 224 px on 512 CIFAR-10 images against float32 (min /
    mean per-image cosine; the stage's loop rate): mobilenet_v2 0.9961 / 0.99899 -> 0.9983 /
    0.99961, 116 -> 92 images/s; Lite0 0.9799 / 0.99750 -> 0.9927 / 0.99861, 81 -> 67 images/s.
    Splitting every convolution as well: 1.6x slower for mobilenet_v2 and no better minimum
    (what is left is bfloat16's rounding of the activations)."""
    for name, m in list(model.named_modules()):
        if not is_depthwise(m):
            continue
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr,
                _SplitWeightConv(m, dtype))
    return model


class _CastInput(torch.nn.Module):
    """Runs ``model`` (already cast to ``dtype``) on inputs cast to ``dtype``."""

    def __init__(self, model: torch.nn.Module, dtype: torch.dtype):
        super().__init__()
        self.model, self.dtype = model, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.to(self.dtype))


def resolve_jit(spec, device: torch.device) -> bool:
    """``auto``: trace + freeze on CPU, eager on CUDA (where cuDNN already fuses)."""
    return device.type == "cpu" if spec == "auto" else bool(spec)


def resolve_workers(spec, device: torch.device) -> int:
    """``auto``: on CUDA one decoding process per core (up to 8), so the GPU never waits; on
    CPU none (decoding in worker processes steals the cores the model needs; measured in
    benchmarks/bench_extract.py)."""
    if spec == "auto":
        return min(8, os.cpu_count() or 1) if device.type == "cuda" else 0
    return int(spec)


# --------------------------------------------------------------------------- extraction
def extract_features(backbone: Backbone, root, paths, image_size: int, resize: str = "squash",
                     batch_size: int = 64, device: str | torch.device = "auto",
                     workers: int | str = 0, precision: str = "auto", progress: bool = True,
                     jit: bool | str = "auto") -> tuple[np.ndarray, dict]:
    """Features (N, D) float32 in the order of ``paths``, and timing info.

    Every forward pass holds exactly ``batch_size`` images (the last batch is zero-padded), so an
    image's features do not depend on which images share its batch: extracting a subset gives
    the same bytes as extracting everything (what the feature store relies on). Channels-last
    memory format; ``inference_mode``; on CUDA, pinned memory, non-blocking copies both ways
    and one synchronisation at the end (no per-batch host sync).
    """
    device = device if isinstance(device, torch.device) else resolve_device(device)
    workers = resolve_workers(workers, device)
    cuda = device.type == "cuda"
    dataset = ImageFolderDataset(root, paths, image_size, resize, backbone)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        pin_memory=cuda, persistent_workers=False)
    n = len(dataset)
    model, engine = (None, "none") if n == 0 else prepare_model(
        backbone.model, device, (batch_size, 3, image_size, image_size), precision,
        resolve_jit(jit, device))
    out = torch.empty((n, backbone.dim), dtype=torch.float32, pin_memory=cuda)
    # test hook: seconds to sleep per batch, so that interruption tests can land a signal
    # mid-loop however fast the machine is (unset in normal use)
    test_delay = float(os.environ.get("CLUSTERLENS_TEST_BATCH_DELAY", "0") or 0)
    start = time.perf_counter()
    row = 0
    with torch.inference_mode():
        for batch in tqdm(loader, desc=f"extract {backbone.name}", unit="batch",
                          disable=not progress, mininterval=1.0):
            b = len(batch)
            if b < batch_size:  # pad: same batch shape for every pass
                batch = torch.cat([batch, batch.new_zeros((batch_size - b, *batch.shape[1:]))])
            batch = batch.to(device, non_blocking=True).contiguous(
                memory_format=torch.channels_last)
            with autocast_for(device, precision):
                feats = model(batch)
            feats = feats[:b].float().reshape(b, -1)
            if feats.shape[1] != backbone.dim:
                raise RuntimeError(f"{backbone.name} gave {feats.shape[1]}-D features, "
                                   f"expected {backbone.dim}")
            out[row:row + b].copy_(feats, non_blocking=cuda)
            row += b
            if test_delay:
                time.sleep(test_delay)
    if cuda:
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    out = out.numpy()
    if not np.isfinite(out).all():
        raise RuntimeError(f"{backbone.name} produced non-finite features; try "
                           "extract.precision: fp32")
    return out, {"seconds": seconds, "images_per_s": n / max(seconds, 1e-9),
                 "device": str(device), "workers": workers, "engine": engine,
                 "precision": precision_label(device, precision)}


def _workers(value) -> int | str:
    return value if value == "auto" else require_int("extract.workers", value, 0)


def _jit(value) -> bool | str:
    if value == "auto" or isinstance(value, bool):
        return value
    raise ParamError("extract.jit", f"must be auto, true or false; got {value!r}")


def _threads(value) -> int | str:
    from clusterlens.distributed import resolve_threads

    return value if value == "auto" else resolve_threads(value)


def _store(value) -> str:
    if not isinstance(value, str) or not value:
        raise ParamError("extract.store", f"must be a folder path or `none`, got {value!r}")
    return value


@dataclass(frozen=True)
class ExtractParams:
    root: Path
    backbone: str
    weights: str
    image_size: int | str
    resize: str
    batch_size: int
    device: str
    workers: int | str
    precision: str
    jit: bool | str
    store: str
    seed: int
    threads: int | str = "auto"
    processes: int = 1
    nodes: int = 1
    rdzv_endpoint: str = "localhost:29500"

    @classmethod
    def from_params(cls, params: dict) -> "ExtractParams":
        size = param(params, "extract.image_size")
        if size != "auto":
            require_int("extract.image_size", size, 16)
        weights = param(params, "extract.weights")
        if not isinstance(weights, str) or not weights:
            raise ParamError("extract.weights", "must be DEFAULT, none, a torchvision weights "
                             f"name or a state_dict path; got {weights!r}")
        return cls(
            root=Path(param(params, "data.root")),
            backbone=check_backbone_name(param(params, "extract.backbone")),
            weights=weights,
            image_size=size,
            resize=require_choice("extract.resize", param(params, "extract.resize"), RESIZE_MODES),
            batch_size=require_int("extract.batch_size", param(params, "extract.batch_size"), 1),
            device=str(param(params, "extract.device")),
            workers=_workers(param(params, "extract.workers")),
            precision=require_choice("extract.precision", param(params, "extract.precision"),
                                     PRECISIONS),
            jit=_jit(param(params, "extract.jit")),
            store=_store(param(params, "extract.store")),
            seed=require_int("seed", param(params, "seed")),
            threads=_threads(param(params, "extract.threads", "auto")),
            processes=require_int("extract.processes", param(params, "extract.processes", 1), 1),
            nodes=require_int("extract.nodes", param(params, "extract.nodes", 1), 1),
            rdzv_endpoint=str(param(params, "extract.rdzv_endpoint", "localhost:29500")),
        ).check_distributed()

    @property
    def distributed(self) -> bool:
        return self.processes > 1 or self.nodes > 1

    def check_distributed(self) -> "ExtractParams":
        if self.distributed and self.store.lower() == "none":
            raise ParamError("extract.store", "is none, but a sharded run (extract.processes "
                             f"{self.processes}, extract.nodes {self.nodes}) exchanges the "
                             "ranks' features through the feature store: give it a folder "
                             "(shared by all nodes)")
        return self


OUT_FEATURES = "data/features.npy"
OUT_METRICS = "metrics/extract.json"
# Timing differs on every run, so it is kept out of the metrics (which must be byte-identical
# between two runs with the same params): a plain log file, not a metric.
OUT_TIMING = "logs/extract_timing.json"


def check_data_root(root: Path) -> Path:
    if not root.is_dir():
        raise DataError(f"data.root: folder {str(root)!r} does not exist (or is not a folder); "
                        "set `data.root` in params.yaml to the folder that was indexed")
    return root


def extract_metrics(p: ExtractParams, backbone: Backbone, feats: np.ndarray, size: int,
                    device: torch.device) -> dict:
    """What was computed, and how: identical for identical params and images (no timings)."""
    return {
        "backbone": p.backbone,
        "weights": backbone.weights,
        "weights_sha256": backbone.weights_sha256,
        "dim": int(feats.shape[1]),
        "images": int(feats.shape[0]),
        "image_size": int(size),
        "resize": p.resize,
        "device": str(device),
        "precision": precision_label(device, p.precision),
        "jit": resolve_jit(p.jit, device),
        "batch_size": p.batch_size,
        "threads": torch.get_num_threads(),
    }


def store_spec(p: ExtractParams, backbone: Backbone, size: int, device: torch.device) -> dict:
    """Everything an image's features depend on besides its bytes (the store's key space)."""
    from importlib.metadata import version  # not `import torchvision`: its model zoo
    # imports torch._dynamo, about a second of start-up the Lite0 path does not need

    jit = resolve_jit(p.jit, device)
    spec = {"backbone": p.backbone, "weights": backbone.weights,
            "weights_sha256": backbone.weights_sha256, "image_size": int(size),
            "resize": p.resize, "interpolation": backbone.interpolation,
            "resize_ratio": backbone.resize_ratio, "mean": list(backbone.mean),
            "std": list(backbone.std), "precision": compute_dtype(device, p.precision),
            "jit": jit,
            "batch_size": p.batch_size, "device_type": device.type,
            # oneDNN's results depend on the intra-op thread count in the last bits
            "threads": torch.get_num_threads() if device.type == "cpu" else None,
            "torch": torch.__version__, "torchvision": version("torchvision")}
    if backbone.weights.startswith("none"):
        spec["seed"] = p.seed  # random-init weights come from the seed
    if onednn_fusion(device, jit):
        spec["onednn_fusion"] = True  # oneDNN Graph fusion of the traced model (since session 4)
    if cast_dtype(device, p.precision) is not None:
        # bfloat16 on CPU: batch norms folded in float32 before the cast (new key space: the
        # features differ from those of the earlier bfloat16 fold; float32 keys are unchanged)
        spec["bf16_fold"] = "fp32"
    if split_weights(device, p.precision):
        spec["bf16_depthwise"] = "hi+lo"  # split_depthwise: its own key space
    return spec


def features_for_index(p: ExtractParams, backbone: Backbone, index, size: int,
                       device: torch.device, progress: bool = True,
                       ctx=None) -> tuple[np.ndarray | None, dict]:
    """Features in index order: images whose sha256 the store holds under this fingerprint are
    read back; only the others go through the network (each distinct image once).

    In a sharded run (``ctx``, a ``stages.distributed.Context``) each rank extracts a
    contiguous share of those and appends it to the store; the writer then reads all of them
    back (the others return None)."""
    from clusterlens.feature_store import FeatureStore

    shas = index["sha256"].to_numpy(dtype=str)
    uniq, first, inverse = np.unique(shas, return_index=True, return_inverse=True)
    store = None if p.store.lower() == "none" else FeatureStore(
        p.store, store_spec(p, backbone, size, device), backbone.dim)
    if store is not None:
        found, cached = store.get(uniq)
    else:
        found, cached = np.zeros(len(uniq), dtype=bool), np.empty((0, backbone.dim), np.float32)
    todo = np.flatnonzero(~found)
    log.info("%d images (%d distinct): %d from the feature store, %d to extract", len(index),
             len(uniq), int(found.sum()), len(todo))
    if ctx is not None:
        ctx.barrier()  # every rank has read the same store state before any rank writes
        todo_all = todo
        todo = np.array_split(todo_all, ctx.world_size)[ctx.rank]
        log.info("rank %d extracts %d of the %d images", ctx.rank, len(todo), len(todo_all))
    paths = index["path"].to_numpy()[first[todo]].tolist()
    new, timing = extract_features(backbone, p.root, paths, size, p.resize, p.batch_size,
                                   device, p.workers, p.precision, progress, p.jit)
    if store is not None:
        store.put(uniq[todo], new)
    if ctx is not None:
        ctx.barrier()  # every shard is in the store
        if not ctx.writer:
            return None, timing
        # a fresh instance: this one's index predates the other ranks' shards
        found_all, feats = FeatureStore(p.store, store.spec, backbone.dim).get(uniq)
        if not found_all.all():
            raise RuntimeError(f"{int((~found_all).sum())} images missing from the store after "
                               "every rank finished: is extract.store on a file system all "
                               "nodes share?")
        timing.update({"extracted": int(len(todo_all)), "from_store": int(found.sum()),
                       "store": str(store.dir), "world_size": ctx.world_size})
        return feats[inverse.reshape(-1)], timing
    feats = np.empty((len(uniq), backbone.dim), dtype=np.float32)
    feats[found] = cached
    feats[todo] = new
    timing.update({"extracted": int(len(todo)), "from_store": int(found.sum()),
                   "store": None if store is None else str(store.dir)})
    return feats[inverse.reshape(-1)], timing


def run(params: dict, index_path: str = "data/index.parquet") -> dict:
    from clusterlens import distributed

    p = ExtractParams.from_params(params)
    device = resolve_device(p.device)  # before any heavy work
    check_data_root(p.root)
    ctx = None
    if distributed.inside_torchrun():  # one rank of a sharded run (stages.distributed)
        ctx, device = distributed.init(p.device)
    torch.set_num_threads(distributed.resolve_threads(p.threads))
    try:
        return _run(p, device, index_path, ctx)
    finally:
        if ctx is not None:
            ctx.close()


def _run(p: ExtractParams, device: torch.device, index_path: str, ctx) -> dict:
    if ctx is None or ctx.writer:
        remove_stale_tmp(OUT_FEATURES, OUT_METRICS, OUT_TIMING)  # left by a killed run
    torch.manual_seed(p.seed)
    index = read_table(index_path)
    size = None if p.image_size == "auto" else p.image_size
    backbone = build_backbone(p.backbone, p.weights, size)
    if p.backbone == SCRATCH_CNN and size not in (None, backbone.native_size):
        log.info("extract.image_size %s ignored: the scratch CNN runs at the %d px it was "
                 "trained at (cnn.image_size)", size, backbone.native_size)
        size = backbone.native_size
    size = size or backbone.native_size
    log_block(log, "extract", inputs={"index": f"{index_path} ({len(index)} images)",
                                      "data.root": p.root},
              params={"extract.backbone": p.backbone, "extract.weights": backbone.weights,
                      "extract.image_size": size, "extract.resize": p.resize,
                      "extract.batch_size": p.batch_size, "extract.device": f"{p.device} -> "
                      f"{device}", "extract.workers": p.workers,
                      "extract.precision":
                          f"{p.precision} -> {precision_label(device, p.precision)}",
                      "extract.jit": f"{p.jit} -> {resolve_jit(p.jit, device)}",
                      "extract.store": p.store,
                      "extract.threads": f"{p.threads} -> {torch.get_num_threads()}",
                      "extract.processes x nodes": f"{p.processes} x {p.nodes}"})
    feats, timing = features_for_index(p, backbone, index, size, device, ctx=ctx)
    if feats is None:  # a rank that does not write
        return {}
    save_npy(OUT_FEATURES, feats)
    metrics = write_json(OUT_METRICS, extract_metrics(p, backbone, feats, size, device))
    timing = write_json(OUT_TIMING, {"seconds": timing["seconds"],
                                     "images_per_s": timing["images_per_s"],
                                     "images": int(feats.shape[0]),
                                     "extracted": timing["extracted"],
                                     "from_store": timing["from_store"],
                                     "device": timing["device"], "workers": timing["workers"],
                                     "engine": timing["engine"],
                                     "precision": timing["precision"],
                                     "world_size": timing.get("world_size", 1)})
    log_block(log, "extract done", outputs={
        OUT_FEATURES: f"{feats.shape[0]} x {feats.shape[1]} float32",
        OUT_METRICS: f"{metrics['dim']}-D {metrics['backbone']} features on {metrics['device']}",
        OUT_TIMING: f"{timing['extracted']} extracted in {timing['seconds']:.1f} s "
                    f"({timing['images_per_s']:.1f} images/s), {timing['from_store']} from the "
                    "feature store"})
    return metrics


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Extract CNN features (SPEC E1, E2, E5).")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--index", default="data/index.parquet")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    from clusterlens import distributed

    p = ExtractParams.from_params(params)  # checked before anything is launched
    if p.distributed and not distributed.inside_torchrun():
        resolve_device(p.device)
        distributed.launch(p.processes, p.nodes, p.rdzv_endpoint,
                           distributed.resolve_threads(p.threads),
                           ["--params", args.params, "--index", args.index])
        return
    run(params, args.index)


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
