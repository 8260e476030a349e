"""Backbones from timm and open_clip, named ``timm:<model>`` and ``open_clip:<architecture>``.

- ``timm:<model>``: any name ``timm.list_models()`` knows, with or without a pretrained tag
  (``timm:convnext_tiny``, ``timm:vit_small_patch14_dinov2.lvd142m``). Features = the model's
  pooled pre-logits (its classifier removed: ``reset_classifier(0)``). Preprocessing = the
  model's pretrained config (``timm.data.resolve_model_data_config``): input size, crop
  percentage, interpolation, mean and std. Vision transformers are built with
  ``dynamic_img_size=True`` where timm offers it, so they take any ``extract.image_size``.
  A timm model with a linear classifier keeps it for captions (:func:`timm_classifier`).
- ``open_clip:<arch>``: any name ``open_clip.list_models()`` knows (``open_clip:ViT-B-32``).
  Features = the image tower's embedding, L2-normalised, as CLIP's zero-shot scores read it.
  The text tower gives zero-shot captions (:func:`clip_zero_shot_head`) and caption
  embeddings (:func:`clip_text_encoder`). Preprocessing = the model's preprocessing config
  (size, mean, std, interpolation; the shorter side resized to the size, then a centre crop).
  The position embeddings fix the input side: it runs at that size only (:func:`fixed_size`).

``extract.weights``:

- ``DEFAULT`` (online users): the hub weights. timm: the ``hf_hub_id`` of the model's
  pretrained tag; open_clip: its first pretrained tag, or the tag named (``extract.weights:
  laion2b_s34b_b79k``). The file is fetched into the Hugging Face cache by ``huggingface_hub``
  (:func:`hub_file`), then read like a local file. :func:`hub_file` is the only code that needs
  the network; every other path is tested offline.
- a local file: ``.safetensors``, or a PyTorch state_dict read with
  ``torch.load(weights_only=True)`` (:func:`clusterlens.features.network.load_state_dict_file`),
  loaded strictly (a timm file may leave out the classifier, or have another class count).
- ``none``: random weights, drawn from the torch seed the stage sets.
"""
from __future__ import annotations

import contextlib
import difflib
import functools
import logging
import os
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from clusterlens.core.errors import ParamError

TIMM = "timm"
OPEN_CLIP = "open_clip"
PACKAGES = {TIMM: "timm", OPEN_CLIP: "open_clip_torch"}
CLIP_PROMPT = "a photo of {}."  # CLIP's single zero-shot prompt (Radford et al. 2021)
CLIP_HUB_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
TIMM_HUB_FILES = ("model.safetensors", "pytorch_model.bin")
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")


def split_name(name) -> tuple[str, str] | None:
    """``("timm", model)`` or ``("open_clip", arch)`` for a hub backbone name, else None."""
    lib, sep, model = str(name).partition(":")
    return (lib, model) if sep and lib in PACKAGES else None


def fixed_size(name: str) -> bool:
    """Whether the backbone takes its native input side only (open_clip's towers)."""
    parts = split_name(name)
    return parts is not None and parts[0] == OPEN_CLIP


def _import(lib: str):
    try:
        if lib == TIMM:
            import timm
            return timm
        import open_clip
        return open_clip
    except ImportError:
        raise ParamError("extract.backbone", f"needs the {PACKAGES[lib]} package: pip install "
                         "-r requirements.txt") from None


def unknown(name: str) -> str | None:
    """Why ``name`` (``timm:...`` or ``open_clip:...``) names no model, or None."""
    lib, model = split_name(name)
    example = "timm:convnext_tiny" if lib == TIMM else "open_clip:ViT-B-32"
    if not model:
        return f"names no {lib} model: put its name after the colon, e.g. {example}"
    try:
        mod = _import(lib)
    except ParamError:
        return f"needs the {PACKAGES[lib]} package: pip install -r requirements.txt"
    if lib == TIMM:
        if mod.is_model(model):
            return None
        names = mod.list_models()
    else:
        names = mod.list_models()
        if model in names:
            return None
    close = difflib.get_close_matches(model, names, n=3)
    hint = f" Did you mean {', '.join(f'{lib}:{c}' for c in close)}?" if close else ""
    lister = "timm.list_models()" if lib == TIMM else "open_clip.list_models()"
    return f"names no {lib} model: {model!r}.{hint} See {lister}."


