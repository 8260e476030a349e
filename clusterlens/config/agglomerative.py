"""The ``agglomerative`` section: one merge tree per linkage, cut at every K, and the large-N
route choice (exact tree on all points, or K-Means cells then the tree over the cells)."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import ValidationInfo, field_validator

from clusterlens.clustering.grid import check_k_grid
from clusterlens.config.base import Section
from clusterlens.config.rules import choice, choice_list, integer

LINKAGES = ("ward", "complete", "average", "single")
ROUTES = ("exact", "two_step", "auto")
MAX_CENTROIDS = 20_000  # the linkage over the cells holds an n_centroids^2 float64 matrix


class AgglomerativeParams(Section):
    """``agglomerative``.

    ``linkage``: list of ward, complete, average, single (one stage each); ``k``: list of
    K (integers >= 2, ``classes`` or ``classes_x<f>``, see :mod:`clusterlens.clustering.grid`), the cuts
    of every tree (the agglomerative stage needs at least one); ``route``:
    exact, two_step or auto (default auto); ``max_exact_n``: the N above which auto takes
    two_step (null for the per-linkage defaults, an integer >= 2, or a mapping linkage ->
    integer); ``n_centroids``: K-Means cells of the two-step route, 2 to 20,000 (default 2000);
    ``space``: the features the trees are built on, ``pca`` (default) or ``umap`` (the ``umap``
    stage's embedding of every image: needs ``umap.grid``).
    """

    linkage: list[str]
    k: list[int | str]
    route: str = "auto"
    max_exact_n: int | dict[str, int] | None = None
    n_centroids: int = 2000
    space: Literal["pca", "umap"] = "pca"

    @field_validator("linkage", mode="before")
    @classmethod
    def _linkage(cls, value: Any) -> list[str]:
        return choice_list(value, LINKAGES)

    @field_validator("k", mode="before")
    @classmethod
    def _k(cls, value: Any, info: ValidationInfo) -> list[int | str]:
        value = check_k_grid(value)
        if not value and info.data.get("linkage"):
            raise ValueError("must be a non-empty list of integers when `agglomerative.linkage` "
                             "lists a linkage (every tree is cut at each K), got []")
        return value

    @field_validator("route", mode="before")
    @classmethod
    def _route(cls, value: Any) -> str:
        return choice(value, ROUTES)

    @field_validator("max_exact_n", mode="before")
    @classmethod
    def _max_exact_n(cls, value: Any):
        if value is None:
            return None
        if isinstance(value, dict):
            unknown = sorted(set(value) - set(LINKAGES))
            if unknown:
                raise ValueError(f"has unknown linkages {unknown}; use {', '.join(LINKAGES)}")
            for linkage, n in value.items():
                try:
                    integer(n, 2)
                except ValueError as exc:
                    raise ValueError(f"has {linkage}: {n!r}, which {exc}") from None
            return value
        return integer(value, 2)

    @field_validator("n_centroids", mode="before")
    @classmethod
    def _n_centroids(cls, value: Any) -> int:
        integer(value, 2)
        if value > MAX_CENTROIDS:
            gib = 8 * value**2 / 2**30
            raise ValueError(f"= {value} is above {MAX_CENTROIDS:,}: the linkage over the cells "
                             f"holds an n_centroids^2 float64 matrix ({gib:.1f} GiB); a few "
                             "thousand cells are plenty for cuts at tens of clusters")
        return value
