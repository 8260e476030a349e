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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from stages.backbones import LITE0, Backbone, build_backbone, check_backbone_name
from stages.common import (
    DataError, ParamError, get_logger, load_params, log_block, param, read_table, require_bool,
    remove_stale_tmp, require_choice, require_int, run_cli, save_npy, write_json,
)

log = get_logger("extract")
RESIZE_MODES = ("squash", "center_crop")
_INTERP = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}


# --------------------------------------------------------------------------- images
def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB: alpha onto white, 16/32-bit grayscale scaled to 8 bits.

    16-bit modes (``I;16*``) always span 0..65535. For 32-bit ``I`` (e.g. from old TIFFs) the range
    is guessed: 0..65535 when a value exceeds 255, else 0..255; ``F`` is 0..1 or 0..255 likewise.
    """
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        peak = arr.max(initial=0)
        if img.mode.startswith("I;16"):
            top = 65535.0
        elif img.mode == "I":
            top = 65535.0 if peak > 255 else 255.0
        else:
            top = 1.0 if peak <= 1.0 else 255.0
        arr = np.clip(arr / top * 255.0, 0, 255).round().astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        img.mode == "P" and "transparency" in img.info)
    if has_alpha:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def first_frame_rgb(img: Image.Image) -> Image.Image:
    """An open image's first frame, decoded, EXIF orientation applied, as RGB. The one loading
    path of the pipeline: ``index`` calls it to accept a file, ``extract`` to read it."""
    img.seek(0)
    img.load()
    img = ImageOps.exif_transpose(img) or img
    return to_rgb(img)


def load_rgb(path: str | Path | BinaryIO) -> Image.Image:
    """Open an image (a path or a binary file object) as RGB with its EXIF orientation applied
    (first frame of animations)."""
    with Image.open(path) as img:
        return first_frame_rgb(img)


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


def autocast_for(device: torch.device, amp: bool):
    """Mixed precision only on CUDA (float16); a no-op context on CPU."""
    if amp and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    return contextlib.nullcontext()


# --------------------------------------------------------------------------- extraction
def extract_features(backbone: Backbone, root, paths, image_size: int, resize: str = "squash",
                     batch_size: int = 64, device: str | torch.device = "auto",
                     workers: int = 0, amp: bool = True, progress: bool = True
                     ) -> tuple[np.ndarray, dict]:
    """Features (N, D) float32 in the order of ``paths``, and timing info."""
    device = device if isinstance(device, torch.device) else resolve_device(device)
    dataset = ImageFolderDataset(root, paths, image_size, resize, backbone)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        pin_memory=device.type == "cuda", persistent_workers=False)
    model = backbone.model.to(device).eval()
    out = np.empty((len(dataset), backbone.dim), dtype=np.float32)
    start = time.perf_counter()
    row = 0
    with torch.inference_mode():
        for batch in tqdm(loader, desc=f"extract {backbone.name}", unit="batch",
                          disable=not progress, mininterval=1.0):
            batch = batch.to(device, non_blocking=True)
            with autocast_for(device, amp):
                feats = model(batch)
            feats = feats.float().reshape(len(batch), -1).cpu().numpy()
            if feats.shape[1] != backbone.dim:
                raise RuntimeError(f"{backbone.name} gave {feats.shape[1]}-D features, "
                                   f"expected {backbone.dim}")
            out[row:row + len(batch)] = feats
            row += len(batch)
    seconds = time.perf_counter() - start
    if not np.isfinite(out).all():
        raise RuntimeError(f"{backbone.name} produced non-finite features; try extract.amp: false")
    return out, {"seconds": seconds, "images_per_s": len(dataset) / max(seconds, 1e-9),
                 "device": str(device)}


@dataclass(frozen=True)
class ExtractParams:
    root: Path
    backbone: str
    weights: str
    image_size: int | str
    resize: str
    batch_size: int
    device: str
    workers: int
    amp: bool
    seed: int

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
            workers=require_int("extract.workers", param(params, "extract.workers"), 0),
            amp=require_bool("extract.amp", param(params, "extract.amp")),
            seed=require_int("seed", param(params, "seed")),
        )


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
        "amp": bool(p.amp and device.type == "cuda"),
    }


def run(params: dict, index_path: str = "data/index.parquet") -> dict:
    p = ExtractParams.from_params(params)
    device = resolve_device(p.device)  # before any heavy work
    check_data_root(p.root)
    remove_stale_tmp(OUT_FEATURES, OUT_METRICS, OUT_TIMING)  # left by a run killed mid-write
    torch.manual_seed(p.seed)
    index = read_table(index_path)
    size = p.image_size
    if size == "auto":
        size = 224 if p.backbone == LITE0 else None
    backbone = build_backbone(p.backbone, p.weights, size or 224)
    size = size or backbone.native_size
    log_block(log, "extract", inputs={"index": f"{index_path} ({len(index)} images)",
                                      "data.root": p.root},
              params={"extract.backbone": p.backbone, "extract.weights": backbone.weights,
                      "extract.image_size": size, "extract.resize": p.resize,
                      "extract.batch_size": p.batch_size, "extract.device": f"{p.device} -> "
                      f"{device}", "extract.workers": p.workers, "extract.amp": p.amp})
    feats, timing = extract_features(backbone, p.root, index["path"].tolist(), size, p.resize,
                                     p.batch_size, device, p.workers, p.amp)
    save_npy(OUT_FEATURES, feats)
    metrics = write_json(OUT_METRICS, extract_metrics(p, backbone, feats, size, device))
    timing = write_json(OUT_TIMING, {"seconds": timing["seconds"],
                                     "images_per_s": timing["images_per_s"],
                                     "images": int(feats.shape[0]), "device": timing["device"]})
    log_block(log, "extract done", outputs={
        OUT_FEATURES: f"{feats.shape[0]} x {feats.shape[1]} float32",
        OUT_METRICS: f"{metrics['dim']}-D {metrics['backbone']} features on {metrics['device']}",
        OUT_TIMING: f"{timing['seconds']:.1f} s, {timing['images_per_s']:.1f} images/s"})
    return metrics


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Extract CNN features (SPEC E1, E2, E5).")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--index", default="data/index.parquet")
    args = ap.parse_args(argv)
    run(load_params(args.params), args.index)


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