def versions(lib: str) -> dict:
    """The package versions a hub backbone's features depend on (the feature store's key)."""
    try:
        return {PACKAGES[lib]: version(PACKAGES[lib])}
    except PackageNotFoundError:
        return {}


def is_file_weights(weights: str) -> bool:
    """Whether ``extract.weights`` names a file (a path or a weights file suffix)."""
    w = str(weights)
    return (os.sep in w or "/" in w or w.lower().endswith(WEIGHT_SUFFIXES)
            or Path(w).is_file())


def hub_file(repo_id: str, filenames: tuple[str, ...], what: str) -> Path:
    """The first of ``filenames`` in the Hugging Face repository ``repo_id``, fetched into the
    Hugging Face cache (a cached copy is used as it is).

    Raises
    ------
    ParamError
        Naming ``extract.weights`` when none can be had (offline, or not in the repository).
    """
    from huggingface_hub import hf_hub_download

    problems = []
    for filename in filenames:
        try:
            return Path(hf_hub_download(repo_id, filename))
        except Exception as exc:  # noqa: BLE001 - offline, missing file, hub errors
            problems.append(f"{filename}: {type(exc).__name__}")
    raise ParamError("extract.weights", f"= DEFAULT: could not get {what} from the Hugging "
                     f"Face hub ({repo_id}: {'; '.join(problems)}). Without internet, give a "
                     "local weights file (.safetensors or a state_dict) or none")


def _state_dict(path: Path, what: str) -> dict:
    from clusterlens.features.network import load_state_dict_file

    sd = load_state_dict_file(path, what)
    if sd and all(k.startswith("module.") for k in sd):  # saved from DataParallel
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


# --------------------------------------------------------------------------- timm
def _timm_model(model_name: str, **kwargs):
    import timm

    try:
        return timm.create_model(model_name, pretrained=False, dynamic_img_size=True, **kwargs)
    except TypeError:  # not a vision transformer: no dynamic_img_size
        return timm.create_model(model_name, pretrained=False, **kwargs)
    except RuntimeError as exc:  # e.g. an unknown pretrained tag
        raise ParamError("extract.backbone", f"timm:{model_name}: {exc}") from None


def _classifier_prefixes(model) -> tuple[str, ...]:
    head = model.pretrained_cfg.get("classifier") or ()
    return tuple(f"{h}." for h in ((head,) if isinstance(head, str) else head))


def _load_timm(model, model_name: str, weights: str) -> tuple[str, str]:
    """Load ``weights`` into a timm model (the classifier's keys optional); returns the
    description and the file's sha256 ("" for none)."""
    from clusterlens.features.network import FIT_HINT, file_sha256

    w = str(weights)
    if w.lower() == "none":
        return "none (random init)", ""
    if is_file_weights(w):
        path, desc = Path(w), f"file {w}"
    elif w.upper() == "DEFAULT":
        hub = model.pretrained_cfg.get("hf_hub_id")
        if not hub:
            raise ParamError("extract.weights", f"= DEFAULT, but timm:{model_name} has no "
                             "weights on the Hugging Face hub; give a local weights file")
        path = hub_file(hub, TIMM_HUB_FILES, f"timm:{model_name} weights")
        desc = f"timm {hub} (Hugging Face hub)"
    else:
        raise ParamError("extract.weights", f"= {w!r}: a timm backbone takes DEFAULT, none or "
                         "a weights file (name the pretrained tag in extract.backbone, e.g. "
                         "timm:vit_small_patch14_dinov2.lvd142m)")
    heads = _classifier_prefixes(model)
    own = {k: v.shape for k, v in model.state_dict().items()}
    sd = {k: v for k, v in _state_dict(path, f"weights file {str(path)!r}").items()
          if not (k.startswith(heads) and own.get(k) != v.shape)}  # another class count
    try:
        result = model.load_state_dict(sd, strict=False)
    except RuntimeError as exc:  # shape mismatches: another size of the model
        first = [ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln][:2]
        raise ParamError("extract.weights", f"file {str(path)!r} does not fit backbone "
                         f"timm:{model_name}: " + "; ".join(first or [str(exc)[:300]])
                         + FIT_HINT) from None
    missing = [k for k in result.missing_keys if not k.startswith(heads)]
    if missing or result.unexpected_keys:
        raise ParamError("extract.weights", f"file {str(path)!r} does not fit backbone "
                         f"timm:{model_name}: {len(missing)} missing keys (e.g. {missing[:3]}), "
                         f"{len(result.unexpected_keys)} unexpected keys (e.g. "
                         f"{result.unexpected_keys[:3]})" + FIT_HINT)
    if any(k.startswith(heads) for k in result.missing_keys):
        model.reset_classifier(0)  # no trained classifier in the file
    return desc, file_sha256(path)


