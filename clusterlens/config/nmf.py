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
    columns holding negative values (``shift`` them to start at 0, or stop with an ``error``).
    """

    k: list[int | str]
    n_components: int = Field(ge=1)
    max_iter: int = Field(ge=1)
    negative: Literal["shift", "error"]

    @field_validator("k", mode="before")
    @classmethod
    def _k(cls, value: Any) -> list[int | str]:
        return check_k_grid(value)
