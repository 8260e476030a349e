"""Image-quality flags: blurry, dark, light, low_information, grayscale, odd_size, odd_aspect_ratio.

Every image gets, per kind, a score ``<kind>_score`` (higher = more of the problem) and a flag
``is_<kind>`` (score >= ``THRESHOLDS[kind]``). Flagged images stay in the index: they are
reported, never rejected. An image may carry several flags (a near-black image is often also
``low_information``: all its pixels are close to black).

Measures
--------
The five pixel scores are computed by :func:`image_scores` from the decoded RGB image, first
shrunk to an *analysis image* of at most ``ANALYSIS_SIDE`` = 256 px on its longer side (Pillow,
bilinear, antialiased); smaller images are used as they are, never enlarged. All five are in 0..1.

- ``blurry_score`` = 1 - fine / coarse detail: *fine* is the standard deviation of the luma
  (Pillow ``L``) minus its Gaussian blur of sigma 1 px, *coarse* the same with sigma 3 px. Blur
  removes the fine detail first; a ratio of two scales does not depend on the contrast or the
  amount of texture, nor (measured below) on the image size, unlike the variance of the
  Laplacian, whose 1% quantile on clean images is 0.0013 on the photos and 0.0048 on CIFAR-10
  (candidate measures: ``/work/scratch_quality/measure.py`` then ``analyse.py``). An image
  without coarse detail (below half a grey level: a flat image) scores 0: nothing to judge,
  it is ``low_information``.
- ``dark_score`` = 1 - the 99th percentile of each pixel's brightest channel (HSV value): even
  the brightest 1% of the image is dark. The brightest channel, not luma, so that a saturated
  blue is not called dark.
- ``light_score`` = the 1st percentile of each pixel's darkest channel: even the darkest 1% of
  the image is pale (washed out, or over-exposed with lifted shadows). The darkest channel, not
  luma, so that a saturated yellow is not called light.
- ``low_information_score`` = the fraction of pixels within 0.1 (25 grey levels, in every
  channel) of the image's per-channel median colour: 1 for a blank image.
- ``grayscale_score`` = 1 - the 99th percentile of the per-pixel chroma (max - min of R, G, B)
  / 255: 1 when the channels are equal (an ``L`` file, or an RGB file of grey pixels).

The two size scores are relative to the folder: :func:`flag_table` computes them from the widths
and heights of all the indexed images.

- ``odd_size_score`` = how many times the image's area is smaller or larger than the folder's
  median area: exp(|log(area) - median(log(area))|) >= 1.
- ``odd_aspect_ratio_score`` = the same for the aspect ratio (width / height).

A fixed factor, not a robust z-score: a folder of one size (CIFAR-10: all 32x32) has a zero
spread, and an image 8 times the median area is odd whatever the spread.

Only numpy, scipy (``ndimage.gaussian_filter``) and Pillow are used (BSD / MIT-CMU licences,
already dependencies of the project). No code or rule comes from CleanVision (AGPL-3). OpenCV
(Apache-2) would do, but the measures are a few array operations and need no new dependency.

Thresholds and how they were measured
-------------------------------------
Each degradation planted by :func:`plant`, saved as a quality-90 JPEG and read back, once per
clean image; thresholds set between the clean and the planted score distributions. Command
(scratch script outside the repository; it calls :func:`plant`, :func:`image_scores` and
:func:`flag_table`), on a 2-core AMD EPYC, no GPU::

    python /work/scratch_quality/evaluate.py --photos 1000 800 200 --cifar 10000

Photos: 2,000 real photos sampled from Caltech-101 (1,000), tf_flowers (800) and hymenoptera
(200), median about 300x240 px; CIFAR-10: the 10,000 test images (32x32 JPEG). FP = fraction
of the clean images flagged; for ``grayscale`` without the images whose pixels are exactly grey
(mode ``L`` files, RGB with equal channels: 68 photos, 113 CIFAR images, all flagged), which
are grayscale for real. The size kinds: planted images added to their folder (at most 1% of it
at a time), FP over the whole folders (13,212 photos in three folders; 10,000 CIFAR images).

=================  =========  =============  =========  ============  ========
kind               threshold  photos recall  photos FP  CIFAR recall  CIFAR FP
=================  =========  =============  =========  ============  ========
blurry             0.67       0.999          0.010      0.986         0.0004
dark               0.6        1.000          0.000      1.000         0.0004
light              0.4        0.998          0.002      0.999         0.0021
low_information    0.95       1.000          0.0015     1.000         0.0012
grayscale          0.97       1.000          0.006      1.000         0.0029
odd_size           8          1.000          0.0023     1.000         0.000
odd_aspect_ratio   2.5        1.000          0.005      1.000         0.000
=================  =========  =============  =========  ============  ========

The thresholds do not depend on the image size: with the photos shrunk to 128, 64 and 32 px
(longer side) before planting (``evaluate.py --shrink SIDE 500``, 500 each from Caltech-101
and tf_flowers), every recall is >= 0.974 (blurry at 32 px) and every FP <= 0.010 (light at
32 px). So there is no size rule: the blur score compares two scales in pixels of the analysis
image, the other scores are percentiles and fractions.

The grayscale FP are colour files of nearly grey scenes (silver cars, black-and-white objects on
white); the blurry FP photos with a shallow depth of field or upscaled from a small original.
Planted ``dark`` / ``light`` images are also ``low_information`` in 18% / 16% (photos) and
37% / 33% (CIFAR) of the cases.

Planted degradations (:func:`plant`, x in 0..1): ``blurry`` Gaussian blur of sigma 1% of the
longer side (at least 1 px) times U(1, 1.5); ``dark`` k * x ** g, k ~ U(0.15, 0.35),
g ~ U(1.5, 2.5); ``light`` half washed out, 1 - k * (1 - x) ** g (same k, g), half
over-exposed, b + a * x clipped, b ~ U(0.45, 0.6), a ~ U(1.5, 3); ``low_information`` the
image's mean colour, a tilt of up to 8 grey levels, Gaussian noise of sigma U(1, 4) levels and,
half of the time, the photo at a tenth of each side (1% of the area); ``grayscale``
``convert("L").convert("RGB")``; ``odd_size`` the area set to 16 times or 1/16 of the folder's
median; ``odd_aspect_ratio`` a centred 4:1 or 1:4 crop.

Known blind spot: a photo over-exposed but keeping deep shadows (more than 1% of it dark) is
not ``light``. Global brightness cannot tell it from an object on a white background: on the
photos, luma scores from the 10th percentile or the mean catch 95% and 85% of the planted
``light`` images at 2% clean false flags, those false flags being mostly objects on white
(candidate measures, ``measure.py`` then ``analyse.py`` as above).

Cost: :func:`image_scores` adds 2.7 to 3.9 ms per photo of 300 to 500 px and 0.3 ms per
CIFAR image to :func:`clusterlens.data.index.inspect_image` (``python
/work/scratch_quality/timing.py``, best of 5 rounds of 150 images per set, same machine; about
twice as much while other jobs kept its load average near 8).

Per-class rates and possible shortcuts
--------------------------------------
:func:`class_rates` gives, per class, the fraction of its images with each flag. A flag kind is
a *possible shortcut* for a class (:func:`shortcuts`) when it marks at least
``SHORTCUT_MIN_FLAGGED`` = 5 of the class's images, at least ``SHORTCUT_MIN_RATE`` = 20% of
them, and at least ``SHORTCUT_MIN_LIFT`` = 4 times the rate among all the other images: the
quality property then tells much of that class apart whatever the content. The count bound keeps
small classes from firing on a few images, the lift bound keeps a flag common to all classes
quiet. On the full Caltech-101 folder (``python /work/scratch_quality/real_index.py
/work/photos/caltech101``) it lists car_side (123 of 123 images grayscale, 4.1% elsewhere),
yin_yang, wrench, brain and soccer_ball (25 to 33% grayscale, 5% elsewhere) and scissors
(8 of 39 with an odd aspect ratio, 0.6% elsewhere); none on tf_flowers, hymenoptera and the
CIFAR-10 test set.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter
from scipy import ndimage

PIXEL_KINDS = ("blurry", "dark", "light", "low_information", "grayscale")
SIZE_KINDS = ("odd_size", "odd_aspect_ratio")
KINDS = PIXEL_KINDS + SIZE_KINDS
THRESHOLDS = {"blurry": 0.67, "dark": 0.6, "light": 0.4, "low_information": 0.95,
              "grayscale": 0.97, "odd_size": 8.0, "odd_aspect_ratio": 2.5}
SCORE_COLUMNS = [f"{k}_score" for k in KINDS]
FLAG_COLUMNS = [f"is_{k}" for k in KINDS]
QUALITY_COLUMNS = SCORE_COLUMNS + FLAG_COLUMNS
ANALYSIS_SIDE = 256
SHORTCUT_MIN_FLAGGED = 5
SHORTCUT_MIN_RATE = 0.2
SHORTCUT_MIN_LIFT = 4.0
SHORTCUT_COLUMNS = ["class", "kind", "flagged", "images", "rate", "rest_rate"]

_FINE_SIGMA, _COARSE_SIGMA = 1.0, 3.0
_FLAT = 0.5 / 255.0  # coarse detail below half a grey level: nothing to call blurry
_PLAIN = 0.1 * 255.0  # low_information: within this of the median colour, every channel


# --------------------------------------------------------------------------- per image
def analysis_image(img: Image.Image, *, max_side: int = ANALYSIS_SIDE) -> Image.Image:
    """The image shrunk to at most ``max_side`` pixels on its longer side (never enlarged).

    Parameters
    ----------
    img : PIL.Image.Image
        An RGB image.
    max_side : int
        Longest side of the result, in pixels.

    Returns
    -------
    PIL.Image.Image
        ``img`` itself when it is small enough, else a bilinear (antialiased) reduction.
    """
    w, h = img.size
    if max(w, h) <= max_side:
        return img
    scale = max_side / max(w, h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return img.resize(size, Image.BILINEAR, reducing_gap=3.0)


def _quantile(counts: np.ndarray, q: float) -> int:
    """The smallest value with at least a fraction ``q`` of the pixels at or below it."""
    cum = np.cumsum(counts)
    return int(np.searchsorted(cum, q * cum[-1]))


def image_scores(img: Image.Image) -> dict[str, float]:
    """The five pixel scores of one image (see the module docstring), each in 0..1.

    Parameters
    ----------
    img : PIL.Image.Image
        The decoded image, RGB (other modes are converted).

    Returns
    -------
    dict of str to float
        ``blurry_score``, ``dark_score``, ``light_score``, ``low_information_score``,
        ``grayscale_score``; higher = more of the problem.
    """
    small = analysis_image(img if img.mode == "RGB" else img.convert("RGB"))
    rgb = np.asarray(small)
    luma8 = np.asarray(small.convert("L"))
    luma = luma8.astype(np.float32) / 255.0
    fine = float((luma - ndimage.gaussian_filter(luma, _FINE_SIGMA)).std())
    coarse = float((luma - ndimage.gaussian_filter(luma, _COARSE_SIGMA)).std())
    blurry = 0.0 if coarse < _FLAT else min(1.0, max(0.0, 1.0 - fine / coarse))
    r, g, b = (rgb[..., c] for c in range(3))  # per plane: much faster than reducing axis 2
    high = np.maximum(np.maximum(r, g), b)  # each pixel's brightest channel (HSV value)
    low = np.minimum(np.minimum(r, g), b)  # and its darkest
    plain = np.ones(luma8.shape, dtype=bool)
    for plane in (r, g, b):
        median = _quantile(np.bincount(plane.ravel(), minlength=256), 0.5)
        plain &= np.abs(plane.astype(np.int16) - median) <= _PLAIN
    return {
        "blurry_score": blurry,
        "dark_score": 1.0 - _quantile(np.bincount(high.ravel(), minlength=256), 0.99) / 255.0,
        "light_score": _quantile(np.bincount(low.ravel(), minlength=256), 0.01) / 255.0,
        "low_information_score": float(plain.mean()),
        "grayscale_score": 1.0 - _quantile(np.bincount((high - low).ravel(), minlength=256),
                                           0.99) / 255.0,
    }


# --------------------------------------------------------------------------- per folder
def _fold(log_values: np.ndarray) -> np.ndarray:
    """exp(|x - median(x)|): how many times larger or smaller than the folder's median."""
    if log_values.size == 0:
        return log_values
    return np.exp(np.abs(log_values - np.median(log_values)))


