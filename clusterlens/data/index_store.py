"""A persistent per-file store of what ``index`` found in each file, keyed by the file's sha256.

``index`` reads and hashes every file on every run; with a store it decodes only the files whose
bytes it has never inspected under the current *fingerprint* (``index.min_side``, Pillow's pixel
limit, the Pillow, numpy and scipy versions, and the source of the modules that inspect a file).
A run killed mid-way resumes from what it had flushed, an unchanged folder is re-indexed at the
cost of reading and hashing it, and a changed file (other bytes, so another sha256) is always
inspected again: the key is the content, never the path or the modification time.

Layout (no pickle, append-only, safe with several writers):

    <store>/<fingerprint[:20]>/fingerprint.json     what the key space stands for
    <store>/<fingerprint[:20]>/<uuid>.parquet       one shard: a row per file (RECORD_COLUMNS)

A shard is written once, under a unique name, through a temporary file renamed into place
(:func:`clusterlens.core.io.atomic_path`): a reader sees whole shards or none, and two runs
sharing the folder never write the same file (the same file in two shards holds the same
record). Rows hold the inspected values (``reason`` empty) or the rejection (``reason``,
``detail``) of a file that was read.
"""
from __future__ import annotations

import hashlib
import json
import sys
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from clusterlens.core.io import atomic_path, open_key_space

VERSION = 1
#: the inspected values, in the order of a record tuple (as ``clusterlens.data.index`` builds it)
VALUE_COLUMNS = ["width", "height", "mode", "format", "n_frames", "bytes", "sha256",
                 "blurry_score", "dark_score", "light_score", "low_information_score",
                 "grayscale_score"]
RECORD_COLUMNS = ["reason", "detail", *VALUE_COLUMNS]
_INTS = ("width", "height", "n_frames", "bytes")
_STRS = ("mode", "format")
_MODULES = ("clusterlens.data.images", "clusterlens.data.quality", "clusterlens.data.index",
            "clusterlens.data.index_store")


def code_digest() -> str:
    """sha256 of the source of the modules that turn a file's bytes into its record."""
    h = hashlib.sha256()
    for name in _MODULES:
        __import__(name)
        h.update(Path(sys.modules[name].__file__).read_bytes())
    return h.hexdigest()


def store_spec(min_side: int, max_pixels: int | None) -> dict:
    """Everything a file's record depends on besides its bytes."""
    import PIL
    import scipy

    return {"version": VERSION, "min_side": int(min_side), "max_pixels": max_pixels,
            "pillow": PIL.__version__, "numpy": np.__version__, "scipy": scipy.__version__,
            "code": code_digest()}


class IndexStore:
    """The records of one key space: files by sha256, under the fingerprint of ``spec``.

    Parameters
    ----------
    root : str or PathLike
        The store folder (one sub-folder per key space).
    spec : dict
        :func:`store_spec` (JSON-serialisable).
    """

    def __init__(self, root, spec: dict):
        self.key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
        self.dir = Path(root) / self.key[:20]
        self.spec = spec

    def shards(self) -> list[Path]:
        """The complete shards, sorted by name (temporary files start with ``.``)."""
        if not self.dir.is_dir():
            return []
        return sorted(p for p in self.dir.glob("*.parquet") if not p.name.startswith("."))

    def load(self) -> pd.DataFrame:
        """Every record, one per sha256 (the first shard's, in name order)."""
        frames = [pd.read_parquet(p) for p in self.shards()]
        if not frames:
            return pd.DataFrame(columns=RECORD_COLUMNS)
        records = pd.concat(frames, ignore_index=True)
        return records.drop_duplicates("sha256").reset_index(drop=True)

    def put(self, records: list[tuple]) -> Path | None:
        """Append a shard of ``(reason, detail, *values)`` rows (``RECORD_COLUMNS``); rejected
        files carry zeros, empty strings and NaN scores. Returns the shard, None when empty."""
        if not records:
            return None
        df = pd.DataFrame(records, columns=RECORD_COLUMNS)
        for col in _INTS:
            df[col] = df[col].astype("int64")
        for col in VALUE_COLUMNS[7:]:
            df[col] = df[col].astype("float64")
        open_key_space(self.dir, self.key, self.spec)
        shard = self.dir / f"{uuid.uuid4().hex}.parquet"
        with atomic_path(shard) as tmp:
            df.to_parquet(tmp, index=False)
        return shard


def rows_of(records: pd.DataFrame) -> list[tuple]:
    """Records as ``(reason, detail, *values)`` tuples of Python values (ints, floats, str),
    exactly as :meth:`IndexStore.put` received them."""
    cols = [records[c].tolist() for c in RECORD_COLUMNS]
    return list(zip(*cols))
