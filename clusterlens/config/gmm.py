"""The ``gmm`` section: the Gaussian-mixture grid (one DVC stage per K)."""
from __future__ import annotations

from typing import Any

from pydantic import field_validator

from clusterlens.clustering.grid import check_k_grid
from clusterlens.config.base import Section
from clusterlens.config.rules import choice, integer

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")


class GMMParams(Section):
    """``gmm``: ``k`` (list of K: integers >= 2, ``classes`` or ``classes_x<f>``, see
    :mod:`clusterlens.clustering.grid`), ``covariance_type`` (full, tied, diag, spherical),
    ``max_iter`` (>= 1)."""

    k: list[int | str]
    covariance_type: str
    max_iter: int

    @field_validator("k", mode="before")
    @classmethod
    def _k(cls, value: Any) -> list[int | str]:
        return check_k_grid(value)

    @field_validator("covariance_type", mode="before")
    @classmethod
    def _cov(cls, value: Any) -> str:
        return choice(value, COVARIANCE_TYPES)

    @field_validator("max_iter", mode="before")
    @classmethod
    def _max_iter(cls, value: Any) -> int:
        return integer(value, 1)
