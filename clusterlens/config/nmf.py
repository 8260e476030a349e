"""The ``nmf`` section: the non-negative factorisation and the K grid clustered on it."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from clusterlens.clustering.grid import check_k_grid
from clusterlens.config.base import Section


class NMFParams(Section):
    """``nmf.*``.

    ``k``: the K-Means K values on ``W`` (integers >= 2, ``classes`` or ``classes_x<f>``, see
    :mod:`clusterlens.clustering.grid`; may be empty); ``n_components``: the
    factorisation rank (>= 1; at most min(images, feature dim), checked against the data);
    ``max_iter``: the solver's iteration cap (>= 1); ``negative``: what to do with feature
    columns holding negative values (``shift`` them to start at 0, or stop with an ``error``);
    ``max_exact_n``: above this many images the factorisation is fitted on a seeded sample of
    this many and ``W`` of every image comes from the fitted ``H``
    (:func:`clusterlens.clustering.nmf.fit_nmf_sampled`; an integer >= 2, or null: never;
    default 20,000). K-Means on ``W`` follows ``kmeans.max_exact_n``.
    """

    k: list[int | str]
    n_components: int = Field(ge=1)
    max_iter: int = Field(ge=1)
    negative: Literal["shift", "error"]
    max_exact_n: int | None = Field(default=20_000, ge=2)

    @field_validator("k", mode="before")
    @classmethod
    def _k(cls, value: Any) -> list[int | str]:
        return check_k_grid(value)
