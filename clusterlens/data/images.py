"""Reading images: one decoding path for the whole pipeline (first frame, EXIF orientation, RGB).

``index`` calls :func:`first_frame_rgb` to accept a file; feature extraction, the scratch CNN and
the figures read files with :func:`load_rgb`, so every stage sees the same pixels. Feature
extraction then prepares each image with :func:`resize_square` and :func:`normalize`.
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


RESIZE_MODES = ("squash", "center_crop")
INTERPOLATIONS = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}


def resize_square(img: Image.Image, image_size: int, resize: str = "squash",
                  resize_ratio: float = 256 / 224,
                  interpolation: str = "bilinear") -> Image.Image:
    """Resize an image to an ``image_size`` square (Pillow, antialiased).

    Parameters
    ----------
    img : PIL.Image.Image
        An RGB image.
    image_size : int
        The side of the square, in pixels.
    resize : {"squash", "center_crop"}
        ``squash``: straight to the square (aspect ratio not kept). ``center_crop``: the shorter
        side to ``round(image_size * resize_ratio)``, then the centred square (torchvision's
        evaluation transform).
    resize_ratio : float
        Resize size over crop size, for ``center_crop``.
    interpolation : {"bilinear", "bicubic", "nearest"}
        Pillow's resampling filter.

    Returns
    -------
    PIL.Image.Image
        The ``image_size`` x ``image_size`` image.

    Raises
    ------
    ValueError
        For an unknown ``resize`` or ``interpolation``.
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, "
                         f"got {interpolation!r}")
    interp = INTERPOLATIONS[interpolation]
    if resize == "squash":
        return img.resize((image_size, image_size), interp)
    if resize == "center_crop":
        short = int(round(image_size * resize_ratio))
        w, h = img.size
        if w <= h:
            new_w, new_h = short, max(short, int(round(h * short / w)))
        else:
            new_w, new_h = max(short, int(round(w * short / h))), short
        img = img.resize((new_w, new_h), interp)
        left = int(round((new_w - image_size) / 2.0))
        top = int(round((new_h - image_size) / 2.0))
        return img.crop((left, top, left + image_size, top + image_size))
    raise ValueError(f"resize must be one of {', '.join(RESIZE_MODES)}, got {resize!r}")


def normalize(img: Image.Image, mean, std) -> np.ndarray:
    """An RGB image as a normalised float32 array, channels first.

    Parameters
    ----------
    img : PIL.Image.Image
        An RGB image.
    mean, std : sequence of 3 floats
        Per-channel statistics, applied after scaling to [0, 1].

    Returns
    -------
    numpy.ndarray
        C-contiguous float32 array of shape (3, height, width): ``(x / 255 - mean) / std``.
    """
    arr = np.asarray(img, dtype=np.float32) / 255.0
    arr = (arr - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))
