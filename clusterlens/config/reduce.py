"""The ``reduce`` section: standardisation and the number of principal components."""
from __future__ import annotations

from typing import Any

from pydantic import field_validator

from clusterlens.config.base import Section
from clusterlens.config.rules import integer


class ReduceParams(Section):
    """``reduce.*``.

    ``standardize``: z-score every feature before PCA; ``n_components``: an integer >= 1 (the
    number of components; at most min(images, feature dim), checked against the data) or a
    fraction in (0, 1] (keep the fewest components whose cumulative explained variance reaches
    it); ``max_exact_n``: above this many images the PCA takes the bounded-memory ``blocked``
    route (:func:`clusterlens.clustering.reduction.fit_pca`; an integer >= 1, default 100,000,
    or null: never).
    """

    standardize: bool
    n_components: int | float
    max_exact_n: int | None = 100_000

    @field_validator("max_exact_n", mode="before")
    @classmethod
    def _max_exact_n(cls, value: Any) -> int | None:
        return None if value is None else integer(value, 1)

    @field_validator("n_components", mode="before")
    @classmethod
    def _count_or_fraction(cls, value):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"must be an integer or a fraction in (0, 1), got {value!r}")
        if isinstance(value, int) and value < 1:
            raise ValueError(f"= {value} must be >= 1")
        if isinstance(value, float) and not 0.0 < value <= 1.0:
            raise ValueError(f"= {value} as a variance fraction must be in (0, 1]")
        return value