def flag_table(scores: pd.DataFrame, *, widths: Sequence[int], heights: Sequence[int]) -> pd.DataFrame:
    """Every score and flag of a folder: the pixel scores plus the folder-relative size scores.

    Parameters
    ----------
    scores : pandas.DataFrame
        One row per image with the five pixel score columns of :func:`image_scores`.
    widths, heights : sequence of int
        The images' sizes in pixels, in the same order.

    Returns
    -------
    pandas.DataFrame
        Columns ``QUALITY_COLUMNS`` (``<kind>_score`` floats, then ``is_<kind>`` booleans, score
        >= ``THRESHOLDS[kind]``), index as ``scores``.
    """
    w = np.asarray(widths, dtype=np.float64)
    h = np.asarray(heights, dtype=np.float64)
    if not (len(w) == len(h) == len(scores)):
        raise ValueError(f"flag_table: {len(scores)} score rows, {len(w)} widths, {len(h)} heights")
    out = pd.DataFrame(index=scores.index)
    for kind in PIXEL_KINDS:
        out[f"{kind}_score"] = scores[f"{kind}_score"].to_numpy(dtype=np.float64)
    out["odd_size_score"] = _fold(np.log(w * h))
    out["odd_aspect_ratio_score"] = _fold(np.log(w / h))
    for kind in KINDS:
        out[f"is_{kind}"] = out[f"{kind}_score"].to_numpy() >= THRESHOLDS[kind]
    return out[QUALITY_COLUMNS]


