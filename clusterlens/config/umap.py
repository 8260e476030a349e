"""The ``umap`` section: the seeded UMAP of a sample of the PCA features."""
from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from clusterlens.config.base import Section
from clusterlens.config.rules import fraction


class UMAPParams(Section):
    """``umap.*``.

    ``enabled``: run UMAP (false: the stage writes an empty embedding, and nothing shows a UMAP
    map or a ``silhouette_umap``); ``sample``: embed a seeded sample of this many images, all
    when fewer (>= 5); ``dim``: the dimension of the embedding ``clustering`` measures the
    silhouette in (2-100); ``n_neighbors`` (>= 2) and ``min_dist`` (0-1): umap-learn's;
    ``grid``: also embed every image in ``dim`` dimensions (the sample's fit, the others
    placed by ``transform``), for the grid's ``hdbscan.space`` / ``agglomerative.space: umap``.
    """

    enabled: bool = False
    sample: int = Field(default=5000, ge=5)
    dim: int = Field(default=10, ge=2, le=100)
    n_neighbors: int = Field(default=15, ge=2)
    min_dist: float = 0.1
    grid: bool = False

    @field_validator("min_dist", mode="before")
    @classmethod
    def _min_dist(cls, value: Any) -> float:
        return fraction(value)
