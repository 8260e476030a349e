"""The ``large_n`` section: when features are memory-mapped instead of read into memory."""
from __future__ import annotations

from typing import Any

from pydantic import field_validator

from clusterlens.config.base import Section
from clusterlens.config.rules import integer


class LargeNParams(Section):
    """``large_n.mmap_threshold_mb``: feature files larger than this (MiB) are memory-mapped
    read-only (default 1024; null: never)."""

    mmap_threshold_mb: int | None = 1024

    @field_validator("mmap_threshold_mb", mode="before")
    @classmethod
    def _mb(cls, value: Any) -> int | None:
        return None if value is None else integer(value, 0)

    @property
    def mmap_threshold_bytes(self) -> int | None:
        """The threshold in bytes (None: never memory-map)."""
        return None if self.mmap_threshold_mb is None else self.mmap_threshold_mb * 2**20
