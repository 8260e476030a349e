"""Value checks shared by the params section models (integers, choices, lists, fractions).

Each check takes the raw value and returns it unchanged or raises ``ValueError`` with a message
that ends in the value it got; :func:`~clusterlens.config.base.parse_section` adds the dotted key.
"""
from __future__ import annotations

from typing import Any


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def int_list(value: Any, minimum: int) -> list[int]:
    """A list of integers >= ``minimum`` (a grid of K values, cluster sizes...)."""
    if not isinstance(value, list) or not all(_is_int(v) and v >= minimum for v in value):
        raise ValueError(f"must be a list of integers >= {minimum}, got {value!r}")
    return value


def choice_list(value: Any, choices: tuple[str, ...]) -> list[str]:
    """A list whose every item is one of ``choices``."""
    if not isinstance(value, list) or not all(isinstance(v, str) and v in choices for v in value):
        raise ValueError(f"must be a list of {', '.join(choices)}; got {value!r}")
    return value


def choice(value: Any, choices: tuple[str, ...]) -> str:
    """One of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"must be one of {', '.join(choices)}; got {value!r}")
    return value


def integer(value: Any, minimum: int) -> int:
    """An integer >= ``minimum`` (``true`` is not an integer)."""
    if not _is_int(value):
        raise ValueError(f"must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"must be >= {minimum}, got {value!r}")
    return value


def number_list(value: Any, low: float, high: float) -> list[float]:
    """A list of numbers in ``(low, high]``."""
    if not isinstance(value, list) or not all(_is_number(v) and low < v <= high for v in value):
        raise ValueError(f"values must be numbers in ({low:g}, {high:g}], got {value!r}")
    return value


def fraction(value: Any) -> float:
    """A number in [0, 1]."""
    if not _is_number(value) or not 0 <= value <= 1:
        raise ValueError(f"must be a fraction in [0, 1], got {value!r}")
    return value
