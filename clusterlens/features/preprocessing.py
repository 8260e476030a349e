"""The input recipe of a backbone: the square side images are fed at and how they become square.

``extract.image_size`` and ``extract.resize`` take ``auto``, which follows the data:

- ``image_size: auto`` = the weights' native size (224 for Lite0 and most torchvision models),
  but at most :data:`MAX_UPSCALE` times the folder's median shorter side (at least
  :data:`MIN_IMAGE_SIZE`). Photos and CIFAR-sized images (32 px and up) get the native size;
  the demo's 8x8 digits get 64 px: upscaling an image further adds no detail, only compute.
- ``resize: auto`` = ``center_crop`` (torchvision's evaluation transform, what ImageNet
  accuracies are measured with) when a pretrained network is fed at its native size, else
  ``squash``: the whole image, so the edges of small images (a digit's strokes) are kept.
  ``raw_pixels`` and ``scratch_cnn`` always squash (the scratch CNN is trained on squashed
  images).

The scratch CNN runs at the size it was trained at, whatever ``image_size`` says; an open_clip
tower runs at its native size only (``auto``; another size is an error). Everything
downstream (the feature store's key, metrics, the captioner) uses the resolved values.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from clusterlens.core.errors import ParamError
from clusterlens.features.backbones import (
    LITE0,
    LITE0_NATIVE_SIZE,
    RAW,
    RAW_NATIVE_SIZE,
    SCRATCH_CNN,
    Backbone,
    build_backbone,
)
from clusterlens.features.hub_models import fixed_size

log = logging.getLogger("clusterlens.extract")

MAX_UPSCALE = 8  # image_size: auto is at most this many times the median shorter side
MIN_IMAGE_SIZE = 16  # the smallest extract.image_size
AUTO = "auto"
# backbones whose network is built for the input side (Lite0's static padding, the raw-pixel
# dimension): their native size is known before building them
FIXED_NATIVE_SIZES = {LITE0: LITE0_NATIVE_SIZE, RAW: RAW_NATIVE_SIZE}


@dataclass(frozen=True)
class InputRecipe:
    """How images are fed to a backbone.

    Attributes
    ----------
    image_size : int
        The square input side, in pixels.
    resize : str
        ``squash`` or ``center_crop``.
    native_size : int
        The side the backbone's weights were trained at.
    median_side : float or None
        The folder's median shorter image side (None when not known).
    requested : tuple
        ``(extract.image_size, extract.resize)`` as given (``auto`` or a value).
    """

    image_size: int
    resize: str
    native_size: int
    median_side: float | None
    requested: tuple

    def describe(self) -> str:
        """One line for logs and metrics, e.g. ``64 px squash (image_size auto: 8 x median
        side 8 px, native 224; resize auto)``."""
        notes = []
        if self.requested[0] == AUTO:
            if self.image_size < self.native_size and self.median_side is not None:
                notes.append(f"image_size auto: {MAX_UPSCALE} x median side "
                             f"{self.median_side:g} px, native {self.native_size}")
            else:
                notes.append(f"image_size auto: native {self.native_size}")
        if self.requested[1] == AUTO:
            notes.append("resize auto")
        return f"{self.image_size} px {self.resize}" + (f" ({'; '.join(notes)})" if notes else "")


def median_short_side(widths, heights) -> float | None:
    """The median over images of ``min(width, height)``; None without images."""
    w, h = np.asarray(widths, dtype=np.float64), np.asarray(heights, dtype=np.float64)
    if w.size == 0:
        return None
    return float(np.median(np.minimum(w, h)))


def auto_image_size(native_size: int, median_side: float | None) -> int:
    """``min(native_size, MAX_UPSCALE * median_side)``, at least ``MIN_IMAGE_SIZE``; the native
    size when the median side is unknown."""
    if median_side is None:
        return int(native_size)
    return int(max(MIN_IMAGE_SIZE, min(native_size, round(MAX_UPSCALE * median_side))))


def auto_resize(backbone_name: str, image_size: int, native_size: int) -> str:
    """``center_crop`` for a pretrained network fed at its native size, else ``squash``."""
    if backbone_name in (RAW, SCRATCH_CNN) or image_size != native_size:
        return "squash"
    return "center_crop"


def resolve_input(backbone_name: str, native_size: int, image_size, resize: str,
                  widths=None, heights=None) -> InputRecipe:
    """Resolve ``auto`` in ``extract.image_size`` / ``extract.resize`` for a folder.

    Parameters
    ----------
    backbone_name : str
        ``extract.backbone``.
    native_size : int
        The side the backbone's weights were trained at (``Backbone.native_size``; for the
        scratch CNN, the size it was trained at).
    image_size : int or "auto"
        ``extract.image_size``.
    resize : str
        ``extract.resize``: ``auto``, ``squash`` or ``center_crop``.
    widths, heights : array-like, optional
        The indexed images' sizes (``data/index.parquet``); without them ``auto`` is the
        native size.

    Returns
    -------
    InputRecipe
    """
    median = None if widths is None or heights is None else median_short_side(widths, heights)
    if backbone_name == SCRATCH_CNN:
        size = int(native_size)  # it runs at the size it was trained at
    elif fixed_size(backbone_name):
        if image_size not in (AUTO, int(native_size)):
            raise ParamError("extract.image_size", f"= {image_size}, but {backbone_name} takes "
                             f"{native_size} px inputs only (its position embeddings); use "
                             "auto")
        size = int(native_size)
    elif image_size == AUTO:
        size = auto_image_size(native_size, median)
    else:
        size = int(image_size)
    how = auto_resize(backbone_name, size, native_size) if resize == AUTO else resize
    return InputRecipe(size, how, int(native_size), median, (image_size, resize))


def index_sides(index) -> tuple:
    """``(widths, heights)`` of an image index (``data/index.parquet``), or ``(None, None)``
    when it has no size columns."""
    if index is None or not {"width", "height"} <= set(index.columns):
        return None, None
    return index["width"].to_numpy(), index["height"].to_numpy()


def build_for_input(name: str, weights: str, image_size, resize: str, widths=None,
                    heights=None, model_dir=None) -> tuple[Backbone, InputRecipe]:
    """Build a backbone for the images it will be fed, resolving ``auto`` first.

    Lite0 and ``raw_pixels`` are built for the resolved side (it sets Lite0's static padding
    and the raw-pixel dimension); other backbones are built once and their native size read.

    Parameters
    ----------
    name, weights : str
        ``extract.backbone``, ``extract.weights``.
    image_size, resize
        ``extract.image_size``, ``extract.resize`` (``auto`` or a value).
    widths, heights : array-like, optional
        The indexed images' sizes (:func:`index_sides`).
    model_dir : str or Path, optional
        The trained CNN's folder, for ``scratch_cnn``.

    Returns
    -------
    backbone : Backbone
    recipe : InputRecipe
    """
    native = FIXED_NATIVE_SIZES.get(name)
    backbone = None
    if native is None:
        backbone = build_backbone(name, weights, None if image_size == AUTO or fixed_size(name)
                                  else image_size, model_dir=model_dir)
        native = backbone.native_size
    recipe = resolve_input(name, native, image_size, resize, widths, heights)
    if name == SCRATCH_CNN and image_size not in (AUTO, recipe.image_size):
        log.info("extract.image_size %s ignored: the scratch CNN runs at the %d px it was "
                 "trained at (cnn.image_size)", image_size, recipe.image_size)
    if backbone is None:
        backbone = build_backbone(name, weights, recipe.image_size, model_dir=model_dir)
    return backbone, recipe
