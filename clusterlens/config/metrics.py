"""The ``metrics`` section: how the internal clustering metrics are computed."""
from __future__ import annotations

from typing import Any

from pydantic import field_validator

from clusterlens.config.base import Section
from clusterlens.config.rules import integer


class MetricsParams(Section):
    """``metrics.silhouette_sample``: the silhouette is computed on a seeded sample of at most
    this many points (an integer >= 2)."""

    silhouette_sample: int

    @field_validator("silhouette_sample", mode="before")
    @classmethod
    def _sample(cls, value: Any) -> int:
        return integer(value, 2)
