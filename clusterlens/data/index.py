"""Scan an image folder (one sub-folder per class) into an index table and a rejected table.

Every file under a class folder is opened with Pillow and fully decoded once; what cannot be used
is listed in the rejected table with a reason and left out, never a crash.

Rules (documented in the README):
- classes are the non-hidden, non-symlinked folders directly under the root (or under each
  split), sorted by name;
  files in nested folders of a class belong to that class;
- hidden files and folders (name starting with ``.``) are skipped and listed as ``hidden``;
- folders that are symlinks are not followed; a symlinked file is indexed only when it resolves
  to a file inside the root;
- images smaller than ``min_side`` pixels on either side are rejected as ``too_small``;
- a folder whose top-level folders are all split names (``root/<split>/<class>/<image>``,
  :mod:`clusterlens.data.splits`) is read as splits: ``split`` names each image's split,
  ``path`` stays relative to the root, and the classes are the union of the splits' classes;
- exact duplicates (same sha256) are reported; with ``drop_duplicates`` every copy after the
  first (in sorted order) within a split is rejected as ``duplicate`` (copies across splits
  stay: they are leaks);
- the user's corrections (:mod:`clusterlens.data.corrections`) are checked before any image is
  decoded, then applied: ``class`` is the class after corrections, ``given_class`` the
  folder's; excluded images are rejected as ``excluded``;
- every file is decoded exactly as feature extraction will load it (EXIF orientation, first
  frame, RGB conversion), so an indexed image can always be read by the later stages;
- names that are not valid UTF-8 cannot be written to the output tables: ``bad_filename``;
- every indexed image gets image-quality scores and flags (``<kind>_score``, ``is_<kind>``:
  blurry, dark, light, low_information, grayscale from its decoded pixels, odd_size and
  odd_aspect_ratio against the indexed images' medians; :mod:`clusterlens.data.quality`).
  Flagged images stay in the index.
"""
from __future__ import annotations

import errno
import hashlib
import io
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from clusterlens.core.errors import DataError
from clusterlens.data import corrections as corr
from clusterlens.data.images import first_frame_rgb
from clusterlens.data.quality import (
    FLAG_COLUMNS,
    PIXEL_KINDS,
    QUALITY_COLUMNS,
    flag_table,
    image_scores,
)
from clusterlens.data.splits import AUTO, detect_splits, looks_like_splits

INSPECTED_COLUMNS = ["width", "height", "mode", "format", "n_frames", "bytes", "sha256"]
FILE_COLUMNS = ["path", "split", "class", "given_class", "label", "correction", "correction_note",
                *INSPECTED_COLUMNS, "duplicate_of"]
PIXEL_SCORE_COLUMNS = [f"{k}_score" for k in PIXEL_KINDS]
INDEX_COLUMNS = FILE_COLUMNS + QUALITY_COLUMNS
REJECTED_COLUMNS = ["path", "class", "reason", "detail"]
GRAYSCALE_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}


class Rejected(Exception):
    """A file that cannot be indexed: ``reason`` (a short code such as ``corrupt``) and
    ``detail`` (what was found), as written to the rejected table."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason, self.detail = reason, detail
        super().__init__(f"{reason}: {detail}")


# --------------------------------------------------------------------------- scanning
def check_root(root: Path) -> Path:
    """Check that ``root`` is an existing folder.

    Raises
    ------
    DataError
        When it does not exist or is not a folder.
    """
    if not root.exists():
        raise DataError(f"data.root: folder {str(root)!r} does not exist; set `data.root` in "
                        "params.yaml to a folder with one sub-folder per class")
    if not root.is_dir():
        raise DataError(f"data.root: {str(root)!r} is not a folder; set `data.root` in "
                        "params.yaml to a folder with one sub-folder per class")
    return root


BAD_NAME_DETAIL = ("the name is not valid UTF-8 and cannot be written to the output tables; "
                   "rename it (e.g. `convmv -f latin1 -t utf8`)")


def is_utf8(name: str) -> bool:
    """False for names holding bytes that are not UTF-8 (Python keeps them as surrogates)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable_name(name: str) -> str:
    """The name with undecodable bytes shown as escapes (e.g. ``caf\\xe9.jpg``)."""
    return os.fsencode(name).decode("utf-8", "backslashreplace") if name else name


