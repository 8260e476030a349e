"""The user's corrections to the folder: relabel, exclude or keep an image, without touching it.

A corrections file is a CSV with the columns ``path`` (as in the index: relative to the root),
``action`` (:data:`ACTIONS`), ``class`` (the new class, for ``relabel`` only) and ``note``
(free text; optional, like ``class``). Rules:

- every row is checked before any image is decoded; every bad row is reported at once, by its
  line in the file: an unknown path (not a file found under the root), an unknown action, a
  ``relabel`` without a class or to an unknown class, a class on an ``exclude`` or ``keep``
  row, a path listed twice;
- ``relabel`` changes the image's class (the index keeps the folder's class as
  ``given_class``); ``exclude`` leaves the image out (the rejected table lists it as
  ``excluded``, with the note); ``keep`` keeps the image as it is and silences its audit
  flags (:func:`silence`);
- a correction of an image the index rejects anyway (e.g. corrupt), and a ``relabel`` to the
  class the image is already filed under, are reported as not applied.
"""
from __future__ import annotations

import csv
import difflib
import io
import os
from collections.abc import Collection, Mapping
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from clusterlens.core.errors import DataError

ACTIONS = ("relabel", "exclude", "keep")
COLUMNS = ["path", "action", "class", "note"]
REQUIRED = ("path", "action")
HEADER = ",".join(COLUMNS)
#: What the index stage writes about each row of the file.
APPLIED_COLUMNS = ["path", "split", "action", "given_class", "class", "note", "status"]
APPLIED = "applied"
MAX_SHOWN = 20  # bad rows listed in one error


def empty() -> pd.DataFrame:
    """A corrections table without rows."""
    return pd.DataFrame({c: pd.Series(dtype=object) for c in COLUMNS})


def read_corrections(path: str | os.PathLike) -> pd.DataFrame:
    """Read a corrections file (columns :data:`COLUMNS`; an empty or absent file has no rows:
    ``attrs["absent"]`` then says the file does not exist).

    Every cell is read as text; ``action`` and ``class`` are stripped of surrounding blanks.
    The returned table's ``line`` column is each row's line in the file, for error messages.

    Raises
    ------
    DataError
        When the file is unreadable, is not CSV, lacks ``path`` or ``action``, or
        has a column that is not one of :data:`COLUMNS`.
    """
    path = Path(path)
    where = f"data.corrections: {str(path)!r}"
    if not path.exists():
        out = empty().assign(line=pd.Series(dtype=np.int64))
        out.attrs.update(source=where, absent=True)
        return out
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{where} is not UTF-8 text ({exc.reason} at byte {exc.start}); save "
                        "it as UTF-8 CSV") from None
    except OSError as exc:
        raise DataError(f"{where} cannot be read ({exc.strerror or exc})") from None
    if not text.strip():
        return empty().assign(line=pd.Series(dtype=np.int64))
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    except csv.Error as exc:
        raise DataError(f"{where} is not valid CSV ({exc})") from None
    header = [h.strip() for h in rows[0]]
    unknown = [h for h in header if h not in COLUMNS]
    missing = [c for c in REQUIRED if c not in header]
    if unknown or missing or len(set(header)) != len(header):
        why = (f"unknown column(s) {', '.join(repr(u) for u in unknown)}" if unknown else
               f"no column {', '.join(repr(m) for m in missing)}" if missing else
               "a column named twice")
        raise DataError(f"{where}: line 1 has {why}; the header must name columns among "
                        f"`{HEADER}` (path and action required)")
    records, lines, line = [], [], 1
    for row in rows[1:]:
        start = line + 1  # the line the row starts on (a quoted field may span lines)
        line = start + sum(cell.count("\n") for cell in row)
        if not any(cell.strip() for cell in row):
            continue  # blank line
        if len(row) != len(header):
            raise DataError(f"{where}: line {start} has {len(row)} fields, the header "
                            f"{len(header)}: quote fields that hold commas")
        records.append(dict(zip(header, row)))
        lines.append(start)
    out = pd.DataFrame(records, columns=header).reindex(columns=COLUMNS, fill_value="")
    out = out.fillna("").astype(object)
    for col in ("action", "class"):
        out[col] = out[col].str.strip()
    out["line"] = np.asarray(lines, dtype=np.int64)
    out = out.reset_index(drop=True)
    out.attrs["source"] = where
    return out


