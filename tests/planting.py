"""Photo-like test images and planted copies, shared by the near-duplicate tests."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

COPY_KINDS = ("resized", "reencoded", "crop", "mirror")


def photo(seed: int, *, layout: int | None = None, size=(240, 180)) -> Image.Image:
    """A photo-like RGB image. ``layout`` fixes the large shapes and colours; ``seed`` the
    strokes and fine texture (two seeds with one layout: a look-alike)."""
    big = np.random.default_rng(seed if layout is None else 10_000 + layout)
    fine = np.random.default_rng(seed)
    w, h = size
    base = big.uniform(40, 200, size=(3, 3, 3)).astype(np.uint8)
    img = Image.fromarray(base, "RGB").resize(size, Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x, y, r = big.uniform(0, w), big.uniform(0, h), big.uniform(10, 50)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(int(v) for v in big.integers(0, 256, 3)))
    for _ in range(25):
        xy = [tuple(fine.uniform(0, (w, h))) for _ in range(2)]
        draw.line(xy, fill=tuple(int(v) for v in fine.integers(0, 256, 3)), width=int(fine.integers(1, 4)))
    noise = fine.normal(0, 12, size=(h, w, 3))
    arr = np.clip(np.asarray(img, dtype=np.float64) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(arr).filter(ImageFilter.GaussianBlur(0.6))


def jpeg(img: Image.Image, quality: int = 90) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def planted(img: Image.Image, kind: str, rng: np.random.Generator, *,
            smallest: float = 0.3) -> Image.Image:
    """A copy of ``img``: resized to ``smallest``-50%, re-encoded at quality 60, cropped 2-10% a
    side, or mirrored."""
    w, h = img.size
    if kind == "resized":
        s = rng.uniform(smallest, 0.5)
        return jpeg(img.resize((round(w * s), round(h * s)), Image.Resampling.LANCZOS))
    if kind == "reencoded":
        return jpeg(img, 60)
    if kind == "crop":
        left, top, right, bottom = rng.uniform(0.02, 0.10, 4)
        return jpeg(img.crop((round(w * left), round(h * top), round(w * (1 - right)),
                              round(h * (1 - bottom)))))
    return jpeg(ImageOps.mirror(img))


def thumbnail_neighbours(grays, k: int) -> np.ndarray:
    """A stand-in for the feature neighbours: each image's ``k`` nearest others by the raw
    pixels of a 16 x 12 thumbnail of its grayscale working image. Returns int64, shape (N, k)."""
    thumbs = np.stack([np.asarray(Image.fromarray(g).resize((16, 12)), np.float32).ravel()
                       for g in grays])
    d = ((thumbs[:, None] - thumbs[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    return np.argsort(d, axis=1, kind="stable")[:, :k].astype(np.int64)
