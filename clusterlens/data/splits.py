"""Folders laid out as splits: ``root/<split>/<class>/<image>``.

Rules (one home for them; the ``index``, ``neighbours`` and ``upper_bound`` stages use these):

- the setting (``data.splits``) is ``auto``, ``none`` or a list of split folder names;
- ``auto`` reads the folder as splits when every top-level folder is a split name
  (:data:`SPLIT_NAMES`, compared case-insensitively), and as classes otherwise;
- the split order puts the training split first and the evaluation splits after: for ``auto``
  train, then val / valid / validation, then test; for a list, the order of the list;
- the supervised bound trains on the first split of that order and tests on the last.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

#: Folder names read as splits by ``auto``, with their rank in the split order.
SPLIT_NAMES = {"train": 0, "val": 1, "valid": 1, "validation": 1, "test": 2}
AUTO, NONE = "auto", "none"


def is_split_name(name: str) -> bool:
    """True for a name ``auto`` reads as a split (any case)."""
    return name.lower() in SPLIT_NAMES


def detect_splits(folders: Sequence[str], setting: str | Sequence[str]) -> tuple[str, ...]:
    """The splits of a folder, in split order, from its top-level folder names.

    Parameters
    ----------
    folders : sequence of str
        The top-level folders under the root (hidden ones already left out).
    setting : str or sequence of str
        ``auto``, ``none`` or the split folder names.

    Returns
    -------
    tuple of str
        The split folders in split order; empty when the folder is read as classes.

    Raises
    ------
    ValueError
        When a listed split is not a top-level folder.
    """
    if isinstance(setting, str):
        if setting == NONE:
            return ()
        if folders and all(is_split_name(f) for f in folders):
            return split_order(folders, AUTO)
        return ()
    missing = [s for s in setting if s not in folders]
    if missing:
        raise ValueError(f"lists {', '.join(repr(m) for m in missing)}, not a folder directly "
                         f"under data.root (found: {', '.join(repr(f) for f in folders) or 'none'})")
    return tuple(setting)


def looks_like_splits(folders: Sequence[str]) -> list[str]:
    """The top-level folders named like splits, when ``auto`` read the folder as classes
    because some others are not (worth a warning)."""
    return [f for f in folders if is_split_name(f)]


def split_order(names: Iterable[str], setting: str | Sequence[str]) -> tuple[str, ...]:
    """The split names present, training split first.

    Parameters
    ----------
    names : iterable of str
        The split names present (e.g. the index's ``split`` column; empty strings are ignored).
    setting : str or sequence of str
        ``data.splits``: a list gives the order; otherwise the rank of :data:`SPLIT_NAMES`
        (unknown names last, by name).

    Returns
    -------
    tuple of str
    """
    present = sorted({str(n) for n in names if str(n)})
    if not isinstance(setting, str):
        return tuple(s for s in setting if s in present)
    return tuple(sorted(present, key=lambda s: (SPLIT_NAMES.get(s.lower(), len(SPLIT_NAMES)), s)))


def train_and_test(order: Sequence[str]) -> tuple[str, str] | None:
    """The (training, evaluation) splits of a split order: its first and last; None with fewer
    than 2 splits."""
    return (order[0], order[-1]) if len(order) >= 2 else None


def image_splits(index) -> np.ndarray:
    """Each image's split from an index table (its ``split`` column; all "" without one)."""
    if "split" in index:
        return index["split"].fillna("").astype(str).to_numpy(dtype=object)
    return np.full(len(index), "", dtype=object)
