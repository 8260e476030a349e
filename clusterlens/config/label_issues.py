"""The ``label_issues`` section: out-of-fold probabilities and cleanlab's label-issue search."""
from __future__ import annotations

from math import inf
from typing import Any

from pydantic import field_validator

from clusterlens.config.rules import choice, integer
from clusterlens.config.supervised import SupervisedRoute

FILTERS = ("lowest_quality", "prune_by_noise_rate", "prune_by_class", "both", "confident_learning",
           "predicted_neq_given", "low_normalized_margin", "low_self_confidence")
SCORES = ("self_confidence", "normalized_margin", "confidence_weighted_entropy")


class LabelIssuesParams(SupervisedRoute):
    """``label_issues.*``.

    ``folds``: stratified K-fold splits for the out-of-fold probabilities (>= 2, default 5; at
    most the image count of the smallest class). ``alpha``: the L2 penalty per training image of
    each fold's logistic regression, which minimises the mean log loss plus
    ``alpha / 2 * |w|^2`` on the standardised features (scikit-learn's
    ``C = 1 / (alpha * training images)``; > 0, default 0.3). ``filter_by``: which images are
    label issues: ``lowest_quality`` (default; the images of lowest label quality, as many as
    the estimated noise rate times the images scored) or one of cleanlab's
    ``find_label_issues(filter_by=...)`` rules. ``rank_by``: cleanlab's label-quality score,
    used for the ``label_quality`` column and to rank the issues (``self_confidence``,
    ``normalized_margin`` or ``confidence_weighted_entropy``; default ``self_confidence``).

    The route (:func:`clusterlens.audit.label_issues.choose_route`): ``route``, ``max_work``
    (counting every image) and ``max_train`` (per fold), as
    :class:`~clusterlens.config.supervised.SupervisedRoute` says.
    """

    folds: int = 5
    alpha: float = 0.3
    filter_by: str = "lowest_quality"
    rank_by: str = "self_confidence"

    @field_validator("folds", mode="before")
    @classmethod
    def _folds(cls, value: Any) -> int:
        return integer(value, 2)

    @field_validator("alpha", mode="before")
    @classmethod
    def _alpha(cls, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < inf:
            raise ValueError(f"must be a positive number, got {value!r}")
        return float(value)

    @field_validator("filter_by", mode="before")
    @classmethod
    def _filter_by(cls, value: Any) -> str:
        return choice(value, FILTERS)

    @field_validator("rank_by", mode="before")
    @classmethod
    def _rank_by(cls, value: Any) -> str:
        return choice(value, SCORES)
