"""Atomic file writes (temporary file, then rename) and the array / table / JSON formats.

No pickle anywhere: arrays are ``.npy`` / ``.npz`` written and read with ``allow_pickle=False``,
tables are parquet or csv, everything else is JSON.
"""
from __future__ import annotations

import contextlib
import glob
import json
import logging
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only on success.

    A crash or an interruption leaves the previous file (or nothing) in place, never a half
    written one. Works for files and directories.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=suffix if suffix is not None else path.suffix + ".tmp",
        dir=path.parent,
    )
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def open_key_space(folder: str | os.PathLike, key: str, spec: dict) -> Path:
    """Create a content store's key-space folder with its ``fingerprint.json`` (``key`` and
    ``spec``: what the stored values depend on besides the bytes), once and atomically, as the
    feature, index and pixel stores lay them out. Returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta = folder / "fingerprint.json"
    if not meta.is_file():
        with atomic_path(meta) as tmp:
            tmp.write_text(json.dumps({"fingerprint": key, **spec}, indent=2,
                                      sort_keys=True) + "\n")
    return folder


def remove_stale_tmp(*paths: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that ``atomic_path`` leaves beside ``paths`` when its process is
    killed outright (SIGKILL, power loss) mid-write; returns what was removed.

    Call it at the start of a stage, for that stage's own outputs: DVC runs one stage of a
    repository at a time, so no live writer owns them. They are never outputs themselves (DVC
    records only the final names), this only tidies the folders.
    """
    removed = []
    for path in map(Path, paths):
        if not path.parent.is_dir():
            continue
        for tmp in sorted(path.parent.glob(f".{glob.escape(path.name)}.*.tmp")):
            if tmp.is_dir() and not tmp.is_symlink():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        if not math.isfinite(obj):
            return None
        return round(obj, 6)
    return obj


def write_json(path: str | os.PathLike, obj: Any) -> Any:
    """Write JSON atomically; floats rounded to 6 decimals, NaN/inf as null. Returns what was
    written (as read back)."""
    clean = _jsonable(obj)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(clean, indent=2) + "\n", encoding="utf-8")
    return clean


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array, allow_pickle=False)


def load_npy(path: str | os.PathLike) -> np.ndarray:
    return np.load(path, allow_pickle=False)


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def write_table(path: str | os.PathLike, df) -> None:
    """Write a pandas DataFrame as parquet or csv (by suffix), atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        if path.suffix == ".parquet":
            df.to_parquet(tmp, index=False)
        elif path.suffix == ".csv":
            df.to_csv(tmp, index=False)
        else:
            raise ValueError(f"{path}: unsupported table format (use .parquet or .csv)")


# Columns that hold class names (``class``, ``top1_class``, ``given_class``, ``class_a`` ...):
# a CSV reads them back as the strings the folders spell, never as numbers (``2``, not ``2.0``).
CLASS_COLUMN = re.compile(r"(?:^|_)class(?:_|$)")


def is_class_column(name) -> bool:
    """Whether the column ``name`` holds class names (see :data:`CLASS_COLUMN`)."""
    return bool(CLASS_COLUMN.search(str(name)))


def read_table(path: str | os.PathLike):
    """Read a parquet or csv table (by suffix).

    A csv's class-name columns (:func:`is_class_column`) are read as strings, an empty cell as
    ``""``; parquet keeps the types it was written with.
    """
    import pandas as pd

    path = Path(path)
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    text = [c for c in pd.read_csv(path, nrows=0).columns if is_class_column(c)]
    df = pd.read_csv(path, dtype={c: str for c in text})
    if text:  # read as spelled: a folder may be named "NA" or "null"; an empty cell is no class
        df[text] = pd.read_csv(path, usecols=text, dtype=str, keep_default_na=False)[text]
    return df


def load_features(path: str | os.PathLike, mmap_threshold_bytes: int | None) -> np.ndarray:
    """A ``.npy`` array: read into memory, or memory-mapped read-only (``np.memmap``) when the
    file is larger than ``mmap_threshold_bytes`` (``None``: never). A memory map costs no
    anonymous memory: the OS pages rows in as they are read and can drop them again, so 10^6 x
    256 float32 features (1 GB) do not need 1 GB of free RAM to be clustered. Read-only: code
    that would write into it fails loudly instead of changing the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: features not found")
    if mmap_threshold_bytes is not None and (isinstance(mmap_threshold_bytes, bool) or
                                             not isinstance(mmap_threshold_bytes, int) or
                                             mmap_threshold_bytes < 0):
        raise ValueError(f"mmap_threshold_bytes must be an integer >= 0 or None, got "
                         f"{mmap_threshold_bytes!r}")
    if mmap_threshold_bytes is not None and path.stat().st_size > mmap_threshold_bytes:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
        log.info("%s: %.0f MB > %.0f MB, memory-mapped (read-only)", path,
                 path.stat().st_size / 2**20, mmap_threshold_bytes / 2**20)
        return arr
    return np.load(path, allow_pickle=False)