def _suggest(path: str, known: Collection[str], by_name: Mapping[str, list[str]]) -> str:
    same_name = by_name.get(PurePosixPath(path).name, [])
    if same_name:
        return f" (a file of that name: {', '.join(repr(p) for p in sorted(same_name)[:3])})"
    close = difflib.get_close_matches(path, list(known)[:50_000], n=1, cutoff=0.8)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_corrections(corrections: pd.DataFrame, *, class_of: Mapping[str, str],
                      classes: Collection[str], source: str = "data.corrections") -> None:
    """Check every row of a corrections table against the files found under the root.

    Parameters
    ----------
    corrections : DataFrame
        What :func:`read_corrections` returns (``line`` optional).
    class_of : mapping
        Path -> the class folder of every file found under the root.
    classes : collection of str
        The class folders.
    source : str
        How the errors name the file, unless the table names it (``attrs["source"]``, set by
        :func:`read_corrections`).

    Raises
    ------
    DataError
        Listing every bad row (the first :data:`MAX_SHOWN`) with its line and what is wrong.
    """
    source = corrections.attrs.get("source", source)
    problems: list[str] = []
    first_line: dict[str, int] = {}
    by_name: dict[str, list[str]] | None = None
    known_classes = sorted(classes)
    lines = corrections["line"] if "line" in corrections else pd.Series(
        np.arange(len(corrections)) + 2)
    for (path, action, cls), line in zip(corrections[["path", "action", "class"]].itertuples(
            index=False, name=None), lines):
        def bad(what: str, line=line, path=path) -> None:
            problems.append(f"line {line} ({path!r}): {what}" if path else f"line {line}: {what}")

        if not path:
            bad("empty path")
        elif path in first_line:
            bad(f"path listed twice (first on line {first_line[path]}); keep one row per image")
        elif path not in class_of:
            if by_name is None:
                by_name = {}
                for p in class_of:
                    by_name.setdefault(PurePosixPath(p).name, []).append(p)
            hint = _suggest(path, class_of, by_name) if len(problems) < MAX_SHOWN else ""
            bad("unknown path: no image file there under data.root; paths are relative to "
                f"data.root, as in data/index.parquet{hint}")  # hints for the rows shown
        if path and path not in first_line:
            first_line[path] = int(line)
        if action not in ACTIONS:
            hint = difflib.get_close_matches(action.lower(), ACTIONS, n=1, cutoff=0.6)
            bad(f"unknown action {action!r}; use {', '.join(ACTIONS)}"
                + (f" (did you mean {hint[0]!r}?)" if hint else ""))
        elif action == "relabel":
            if not cls:
                bad("relabel needs the new class in the `class` column")
            elif cls not in classes:
                hint = difflib.get_close_matches(cls, known_classes, n=1, cutoff=0.6)
                bad(f"unknown class {cls!r}: not a class folder under data.root"
                    + (f" (did you mean {hint[0]!r}?)" if hint else
                       f" (classes: {', '.join(known_classes[:10])}"
                       + (", ..." if len(known_classes) > 10 else "") + ")"))
        elif cls:
            bad(f"`class` is {cls!r} but only relabel takes a class; leave it empty for {action}")
    if problems:
        shown = problems[:MAX_SHOWN]
        more = f"\n  ... and {len(problems) - MAX_SHOWN} more" if len(problems) > MAX_SHOWN else ""
        raise DataError(f"{source}: {len(problems)} bad row(s); fix them before the images are "
                        "read:\n  " + "\n  ".join(shown) + more)


def excluded_paths(corrections: pd.DataFrame) -> set[str]:
    """The paths of the ``exclude`` rows."""
    return set(corrections.loc[corrections["action"] == "exclude", "path"])


