"""The ``fusion`` section: which feature set the later stages use, and the comparison table."""
from __future__ import annotations

from typing import Literal

from pydantic import field_validator

from clusterlens.config.base import Section, parse_section
from clusterlens.config.rules import integer

METHOD_NAMES = ("kmeans", "gmm", "ward")


class FusionParams(Section):
    """``fusion.*``; every key has a default, and so has the whole section.

    ``set``: the feature set ``reduce``, ``nmf`` and ``upper_bound`` read (``visual``, ``text``,
    ``concat`` or ``weighted``); ``weight``: the visual share of the weighted fusion, in [0, 1];
    ``dim``: the common PCA dimension of the weighted fusion (>= 1); ``methods``: the clustering
    methods of the comparison table (``kmeans``, ``gmm``, ``ward``); ``max_n``: above this
    many images (or with the captions' sample) the table compares the sets on a seeded
    sample of about this many, stratified by class, K-Means with one initialisation (an
    integer >= 2, default 2,000; null: every image).
    """

    set: Literal["visual", "text", "concat", "weighted"] = "visual"
    weight: float = 0.5
    dim: int = 384
    methods: list[str] = ["kmeans", "gmm"]
    max_n: int | None = 2000

    @field_validator("max_n", mode="before")
    @classmethod
    def _max_n(cls, value):
        if value is None:
            return None
        return integer(value, 2)

    @field_validator("weight")
    @classmethod
    def _share(cls, value: float) -> float:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"must be a number in [0, 1] (the visual share), got {value!r}")
        return value

    @field_validator("dim")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"must be >= 1, got {value}")
        return value

    @field_validator("methods", mode="before")
    @classmethod
    def _methods(cls, value):
        if not isinstance(value, list) or not value or \
                any(not isinstance(m, str) or m not in METHOD_NAMES for m in value):
            raise ValueError(f"must be a non-empty list from {', '.join(METHOD_NAMES)}, got "
                             f"{value!r}")
        return value


def parse_fusion(params: dict) -> FusionParams:
    """The ``fusion`` section, or all its defaults when params has none (``set: visual``)."""
    if "fusion" not in params:
        return FusionParams()
    return parse_section(params, "fusion", FusionParams)
