"""The ``neighbours`` section: the k-nearest-neighbour search, near-duplicates and outliers."""
from __future__ import annotations

from typing import Any

from pydantic import field_validator

from clusterlens.config.base import Section
from clusterlens.config.rules import choice, integer

ENGINES = ("auto", "faiss", "sklearn")


class NeighboursParams(Section):
    """``neighbours.*``.

    ``k``: the outlier score is the cosine distance to the k-th nearest other image (>= 1,
    fewer than the images); ``duplicate_similarity``: pairs at or above this cosine similarity
    are near-duplicates (a number in (0, 1], or ``auto``: see
    :func:`clusterlens.audit.neighbours.auto_duplicate_similarity`); ``block_mb``: working memory of
    one block of the search, MiB (>= 1); ``engine``: ``auto`` (faiss when installed),
    ``faiss`` or ``sklearn``.
    """

    k: int
    duplicate_similarity: float | str = "auto"  # measured: see docs/parameters.md
    block_mb: int = 256
    engine: str = "auto"

    @field_validator("k", mode="before")
    @classmethod
    def _k(cls, value: Any) -> int:
        return integer(value, 1)

    @field_validator("duplicate_similarity", mode="before")
    @classmethod
    def _similarity(cls, value: Any) -> float | str:
        if value == "auto":
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
            raise ValueError("must be auto or a cosine similarity in (0, 1] such as 0.9, "
                             f"got {value!r}")
        return float(value)

    @field_validator("block_mb", mode="before")
    @classmethod
    def _block(cls, value: Any) -> int:
        return integer(value, 1)

    @field_validator("engine", mode="before")
    @classmethod
    def _engine(cls, value: Any) -> str:
        return choice(value, ENGINES)