def apply_corrections(index: pd.DataFrame, corrections: pd.DataFrame) -> pd.DataFrame:
    """The index rows with the ``relabel`` and ``keep`` rows applied.

    Parameters
    ----------
    index : DataFrame
        Index rows with ``path`` and ``class`` (the folder's class); ``exclude`` rows must
        already be left out.
    corrections : DataFrame
        A checked corrections table.

    Returns
    -------
    DataFrame
        A copy with ``given_class`` (the folder's class), ``class`` (after corrections),
        ``correction`` (``relabel``, ``keep`` or empty) and ``correction_note``.
    """
    out = index.copy()
    paths = out["path"].tolist()
    action, new_class, note = ({p: v for p, v in zip(corrections["path"], corrections[col])}
                               for col in ("action", "class", "note"))
    out["given_class"] = out["class"]
    out["correction"] = pd.Series([action.get(p, "") for p in paths], index=out.index,
                                  dtype=object).where(lambda a: a.isin(["relabel", "keep"]), "")
    same = (out["correction"] == "relabel") & (out["path"].map(new_class) == out["class"])
    out.loc[same, "correction"] = ""  # already in that class: nothing to change
    relabel = (out["correction"] == "relabel").to_numpy()
    out.loc[relabel, "class"] = [new_class[p] for p in out.loc[relabel, "path"]]
    out["correction_note"] = pd.Series([note.get(p, "") for p in paths], index=out.index,
                                       dtype=object).where(out["correction"] != "", "")
    return out


def applied_table(corrections: pd.DataFrame, *, class_of: Mapping[str, str],
                  split_of: Mapping[str, str], indexed: Collection[str],
                  reasons: Mapping[str, str]) -> pd.DataFrame:
    """What happened to each row of the corrections file (columns :data:`APPLIED_COLUMNS`,
    sorted by path): ``status`` is ``applied``, or why not (the image was rejected, or is
    already filed under the class).

    Parameters
    ----------
    corrections : DataFrame
        The checked corrections table.
    class_of, split_of : mapping
        Path -> the folder's class, and its split ("" without splits).
    indexed : collection of str
        Paths in the final index.
    reasons : mapping
        Path -> rejection reason of the rejected files.
    """
    rows = []
    for r in corrections[COLUMNS].to_dict("records"):
        path, action = r["path"], r["action"]
        if action == "relabel" and class_of.get(path) == r["class"]:
            status = f"not applied: already filed under {r['class']!r}"
        elif action == "exclude" or path in indexed:
            status = APPLIED
        else:
            status = f"not applied: the image is rejected ({reasons.get(path, 'unknown')})"
        rows.append({"path": path, "split": split_of.get(path, ""), "action": action,
                     "given_class": class_of.get(path, ""),
                     "class": r["class"] if action == "relabel" else "",
                     "note": r["note"], "status": status})
    return pd.DataFrame(rows, columns=APPLIED_COLUMNS).sort_values(
        "path", kind="stable").reset_index(drop=True)


def counts(applied: pd.DataFrame) -> dict[str, int]:
    """``{relabel, exclude, keep, not_applied}``: rows applied per action, and rows not
    applied."""
    ok = applied["status"] == APPLIED
    out = {a: int(((applied["action"] == a) & ok).sum()) for a in ACTIONS}
    out["not_applied"] = int((~ok).sum())
    return out


def kept(index: pd.DataFrame) -> np.ndarray:
    """The images the user marked ``keep``, from an index table (its ``correction`` column;
    none without one)."""
    if "correction" not in index:
        return np.zeros(len(index), dtype=bool)
    return (index["correction"] == "keep").to_numpy(dtype=bool)


def silence(flags: pd.DataFrame, kept: np.ndarray) -> pd.DataFrame:
    """Audit flags with every kept image's flags off (its scores stay as they are).

    Parameters
    ----------
    flags : DataFrame
        Boolean flag columns, one row per image.
    kept : ndarray of bool
        The images the user marked ``keep``.
    """
    kept = np.asarray(kept, dtype=bool)
    out = flags.copy()
    for col in out.columns:
        out[col] = out[col].to_numpy(dtype=bool) & ~kept
    return out
