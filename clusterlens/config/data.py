"""The ``data`` section: where the images are."""
from __future__ import annotations

from pydantic import field_validator

from clusterlens.config.base import Section


class DataParams(Section):
    """``data.root``: a folder laid out as ``root/<class>/<image>`` (never modified)."""

    root: str

    @field_validator("root")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must be a folder path, got an empty string")
        return value
