"""The ``index`` section: how the image folder is scanned and summarised."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from clusterlens.config.base import Section
from clusterlens.config.rules import integer


class IndexParams(Section):
    """Settings of the ``index`` stage.

    Attributes
    ----------
    min_side : int
        Images smaller than this many pixels on either side are rejected as ``too_small``.
    drop_duplicates : bool
        Reject every exact copy (same sha256) after the first, in sorted path order.
    workers : int or "auto"
        Processes that read, hash and decode the files; ``auto``: one per core this process
        may run on (:func:`clusterlens.data.index.resolve_workers`).
    store : str or None
        The per-file store folder (:mod:`clusterlens.data.index_store`), or ``none`` (parsed
        as None): files already inspected are not decoded again. Absent: no store (params.yaml
        sets ``.cache/index``).
    sample_per_class : int
        Images per row of the sample grid.
    sample_classes : int
        Rows (classes, a seeded random subset when there are more) of the sample grid.
    """

    min_side: int = Field(ge=1)
    drop_duplicates: bool
    workers: int | Literal["auto"]
    store: str | None = None
    sample_per_class: int = Field(ge=1)
    sample_classes: int = Field(ge=1)

    @field_validator("workers", mode="before")
    @classmethod
    def _workers(cls, value: Any) -> int | str:
        if value == "auto":
            return value
        try:
            return integer(value, 1)
        except ValueError:
            raise ValueError(f"must be auto or an integer >= 1, got {value!r}") from None

    @field_validator("store", mode="before")
    @classmethod
    def _store(cls, value: Any) -> str | None:
        if not isinstance(value, str) or not value:
            raise ValueError(f"must be a folder path or `none`, got {value!r}")
        return None if value.lower() == "none" else value