def symlink_problem(exc: BaseException) -> str:
    """Why a symlink cannot be resolved (Python 3.11 raises RuntimeError on loops, 3.13 ELOOP)."""
    if isinstance(exc, RuntimeError) or getattr(exc, "errno", None) == errno.ELOOP:
        return "symlink loop"
    if isinstance(exc, FileNotFoundError):
        return "dangling symlink: its target does not exist"
    return f"cannot resolve the symlink ({type(exc).__name__}: {exc})"


@dataclass(frozen=True)
class Scan:
    """What a folder listing found: ``candidates`` (relative posix path, class folder, split;
    sorted), ``rejected`` (entries left out, as rows of the rejected table), ``classes`` (every
    class folder name, sorted), ``splits`` (the split folders in split order; empty when the
    folder is read as classes) and ``lookalikes`` (split-like top-level folders, when ``auto``
    read the folder as classes because other top-level folders are not splits)."""
    candidates: list[tuple[str, str, str]]
    rejected: list[dict]
    classes: list[str]
    splits: tuple[str, ...] = ()
    lookalikes: tuple[str, ...] = ()  # split-like folders read as classes


def _listing(folder: Path) -> list[os.DirEntry]:
    try:
        return sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        raise DataError(f"data.root: cannot list {str(folder)!r} ({exc.strerror or exc}); "
                        "give this user read access to it, or set `data.root` to another "
                        "folder") from None


def scan_tree(root: Path, splits: str | Sequence[str] = AUTO) -> Scan:
    """List the candidate files of a folder, its rejected entries, classes and splits.

    Parameters
    ----------
    root : Path
        ``root/<class>/<image>``, or ``root/<split>/<class>/<image>``.
    splits : str or sequence of str
        ``auto``, ``none`` or the split folder names (:mod:`clusterlens.data.splits`).

    Returns
    -------
    Scan
        Sorted, so the same folder always gives the same order.

    Raises
    ------
    DataError
        When the root is missing, unreadable, or lacks a listed split.
    """
    root = check_root(Path(root))
    real_root = root.resolve()
    candidates: list[tuple[str, str, str]] = []
    rejected: list[dict] = []

    def reject(rel: str, cls: str, reason: str, detail: str = "") -> None:
        rejected.append({"path": printable_name(rel), "class": printable_name(cls),
                         "reason": reason, "detail": detail})

    def folders_of(folder: Path, prefix: str, where: str) -> list[str]:
        """Sub-folders of one level (classes, or splits at the root); rejects the rest (files
        are rejected once the layout is known)."""
        found = []
        for entry in _listing(folder):
            rel = prefix + entry.name
            if not is_utf8(entry.name):
                reject(rel, "", "bad_filename", BAD_NAME_DETAIL)
            elif entry.name.startswith("."):
                reject(rel, "", "hidden", f"hidden entry {where}")
            elif entry.is_symlink() and entry.is_dir():
                reject(rel, "", "symlinked_folder", "folders that are symlinks are not followed")
            elif entry.is_dir(follow_symlinks=False):
                found.append(entry.name)
            else:
                loose.append(rel)
        return found

    loose: list[str] = []
    top = folders_of(root, "", "at the root")
    try:
        split_names = detect_splits(top, splits)
    except ValueError as exc:
        raise DataError(f"data.splits {exc}; set `data.splits` to auto, none or the split "
                        "folders") from None
    lookalikes = tuple(looks_like_splits(top)) if not split_names and splits == AUTO else ()
    layout = "root/<split>/<class>/<image>" if split_names else "root/<class>/<image>"
    if split_names:
        for other in sorted(set(top) - set(split_names)):
            reject(other, "", "not_a_split", "a top-level folder that is not one of the splits "
                   f"({', '.join(split_names)}; `data.splits`)")
        bases = [(root / s, f"{s}/", s) for s in split_names]
    else:
        bases = [(root, "", "")]
    classes: set[str] = set()
    for base, prefix, split in bases:
        base_classes = folders_of(base, prefix, f"in split {split!r}") if split else top
        classes.update(base_classes)
        for cls in base_classes:
            _scan_class(root, real_root, base / cls, cls, split, candidates, reject)
    for rel in loose:
        reject(rel, "", "not_in_class_folder", f"files must be inside a class folder: {layout}")
    candidates.sort()
    return Scan(candidates, rejected, sorted(classes), split_names, lookalikes)


