"""The ``composition`` section: the montage of the selected model's largest clusters."""
from __future__ import annotations

from pydantic import field_validator

from clusterlens.config.base import Section


class CompositionParams(Section):
    """``composition.montage_clusters`` (rows: the largest clusters) and
    ``composition.montage_images`` (images per row), both integers >= 1."""

    montage_clusters: int
    montage_images: int

    @field_validator("montage_clusters", "montage_images")
    @classmethod
    def _at_least_one(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"must be >= 1, got {value}")
        return value