def flag_counts(flags: pd.DataFrame) -> dict[str, int]:
    """Images with each flag, e.g. ``{"blurry": 3, ...}`` (every kind, in ``KINDS`` order)."""
    return {k: int(flags[f"is_{k}"].sum()) for k in KINDS}


# --------------------------------------------------------------------------- per class
def shortcuts(flags: pd.DataFrame, classes: Sequence[str], *,
              min_flagged: int = SHORTCUT_MIN_FLAGGED, min_rate: float = SHORTCUT_MIN_RATE,
              min_lift: float = SHORTCUT_MIN_LIFT) -> pd.DataFrame:
    """The (class, flag kind) pairs where a quality flag is strongly associated with one class.

    A pair is listed when the flag marks at least ``min_flagged`` of the class's images, at least
    a fraction ``min_rate`` of them, and at least ``min_lift`` times the fraction among all the
    other images.

    Parameters
    ----------
    flags : pandas.DataFrame
        The ``is_<kind>`` columns of :func:`flag_table`, one row per image.
    classes : sequence of str
        Each image's class, in the same order.
    min_flagged, min_rate, min_lift
        The rule's three bounds (module constants ``SHORTCUT_*`` by default).

    Returns
    -------
    pandas.DataFrame
        Columns ``SHORTCUT_COLUMNS`` (``rate`` = flagged / images in the class, ``rest_rate`` the
        same over the other classes), sorted by class then kind order.
    """
    cls = np.asarray(classes, dtype=object)
    if len(cls) != len(flags):
        raise ValueError(f"shortcuts: {len(flags)} flag rows, {len(cls)} classes")
    rows = []
    n_all = len(cls)
    for name in sorted(set(cls)):
        mine = cls == name
        n_mine = int(mine.sum())
        for kind in KINDS:
            col = flags[f"is_{kind}"].to_numpy(dtype=bool)
            hit = int(col[mine].sum())
            rest_n = n_all - n_mine
            rest_rate = float(col[~mine].sum() / rest_n) if rest_n else 0.0
            rate = hit / n_mine
            if hit >= min_flagged and rate >= min_rate and rate >= min_lift * rest_rate:
                rows.append({"class": name, "kind": kind, "flagged": hit, "images": n_mine,
                             "rate": rate, "rest_rate": rest_rate})
    return pd.DataFrame(rows, columns=SHORTCUT_COLUMNS)