def timm_model(model_name: str, weights: str):
    """The whole timm model (classifier included, when the file had one) with ``weights``;
    returns (model, description, sha256)."""
    model = _timm_model(model_name)
    desc, sha = _load_timm(model, model_name, weights)
    return model.eval(), desc, sha


def timm_classifier(model):
    """The model's linear classifier (``get_classifier()``), or None."""
    from torch import nn

    head = model.get_classifier() if model.num_classes else None
    return head if isinstance(head, nn.Linear) else None


def build_timm(model_name: str, weights: str):
    """``timm:<model_name>`` as a :class:`clusterlens.features.network.Backbone`."""
    import timm
    import torch

    from clusterlens.features.network import Backbone

    model, desc, sha = timm_model(model_name, weights)
    cfg = timm.data.resolve_model_data_config(model)
    model.reset_classifier(0)
    side = int(cfg["input_size"][-1])
    with torch.no_grad():
        dim = int(model(torch.zeros(1, 3, side, side)).shape[1])
    interpolation = cfg.get("interpolation", "bicubic")
    return Backbone(name=f"{TIMM}:{model_name}", model=model, dim=dim,
                    mean=tuple(float(v) for v in cfg["mean"]),
                    std=tuple(float(v) for v in cfg["std"]), native_size=side,
                    resize_ratio=1.0 / float(cfg.get("crop_pct", 1.0)),
                    interpolation=interpolation if interpolation in ("bilinear", "nearest")
                    else "bicubic", weights=desc, weights_sha256=sha,
                    extra={"libraries": versions(TIMM)})


# --------------------------------------------------------------------------- open_clip
@contextlib.contextmanager
def quiet_root_logging():
    """Silence the records a library sends through the root logger (``logging.info(...)``, as
    open_clip does), below ERROR, and keep them from configuring it: the first such call
    installs a root handler when there is none (``logging.basicConfig``), after which every
    stage log line would print twice. A NullHandler on the root stands in for the block."""
    root, null = logging.getLogger(), logging.NullHandler()
    root.addHandler(null)
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)
        root.removeHandler(null)


def clip_model(arch: str, weights: str):
    """The whole open_clip model (both towers) with ``weights``; returns (model, description,
    sha256). A pretrained tag's own settings apply (QuickGELU, mean and std): a file of weights
    that need QuickGELU is named by its ``-quickgelu`` architecture (``ViT-B-32-quickgelu``)."""
    from clusterlens.features.network import file_sha256, load_into

    open_clip = _import(OPEN_CLIP)
    w = str(weights)
    opts: dict = {"pretrained_text": False}  # never a hub text tower: the weights carry it
    path = None
    if w.lower() == "none":
        desc = "none (random init)"
    elif is_file_weights(w):
        path, desc = Path(w), f"file {w}"
    else:
        tags = open_clip.list_pretrained_tags_by_model(arch)
        tag = (tags[0] if tags else None) if w.upper() == "DEFAULT" else w
        if tag not in tags:
            raise ParamError("extract.weights", f"= {w!r}: open_clip:{arch} has the pretrained "
                             f"tags {tags or 'none'}; use DEFAULT, one of them, a weights file "
                             "or none")
        cfg = open_clip.get_pretrained_cfg(arch, tag)
        hub = cfg.get("hf_hub", "").strip("/")
        if not hub:
            raise ParamError("extract.weights", f"open_clip:{arch} {tag} is not on the Hugging "
                             "Face hub; give a local weights file")
        opts.update(force_quick_gelu=bool(cfg.get("quick_gelu", False)), force_preprocess_cfg={
            k: cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in cfg})
        path = hub_file(hub, CLIP_HUB_FILES, f"open_clip:{arch} {tag} weights")
        desc = f"open_clip {tag} ({hub}, Hugging Face hub)"
    with quiet_root_logging():  # e.g. open_clip's "no pretrained weights loaded" line
        model = open_clip.create_model(arch, pretrained=None, **opts)
    if path is None:
        return model.eval(), desc, ""
    load_into(model, _state_dict(path, f"weights file {str(path)!r}"),
              f"weights file {str(path)!r}", f"{OPEN_CLIP}:{arch}")
    return model.eval(), desc, file_sha256(path)


