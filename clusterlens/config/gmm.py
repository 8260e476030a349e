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
    ``max_iter`` (>= 1), ``max_exact_n`` (above this many images the mixture is fitted on a
    seeded sample of this many, or 40 per component when that is more, and labels every image:
    :func:`clusterlens.clustering.methods.gmm_sampled`; an integer >= 2, or null: never;
    default 20,000)."""

    k: list[int | str]
    covariance_type: str
    max_iter: int
    max_exact_n: int | None = 20_000

    @field_validator("max_exact_n", mode="before")
    @classmethod
    def _max_exact_n(cls, value: Any) -> int | None:
        return None if value is None else integer(value, 2)

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
