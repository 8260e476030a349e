"""The ``hdbscan`` section: the HDBSCAN grid over minimum cluster sizes."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import field_validator

from clusterlens.config.base import Section
from clusterlens.config.rules import int_list, integer


class HDBSCANParams(Section):
    """``hdbscan``: ``min_cluster_size`` (list of integers >= 2), ``min_samples`` (an integer
    >= 1, or null: HDBSCAN's default, the minimum cluster size), ``max_exact_n`` (above this
    many points a grid point runs on a seeded sample of this many and assigns the rest:
    :mod:`clusterlens.clustering.density`; >= 2, default 20,000), ``space``: the features the
    points cluster, ``pca`` (default) or ``umap`` (the ``umap`` stage's embedding of every
    image: needs ``umap.grid``)."""

    min_cluster_size: list[int]
    min_samples: int | None
    max_exact_n: int = 20_000
    space: Literal["pca", "umap"] = "pca"

    @field_validator("min_cluster_size", mode="before")
    @classmethod
    def _mcs(cls, value: Any) -> list[int]:
        return int_list(value, 2)

    @field_validator("min_samples", mode="before")
    @classmethod
    def _min_samples(cls, value: Any) -> int | None:
        return None if value is None else integer(value, 1)

    @field_validator("max_exact_n", mode="before")
    @classmethod
    def _max_exact_n(cls, value: Any) -> int:
        return integer(value, 2)
