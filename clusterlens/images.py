"""Reading images: one decoding path for the whole pipeline (first frame, EXIF orientation, RGB).

``index`` calls :func:`first_frame_rgb` to accept a file; feature extraction, the scratch CNN and
the figures read files with :func:`load_rgb`, so every stage sees the same pixels.
"""
from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps


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
