"""The ``captions`` section: zero-shot captions of the images and their sentence embeddings."""
from __future__ import annotations

from typing import Any

from pydantic import field_validator

from clusterlens.config.base import Section
from clusterlens.config.rules import choice, integer
from clusterlens.features.captions import PREPROCESSING, template_problem


class CaptionsParams(Section):
    """``captions.*``: the caption template, the sentence-model batch size, the classifier's
    input, and the switch.

    ``template`` is ``seed003``, ``top1``, ``top3`` or a format string with {a1} {c1} {p1} ...
    {a3} (see :func:`clusterlens.features.captions.check_template`); ``preprocessing`` is ``extract``
    (caption the extracted features) or ``native`` (the classifier's own 224 px centre crop,
    extracted again unless extract used it); ``enabled: false`` writes no captions and no text
    features; ``max_n``: above this many images (an integer >= 2, default 2,000; null: never)
    no image is captioned, or, with ``sample`` > 0, a seeded sample of about ``sample`` images,
    stratified by class (:func:`clusterlens.features.sets.comparison_rows`; default 0).
    """

    template: str = "seed003"
    batch_size: int = 256
    preprocessing: str = "extract"
    enabled: bool = True
    max_n: int | None = 2000
    sample: int = 0

    @field_validator("template", mode="before")
    @classmethod
    def _template(cls, value: Any) -> str:
        problem = template_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("batch_size", mode="before")
    @classmethod
    def _batch_size(cls, value: Any) -> int:
        return integer(value, 1)

    @field_validator("preprocessing", mode="before")
    @classmethod
    def _preprocessing(cls, value: Any) -> str:
        return choice(value, PREPROCESSING)

    @field_validator("max_n", mode="before")
    @classmethod
    def _max_n(cls, value: Any) -> int | None:
        return None if value is None else integer(value, 2)

    @field_validator("sample", mode="before")
    @classmethod
    def _sample(cls, value: Any) -> int:
        return integer(value, 0)

    @field_validator("enabled", mode="before")
    @classmethod
    def _enabled(cls, value: Any) -> bool:
        if not isinstance(value, bool):
            raise ValueError(f"must be true or false, got {value!r}")
        return value
