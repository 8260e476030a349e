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

The files are read, hashed and decoded by worker processes (:func:`inspect_files`,
:class:`FilePool`), optionally through a per-file store keyed by sha256
(:mod:`clusterlens.data.index_store`); neither changes the result.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import gc
import hashlib
import io
import multiprocessing as mp
import os
import signal
import sys
import time
import warnings
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from clusterlens.core.errors import DataError
from clusterlens.data import corrections as corr
from clusterlens.data.images import first_frame_rgb
from clusterlens.data.index_store import VALUE_COLUMNS, IndexStore, rows_of, store_spec
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
assert VALUE_COLUMNS == INSPECTED_COLUMNS + PIXEL_SCORE_COLUMNS  # the store's record order
CHUNK = 64  # files per task sent to a worker process
PROCESS_MIN_FILES = 512  # fewer files to inspect: in this process (no worker start-up)
FLUSH_FILES, FLUSH_SECONDS = 50_000, 10.0  # store: a shard at least this often


class Rejected(Exception):
    """A file that cannot be indexed: ``reason`` (a short code such as ``corrupt``) and
    ``detail`` (what was found), as written to the rejected table."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason, self.detail = reason, detail
        super().__init__(f"{reason}: {detail}")

    def __reduce__(self):  # travels back from worker processes whole
        return Rejected, (self.reason, self.detail)


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
    _, res = inspect_file(path, min_side)
    if isinstance(res, Rejected):
        raise res
    return dict(zip(VALUE_COLUMNS, res))


def read_file(path: Path) -> bytes:
    """A file's bytes; :class:`Rejected` (``unreadable``, ``empty_file``) when there are none."""
    try:
        data = path.read_bytes()
    except PermissionError as exc:
        raise Rejected("unreadable", f"permission denied: {exc.strerror}") from None
    except OSError as exc:
        raise Rejected("unreadable", str(exc.strerror or exc)) from None
    if not data:
        raise Rejected("empty_file", "0 bytes")
    return data


def hash_file(path: Path) -> str | Rejected:
    """The sha256 (hex) of a file's bytes, or why it has none (:func:`read_file`)."""
    try:
        return hashlib.sha256(read_file(path)).hexdigest()
    except Rejected as exc:
        return exc


def inspect_file(path: Path, min_side: int) -> tuple[str | None, tuple | Rejected]:
    """:func:`inspect_image` without raising: ``(sha256, values)``, values in the order of
    ``VALUE_COLUMNS``, or ``(sha256, Rejected)`` (sha256 None when the file could not be read)."""
    try:
        data = read_file(path)
    except Rejected as exc:
        return None, exc
    digest = hashlib.sha256(data).hexdigest()
    try:
        return digest, _inspect_bytes(data, digest, min_side)
    except Rejected as exc:
        return digest, exc


def _inspect_bytes(data: bytes, digest: str, min_side: int) -> tuple:
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
    scores = image_scores(rgb)
    return (width, height, mode, fmt, n_frames, len(data), digest,
            *(scores[c] for c in PIXEL_SCORE_COLUMNS))


# --------------------------------------------------------------------------- many files
def resolve_workers(workers: int | str) -> int:
    """``auto``: the cores this process may run on (``os.sched_getaffinity``); else the count."""
    if workers == AUTO:
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not on Linux
            return max(1, os.cpu_count() or 1)
    return max(1, int(workers))


def _run_chunk(kind: str, root: Path, rels: list[str], min_side: int) -> list:
    if kind == "hash":
        return [hash_file(root / rel) for rel in rels]
    return [inspect_file(root / rel, min_side) for rel in rels]


_WORKER: dict = {}