def class_rates(flags: pd.DataFrame, classes: Sequence[str]) -> pd.DataFrame:
    """Per class: its image count, the fraction of its images with each flag, its shortcuts.

    Parameters
    ----------
    flags : pandas.DataFrame
        The ``is_<kind>`` columns of :func:`flag_table`, one row per image.
    classes : sequence of str
        Each image's class, in the same order.

    Returns
    -------
    pandas.DataFrame
        One row per class (sorted): ``class``, ``images``, ``<kind>_rate`` for every kind, and
        ``shortcuts``: the kinds that :func:`shortcuts` lists for the class, joined by ``;``
        (empty when none).
    """
    cls = np.asarray(classes, dtype=object)
    if len(cls) != len(flags):
        raise ValueError(f"class_rates: {len(flags)} flag rows, {len(cls)} classes")
    table = pd.DataFrame({f"{k}_rate": flags[f"is_{k}"].to_numpy(dtype=np.float64) for k in KINDS})
    table.insert(0, "class", cls)
    rates = table.groupby("class", sort=True).mean()
    rates.insert(0, "images", table.groupby("class", sort=True).size())
    found = shortcuts(flags, cls)
    listed = found.groupby("class")["kind"].agg(";".join) if len(found) else pd.Series(dtype=object)
    rates["shortcuts"] = [listed.get(c, "") for c in rates.index]
    return rates.reset_index()


