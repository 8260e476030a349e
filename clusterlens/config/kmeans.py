"""The ``kmeans`` section: the K-Means grid (one DVC stage per K) and its settings."""
from __future__ import annotations

from typing import Any

from pydantic import field_validator

from clusterlens.clustering.grid import check_k_grid
from clusterlens.config.base import Section
from clusterlens.config.rules import choice, integer

ENGINES = ("sklearn", "faiss")


class KMeansParams(Section):
    """``kmeans``: ``k`` (list of K: integers >= 2, ``classes`` or ``classes_x<f>``, see
    :mod:`clusterlens.clustering.grid`), ``n_init`` and ``max_iter`` (>= 1), ``engine``
    (``sklearn`` or ``faiss``; default ``sklearn``). ``n_init``/``max_iter``/``engine`` also
    apply to K-Means on the NMF factor (``nmf`` grid). ``max_exact_n``: above this many images
    a grid point (``kmeans`` and ``nmf``) is fitted on a seeded sample of this many (or 40 per
    cluster when that is more) with ``sample_n_init`` runs, and every image is assigned to its
    nearest centroid (:func:`clusterlens.clustering.methods.kmeans_route`; an integer >= 2, or
    null: never; default 20,000); ``sample_n_init`` >= 1 (default 1)."""

    k: list[int | str]
    n_init: int
    max_iter: int
    engine: str = "sklearn"
    max_exact_n: int | None = 20_000
    sample_n_init: int = 1

    @field_validator("k", mode="before")
    @classmethod
    def _k(cls, value: Any) -> list[int | str]:
        return check_k_grid(value)

    @field_validator("max_exact_n", mode="before")
    @classmethod
    def _max_exact_n(cls, value: Any) -> int | None:
        return None if value is None else integer(value, 2)

    @field_validator("n_init", "max_iter", "sample_n_init", mode="before")
    @classmethod
    def _positive(cls, value: Any) -> int:
        return integer(value, 1)

    @field_validator("engine", mode="before")
    @classmethod
    def _engine(cls, value: Any) -> str:
        return choice(value, ENGINES)
