"""Seeded row samples: the one home of the rule every large-N route uses to pick its rows.

A stage whose work grows faster than N runs on a seeded sample above its switch point
(``<section>.max_exact_n`` and friends) and extends the result to every row. The sample is a
function of ``(n, m, seed)`` only, so it is the same on every machine and every run.
"""
from __future__ import annotations

import numpy as np


def sample_rows(n: int, m: int, seed: int) -> np.ndarray:
    """All of ``range(n)`` when ``n <= m``, else a seeded uniform sample of ``m`` rows, sorted.

    Returns
    -------
    ndarray of int64
    """
    if n <= m:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(n, size=m, replace=False)).astype(np.int64)


def embedded_rows(n: int, m: int, seed: int, *, minimum: int, key: str, what: str,
                  source: str) -> np.ndarray:
    """:func:`sample_rows` for an embedding that needs at least ``minimum`` points.

    Raises
    ------
    ParamError
        Naming ``key`` (the sample size's param) when fewer rows than ``minimum`` are drawn
        (``what``: the embedding's name; ``source``: the input's, with its ``n`` rows).
    """
    from clusterlens.core.errors import ParamError

    rows = sample_rows(n, m, seed)
    if len(rows) < minimum:
        raise ParamError(key, f"{what} needs at least {minimum} points, got {len(rows)} "
                         f"({source} has {n} rows)")
    return rows


def stratified_rows(y: np.ndarray, m: int, seed: int, *, min_per_class: int = 1) -> np.ndarray:
    """A seeded sample of about ``m`` rows of the labels ``y`` in which every class keeps its
    share of rows, and at least ``min_per_class`` rows (all of a smaller class); sorted.

    All rows when ``len(y) <= m``. Each class ``c`` with ``n_c`` rows keeps
    ``max(min_per_class, round(m * n_c / len(y)))`` rows (at most ``n_c``), drawn uniformly
    with one generator seeded by ``seed``, classes in ascending order.

    Returns
    -------
    ndarray of int64
    """
    y = np.asarray(y)
    n = len(y)
    if n <= m:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    order = np.argsort(inverse, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    keep = []
    for start, count in zip(starts, counts):
        take = min(int(count), max(min_per_class, int(round(m * count / n))))
        members = order[start:start + count]
        keep.append(members if take >= count else rng.choice(members, size=take, replace=False))
    return np.sort(np.concatenate(keep)).astype(np.int64)