def _scan_class(root: Path, real_root: Path, folder: Path, cls: str, split: str,
                candidates: list, reject) -> None:
    """Add the files of one class folder (nested folders included) to ``candidates``."""
    def unlistable(exc: OSError) -> None:  # os.walk would skip it silently
        rel = Path(exc.filename).relative_to(root).as_posix()
        reject(rel, cls, "unreadable", f"cannot list the folder: {exc.strerror or exc}")

    for dirpath, dirnames, filenames in os.walk(folder, onerror=unlistable, followlinks=False):
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        kept_dirs = []
        for d in sorted(dirnames):
            full = Path(dirpath) / d
            if not is_utf8(d):
                reject(f"{rel_dir}/{d}", cls, "bad_filename", BAD_NAME_DETAIL)
            elif d.startswith("."):
                reject(f"{rel_dir}/{d}", cls, "hidden", "hidden folder")
            elif full.is_symlink():
                reject(f"{rel_dir}/{d}", cls, "symlinked_folder",
                       "folders that are symlinks are not followed")
            else:
                kept_dirs.append(d)
        dirnames[:] = kept_dirs
        for name in sorted(filenames):
            rel = f"{rel_dir}/{name}"
            full = Path(dirpath) / name
            if not is_utf8(name):
                reject(rel, cls, "bad_filename", BAD_NAME_DETAIL)
                continue
            if name.startswith("."):
                reject(rel, cls, "hidden", "hidden file")
                continue
            if full.is_symlink():
                try:
                    target = full.resolve(strict=True)
                except (OSError, RuntimeError) as exc:
                    reject(rel, cls, "broken_symlink", symlink_problem(exc))
                    continue
                if not target.is_relative_to(real_root):
                    reject(rel, cls, "symlink_outside_root",
                           "symlinks that leave data.root are not followed")
                    continue
                if not target.is_file():
                    reject(rel, cls, "not_a_file", "symlink to a non-file")
                    continue
            elif not full.is_file():
                reject(rel, cls, "not_a_file", "special file (fifo, socket, device)")
                continue
            candidates.append((rel, cls, split))


def bomb_limit() -> int | None:
    """Pillow's safety limit on pixels per image (``Image.MAX_IMAGE_PIXELS``; None = no limit)."""
    return Image.MAX_IMAGE_PIXELS


