"""The ``images`` section: cluster representatives and the thumbnail figures of images to check."""
from __future__ import annotations

from typing import Any

from pydantic import field_validator

from clusterlens.config.base import Section
from clusterlens.config.rules import integer


class ImagesParams(Section):
    """``images.representatives`` (members nearest each cluster's centre kept per cluster,
    >= 1; the composition montage shows the first ``composition.montage_images`` of them),
    ``images.doubtful`` (doubtful members kept per cluster, >= 0), ``images.show`` (thumbnails
    in the label-issue and outlier figures, >= 1), ``images.pairs`` (near-duplicate pairs in
    their figure, >= 1) and ``images.clusters`` (rows of the representatives figure, >= 1)."""

    representatives: int
    doubtful: int
    show: int
    pairs: int
    clusters: int

    @field_validator("representatives", "show", "pairs", "clusters", mode="before")
    @classmethod
    def _at_least_one(cls, value: Any) -> int:
        return integer(value, 1)

    @field_validator("doubtful", mode="before")
    @classmethod
    def _not_negative(cls, value: Any) -> int:
        return integer(value, 0)
