"""The ``label_issues`` section: out-of-fold probabilities and cleanlab's label-issue search."""
from __future__ import annotations

from typing import Any

from pydantic import field_validator

from clusterlens.config.base import Section
from clusterlens.config.rules import choice, integer

FILTERS = ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning",
           "predicted_neq_given", "low_normalized_margin", "low_self_confidence")
SCORES = ("self_confidence", "normalized_margin", "confidence_weighted_entropy")


class LabelIssuesParams(Section):
    """``label_issues.*``.

    ``folds``: stratified K-fold splits for the out-of-fold probabilities (>= 2, default 5; at
    most the image count of the smallest class). ``filter_by``: cleanlab's rule for which images
    are label issues (``find_label_issues(filter_by=...)``, default ``prune_by_noise_rate``).
    ``rank_by``: cleanlab's label-quality score, used for the ``label_quality`` column and to
    rank the issues (``self_confidence``, ``normalized_margin`` or
    ``confidence_weighted_entropy``; default ``self_confidence``).
    """

    folds: int = 5
    filter_by: str = "prune_by_noise_rate"
    rank_by: str = "self_confidence"

    @field_validator("folds", mode="before")
    @classmethod
    def _folds(cls, value: Any) -> int:
        return integer(value, 2)

    @field_validator("filter_by", mode="before")
    @classmethod
    def _filter_by(cls, value: Any) -> str:
        return choice(value, FILTERS)

    @field_validator("rank_by", mode="before")
    @classmethod
    def _rank_by(cls, value: Any) -> str:
        return choice(value, SCORES)