def _init_worker(root: str, min_side: int, max_pixels: int | None) -> None:
    """A worker process: Ctrl-C is the parent's to handle (it ends the workers), the worker
    ends with its parent, Pillow's pixel limit is the parent's, and its warning between 1x and 2x the limit is silenced
    (:func:`inspect_file` rejects those itself)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):  # the parent killed alone (SIGKILL, OOM): end too
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
    Image.MAX_IMAGE_PIXELS = max_pixels
    _WORKER.update(root=Path(root), min_side=min_side)


def _worker_chunk(kind: str, rels: list[str]) -> list:
    return _run_chunk(kind, _WORKER["root"], rels, _WORKER["min_side"])


class FilePool:
    """Runs :func:`hash_file` or :func:`inspect_file` over many files of one folder, in order,
    in ``workers`` processes (in this process when 1).

    Worker processes are forked (``multiprocessing`` start method ``fork``; ``spawn`` where
    there is no fork), with the objects that exist then frozen out of the garbage collector
    (``gc.freeze``) so that the children do not copy the parent's memory by touching it. Files
    go out in chunks of :data:`CHUNK` paths, at most ``4 x workers`` chunks in flight, and come
    back in order. Leaving the ``with`` block on an exception (Ctrl-C included) terminates the
    workers at once.
    """

    def __init__(self, root: Path, min_side: int, workers: int):
        self.root, self.min_side, self.workers = Path(root), min_side, workers
        self.pool = None

    def __enter__(self) -> FilePool:
        if self.workers > 1:
            method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
            gc.freeze()
            self.pool = ProcessPoolExecutor(self.workers, mp_context=mp.get_context(method),
                                            initializer=_init_worker,
                                            initargs=(str(self.root), self.min_side, bomb_limit()))
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.pool is None:
            return
        gc.unfreeze()
        if exc_type is not None:  # Ctrl-C or an error: do not wait for the chunks in flight
            procs = list((getattr(self.pool, "_processes", None) or {}).values())
            self.pool.shutdown(wait=False, cancel_futures=True)
            # and any worker forked after that snapshot (Ctrl-C while the pool starts)
            procs += [p for p in mp.active_children() if p not in procs]
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.join(5)
        else:
            self.pool.shutdown(wait=True)

    def map(self, kind: str, rels: list[str], desc: str):
        """Yield each file's result (``kind`` ``hash`` or ``inspect``), in the order of
        ``rels``, with a tqdm progress bar."""
        chunks = [rels[i:i + CHUNK] for i in range(0, len(rels), CHUNK)]
        bar = tqdm(total=len(rels), desc=desc, unit="img", mininterval=1.0)
        with bar:
            if self.pool is None:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                    for chunk in chunks:
                        out = _run_chunk(kind, self.root, chunk, self.min_side)
                        bar.update(len(chunk))
                        yield from out
                return
            pending: deque = deque()
            todo = iter(chunks)
            for chunk in todo:
                pending.append(self.pool.submit(_worker_chunk, kind, chunk))
                if len(pending) >= 4 * self.workers:
                    break
            while pending:
                out = pending.popleft().result()
                nxt = next(todo, None)
                if nxt is not None:
                    pending.append(self.pool.submit(_worker_chunk, kind, nxt))
                bar.update(len(out))
                yield from out


def _record(sha: str, res) -> tuple:
    """A store row (``index_store.RECORD_COLUMNS``) of one inspected file."""
    if isinstance(res, Rejected):
        return (res.reason, res.detail, 0, 0, "", "", 0, 0, sha, *([float("nan")] * 5))
    return ("", "", *res)


def _result(row: tuple):
    """The inverse of :func:`_record`: values, or the Rejected."""
    if row[0]:
        return Rejected(row[0], row[1])
    return tuple(row[2:])


def inspect_files(root: Path, rels: list[str], min_side: int, workers: int | str = 1, *,
                  store: str | os.PathLike | None = None) -> tuple[list, dict]:
    """Inspect the files ``root / rel`` (:func:`inspect_file`), through a per-file store.

    Parameters
    ----------
    root : Path
        The folder.
    rels : list of str
        Paths relative to ``root``.
    min_side : int
        Smallest accepted width and height, in pixels.
    workers : int or "auto"
        Worker processes (:func:`resolve_workers`); 1 = this process. Below
        :data:`PROCESS_MIN_FILES` files, always this process (starting processes costs more).
        The result does not depend on it.
    store : str or PathLike, optional
        The per-file store folder (:mod:`clusterlens.data.index_store`). When it holds
        records, every file is read and hashed first, and only the files whose sha256 it does
        not hold are decoded; their records are appended every :data:`FLUSH_FILES` files or
        :data:`FLUSH_SECONDS` seconds, and when the run stops (finished, failed or
        interrupted).

    Returns
    -------
    results : list
        Per file, in the order of ``rels``: a tuple of values (``VALUE_COLUMNS``) or a
        :class:`Rejected`.
    stats : dict
        ``workers`` (processes used; 1 = this process), ``store`` (its key-space folder, or
        None), ``from_store`` and ``inspected`` (files decoded by this run).
    """
    root = Path(root)
    n_workers = resolve_workers(workers)
    if len(rels) < PROCESS_MIN_FILES:
        n_workers = 1
    results: list = [None] * len(rels)
    st = IndexStore(store, store_spec(min_side, bomb_limit())) if store else None
    stats = {"workers": n_workers, "store": str(st.dir) if st else None, "from_store": 0,
             "inspected": 0}
    with FilePool(root, min_side, n_workers) as pool:
        todo = list(range(len(rels)))
        known = st.load() if st else None
        if known is not None and len(known):
            shas = list(pool.map("hash", rels, "index (hash)"))
            pos = pd.Index(known["sha256"]).get_indexer(
                [s if isinstance(s, str) else "" for s in shas])
            rows = rows_of(known)
            todo = []
            for i, (s, p) in enumerate(zip(shas, pos)):
                if not isinstance(s, str):
                    results[i] = s  # unreadable or empty
                elif p >= 0:
                    results[i] = _result(rows[p])
                    stats["from_store"] += 1
                else:
                    todo.append(i)
            del known, rows, shas
        pending: list[tuple] = []
        last = time.monotonic()
        try:
            for i, (sha, res) in zip(todo, pool.map("inspect", [rels[i] for i in todo],
                                                    "index")):
                results[i] = res
                if st is not None and sha is not None:
                    pending.append(_record(sha, res))
                    if len(pending) >= FLUSH_FILES or time.monotonic() - last > FLUSH_SECONDS:
                        st.put(pending)
                        pending, last = [], time.monotonic()
        finally:
            if st is not None:
                st.put(pending)  # also what an interrupted run had inspected
        stats["inspected"] = len(todo)
    return results, stats


def build_index(root: str | Path, min_side: int = 8, drop_duplicates: bool = False,
                workers: int | str = 2, *, splits: str | Sequence[str] = AUTO,
                corrections: pd.DataFrame | None = None, store: str | os.PathLike | None = None
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
    workers : int or "auto"
        Processes that read, hash and decode the files (:func:`inspect_files`; ``auto``: one
        per available core). The result does not depend on it.
    splits : str or sequence of str
        ``data.splits``: ``auto``, ``none`` or the split folders
        (:mod:`clusterlens.data.splits`).
    corrections : DataFrame, optional
        A corrections table (:func:`clusterlens.data.corrections.read_corrections`); every row
        is checked against the listing before any image is decoded.
    store : str or PathLike, optional
        A per-file store folder (:mod:`clusterlens.data.index_store`): files whose bytes it
        holds are not decoded again. The result does not depend on it.

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
        classes), ``corrections`` (what happened to each row:
        :func:`clusterlens.data.corrections.applied_table`) and ``inspection`` (the stats of
        :func:`inspect_files`: workers, store, files from the store, files decoded).

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
    todo = [c for c in candidates if c[0] not in excluded]
    for rel, cls, _ in candidates:
        if rel in excluded:
            rejected.append({"path": rel, "class": cls, "reason": "excluded",
                             "detail": notes.get(rel) or "excluded in data.corrections"})
    results, stats = inspect_files(root, [rel for rel, _, _ in todo], min_side, workers,
                                   store=store)
    rows: list[tuple] = []
    for (rel, cls, split), res in zip(todo, results):
        if isinstance(res, Rejected):
            rejected.append({"path": rel, "class": cls, "reason": res.reason,
                             "detail": res.detail})
        else:
            rows.append((rel, split, cls, *res))
    del results

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
            "corrections": applied, "inspection": stats}
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


def inspection_summary(stats: dict) -> str:
    """One log line from :func:`inspect_files`' stats: files decoded, where, and what the
    store held."""
    where = "this process" if stats["workers"] == 1 else f"{stats['workers']} worker processes"
    store = (f"; {stats['from_store']} files from the store {stats['store']}"
             if stats["store"] else "; no per-file store")
    return f"{stats['inspected']} files read and decoded in {where}{store}"