# --------------------------------------------------------------------------- planted problems
def _to_image(arr: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="RGB")


def plant(img: Image.Image, kind: str, *, rng: np.random.Generator,
          median_size: tuple[int, int] | None = None) -> Image.Image:
    """A copy of ``img`` with one quality problem planted (used to measure the detectors).

    Parameters
    ----------
    img : PIL.Image.Image
        A clean image (converted to RGB).
    kind : str
        One of ``KINDS``; the recipes are in the module docstring.
    rng : numpy.random.Generator
        Draws the strength (and variant) of the degradation.
    median_size : tuple of int, optional
        The folder's median (width, height); required for ``odd_size``.

    Returns
    -------
    PIL.Image.Image
        The degraded RGB image.

    Raises
    ------
    ValueError
        For an unknown ``kind``, or ``odd_size`` without ``median_size``.
    """
    img = img.convert("RGB")
    w, h = img.size
    x = np.asarray(img, dtype=np.float64) / 255.0
    if kind == "blurry":
        sigma = max(1.0, 0.01 * max(w, h)) * rng.uniform(1.0, 1.5)
        return img.filter(ImageFilter.GaussianBlur(sigma))
    if kind == "dark":
        return _to_image(255.0 * rng.uniform(0.15, 0.35) * x ** rng.uniform(1.5, 2.5))
    if kind == "light":
        if rng.random() < 0.5:  # washed out: the tones squeezed into the bright end
            out = 1.0 - rng.uniform(0.15, 0.35) * (1.0 - x) ** rng.uniform(1.5, 2.5)
        else:  # over-exposed: shadows lifted to mid-grey, highlights clipped
            out = rng.uniform(0.45, 0.6) + x * rng.uniform(1.5, 3.0)
        return _to_image(255.0 * out)
    if kind == "low_information":
        yy, xx = np.mgrid[0:h, 0:w]
        tilt = rng.uniform(-8.0, 8.0, size=2)
        arr = 255.0 * x.reshape(-1, 3).mean(axis=0) + (tilt[0] * xx / w + tilt[1] * yy / h)[..., None]
        out = _to_image(arr + rng.normal(0.0, rng.uniform(1.0, 4.0), size=(h, w, 3)))
        if rng.random() < 0.5:  # a tiny object: the photo at a tenth of each side
            ow, oh = max(1, w // 10), max(1, h // 10)
            out.paste(img.resize((ow, oh), Image.BILINEAR),
                      (int(rng.integers(0, w - ow + 1)), int(rng.integers(0, h - oh + 1))))
        return out
    if kind == "grayscale":
        return img.convert("L").convert("RGB")
    if kind == "odd_size":
        if median_size is None:
            raise ValueError("plant: odd_size needs the folder's median_size")
        factor = 16.0 if rng.random() < 0.5 else 1.0 / 16.0
        scale = np.sqrt(factor * median_size[0] * median_size[1] / (w * h))
        return img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
    if kind == "odd_aspect_ratio":
        ratio = 4.0 if rng.random() < 0.5 else 0.25  # width / height of the strip
        nw, nh = (w, max(1, round(w / ratio))) if w / h < ratio else (max(1, round(h * ratio)), h)
        left, top = (w - nw) // 2, (h - nh) // 2
        return img.crop((left, top, left + nw, top + nh))
    raise ValueError(f"plant: kind must be one of {', '.join(KINDS)}, got {kind!r}")
