"""The ``select`` section: how the `clustering` aggregate picks one model from the grid."""
from __future__ import annotations

from typing import Any

from pydantic import field_validator

from clusterlens.config.base import Section
from clusterlens.config.rules import choice, fraction

# every metric of clusterlens.clustering.metrics.HIGHER_IS_BETTER except inertia (tests check they agree)
SELECT_METRICS = ("silhouette", "davies_bouldin", "calinski_harabasz", "purity", "nmi", "ami",
                  "ari", "homogeneity", "completeness", "v_measure", "hungarian_accuracy",
                  "kappa", "silhouette_umap", "silhouette_pca")


class SelectParams(Section):
    """``select``: ``metric`` (the grid point with the best value wins) and ``max_noise`` (a
    density method's point qualifies only with at most this noise fraction, in [0, 1])."""

    metric: str
    max_noise: int | float

    @field_validator("metric", mode="before")
    @classmethod
    def _metric(cls, value: Any) -> str:
        return choice(value, SELECT_METRICS)

    @field_validator("max_noise", mode="before")
    @classmethod
    def _max_noise(cls, value: Any) -> float:
        return fraction(value)
