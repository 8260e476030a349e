"""The ``report`` section: the explorer's thumbnails and how many images its page holds."""
from __future__ import annotations

from pydantic import Field

from clusterlens.config.base import Section


class ReportParams(Section):
    """``report.*``.

    ``thumbnails``: at most this many images get a thumbnail in the explorer (all when fewer;
    above it a sample seeded by ``seed``, the suspected label issues, each cluster's nearest
    members and the most severe images of each flag first); 0 for none. ``thumbnail_px``: a thumbnail's longest side in
    pixels, 16 to 256. ``max_points``: the explorer's page holds every image up to this many
    (at least 1,000); above it a sample seeded by ``seed`` plus every image an audit flag marks,
    the most outlying, the thumbnailed ones and the t-SNE's, so the page stays small enough to
    open.
    """

    thumbnails: int = Field(ge=0)
    thumbnail_px: int = Field(ge=16, le=256)
    max_points: int = Field(ge=1000)
