"""Thumbnail figures of the images to check: suspected label issues (given -> suggested class),
near-duplicate pairs side by side, the most atypical images, and each cluster's representatives
beside its doubtful members."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from clusterlens.audit.duplicates import KINDS
from clusterlens.report.figures.style import save_figure
from clusterlens.report.figures.thumbnails import thumbnail_cell

FLAG = "#C44E52"   # a label conflict, an image not of its cluster's majority class
FAR = "#DD8452"    # a doubtful member that agrees with the majority (far from the centre)
CELL = (1.55, 1.85)


def readable(name, width: int = 18) -> str:
    """A class name for a caption: ``_`` and ``-`` as spaces, shortened to ``width`` chars."""
    text = str(name).replace("_", " ").replace("-", " ").strip()
    return text if len(text) <= width else text[:width - 1].rstrip() + "…"


def _frame(ax, colour: str) -> None:
    for spine in ax.spines.values():
        spine.set_visible(True)
        spine.set_color(colour)
        spine.set_linewidth(2.5)


def _empty(title: str, message: str, path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 1.6))
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=11)
    fig.suptitle(title, fontsize=11)
    save_figure(fig, path)


def _grid(cells: list, ncols: int, root, title: str, path, note: str = "",
          row_labels: list[str] | None = None, gaps: tuple[int, ...] = ()) -> None:
    """Draw ``cells`` (``None`` = a blank cell, else (image path, caption, frame colour or
    None)) row by row, ``ncols`` per row; ``row_labels`` go left of each row; the columns in
    ``gaps`` are narrow blank separators."""
    import matplotlib.pyplot as plt

    nrows = -(-len(cells) // ncols)
    widths = [0.25 if c in gaps else 1.0 for c in range(ncols)]
    fig, axes = plt.subplots(nrows, ncols, figsize=(CELL[0] * sum(widths) + 0.6,
                                                    CELL[1] * nrows + 0.9),
                             squeeze=False, layout="constrained",
                             gridspec_kw={"width_ratios": widths})
    for i in range(nrows * ncols):
        ax = axes[i // ncols][i % ncols]
        cell = cells[i] if i < len(cells) else None
        if cell is None:
            ax.axis("off")
            continue
        image, caption, colour = cell
        thumbnail_cell(ax, Path(root) / image)
        ax.set_xlabel(caption, fontsize=7, color=colour or "black")
        if colour:
            _frame(ax, colour)
        if row_labels and i % ncols == 0:
            ax.set_ylabel(row_labels[i // ncols], rotation=0, ha="right", va="center",
                          fontsize=8)
    fig.suptitle(title + (f"\n({note})" if note else ""), fontsize=10)
    save_figure(fig, path)


def plot_label_issues(table: pd.DataFrame, root: str | os.PathLike, path: str | os.PathLike,
                      show: int, title: str, ncols: int = 6) -> None:
    """The most suspicious labels, captioned ``given -> suggested``.

    Parameters
    ----------
    table : DataFrame
        The per-image table (``is_label_issue``, ``label_issue_rank``, ``class``,
        ``suggested_class``, ``suggested_probability``, ``label_quality``, ``path``).
    root : str or PathLike
        The image folder (``path`` is relative to it).
    path : str or PathLike
        The PNG to write.
    show : int
        How many images, most suspicious first.
    title : str
        The figure's title.
    ncols : int, default 6
        Images per row.
    """
    rows = table[table["is_label_issue"]].sort_values("label_issue_rank").head(show)
    if rows.empty:
        return _empty(title, "No suspected label issues.", path)
    cells = [(p, f"#{rank} {readable(given)}\n→ {readable(suggested)} {prob:.0%}", FLAG)
             for p, rank, given, suggested, prob in zip(
                 rows["path"], rows["label_issue_rank"], rows["class"], rows["suggested_class"],
                 rows["suggested_probability"])]
    _grid(cells, min(ncols, len(cells)), root, title, path,
          "caption: rank, given class → suggested class and its out-of-fold probability")


def plot_outliers(table: pd.DataFrame, root: str | os.PathLike, path: str | os.PathLike,
                  show: int, title: str, ncols: int = 6) -> None:
    """The most atypical images (highest outlier score first), captioned with their class.

    Parameters
    ----------
    table : DataFrame
        The per-image table (``outlier_rank``, ``outlier_score``, ``class``, ``path``).
    root, path, show, title, ncols
        As in :func:`plot_label_issues`.
    """
    rows = table.sort_values("outlier_rank", kind="stable").head(show)
    if rows.empty:
        return _empty(title, "No images.", path)
    cells = [(p, f"#{rank} {readable(cls)}\nscore {score:.3f}", None) for p, rank, cls, score
             in zip(rows["path"], rows["outlier_rank"], rows["class"], rows["outlier_score"])]
    _grid(cells, min(ncols, len(cells)), root, title, path,
          "caption: rank, class, outlier score")


def plot_near_duplicates(pairs: pd.DataFrame, root: str | os.PathLike,
                         path: str | os.PathLike, show: int, title: str,
                         per_row: int = 2, empty: str = "No near-duplicate pairs.") -> None:
    """Near-duplicate pairs side by side with their kind and score: by kind (exact, resized,
    crop, mirror, same_scene), label conflicts first within a kind, then by score.

    Parameters
    ----------
    pairs : DataFrame
        One row per pair: ``path_a``, ``path_b``, ``class_a``, ``class_b``, ``kind``, ``score``,
        ``label_conflict``.
    root, path, title
        As in :func:`plot_label_issues`.
    show : int
        How many pairs.
    per_row : int, default 2
        Pairs per row.
    empty : str
        The message when there is no pair.
    """
    if pairs.empty:
        return _empty(title, empty, path)
    order = {k: i for i, k in enumerate(KINDS)}
    rows = pairs.assign(_kind=pairs["kind"].map(order)).sort_values(
        ["_kind", "label_conflict", "score"], ascending=[True, False, False],
        kind="stable").head(show)
    per_row = min(per_row, len(rows))
    cells: list = []
    for i, r in enumerate(rows.itertuples(index=False)):
        if i % per_row:
            cells.append(None)
        colour = FLAG if r.label_conflict else None
        kind = str(r.kind).replace("_", " ")
        cells.append((r.path_a, f"{readable(r.class_a)}\n{kind}, score {r.score:.2f}", colour))
        cells.append((r.path_b, f"{readable(r.class_b)}\n", colour))
    _grid(cells, 3 * per_row - 1, root, title, path,
          "each pair side by side, caption: class, kind of copy and cell agreement; red: the two "
          "images' classes differ", gaps=tuple(range(2, 3 * per_row - 1, 3)))


def plot_flagged(table: pd.DataFrame, root: str | os.PathLike, path: str | os.PathLike,
                 issue: str, show: int, title: str, ncols: int = 8) -> None:
    """The ``show`` flagged images of one issue type with the highest scores, most severe first.

    Parameters
    ----------
    table : DataFrame
        The per-image table: ``path``, ``class``, ``is_<issue>``, ``<issue>_score``.
    root, path, title
        As in :func:`plot_label_issues`.
    issue : str
        The issue type (:data:`clusterlens.audit.issues.ISSUE_TYPES`).
    show : int
        How many images.
    ncols : int, default 8
        Images per row.
    """
    flagged = table[table[f"is_{issue}"]]
    if flagged.empty:
        return _empty(title, f"No image is flagged {issue.replace('_', ' ')}.", path)
    rows = flagged.sort_values(f"{issue}_score", ascending=False, kind="stable").head(show)
    cells = [(path, f"{readable(cls, 14)}\nscore {score:.2f}", None)
             for path, cls, score in rows[["path", "class", f"{issue}_score"]].to_numpy()]
    _grid(cells, min(ncols, len(cells)), root, title, path,
          f"most severe first; caption: class and {issue.replace('_', ' ')} score")


def plot_representatives(clusters: list[dict], root: str | os.PathLike,
                         path: str | os.PathLike, show: int, title: str) -> None:
    """One row per cluster: its members nearest the centre, then its doubtful members.

    Parameters
    ----------
    clusters : list of dict
        :func:`clusterlens.audit.representatives.representatives`, largest cluster first.
    root, path, title
        As in :func:`plot_label_issues`.
    show : int
        How many clusters (rows).
    """
    clusters = clusters[:show]
    if not clusters:
        return _empty(title, "The selected model has no clusters.", path)
    n_near = max(len(c["nearest"]) for c in clusters)
    n_doubt = max(len(c["doubtful"]) for c in clusters)
    ncols = n_near + (1 + n_doubt if n_doubt else 0)
    cells: list = []
    for c in clusters:
        row: list = [(m["path"], readable(m["class"], 14), None) for m in c["nearest"]]
        row += [None] * (n_near - len(row))
        if n_doubt:
            doubt = [(m["path"], readable(m["class"], 14), FAR if m["agrees"] else FLAG)
                     for m in c["doubtful"]]
            row += [None] + doubt + [None] * (n_doubt - len(doubt))
        cells += row
    _grid(cells, ncols, root, title, path,
          "left: nearest the cluster's centre, nearest first; right of the gap: doubtful "
          "members, red = not the majority class, orange = far from the centre",
          row_labels=[cluster_label(c) for c in clusters], gaps=(n_near,) if n_doubt else ())


def cluster_label(c: dict) -> str:
    """A row label for one cluster: id, size and majority class with its share."""
    return (f"cluster {c['cluster']}\nn={c['size']}\n{c['majority_share']:.0%} "
            f"{readable(c['majority_class'], 14)}")
