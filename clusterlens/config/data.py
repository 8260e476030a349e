"""The ``data`` section: where the images are, how they are laid out, and the user's corrections."""
from __future__ import annotations

from pydantic import ValidationInfo, field_validator

from clusterlens.config.base import Section
from clusterlens.data.splits import AUTO, NONE


class DataParams(Section):
    """Settings of the image folder (never modified).

    Attributes
    ----------
    root : str
        A folder laid out as ``root/<class>/<image>`` or ``root/<split>/<class>/<image>``.
    splits : str or list of str
        ``auto`` (splits when every top-level folder is a split name: train, val, valid,
        validation, test), ``none`` (top-level folders are classes) or the split folders,
        training split first (:mod:`clusterlens.data.splits`).
    corrections : str
        The corrections CSV (``path,action,class,note``) the ``index`` stage applies
        (:mod:`clusterlens.data.corrections`); a file with only the header applies none.
    """

    root: str
    splits: str | list[str] = AUTO
    corrections: str = "corrections.csv"

    @field_validator("root", "corrections")
    @classmethod
    def _not_empty(cls, value: str, info: ValidationInfo) -> str:
        if not value.strip():
            raise ValueError("must be a folder path, got an empty string" if info.field_name == "root"
                             else "must be a file path, got an empty string")
        return value

    @field_validator("splits", mode="before")
    @classmethod
    def _splits(cls, value: str | list[str]) -> str | list[str]:
        if not isinstance(value, (str, list)) or (
                isinstance(value, list) and not all(isinstance(s, str) for s in value)):
            raise ValueError(f"must be {AUTO}, {NONE} or a list of split folders, got {value!r}")
        if isinstance(value, str):
            if value not in (AUTO, NONE):
                raise ValueError(f"must be {AUTO}, {NONE} or a list of split folders, got "
                                 f"{value!r}")
            return value
        if not value:
            raise ValueError("must list at least one split folder (or be auto or none)")
        bad = [s for s in value if not s.strip() or "/" in s or s.startswith(".")]
        if bad:
            raise ValueError(f"lists {bad[0]!r}, not a folder name directly under data.root")
        if len(set(value)) != len(value):
            raise ValueError(f"lists a split twice: {value}")
        return value
