"""The route fields the two supervised stages share (``upper_bound`` and ``label_issues``)."""
from __future__ import annotations

from typing import Any

from pydantic import field_validator

from clusterlens.config.base import Section
from clusterlens.config.rules import choice, integer

ROUTES = ("auto", "exact", "bounded")


class SupervisedRoute(Section):
    """``route`` (``auto``, default: ``exact`` up to ``max_work``, ``bounded`` above; or either
    one forced), ``max_work`` (training images x feature dimension x classes above which
    ``auto`` takes the bounded route; >= 1, default 1,500,000,000: about 10^4 images x 1,280
    dimensions x 100 classes stay exact, where the exact route costs about a minute and the
    bounded one, on PCA scores, flags clearly more correct labels) and ``max_train`` (the
    bounded route's stratified training sample, in images; >= 2, default 20,000)."""

    route: str = "auto"
    max_work: int = 1_500_000_000
    max_train: int = 20_000

    @field_validator("route", mode="before")
    @classmethod
    def _route(cls, value: Any) -> str:
        return choice(value, ROUTES)

    @field_validator("max_work", mode="before")
    @classmethod
    def _max_work(cls, value: Any) -> int:
        return integer(value, 1)

    @field_validator("max_train", mode="before")
    @classmethod
    def _max_train(cls, value: Any) -> int:
        return integer(value, 2)
