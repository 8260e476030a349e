"""The ``macro`` section: the class-centroid tree and the cuts taken from it."""
from __future__ import annotations

from typing import Any

from pydantic import field_validator

from clusterlens.config.base import Section
from clusterlens.config.rules import choice, int_list, integer, number_list

LINKAGES = ("ward", "complete", "average", "single", "weighted", "centroid", "median")
AUTO = "auto"


class MacroParams(Section):
    """``macro.*``.

    ``linkage``: the scipy linkage method of the tree; ``groups``: cut the tree into (at most)
    these many groups (integers >= 2), or ``auto`` (the default: a few counts spaced
    geometrically below the class count, see :func:`clusterlens.analysis.macro.auto_groups`);
    ``height_ratios``: cut it at these fractions of the maximum merge height (in (0, 1]);
    ``color_threshold``: the dendrogram colours clusters below this fraction of the maximum
    merge height (in (0, 1]); ``heatmap_classes``: the centroid distance heatmap shows the
    first N classes in leaf order (>= 2). Both lists come out sorted, without duplicates.
    """

    linkage: str
    groups: list[int] | str = AUTO
    height_ratios: list[float]
    color_threshold: float
    heatmap_classes: int

    @field_validator("linkage", mode="before")
    @classmethod
    def _linkage(cls, value: Any) -> str:
        return choice(value, LINKAGES)

    @field_validator("groups", mode="before")
    @classmethod
    def _groups(cls, value: Any) -> list[int] | str:
        if value == AUTO:
            return AUTO
        try:
            return sorted(set(int_list(value, 2)))
        except ValueError:
            raise ValueError(f"must be `{AUTO}` or a list of integers >= 2, got {value!r}") from None

    @field_validator("height_ratios", mode="before")
    @classmethod
    def _ratios(cls, value: Any) -> list[float]:
        return sorted({float(r) for r in number_list(value, 0.0, 1.0)})

    @field_validator("color_threshold", mode="before")
    @classmethod
    def _threshold(cls, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
            raise ValueError(f"must be a number in (0, 1], got {value!r}")
        return float(value)

    @field_validator("heatmap_classes", mode="before")
    @classmethod
    def _heatmap(cls, value: Any) -> int:
        return integer(value, 2)
