"""A persistent per-image store of working images and perceptual hashes, keyed by sha256.

The near-duplicate verification (:mod:`clusterlens.audit.duplicates`) compares each candidate
pair on its working images (:func:`clusterlens.audit.verification.working_pair`: a grayscale
image of at most 128 px and a 48 px colour thumbnail) and finds hash candidates from two
perceptual hashes (:func:`clusterlens.audit.hashes.phashes`). They depend only on an image's
bytes, so they are computed once per distinct file and written to disk; the comparison reads
the two images of each pair back from disk (``os.pread``: the operating system's file cache
holds them, not the process), so the memory used stays a few numbers per image at any N.

Layout (no pickle, append-only, safe with several writers), like the feature store
(:mod:`clusterlens.features.store`):

    <store>/<fingerprint[:20]>/fingerprint.json     what the key space stands for
    <store>/<fingerprint[:20]>/<shard>.pix.bin      working images and thumbnails, back to back
    <store>/<fingerprint[:20]>/<shard>.meta.npy     n x 7 int64: offset, gray h, w, thumbnail
                                                    h, w, hash, mirror hash (uint64 bits)
    <store>/<fingerprint[:20]>/<shard>.sha.npy      n x 32 uint8 sha256 digests (same rows)

The fingerprint covers the working sizes and the versions of Pillow, OpenCV and imagehash
(the libraries that compute the stored values). A shard is written once, under a unique name,
the ``.sha`` file last: a reader only sees complete shards, and a killed run keeps the shards
it had written.
"""
from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np

from clusterlens.core.io import atomic_path, open_key_space, save_npy
from clusterlens.features.store import digests, fingerprint

STORE_VERSION = 1
META_COLUMNS = 7


def store_spec() -> dict:
    """Everything the stored values depend on besides the image bytes."""
    import cv2
    import PIL

    from clusterlens.audit import verification as vf

    return {"kind": "working_pair", "store_version": STORE_VERSION, "work_side": vf.WORK_SIDE,
            "colour_side": vf.COLOUR_SIDE, "pillow": PIL.__version__,
            "opencv": cv2.__version__, "imagehash": version("imagehash")}


def _void(d: np.ndarray) -> np.ndarray:
    """(n, 32) uint8 digests as n sortable 32-byte scalars."""
    return np.ascontiguousarray(d).view(np.dtype((np.void, 32))).ravel()


@dataclass(frozen=True)
class Located:
    """Where the working images of some rows are: ``shard`` (index into ``files``, -1 when not
    stored) and ``meta`` (n x 7 int64, as in the shard files) per row."""

    files: list[Path]
    shard: np.ndarray
    meta: np.ndarray


class PixelStore:
    """The working images and hashes of one key space (:func:`store_spec`), by sha256.

    Parameters
    ----------
    root : str or PathLike
        The store folder (one sub-folder per key space).
    """

    def __init__(self, root: str | os.PathLike):
        self.spec = store_spec()
        self.key = fingerprint(self.spec)
        self.dir = Path(root) / self.key[:20]

    def _shards(self) -> list[str]:
        if not self.dir.is_dir():
            return []
        return sorted(p.name[:-len(".sha.npy")] for p in self.dir.glob("*.sha.npy")
                      if not p.name.startswith("."))

    def locate(self, shas) -> Located:
        """Find images by their hex sha256 digests (the first stored copy of each)."""
        names = self._shards()
        keys, where = [], []
        for i, name in enumerate(names):
            d = np.load(self.dir / f"{name}.sha.npy", allow_pickle=False)
            keys.append(_void(d))
            where.append(np.stack([np.full(len(d), i), np.arange(len(d))], axis=1))
        want = _void(digests(shas))
        shard = np.full(len(want), -1, dtype=np.int64)
        meta = np.zeros((len(want), META_COLUMNS), dtype=np.int64)
        files = [self.dir / f"{name}.pix.bin" for name in names]
        if not names or not len(want):
            return Located(files, shard, meta)
        keys_all, where_all = np.concatenate(keys), np.concatenate(where)
        order = np.argsort(keys_all, kind="stable")   # first copy of a digest first
        keys_all, where_all = keys_all[order], where_all[order]
        pos = np.minimum(np.searchsorted(keys_all, want), len(keys_all) - 1)
        hit = keys_all[pos] == want
        shard[hit] = where_all[pos[hit], 0]
        for i, name in enumerate(names):
            mine = np.flatnonzero(shard == i)
            if len(mine):
                m = np.load(self.dir / f"{name}.meta.npy", mmap_mode="r", allow_pickle=False)
                meta[mine] = m[where_all[pos[mine], 1]]
        return Located(files, shard, meta)

    def put(self, shas, pairs, hashes: np.ndarray) -> Path | None:
        """Append a shard: ``pairs`` (working image, colour thumbnail) and ``hashes`` (n x 2
        uint64) of the images with hex digests ``shas``; returns its data file (None when
        empty)."""
        if not len(pairs):
            return None
        d = digests(shas)
        if not len(d) == len(pairs) == len(hashes):
            raise ValueError(f"{len(d)} digests, {len(pairs)} images, {len(hashes)} hashes")
        open_key_space(self.dir, self.key, self.spec)
        meta = np.zeros((len(pairs), META_COLUMNS), dtype=np.int64)
        meta[:, 5:] = np.asarray(hashes, dtype=np.uint64).view(np.int64)
        offset = 0
        for i, (gray, thumb) in enumerate(pairs):
            meta[i, :5] = (offset, *gray.shape, *thumb.shape[:2])
            offset += gray.size + thumb.size
        shard = uuid.uuid4().hex
        data = self.dir / f"{shard}.pix.bin"
        with atomic_path(data) as tmp, open(tmp, "wb") as fh:
            for gray, thumb in pairs:
                fh.write(np.ascontiguousarray(gray, dtype=np.uint8).tobytes())
                fh.write(np.ascontiguousarray(thumb, dtype=np.uint8).tobytes())
        save_npy(self.dir / f"{shard}.meta.npy", meta)
        save_npy(self.dir / f"{shard}.sha.npy", d)   # the key file last marks it complete
        return data


class StoredImages:
    """Read-only sequence of (working image, colour thumbnail) per row, read from a
    :class:`PixelStore` on each access (thread-safe); ``hashes`` is (n, 2) uint64. Use as a
    context manager (or :meth:`close`) to release the files."""

    def __init__(self, located: Located):
        if (located.shard < 0).any():
            raise ValueError(f"{int((located.shard < 0).sum())} rows are not in the store")
        self._fds = [os.open(f, os.O_RDONLY) for f in located.files]
        self._shard = located.shard.astype(np.int32)
        self._meta = located.meta
        self.hashes = located.meta[:, 5:].view(np.uint64).copy()

    def __len__(self) -> int:
        return len(self._shard)

    def __getitem__(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        offset, gh, gw, th, tw = (int(v) for v in self._meta[row, :5])
        n = gh * gw
        buf = os.pread(self._fds[self._shard[row]], n + th * tw * 2, offset)
        a = np.frombuffer(buf, dtype=np.uint8)
        return a[:n].reshape(gh, gw), a[n:].reshape(th, tw, 2)

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []

    def __enter__(self) -> StoredImages:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
