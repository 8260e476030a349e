"""The ``index`` section: how the image folder is scanned and summarised."""
from __future__ import annotations

from pydantic import Field

from clusterlens.config.base import Section


class IndexParams(Section):
    """Settings of the ``index`` stage.

    Attributes
    ----------
    min_side : int
        Images smaller than this many pixels on either side are rejected as ``too_small``.
    drop_duplicates : bool
        Reject every exact copy (same sha256) after the first, in sorted path order.
    workers : int
        Threads that read and decode the files.
    sample_per_class : int
        Images per row of the sample grid.
    sample_classes : int
        Rows (classes, a seeded random subset when there are more) of the sample grid.
    """

    min_side: int = Field(ge=1)
    drop_duplicates: bool
    workers: int = Field(ge=1)
    sample_per_class: int = Field(ge=1)
    sample_classes: int = Field(ge=1)
