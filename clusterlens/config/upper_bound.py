"""The ``upper_bound`` section: the split and the logistic regressions of the supervised bound."""
from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import field_validator

from clusterlens.config.base import Section
from clusterlens.config.rules import integer
from clusterlens.config.supervised import SupervisedRoute

FEATURES = ("raw", "pca")
NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")


class LogRegConfig(Section):
    """One entry of ``upper_bound.configs``: a logistic regression to fit.

    ``name``: letters, digits, ``_`` or ``-`` (it becomes a metrics key); ``C``: the inverse
    regularisation strength (> 0, default 1.0); ``class_weight``: ``null`` or ``balanced``;
    ``features``: ``raw`` (the selected feature set, standardized on the training split) or
    ``pca`` (the PCA scores).
    """

    name: str
    C: float = 1.0
    class_weight: Literal["balanced"] | None = None
    features: Literal["raw", "pca"] = "raw"

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, value: Any) -> str:
        if not isinstance(value, str) or not NAME_RE.match(value):
            raise ValueError("must be a name of letters, digits, _ or - (no dots: it becomes a "
                             f"metrics key), got {value!r}")
        return value

    @field_validator("C", mode="before")
    @classmethod
    def _c(cls, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"must be a positive number, got {value!r}")
        return float(value)

    @field_validator("class_weight", mode="before")
    @classmethod
    def _class_weight(cls, value: Any) -> Any:
        if value not in (None, "balanced"):
            raise ValueError(f"must be null or balanced, got {value!r}")
        return value


class UpperBoundParams(SupervisedRoute):
    """``upper_bound.*``: ``test_size`` (the test fraction of the stratified split, in (0, 1)),
    ``max_iter`` (the lbfgs iteration cap, >= 1) and ``configs`` (a non-empty list of
    :class:`LogRegConfig`, names unique).

    The route (:func:`clusterlens.analysis.upper_bound.choose_route`): ``route``, ``max_work``
    and ``max_train``, as :class:`~clusterlens.config.supervised.SupervisedRoute` says.
    """

    test_size: float
    max_iter: int
    configs: list[LogRegConfig]

    @field_validator("test_size", mode="before")
    @classmethod
    def _test_size(cls, value: Any) -> float:
        if not isinstance(value, float) or not 0 < value < 1:
            raise ValueError(f"must be a fraction in (0, 1) such as 0.2, got {value!r}")
        return value

    @field_validator("max_iter", mode="before")
    @classmethod
    def _max_iter(cls, value: Any) -> int:
        return integer(value, 1)

    @field_validator("configs", mode="before")
    @classmethod
    def _non_empty(cls, value: Any) -> Any:
        if not isinstance(value, list) or not value:
            raise ValueError(f"must be a non-empty list of configurations, got {value!r}")
        return value

    @field_validator("configs")
    @classmethod
    def _unique(cls, value: list[LogRegConfig]) -> list[LogRegConfig]:
        first: dict[str, int] = {}
        for i, cfg in enumerate(value):
            if cfg.name in first:
                raise ValueError(f"name {cfg.name!r} is used twice (entries {first[cfg.name]} "
                                 f"and {i})")
            first[cfg.name] = i
        return value
