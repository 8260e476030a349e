"""The ``neighbours`` section: the k-nearest-neighbour search, near-duplicates and outliers."""
from __future__ import annotations

from typing import Any

from pydantic import field_validator

from clusterlens.config.base import Section
from clusterlens.config.rules import choice, integer

ENGINES = ("auto", "faiss", "sklearn")
SEARCHES = ("auto", "exact", "approximate")


class NeighboursParams(Section):
    """``neighbours.*``.

    ``k``: the outlier score is the cosine distance to the k-th nearest other image (>= 1,
    fewer than the images); ``candidates``: nearest feature neighbours of every image checked
    for copies (>= 0; 0 leaves only the hash and same-bytes candidates); ``hash_distance``:
    perceptual-hash pairs within this many bits of 64 are checked (0-32); ``workers``: processes
    that read images and compare pairs (>= 1); ``block_mb``: working memory of one block of the
    search, MiB (>= 1); ``engine``: ``auto`` (faiss when installed), ``faiss`` or ``sklearn``;
    ``search``: ``exact``, ``approximate`` (faiss inverted lists on the leading principal
    components, re-ranked exactly; needs faiss) or ``auto`` (approximate above ``exact_max_n``
    images, when faiss is installed); ``exact_max_n``: that switch point (>= 2); the
    perceptual hashes are searched as the features (approximate: a binary inverted file);
    ``max_pairs_per_image``: candidate pairs one image is compared in, at most (>= 1;
    :func:`clusterlens.audit.duplicates.cap_pairs`); ``pixel_store``: folder of the stored
    working images and hashes (by sha256), or ``none`` (a temporary folder, removed after the
    stage).
    """

    k: int
    candidates: int = 10
    hash_distance: int = 10
    workers: int = 2
    block_mb: int = 256
    engine: str = "auto"
    search: str = "auto"
    exact_max_n: int = 50_000
    max_pairs_per_image: int = 100
    pixel_store: str | None = ".cache/pixels"

    @field_validator("k", "workers", "block_mb", "max_pairs_per_image", mode="before")
    @classmethod
    def _positive(cls, value: Any) -> int:
        return integer(value, 1)

    @field_validator("candidates", mode="before")
    @classmethod
    def _candidates(cls, value: Any) -> int:
        return integer(value, 0)

    @field_validator("hash_distance", mode="before")
    @classmethod
    def _hash_distance(cls, value: Any) -> int:
        value = integer(value, 0)
        if value > 32:
            raise ValueError(f"must be at most 32 bits (of 64), got {value}")
        return value

    @field_validator("engine", mode="before")
    @classmethod
    def _engine(cls, value: Any) -> str:
        return choice(value, ENGINES)

    @field_validator("search", mode="before")
    @classmethod
    def _search(cls, value: Any) -> str:
        return choice(value, SEARCHES)

    @field_validator("exact_max_n", mode="before")
    @classmethod
    def _exact_max_n(cls, value: Any) -> int:
        return integer(value, 2)

    @field_validator("pixel_store", mode="before")
    @classmethod
    def _pixel_store(cls, value: Any) -> str | None:
        if value is None or (isinstance(value, str) and value.strip().lower() == "none"):
            return None
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"must be a folder path or `none`, got {value!r}")
        return value
