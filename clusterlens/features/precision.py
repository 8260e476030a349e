"""Precision and compilation of the feature network: float32 / float16 / bfloat16, the traced
and frozen TorchScript model with oneDNN Graph fusion on CPU, and the bfloat16 helpers (batch
norms folded in float32 before the cast, depthwise weights split into two bfloat16 parts).

``extract.precision`` values: ``auto`` (float16 autocast on CUDA, float32 on CPU), ``fp32``,
``bf16`` and ``bf16_split`` (on CPU: depthwise weights in two bfloat16 parts, closer to float32).
"""
from __future__ import annotations

import contextlib
import copy
import logging
import warnings

import torch
from torch.nn.utils.fusion import fuse_conv_bn_weights

log = logging.getLogger("clusterlens.extract")



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
    """The model ready for inference at a fixed batch shape.

    On ``device`` in channels-last (as bfloat16 when ``cast_dtype`` says so), and, with
    ``jit``, traced on the fixed batch shape and frozen (``torch.jit.freeze`` folds batch norms
    into convolutions and lets oneDNN fuse conv + activation: the big CPU win; on CPU the frozen
    graph also runs with oneDNN Graph fusion, see ``onednn_fusion``). When a fused partition
    cannot be built, the model is traced again without the fusion; a model that cannot be
    traced at all runs eagerly, with a warning.

    Parameters
    ----------
    model : torch.nn.Module
        The float32 network (left unchanged when a bfloat16 copy is made).
    device : torch.device
        Where it runs.
    example_shape : tuple
        The batch shape every call will have, (B, 3, S, S).
    precision : {"auto", "fp32", "bf16", "bf16_split"}
        ``extract.precision``.
    jit : bool
        Trace and freeze.

    Returns
    -------
    model : callable
        Takes float32 batches (cast inside); may return bfloat16.
    engine : {"jit", "eager"}
    """
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
    Measured at 224 px, batch 32, on a 2-core AVX512-BF16 CPU, frozen graph without -> with
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

