"""The ``dbscan`` section: the DBSCAN grid over eps percentiles (one DVC stage per value)."""
from __future__ import annotations

from typing import Any

from pydantic import field_validator

from clusterlens.config.base import Section
from clusterlens.config.rules import integer, number_list


class DBSCANParams(Section):
    """``dbscan``: ``eps_percentile`` (list of percentiles in (0, 100] of the k-distance curve;
    eps is that percentile of every point's distance to its ``min_samples``-th neighbour),
    ``min_samples`` (>= 1), ``max_exact_n`` (above this many points a grid point runs on a
    seeded sample of this many and assigns the rest: :mod:`clusterlens.clustering.density`;
    >= 2, default 20,000)."""

    eps_percentile: list[int | float]
    min_samples: int
    max_exact_n: int = 20_000

    @field_validator("eps_percentile", mode="before")
    @classmethod
    def _eps(cls, value: Any) -> list:
        return number_list(value, 0, 100)

    @field_validator("min_samples", mode="before")
    @classmethod
    def _min_samples(cls, value: Any) -> int:
        return integer(value, 1)

    @field_validator("max_exact_n", mode="before")
    @classmethod
    def _max_exact_n(cls, value: Any) -> int:
        return integer(value, 2)
