"""The two kinds of user error: a bad param value and unusable input data."""
from __future__ import annotations


class ParamError(ValueError):
    """A value in params.yaml is missing or invalid; the message names the key."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"params.yaml: `{key}` {message}")


class DataError(ValueError):
    """The input data cannot be used; the message names the path and what to do."""