def inspect_image(path: Path, min_side: int) -> dict:
    """Read, hash and fully decode one file.

    The pixels are decoded once, exactly as feature extraction loads them
    (:func:`clusterlens.data.images.first_frame_rgb`: first frame, EXIF orientation, RGB
    conversion), so every indexed image can be read later.

    Parameters
    ----------
    path : Path
        The file.
    min_side : int
        Smallest accepted width and height, in pixels.

    Returns
    -------
    dict
        width, height (as extraction sees them), mode, format, n_frames, bytes, sha256, and the
        pixel quality scores of :func:`clusterlens.data.quality.image_scores`.

    Raises
    ------
    Rejected
        With the reason the file is unusable.
    """
    try:
        data = path.read_bytes()
    except PermissionError as exc:
        raise Rejected("unreadable", f"permission denied: {exc.strerror}") from None
    except OSError as exc:
        raise Rejected("unreadable", str(exc.strerror or exc)) from None
    if not data:
        raise Rejected("empty_file", "0 bytes")
    digest = hashlib.sha256(data).hexdigest()
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise Rejected("not_an_image", "Pillow cannot identify the file") from None
    except Image.DecompressionBombError as exc:
        raise Rejected("decompression_bomb", str(exc).split(".")[0]) from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a rejection
        raise Rejected("corrupt", f"{type(exc).__name__}: {exc}") from None
    limit = bomb_limit()
    pixels = img.size[0] * img.size[1]
    if limit and pixels > limit:  # explicit: Pillow only warns between 1x and 2x the limit
        raise Rejected("decompression_bomb", f"{img.size[0]}x{img.size[1]} = {pixels} pixels "
                       f"exceeds Pillow's limit of {limit} (PIL.Image.MAX_IMAGE_PIXELS)")
    try:
        fmt = img.format or ""
        mode = img.mode
        n_frames = int(getattr(img, "n_frames", 1))
        img.seek(0)
        img.load()
    except Exception as exc:  # noqa: BLE001
        raise Rejected("corrupt", f"{type(exc).__name__}: {exc}") from None
    try:
        rgb = first_frame_rgb(img)  # what extraction will see
    except Exception as exc:  # noqa: BLE001 - decodes, but cannot become an RGB picture
        raise Rejected("unsupported_mode", f"mode {mode}: {type(exc).__name__}: {exc}") from None
    width, height = rgb.size
    if min(width, height) < min_side:
        raise Rejected("too_small", f"{width}x{height} is below index.min_side={min_side}")
    return {"width": width, "height": height, "mode": mode, "format": fmt,
            "n_frames": n_frames, "bytes": len(data), "sha256": digest, **image_scores(rgb)}


