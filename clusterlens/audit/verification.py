"""Is one image a copy of another? Align the two pictures, then compare their pixels.

A candidate pair (from perceptual hashes or feature neighbours) is verified on grayscale
*working images* (:func:`working_image`: longest side at most :data:`WORK_SIDE` px):

1. **Alignment.** One image is searched for inside the other, in both directions, as it is and
   mirrored left-right, at content fractions :data:`FRACTIONS` of the outer image's width
   (a crop of up to 15% a side, any aspect ratio), by normalised cross-correlation
   (OpenCV ``matchTemplate``) at :data:`COARSE_SIDE` px; the best placement is refined at the
   larger image's working size (fractions +-0.03 by 0.01, then +-0.005). Scale and shift are
   searched, rotation and perspective are not. An image's coarse views (its coarse-size copy
   and its resized templates) can be made once and kept across its pairs (:class:`Coarse`):
   the same results, less resizing.
2. **Comparison.** On the aligned overlap (both lightly blurred, which absorbs re-encoding and
   resampling), the *detail* (the picture minus its blur at :data:`DETAIL_SIGMA` px, times the
   enlargement of the coarser picture) is cut into a :data:`GRID` x :data:`GRID` grid of cells.
   A cell is *informative* when both sides vary in it (standard deviation >=
   :data:`FLAT_STD` grey levels); it *agrees* when the two sides' detail correlates at >=
   :data:`CELL_AGREE`. ``agreement`` is the share of
   informative cells that agree; ``similarity`` is the whole overlap's correlation.
3. **Colour.** The grayscale comparison cannot see a recoloured picture (the same product shot
   of a motorbike in red and in grey), so ``colour`` is the :data:`COLOUR_PERCENTILE`-th
   percentile of the chroma distance (CIE a*b*) between the two colour thumbnails where they
   overlap, after a light blur; it is NaN when either picture is gray.

A copy (resized, re-encoded, cropped or mirrored) agrees almost everywhere; two shots of one
scene (a burst, a person photographed twice against the same wall) agree where nothing moved;
two photos of different objects that merely look alike agree in few cells. The thresholds that
turn these scores into a verdict are in :mod:`clusterlens.audit.duplicates`.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageOps

from clusterlens.data.images import to_rgb

WORK_SIDE = 128          # longest side of a working image, px
COARSE_SIDE = 32         # longest side of the outer image in the coarse search, px
COARSE_MIN = 0.5         # a pair whose best coarse correlation is below this is not compared
FRACTIONS = (1.0, 0.94, 0.88, 0.82, 0.76, 0.70)  # inner width / outer width, coarse search
FINE_STEP = 0.01
FINE_STEPS = tuple(FINE_STEP * i for i in range(-3, 4))
BLUR_SIGMA = 1.0         # px at the working size
GRID = 8                 # cells per side of the comparison grid
FLAT_STD = 3.0           # grey levels: a cell flatter than this on either side is uninformative
CELL_AGREE = 0.5         # correlation of the detail at which a cell agrees
MIN_SIDE = 4             # px: a placement smaller than this is not tried
DETAIL_SIGMA = 3.0       # px: detail = working image minus its blur at this scale
COLOUR_SIDE = 48         # longest side of the colour thumbnail, px
COLOUR_PERCENTILE = 97   # the colour distance is this percentile of the per-pixel distances
GRAY_CHROMA = 3.0        # a thumbnail whose chroma never strays further from neutral is gray
MAX_TEMPLATES = 96       # coarse templates one image keeps (:class:`Coarse`), by mirroring and size


@dataclass(frozen=True)
class Match:
    """The best alignment of two images and how well their pixels agree there.

    Attributes
    ----------
    similarity : float
        Correlation of the aligned overlap, in [-1, 1].
    agreement : float
        Share of the informative grid cells that agree, in [0, 1].
    informative : int
        Informative cells (of ``GRID ** 2``).
    mirrored : bool
        The best alignment mirrors one image left-right.
    coverage : float
        Share of the outer image's area that the inner image covers, in (0, 1]; near 1 for
        a resized or re-encoded copy, lower for a crop.
    inner : int
        0 when the second image lies inside the first, 1 when the first lies inside the second.
    colour : float
        Chroma distance where they overlap (:func:`colour_difference`); NaN when one is gray or
        no colours were given.
    """

    similarity: float
    agreement: float
    informative: int
    mirrored: bool
    coverage: float
    inner: int
    colour: float = float("nan")


def working_image(img: Image.Image, *, side: int = WORK_SIDE) -> np.ndarray:
    """The grayscale working image of a picture: uint8, longest side at most ``side`` px.

    JPEGs are decoded at a reduced scale first (Pillow ``draft``) when they are larger, which
    makes this several times faster than a full decode. EXIF orientation is applied.
    """
    return np.asarray(_small(img, side).convert("L"), dtype=np.uint8)


def working_pair(img: Image.Image, *, side: int = WORK_SIDE) -> tuple[np.ndarray, np.ndarray]:
    """(grayscale working image, colour thumbnail): the thumbnail is the picture's uint8 CIE
    a*b* chroma (OpenCV's 8-bit Lab, 128 = neutral), shape (h, w, 2), longest side
    :data:`COLOUR_SIDE` px."""
    small = _small(img, side).convert("RGB")
    gray = np.asarray(small.convert("L"), dtype=np.uint8)
    thumb = _fit(np.asarray(small), COLOUR_SIDE)
    return gray, cv2.cvtColor(thumb, cv2.COLOR_RGB2LAB)[:, :, 1:].copy()


def _small(img: Image.Image, side: int) -> Image.Image:
    img.draft("RGB", (side, side))
    img = to_rgb(ImageOps.exif_transpose(img) or img)  # the pipeline's colour conversion
    w, h = img.size
    scale = side / max(w, h)
    if scale < 1:
        img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))),
                         Image.Resampling.BOX)
    return img


def _resize(a: np.ndarray, w: int, h: int) -> np.ndarray:
    interp = cv2.INTER_AREA if w < a.shape[1] else cv2.INTER_LINEAR
    return cv2.resize(a, (max(1, w), max(1, h)), interpolation=interp)


def _fit(a: np.ndarray, longest: int) -> np.ndarray:
    h, w = a.shape[:2]
    s = longest / max(h, w)
    return a if s == 1 else _resize(a, round(w * s), round(h * s))


def _placement(inner_shape, outer_shape, fraction: float) -> tuple[int, int] | None:
    """(width, height) of the inner image at ``fraction`` of the outer's width (or height,
    when it would be too tall), keeping its aspect ratio; None when it cannot fit."""
    ih, iw = inner_shape
    oh, ow = outer_shape
    tw = round(fraction * ow)
    th = round(ih / iw * tw)
    if th > oh:
        th = round(fraction * oh)
        tw = round(iw / ih * th)
    if tw > ow or th > oh or min(tw, th) < MIN_SIDE:
        return None
    return tw, th


class Coarse:
    """One working image's inputs to the coarse search, made once and reused by every pair it
    is in: the image at :data:`COARSE_SIDE` px (as the outer image) and its templates (as the
    inner image, by mirroring and size; at most :data:`MAX_TEMPLATES` kept). The same arrays
    as computing them for each pair, so the results are identical; only the resizing is saved.
    """

    __slots__ = ("image", "_big", "_templates")

    def __init__(self, image: np.ndarray):
        self.image = image
        self._big = None
        self._templates: dict = {}

    def big(self) -> np.ndarray:
        if self._big is None:
            self._big = _fit(self.image, COARSE_SIDE).astype(np.float32)
        return self._big

    def template(self, mirrored: bool, size: tuple[int, int]) -> np.ndarray:
        key = (mirrored, size)
        T = self._templates.get(key)
        if T is None:
            inner = np.ascontiguousarray(self.image[:, ::-1]) if mirrored else self.image
            T = _resize(inner, *size).astype(np.float32)
            if len(self._templates) < MAX_TEMPLATES:
                self._templates[key] = T
        return T


def _best_place(outer: np.ndarray, inner: np.ndarray, fractions, blur: float = 0.0,
                template=None):
    """(correlation, fraction, (x, y), (w, h)) of the best placement of ``inner`` in ``outer``;
    ``template(size)``, when given, returns ``inner`` resized to ``size`` (a cached copy)."""
    best = (-2.0, 0.0, (0, 0), (0, 0))
    for f in fractions:
        size = _placement(inner.shape, outer.shape, f)
        if size is None:
            continue
        T = template(size) if template is not None else _resize(inner, *size).astype(np.float32)
        if blur:
            T = cv2.GaussianBlur(T, (0, 0), blur)
        if T.max() - T.min() < 1:
            continue
        _, v, _, loc = cv2.minMaxLoc(cv2.matchTemplate(outer, T, cv2.TM_CCOEFF_NORMED))
        if v > best[0]:
            best = (float(v), float(f), loc, size)
    return best


def _cells(P: np.ndarray, T: np.ndarray) -> tuple[float, int]:
    """(agreement, informative cells) of two aligned float32 arrays of one shape."""
    h, w = P.shape
    ch, cw = h // GRID, w // GRID
    if ch < 2 or cw < 2:
        return 0.0, 0
    P = P[:ch * GRID, :cw * GRID].reshape(GRID, ch, GRID, cw).transpose(0, 2, 1, 3)
    T = T[:ch * GRID, :cw * GRID].reshape(GRID, ch, GRID, cw).transpose(0, 2, 1, 3)
    P = P.reshape(GRID * GRID, ch * cw)
    T = T.reshape(GRID * GRID, ch * cw)
    P = P - P.mean(axis=1, keepdims=True)
    T = T - T.mean(axis=1, keepdims=True)
    sp, st = np.sqrt((P * P).mean(axis=1)), np.sqrt((T * T).mean(axis=1))
    informative = (sp >= FLAT_STD) & (st >= FLAT_STD)
    n = int(informative.sum())
    if not n:
        return 0.0, 0
    r = (P * T).mean(axis=1)[informative] / (sp * st)[informative]
    return float((r >= CELL_AGREE).mean()), n


@dataclass(frozen=True)
class Alignment:
    """Two pictures placed on each other: ``outer`` (the part of the outer image the inner one
    covers) and ``inner``, blurred float32 arrays of one shape; ``similarity`` their
    correlation; ``mirrored``, ``coverage`` and ``inner_id`` as in :class:`Match`; ``box``
    the inner picture's place in the outer one, as fractions (left, top, right, bottom);
    ``magnification`` how much the coarser picture was enlarged to the compared size."""

    outer: np.ndarray
    inner: np.ndarray
    similarity: float
    mirrored: bool
    coverage: float
    inner_id: int
    box: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)
    magnification: float = 1.0


def align(a: np.ndarray, b: np.ndarray,
          coarse_views: tuple[Coarse, Coarse] | None = None) -> Alignment | None:
    """The best placement of one working image inside the other (see the module docstring);
    None when no placement correlates at :data:`COARSE_MIN` or more at the coarse size (most
    candidate pairs that are not copies end here), or an image is flat or too small.
    ``coarse_views``: the two images' :class:`Coarse` caches (same result, less resizing)."""
    ca, cb = coarse_views if coarse_views is not None else (Coarse(a), Coarse(b))
    coarse = None
    for inner_id, (outer, inner) in enumerate(((ca, cb), (cb, ca))):
        big = outer.big()
        for mirrored in (False, True):
            score, f, _, _ = _best_place(
                big, inner.image, FRACTIONS,
                template=lambda size, m=mirrored, c=inner: c.template(m, size))
            if f and (coarse is None or score > coarse[0]):
                coarse = (score, f, inner_id, mirrored)
    if coarse is None or coarse[0] < COARSE_MIN:
        return None
    _, f, inner_id, mirrored = coarse
    outer, inner = (a, b) if inner_id == 0 else (b, a)
    if mirrored:
        inner = np.ascontiguousarray(inner[:, ::-1])
    side = min(WORK_SIDE, max(*a.shape, *b.shape))  # the finer image's resolution
    big = cv2.GaussianBlur(_fit(outer, side).astype(np.float32), (0, 0), BLUR_SIGMA)
    fine = [f + d for d in FINE_STEPS if 0 < f + d <= 1.0]
    score, f, (x, y), (w, h) = _best_place(big, inner, fine, BLUR_SIGMA)
    if f:  # half a step either side
        finer = _best_place(big, inner, [f - FINE_STEP / 2, f + FINE_STEP / 2], BLUR_SIGMA)
        if finer[0] > score:
            score, f, (x, y), (w, h) = finer
    if not f:
        return None
    T = cv2.GaussianBlur(_resize(inner, w, h).astype(np.float32), (0, 0), BLUR_SIGMA)
    oh, ow = big.shape
    return Alignment(outer=big[y:y + h, x:x + w], inner=T, similarity=score, mirrored=mirrored,
                     coverage=w * h / (oh * ow), inner_id=inner_id,
                     box=(x / ow, y / oh, (x + w) / ow, (y + h) / oh),
                     magnification=max(w / inner.shape[1], ow / outer.shape[1]))


