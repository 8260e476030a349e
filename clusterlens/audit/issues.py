"""One audit of the folder: every issue type, its flag and score per image, and a summary table.

Each type has a boolean column (``is_<type>``) and a score column (``<type>_score``, higher =
more severe) in the per-image table (``data/images.parquet``):

- ``near_duplicate``: in a verified copy pair (exact, resized, crop, mirror); the score is the
  best pair's cell agreement (:mod:`clusterlens.audit.duplicates`);
- ``same_scene``: in a ``same_scene`` pair (two shots of one scene), likewise;
- ``leak``: in a copy pair across two splits (:mod:`clusterlens.audit.leaks`), likewise;
- ``label_issue``: cleanlab's verdict; the score is ``1 - label_quality``;
- the image-quality flags of ``index`` (:mod:`clusterlens.data.quality`): ``blurry``, ``dark``,
  ``light``, ``low_information``, ``grayscale``, ``odd_size``, ``odd_aspect_ratio``.

Flagged images stay in the pipeline: the audit reports, it never removes. The images the user
marked ``keep`` in the corrections are not flagged (their scores stay).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from clusterlens.data.quality import KINDS as QUALITY_KINDS

ISSUE_TYPES = ("near_duplicate", "same_scene", "leak", "label_issue", *QUALITY_KINDS)
AUDIT_COLUMNS = ["issue", "images", "share", "example", "example_score"]


def flag_column(issue: str) -> str:
    """The boolean column of an issue type."""
    return f"is_{issue}"


def score_column(issue: str) -> str:
    """The score column of an issue type (higher = more severe)."""
    return f"{issue}_score"


def audit_table(table: pd.DataFrame) -> pd.DataFrame:
    """One row per issue type (:data:`ISSUE_TYPES` order) with :data:`AUDIT_COLUMNS`: how many
    images are flagged, their share of all images, and the most severe flagged image (highest
    score, ties by row order) with its score (empty and NaN when none is flagged).

    Parameters
    ----------
    table : DataFrame
        The per-image table, with ``path`` and the flag and score column of every type.
    """
    rows = []
    n = len(table)
    for issue in ISSUE_TYPES:
        flags = table[flag_column(issue)].to_numpy(bool)
        scores = table[score_column(issue)].to_numpy(np.float64)
        example, score = "", float("nan")
        if flags.any():
            cand = np.flatnonzero(flags)
            best = cand[np.argmax(np.nan_to_num(scores[cand], nan=-np.inf))]
            example, score = str(table["path"].iloc[best]), round(float(scores[best]), 4)
        rows.append({"issue": issue, "images": int(flags.sum()),
                     "share": round(float(flags.sum()) / n, 6) if n else 0.0,
                     "example": example, "example_score": score})
    return pd.DataFrame(rows, columns=AUDIT_COLUMNS)


def issue_counts(audit: pd.DataFrame) -> dict[str, int]:
    """``{issue: images flagged}`` from :func:`audit_table`."""
    return {r.issue: int(r.images) for r in audit.itertuples()}