def build_index(root: str | Path, min_side: int = 8, drop_duplicates: bool = False,
                workers: int = 2, *, splits: str | Sequence[str] = AUTO,
                corrections: pd.DataFrame | None = None
                ) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Scan and inspect an image folder, and apply the user's corrections.

    Parameters
    ----------
    root : str or Path
        A folder laid out as ``root/<class>/<image>`` or ``root/<split>/<class>/<image>``.
    min_side : int
        Smallest accepted width and height, in pixels.
    drop_duplicates : bool
        Move every exact copy after the first (in path order, within its split) to the
        rejected table.
    workers : int
        Threads that read and decode the files (the result does not depend on it).
    splits : str or sequence of str
        ``data.splits``: ``auto``, ``none`` or the split folders
        (:mod:`clusterlens.data.splits`).
    corrections : DataFrame, optional
        A corrections table (:func:`clusterlens.data.corrections.read_corrections`); every row
        is checked against the listing before any image is decoded.

    Returns
    -------
    index : pandas.DataFrame
        One row per usable image, sorted by path, columns ``INDEX_COLUMNS``: ``split`` ("" when
        the folder has no splits), ``class`` after corrections, ``given_class`` (the folder's),
        ``label`` numbering the classes that have at least one usable image, in sorted order,
        ``correction`` (``relabel``, ``keep`` or ""); the quality columns
        (:func:`clusterlens.data.quality.flag_table`) are relative to these rows' sizes, and
        the flags of kept images are off.
    rejected : pandas.DataFrame
        One row per file or folder left out, with its reason (columns ``REJECTED_COLUMNS``);
        excluded images have the reason ``excluded`` and their note as the detail.
    info : dict
        ``classes_found`` (every class folder), ``empty_classes`` (those without a usable
        image), ``splits`` (split order), ``split_lookalikes`` (split-like folders read as
        classes) and ``corrections`` (what happened to each row:
        :func:`clusterlens.data.corrections.applied_table`).

    Raises
    ------
    DataError
        When the folder is missing, has fewer than 2 class folders, or fewer than 2 classes
        with a usable image, or a correction row is bad.
    """
    root = Path(root)
    scan = scan_tree(root, splits)
    candidates, rejected = scan.candidates, scan.rejected
    check_scan(root, scan.classes, candidates, rejected)  # before decoding anything
    if corrections is None:
        corrections = corr.empty()
    class_of = {rel: cls for rel, cls, _ in candidates}
    split_of = {rel: split for rel, _, split in candidates}
    corr.check_corrections(corrections, class_of=class_of, classes=scan.classes)
    excluded = corr.excluded_paths(corrections)
    notes = dict(zip(corrections["path"], corrections["note"]))
    rows: list[dict] = []

    def work(item):
        rel = item[0]
        try:
            return inspect_image(root / rel, min_side)
        except Rejected as exc:
            return exc

    todo = [c for c in candidates if c[0] not in excluded]
    for rel, cls, _ in candidates:
        if rel in excluded:
            rejected.append({"path": rel, "class": cls, "reason": "excluded",
                             "detail": notes.get(rel) or "excluded in data.corrections"})
    # Pillow warns (rather than raises) between 1x and 2x its pixel limit; inspect_image rejects
    # those itself. Filters are process-wide, so they are set here, once, not in each thread.
    with warnings.catch_warnings(), ThreadPoolExecutor(max_workers=workers) as pool:
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        results = pool.map(work, todo)
        for (rel, cls, split), res in tqdm(zip(todo, results), total=len(todo),
                                           desc="index", unit="img", mininterval=1.0):
            if isinstance(res, Rejected):
                rejected.append({"path": rel, "class": cls, "reason": res.reason,
                                 "detail": res.detail})
            else:
                rows.append({"path": rel, "split": split, "class": cls, **res})

    index = pd.DataFrame(rows, columns=["path", "split", "class"] + INSPECTED_COLUMNS
                         + PIXEL_SCORE_COLUMNS)
    index = corr.apply_corrections(index, corrections)
    if drop_duplicates:  # within a split: a copy in another split is a leak, reported later
        first = index.groupby(["split", "sha256"], sort=False)["path"].transform("first")
        dups = first != index["path"]
        for rel, cls, orig in zip(index["path"][dups], index["given_class"][dups], first[dups]):
            rejected.append({"path": rel, "class": cls, "reason": "duplicate",
                             "detail": f"same bytes as {orig}"})
        index = index[~dups].reset_index(drop=True)
    first = index.groupby("sha256", sort=False)["path"].transform("first")
    index["duplicate_of"] = np.where(first != index["path"], first, "")

    used = sorted(index["class"].unique())
    label_of = {c: i for i, c in enumerate(used)}
    index["label"] = index["class"].map(label_of).astype("int64")
    index = index.reset_index(drop=True)
    quality = flag_table(index[PIXEL_SCORE_COLUMNS], widths=index["width"], heights=index["height"])
    quality[FLAG_COLUMNS] = corr.silence(quality[FLAG_COLUMNS], index["correction"] == "keep")
    index = pd.concat([index[FILE_COLUMNS], quality], axis=1)[INDEX_COLUMNS]
    rejected_df = pd.DataFrame(rejected, columns=REJECTED_COLUMNS).sort_values(
        "path", kind="stable").reset_index(drop=True)
    applied = corr.applied_table(corrections, class_of=class_of, split_of=split_of,
                                 indexed=set(index["path"]),
                                 reasons=dict(zip(rejected_df["path"], rejected_df["reason"])))
    info = {"classes_found": scan.classes,
            "empty_classes": [c for c in scan.classes if c not in label_of],
            "splits": list(scan.splits), "split_lookalikes": list(scan.lookalikes),
            "corrections": applied}
    validate_index(index, root, rejected_df, info["empty_classes"])
    return index, rejected_df, info


def rejection_summary(rejected) -> str:
    """E.g. ``3 entries rejected: corrupt 2, not_an_image 1``, or '' when none."""
    reasons = [r["reason"] for r in rejected] if isinstance(rejected, list) else (
        list(rejected["reason"]) if rejected is not None else [])
    if not reasons:
        return ""
    counts = pd.Series(reasons).value_counts().sort_index()
    noun = "entry" if len(reasons) == 1 else "entries"
    return f"{len(reasons)} {noun} rejected: " + ", ".join(f"{k} {v}" for k, v in counts.items())


LAYOUT_HINT = ("set `data.root` in params.yaml to a folder laid out as root/<class>/<image>, "
               "with at least 2 class folders")


def check_scan(root: Path, classes: list[str], candidates: list, rejected: list) -> None:
    """Hard errors visible from the folder listing alone, before any image is decoded."""
    if len(classes) < 2:
        found = f" ({', '.join(repr(c) for c in classes)})" if classes else ""
        plural = "" if len(classes) == 1 else "s"
        raise DataError(f"data.root: {str(root)!r} has {len(classes)} class folder{plural}{found}; "
                        f"{LAYOUT_HINT}")
    if not candidates:
        why = rejection_summary(rejected)
        raise DataError(f"data.root: no image file under {str(root)!r}"
                        + (f" ({why})" if why else "") + f"; {LAYOUT_HINT}")


def validate_index(index: pd.DataFrame, root: Path, rejected=None,
                   empty_classes: list[str] | None = None) -> None:
    """Hard errors after decoding: no usable image, or fewer than 2 classes with one."""
    why = rejection_summary(rejected)
    if index.empty:
        raise DataError(f"data.root: no usable image under {str(root)!r}"
                        + (f" ({why})" if why else "")
                        + f"; fix or remove the broken files, or {LAYOUT_HINT}")
    used = sorted(index["class"].unique())
    if len(used) < 2:
        empty = f"; class folders without a usable image: {', '.join(empty_classes)}" \
            if empty_classes else ""
        raise DataError(f"data.root: {str(root)!r} has usable images in only {len(used)} class "
                        f"({used[0]!r}){empty}" + (f"; {why}" if why else "")
                        + "; clustering against labels needs at least 2 classes: add images to "
                        "another class folder")


# --------------------------------------------------------------------------- metrics
def index_metrics(index: pd.DataFrame, rejected: pd.DataFrame, info: dict) -> dict:
    """Summary numbers of an index: sizes, class balance, rejections, duplicates, modes.

    Parameters
    ----------
    index, rejected, info
        What :func:`build_index` returns.

    Returns
    -------
    dict
        JSON-ready counts and statistics (the ``index`` stage's metrics); ``splits`` holds the
        images per split, in split order (empty without splits).
    """
    counts = index["class"].value_counts()
    dup_groups = index[index["duplicate_of"] != ""].groupby("duplicate_of")
    cross = 0
    for first, grp in dup_groups:
        first_cls = index.loc[index["path"] == first, "class"]
        if len(first_cls) == 0 or set(grp["class"]) != {first_cls.iloc[0]}:
            cross += 1
    by_reason = rejected["reason"].value_counts().sort_index()
    modes = index["mode"]
    return {
        "images": int(len(index)),
        "classes": int(len(counts)),
        "empty_classes": len(info.get("empty_classes", [])),
        "per_class_min": int(counts.min()),
        "per_class_median": float(counts.median()),
        "per_class_max": int(counts.max()),
        "per_class_mean": float(counts.mean()),
        "per_class_std": float(counts.std(ddof=1)) if len(counts) > 1 else 0.0,
        "imbalance_ratio": float(counts.max() / counts.min()),
        "rejected": int(len(rejected)),
        "rejected_by_reason": {str(k): int(v) for k, v in by_reason.items()},
        "duplicates": int((index["duplicate_of"] != "").sum()),
        "duplicate_groups": int(dup_groups.ngroups),
        "cross_class_duplicate_groups": int(cross),
        "grayscale_images": int(modes.isin(GRAYSCALE_MODES).sum()),
        "cmyk_images": int((modes == "CMYK").sum()),
        "alpha_images": int(modes.isin(ALPHA_MODES).sum()),
        "palette_images": int((modes == "P").sum()),
        "animated_images": int((index["n_frames"] > 1).sum()),
        "width_median": float(index["width"].median()),
        "height_median": float(index["height"].median()),
        "width_min": int(index["width"].min()),
        "height_min": int(index["height"].min()),
        "splits": {s: int((index["split"] == s).sum()) for s in info.get("splits", [])},
    }