def _detail(a: np.ndarray, sigma: float) -> np.ndarray:
    return a - cv2.GaussianBlur(a, (0, 0), sigma)


def colour_difference(al: Alignment, colours: tuple[np.ndarray, np.ndarray]) -> float:
    """The :data:`COLOUR_PERCENTILE`-th percentile of the chroma distance (CIE a*b*, 8-bit
    units) between the two pictures where they overlap (its rim left out), at the thumbnail size
    after a 1 px blur; NaN when either picture is gray (no colour to compare)."""
    outer, inner = (colours[0], colours[1]) if al.inner_id == 0 else (colours[1], colours[0])
    if any(np.abs(t.astype(np.float32) - 128).max() <= GRAY_CHROMA for t in (outer, inner)):
        return float("nan")
    if al.mirrored:
        inner = inner[:, ::-1]
    oh, ow = outer.shape[:2]
    x0, y0, x1, y1 = (int(round(v)) for v in (al.box[0] * ow, al.box[1] * oh,
                                              al.box[2] * ow, al.box[3] * oh))
    part = outer[y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)].astype(np.float32)
    inner = cv2.resize(inner, (part.shape[1], part.shape[0]),
                       interpolation=cv2.INTER_AREA).astype(np.float32)
    part, inner = (cv2.GaussianBlur(t, (0, 0), 1.0) for t in (part, inner))  # regions, not texture
    dist = np.sqrt(((part - inner) ** 2).sum(axis=2))
    if min(dist.shape) > 4:  # the overlap's rim: where a misplaced edge of a crop falls
        dist = dist[1:-1, 1:-1]
    return float(np.percentile(dist, COLOUR_PERCENTILE))


