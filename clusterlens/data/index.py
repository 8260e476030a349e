"""Scan an image folder (one sub-folder per class) into an index table and a rejected table.

Every file under a class folder is opened with Pillow and fully decoded once; what cannot be used
is listed in the rejected table with a reason and left out, never a crash.

Rules (documented in the README):
- classes are the non-hidden, non-symlinked folders directly under the root, sorted by name;
  files in nested folders of a class belong to that class;
- hidden files and folders (name starting with ``.``) are skipped and listed as ``hidden``;
- folders that are symlinks are not followed; a symlinked file is indexed only when it resolves
  to a file inside the root;
- images smaller than ``min_side`` pixels on either side are rejected as ``too_small``;
- exact duplicates (same sha256) are reported; with ``drop_duplicates`` every copy after the
  first (in sorted order) is rejected as ``duplicate``;
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from clusterlens.core.errors import DataError
from clusterlens.data.images import first_frame_rgb
from clusterlens.data.quality import PIXEL_KINDS, QUALITY_COLUMNS, flag_table, image_scores

FILE_COLUMNS = ["path", "class", "label", "width", "height", "mode", "format", "n_frames",
                "bytes", "sha256", "duplicate_of"]
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


def scan_tree(root: Path) -> tuple[list[tuple[str, str]], list[dict], list[str]]:
    """List candidate files as (relative posix path, class), the rejected entries, all classes.

    Sorted, so the same folder always gives the same order.
    """
    root = check_root(Path(root))
    real_root = root.resolve()
    candidates: list[tuple[str, str]] = []
    rejected: list[dict] = []
    classes: list[str] = []

    def reject(rel: str, cls: str, reason: str, detail: str = "") -> None:
        rejected.append({"path": printable_name(rel), "class": printable_name(cls),
                         "reason": reason, "detail": detail})

    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError as exc:
        raise DataError(f"data.root: cannot list {str(root)!r} ({exc.strerror or exc}); give "
                        "this user read access to it, or set `data.root` to another folder") \
            from None
    for entry in entries:
        rel = entry.name
        if not is_utf8(entry.name):
            reject(rel, "", "bad_filename", BAD_NAME_DETAIL)
        elif entry.name.startswith("."):
            reject(rel, "", "hidden", "hidden entry at the root")
        elif entry.is_symlink() and entry.is_dir():
            reject(rel, "", "symlinked_folder", "folders that are symlinks are not followed")
        elif entry.is_dir(follow_symlinks=False):
            classes.append(entry.name)
        else:
            reject(rel, "", "not_in_class_folder",
                   "files must be inside a class folder: root/<class>/<image>")

    for cls in classes:
        def unlistable(exc: OSError, cls=cls) -> None:  # os.walk would skip it silently
            rel = Path(exc.filename).relative_to(root).as_posix()
            reject(rel, cls, "unreadable", f"cannot list the folder: {exc.strerror or exc}")

        for dirpath, dirnames, filenames in os.walk(root / cls, onerror=unlistable,
                                                    followlinks=False):
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
                candidates.append((rel, cls))
    candidates.sort()
    return candidates, rejected, classes


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
                workers: int = 2) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Scan and inspect an image folder.

    Parameters
    ----------
    root : str or Path
        A folder laid out as ``root/<class>/<image>``.
    min_side : int
        Smallest accepted width and height, in pixels.
    drop_duplicates : bool
        Move every exact copy after the first (in path order) to the rejected table.
    workers : int
        Threads that read and decode the files (the result does not depend on it).

    Returns
    -------
    index : pandas.DataFrame
        One row per usable image, sorted by path, columns ``INDEX_COLUMNS``; ``label`` numbers
        the classes that have at least one usable image, in sorted order; the quality columns
        (:func:`clusterlens.data.quality.flag_table`) are relative to these rows' sizes.
    rejected : pandas.DataFrame
        One row per file or folder left out, with its reason (columns ``REJECTED_COLUMNS``).
    info : dict
        ``classes_found`` (every class folder) and ``empty_classes`` (those without a usable
        image).

    Raises
    ------
    DataError
        When the folder is missing, has fewer than 2 class folders, or fewer than 2 classes
        with a usable image.
    """
    root = Path(root)
    candidates, rejected, classes = scan_tree(root)
    check_scan(root, classes, candidates, rejected)  # before decoding anything
    rows: list[dict] = []

    def work(item):
        rel, _ = item
        try:
            return inspect_image(root / rel, min_side)
        except Rejected as exc:
            return exc

    # Pillow warns (rather than raises) between 1x and 2x its pixel limit; inspect_image rejects
    # those itself. Filters are process-wide, so they are set here, once, not in each thread.
    with warnings.catch_warnings(), ThreadPoolExecutor(max_workers=workers) as pool:
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        results = pool.map(work, candidates)
        for (rel, cls), res in tqdm(zip(candidates, results), total=len(candidates),
                                    desc="index", unit="img", mininterval=1.0):
            if isinstance(res, Rejected):
                rejected.append({"path": rel, "class": cls, "reason": res.reason,
                                 "detail": res.detail})
            else:
                rows.append({"path": rel, "class": cls, **res})

    index = pd.DataFrame(rows, columns=[c for c in FILE_COLUMNS if c not in ("label", "duplicate_of")]
                         + PIXEL_SCORE_COLUMNS)
    first_path = index.groupby("sha256", sort=False)["path"].transform("first")
    index["duplicate_of"] = np.where(first_path != index["path"], first_path, "")
    if drop_duplicates:
        dups = index["duplicate_of"] != ""
        for rel, cls, first in index.loc[dups, ["path", "class", "duplicate_of"]].to_numpy():
            rejected.append({"path": rel, "class": cls, "reason": "duplicate",
                             "detail": f"same bytes as {first}"})
        index = index[~dups].reset_index(drop=True)

    used = sorted(index["class"].unique())
    label_of = {c: i for i, c in enumerate(used)}
    index.insert(2, "label", index["class"].map(label_of).astype("int64"))
    index = index.reset_index(drop=True)
    quality = flag_table(index[PIXEL_SCORE_COLUMNS], widths=index["width"], heights=index["height"])
    index = pd.concat([index[FILE_COLUMNS], quality], axis=1)[INDEX_COLUMNS]
    rejected_df = pd.DataFrame(rejected, columns=REJECTED_COLUMNS).sort_values(
        "path", kind="stable").reset_index(drop=True)
    info = {"classes_found": classes, "empty_classes": [c for c in classes if c not in label_of]}
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
        JSON-ready counts and statistics (the ``index`` stage's metrics).
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
    }
