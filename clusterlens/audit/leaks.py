"""Train/test leaks: verified near-duplicate pairs whose two images lie in different splits.

A folder laid out as ``root/<split>/<class>/<image>`` has a ``split`` column in its index
(``""`` when the folder has no splits). The split order names the training split first and the
evaluation splits after it (e.g. ``("train", "val", "test")``). A *leak* is any pair that the
near-duplicate step verified (:func:`clusterlens.audit.duplicates.pairs_table`, every kind of
:data:`~clusterlens.audit.duplicates.KINDS`, ``same_scene`` included) whose images are in two
different splits. It is oriented so that its ``a`` side is in the earlier split of the order
(the side a model trains on) and its ``b`` side in the later one (the side it is evaluated on).

Only copies (:data:`~clusterlens.audit.duplicates.COPY_KINDS`) count as leaked images and in the
leak rates: a ``same_scene`` pair (two shots of one scene) is listed and counted apart, for a
person to judge. Images whose split is ``""`` are in no leak.

Every function here takes the pair table and the per-row splits; nothing reads files or params.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from clusterlens.audit.duplicates import COPY_KINDS, KINDS

LEAK_COLUMNS = ["path_a", "split_a", "class_a", "path_b", "split_b", "class_b", "kind",
                "label_conflict", "score"]
LEAK_IMAGE_COLUMNS = ["is_leak", "leak_score"]
NEEDED = ["row_a", "row_b", "path_a", "path_b", "class_a", "class_b", "kind", "score"]
RATE_DECIMALS = 6


def _positions(splits, order: Sequence[str]) -> np.ndarray:
    """Position of every row's split in ``order`` (int64, shape (n,)); -1 for ``""``."""
    order = list(order)
    if len(set(order)) != len(order) or "" in order:
        raise ValueError(f"the split order must name distinct, non-empty splits, got {order}")
    splits = np.asarray(splits, dtype=object)
    pos_of = {name: i for i, name in enumerate(order)}
    pos_of[""] = -1
    unknown = sorted({str(s) for s in pd.unique(splits) if s not in pos_of})
    if unknown:
        raise ValueError(f"splits {unknown} are not in the split order {order}")
    return np.array([pos_of[s] for s in splits], dtype=np.int64)


def _cross(pairs: pd.DataFrame, splits, order: Sequence[str]) -> pd.DataFrame:
    """The cross-split pairs of ``pairs``, oriented (``a`` in the earlier split), with their
    rows, positions in the order (``pos_a`` < ``pos_b``), in :func:`leak_pairs` order."""
    missing = [c for c in NEEDED if c not in pairs.columns]
    if missing:
        raise ValueError(f"the pair table lacks the columns {missing}")
    pos = _positions(splits, order)
    n = len(pos)
    ra = pairs["row_a"].to_numpy(np.int64)
    rb = pairs["row_b"].to_numpy(np.int64)
    if len(ra) and (min(ra.min(), rb.min()) < 0 or max(ra.max(), rb.max()) >= n):
        raise ValueError(f"the pair table names rows outside the {n} rows of splits")
    pa, pb = pos[ra], pos[rb]
    keep = (pa >= 0) & (pb >= 0) & (pa != pb)
    p = pairs.loc[keep, NEEDED].reset_index(drop=True)
    swap = (pb < pa)[keep]  # row_b holds the earlier split
    order_names = np.asarray(list(order), dtype=object)
    out = pd.DataFrame(index=p.index)
    for side, other in (("a", "b"), ("b", "a")):
        for col in ("row", "path", "class"):
            out[f"{col}_{side}"] = np.where(swap, p[f"{col}_{other}"], p[f"{col}_{side}"])
    out["row_a"] = out["row_a"].astype(np.int64)
    out["row_b"] = out["row_b"].astype(np.int64)
    out["pos_a"] = pos[out["row_a"].to_numpy()]
    out["pos_b"] = pos[out["row_b"].to_numpy()]
    out["split_a"] = order_names[out["pos_a"].to_numpy()]
    out["split_b"] = order_names[out["pos_b"].to_numpy()]
    out["kind"] = p["kind"].astype(str)
    unknown = sorted(set(out["kind"]) - set(KINDS))
    if unknown:
        raise ValueError(f"unknown pair kinds {unknown}; expected {list(KINDS)}")
    out["label_conflict"] = (out["class_a"] != out["class_b"]).astype(bool)
    out["score"] = p["score"].astype(float)
    out["kind_order"] = out["kind"].map({k: i for i, k in enumerate(KINDS)}).astype(np.int64)
    out = out.sort_values(["pos_a", "pos_b", "kind_order", "path_a", "path_b"], kind="stable")
    return out.reset_index(drop=True)


def leak_pairs(pairs: pd.DataFrame, splits, *, order: Sequence[str]) -> pd.DataFrame:
    """Every verified pair whose two images are in different splits.

    Parameters
    ----------
    pairs : pandas.DataFrame
        The near-duplicate pair table (:func:`clusterlens.audit.duplicates.pairs_table`); needs
        ``row_a``, ``row_b``, ``path_a``, ``path_b``, ``class_a``, ``class_b``, ``kind`` and
        ``score``. Its rows may come in either orientation.
    splits : array-like of str, shape (N,)
        The split of every index row (``""`` for none); ``row_a``/``row_b`` index it.
    order : sequence of str
        The split names, training split first, then the evaluation splits.

    Returns
    -------
    pandas.DataFrame
        One row per leak, columns :data:`LEAK_COLUMNS`: ``split_a`` is the earlier split in
        ``order``, ``split_b`` the later; ``label_conflict`` is ``class_a != class_b``; ``kind``
        and ``score`` are the pair's. Sorted by split pair (in ``order``), then kind (in
        :data:`~clusterlens.audit.duplicates.KINDS` order), then ``path_a``, ``path_b``.
        Empty (with these columns) when the folder has no splits.

    Raises
    ------
    ValueError
        When a split is not in ``order``, ``order`` repeats a name or names ``""``, a row is out
        of range, a kind is unknown, or a needed column is missing.
    """
    return _cross(pairs, splits, order)[LEAK_COLUMNS]