def match_images(a: np.ndarray, b: np.ndarray,
                 colours: tuple[np.ndarray, np.ndarray] | None = None, *,
                 coarse_views: tuple[Coarse, Coarse] | None = None) -> Match | None:
    """Align two working images (:func:`working_image`) and compare their pixels.

    Parameters
    ----------
    a, b : ndarray of uint8, shape (H, W)
        Grayscale working images.
    colours : tuple of two ndarray, optional
        Their colour thumbnails (:func:`working_pair`); without them ``colour`` is NaN.
    coarse_views : tuple of two Coarse, optional
        Caches of ``a`` and ``b`` kept across pairs (:class:`Coarse`); the result is the same.

    Returns
    -------
    Match or None
        None when :func:`align` finds no placement.
    """
    al = align(a, b, coarse_views)
    if al is None:
        return None
    # detail finer than the smaller picture holds is not compared
    sigma = DETAIL_SIGMA * max(1.0, al.magnification)
    agreement, informative = _cells(_detail(al.outer, sigma), _detail(al.inner, sigma))
    colour = colour_difference(al, colours) if colours is not None else float("nan")
    return Match(similarity=round(al.similarity, 4), agreement=round(agreement, 4),
                 informative=informative, mirrored=al.mirrored, coverage=round(al.coverage, 4),
                 inner=al.inner_id, colour=round(colour, 2))