@functools.cache
def _clip_image_class():
    from torch import nn
    from torch.nn import functional as F

    class ClipImage(nn.Module):
        """CLIP's image tower, its embedding L2-normalised: (B, embed_dim)."""

        def __init__(self, visual: nn.Module):
            super().__init__()
            self.visual = visual

        def forward(self, x):
            return F.normalize(self.visual(x), dim=-1)

    return ClipImage


def clip_preprocess(model) -> dict:
    """size, mean, std, interpolation of an open_clip model's image tower."""
    import open_clip

    cfg = dict(open_clip.get_model_preprocess_cfg(model))
    size = cfg.get("size", 224)
    return {"size": int(size if isinstance(size, int) else size[-1]),
            "mean": tuple(float(v) for v in cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)),
            "std": tuple(float(v) for v in cfg.get("std", open_clip.OPENAI_DATASET_STD)),
            "interpolation": cfg.get("interpolation", "bicubic")}


def build_open_clip(arch: str, weights: str, *, loaded: tuple | None = None):
    """``open_clip:<arch>``'s image tower as a :class:`clusterlens.features.network.Backbone`
    (``loaded``: :func:`clip_model`'s result, when the model is already loaded)."""
    import torch

    from clusterlens.features.network import Backbone

    model, desc, sha = loaded or clip_model(arch, weights)
    pre = clip_preprocess(model)
    image = _clip_image_class()(model.visual).eval()
    with torch.no_grad():
        dim = int(image(torch.zeros(1, 3, pre["size"], pre["size"])).shape[1])
    return Backbone(name=f"{OPEN_CLIP}:{arch}", model=image, dim=dim,
                    mean=pre["mean"], std=pre["std"], native_size=pre["size"], resize_ratio=1.0,
                    interpolation=pre["interpolation"] if pre["interpolation"] in (
                        "bilinear", "nearest") else "bicubic",
                    weights=desc, weights_sha256=sha, extra={"libraries": versions(OPEN_CLIP)})


def clip_text_encoder(model, arch: str, *, device=None, batch_size: int = 256,
                      progress: str | None = None):
    """``encode(texts) -> (N, embed_dim) float32``, unit rows, from CLIP's text tower
    (``progress``: a tqdm bar over the batches, with this description)."""
    import numpy as np
    import open_clip
    import torch
    from tqdm.auto import tqdm

    with quiet_root_logging():
        tokenizer = open_clip.get_tokenizer(arch)
    dev = torch.device(device or "cpu")
    model = model.to(dev)

    def encode(texts: list[str]) -> np.ndarray:
        out = []
        starts = range(0, max(len(texts), 1), batch_size)
        with torch.inference_mode():
            for s in tqdm(starts, desc=progress, unit="batch", disable=progress is None,
                          mininterval=1.0):
                batch = list(texts[s:s + batch_size]) or [""]  # none: the dimension only
                emb = model.encode_text(tokenizer(batch).to(dev))
                out.append(torch.nn.functional.normalize(emb.float(), dim=-1).cpu().numpy())
        return np.concatenate(out)[:len(texts)].astype(np.float32)

    return encode


def clip_zero_shot_head(model, encode, names: list[str]):
    """``(W, b)`` such that ``features @ W.T + b`` are CLIP's zero-shot logits of the
    normalised image embeddings against :data:`CLIP_PROMPT` of each name: W = the prompts' unit
    text embeddings times the model's logit scale, b = 0."""
    import numpy as np

    scale = float(model.logit_scale.detach().exp().cpu()) if hasattr(model, "logit_scale") \
        else 100.0
    text = encode([CLIP_PROMPT.format(n) for n in names])
    return (scale * text).astype(np.float32), np.zeros(len(names), dtype=np.float32)