def leak_image_columns(n: int, pairs: pd.DataFrame, splits) -> pd.DataFrame:
    """Per image, whether it is in a cross-split copy pair.

    Parameters
    ----------
    n : int
        Rows of the index.
    pairs : pandas.DataFrame
        The near-duplicate pair table (``row_a``, ``row_b``, ``kind``, ``score``).
    splits : array-like of str, shape (n,)
        The split of every row (``""`` for none: never a leak).

    Returns
    -------
    pandas.DataFrame
        n rows in row order, columns :data:`LEAK_IMAGE_COLUMNS`: ``is_leak`` (bool) when the
        image is in a copy pair (:data:`~clusterlens.audit.duplicates.COPY_KINDS`) with an image
        of another split, on either side (the training image and its copy in the evaluation
        split are both flagged); ``leak_score`` the best such pair's score, 0.0 otherwise.
        ``same_scene`` pairs do not count.
    """
    splits = np.asarray(splits, dtype=object)
    if len(splits) != n:
        raise ValueError(f"splits has {len(splits)} rows, expected {n}")
    ra = pairs["row_a"].to_numpy(np.int64)
    rb = pairs["row_b"].to_numpy(np.int64)
    sa, sb = splits[ra], splits[rb]
    keep = (pairs["kind"].isin(COPY_KINDS).to_numpy() & (sa != "") & (sb != "") & (sa != sb))
    score = pairs["score"].to_numpy(float)[keep]
    best = np.full(n, -np.inf)
    np.maximum.at(best, ra[keep], score)
    np.maximum.at(best, rb[keep], score)
    is_leak = np.isfinite(best)
    return pd.DataFrame({"is_leak": is_leak, "leak_score": np.where(is_leak, best, 0.0)},
                        columns=LEAK_IMAGE_COLUMNS)


def leak_rates(pairs: pd.DataFrame, splits, *, order: Sequence[str]) -> dict:
    """Leak rates per ordered pair of splits and over all evaluation images; JSON-ready.

    Parameters
    ----------
    pairs : pandas.DataFrame
        The near-duplicate pair table (as for :func:`leak_pairs`).
    splits : array-like of str, shape (N,)
        The split of every index row (``""`` for none).
    order : sequence of str
        The split names, training split first.

    Returns
    -------
    dict
        ``{"by_split_pair": {...}, "overall": {...}}``, plain ints and floats (rates rounded to
        6 decimals), keys in a fixed order:

        - ``by_split_pair``: for each pair of splits (earlier, later) in ``order`` that both hold
          images, keyed ``"<earlier>-><later>"`` in that order: ``earlier``, ``later``,
          ``images`` (in the later split), ``images_with_copy`` (those in a copy pair with an
          image of the earlier split), ``rate`` (``images_with_copy / images``), ``copy_pairs``,
          ``label_conflicts`` (copy pairs whose classes differ), ``same_scene_pairs``;
        - ``overall``: ``images`` (outside the first split of ``order``, in any split),
          ``images_with_copy`` (those with a copy in an earlier split), ``rate``.

        With no splits (every split ``""``) ``by_split_pair`` is empty and ``overall`` zeros.
    """
    cross = _cross(pairs, splits, order)
    pos = _positions(splits, order)
    counts = np.bincount(pos[pos >= 0], minlength=len(order))
    copies = cross[cross["kind"].isin(COPY_KINDS)]
    by_pair = {}
    for i in range(len(order)):
        for j in range(i + 1, len(order)):
            if not (counts[i] and counts[j]):
                continue
            here = (cross["pos_a"] == i) & (cross["pos_b"] == j)
            cp = copies[(copies["pos_a"] == i) & (copies["pos_b"] == j)]
            with_copy = int(cp["row_b"].nunique())
            by_pair[f"{order[i]}->{order[j]}"] = {
                "earlier": str(order[i]), "later": str(order[j]), "images": int(counts[j]),
                "images_with_copy": with_copy,
                "rate": round(with_copy / int(counts[j]), RATE_DECIMALS),
                "copy_pairs": int(len(cp)), "label_conflicts": int(cp["label_conflict"].sum()),
                "same_scene_pairs": int((here & (cross["kind"] == "same_scene")).sum())}
    outside = int(counts[1:].sum())
    leaked = int(copies["row_b"].nunique())  # row_b is always in a later split than row_a
    return {"by_split_pair": by_pair,
            "overall": {"images": outside, "images_with_copy": leaked,
                        "rate": round(leaked / outside, RATE_DECIMALS) if outside else 0.0}}


def rates_text(rates: dict) -> str:
    """One line of :func:`leak_rates`, e.g. ``train->test 12 of 400 (3.0%), 2 conflicts``."""
    parts = [f"{name} {r['images_with_copy']} of {r['images']} ({r['rate']:.1%}), "
             f"{r['label_conflicts']} label conflicts" for name, r in rates["by_split_pair"].items()]
    return "; ".join(parts) or "no pair of splits"
