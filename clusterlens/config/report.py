"""The ``report`` section: the explorer's thumbnails."""
from __future__ import annotations

from pydantic import Field

from clusterlens.config.base import Section


class ReportParams(Section):
    """``report.*``.

    ``thumbnails``: at most this many images get a thumbnail in the explorer (all when fewer;
    above it a sample seeded by ``seed``, the suspected label issues and each cluster's
    nearest members first); 0 for none. ``thumbnail_px``: a thumbnail's longest side in
    pixels, 16 to 256.
    """

    thumbnails: int = Field(ge=0)
    thumbnail_px: int = Field(ge=16, le=256)
