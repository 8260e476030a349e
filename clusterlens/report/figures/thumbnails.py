"""Image thumbnails drawn into matplotlib axes (shared by the sample grids and montages)."""
from __future__ import annotations

from clusterlens.data.images import load_rgb

THUMBNAIL_SIZE = (128, 128)


def thumbnail_cell(ax, path=None) -> None:
    """Draw one cell of an image grid.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        The cell; its ticks and frame are removed.
    path : str or PathLike, optional
        The image to show, shrunk to at most 128 px a side; an empty cell when None.
    """
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if path is not None:
        img = load_rgb(path)
        img.thumbnail(THUMBNAIL_SIZE)
        ax.imshow(img, interpolation="nearest")
