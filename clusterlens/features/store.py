"""A persistent per-image feature store keyed by (image sha256, extraction fingerprint).

``extract`` looks every indexed image up by the sha256 of its bytes and runs the network only on
the images it has never seen under the current *fingerprint* (backbone, weights, preprocessing,
precision, batch size, device type, library versions): adding images extracts only those,
renaming or moving files extracts nothing, and another backbone or image size lives in its own
key space (its own folder).

Layout (no pickle, append-only, safe with several writers):

    <store>/<fingerprint[:20]>/fingerprint.json       what the key space stands for
    <store>/<fingerprint[:20]>/<shard>.feat.npy       n x D float32 features
    <store>/<fingerprint[:20]>/<shard>.sha.npy        n x 32 uint8 sha256 digests (same rows)

A shard is written once, under a unique name, with an atomic rename of each file, the ``.sha``
file last: a reader only sees shards whose both files are complete, and two processes (e.g. the
ranks of a distributed run) never write the same file. Features are read back memory-mapped.
Extraction appends a shard every few batches (:data:`clusterlens.features.extraction.FLUSH_BATCHES` /
``FLUSH_SECONDS``), not one at the end, so a killed run keeps what it had flushed; adding a
shard never rewrites an existing file, so the writing cost stays linear in the images.

Exactness: features are computed in forward passes of exactly ``batch_size`` images (the last
batch zero-padded), which makes every image's features independent of which other images share
its batch (checked bitwise on CPU), so a store-assisted run writes the same bytes as a run from
scratch.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from pathlib import Path

import numpy as np

from clusterlens.core.io import open_key_space, save_npy

log = logging.getLogger("clusterlens.features.store")
VERSION = 1


def fingerprint(spec: dict) -> str:
    """sha256 of the canonical JSON of everything that determines an image's features."""
    return hashlib.sha256(json.dumps({"version": VERSION, **spec}, sort_keys=True)
                          .encode()).hexdigest()


def digests(shas) -> np.ndarray:
    """Hex sha256 strings -> (n, 32) uint8."""
    return np.frombuffer(b"".join(bytes.fromhex(s) for s in shas), dtype=np.uint8).reshape(-1, 32)


class FeatureStore:
    """The features of one key space: images by sha256, under the fingerprint of ``spec``.

    Parameters
    ----------
    root : str or PathLike
        The store folder (one sub-folder per key space).
    spec : dict
        Everything the features depend on besides the image bytes (JSON-serialisable).
    dim : int
        Feature dimension.
    """

    def __init__(self, root: str | os.PathLike, spec: dict, dim: int):
        self.key = fingerprint(spec)
        self.dir = Path(root) / self.key[:20]
        self.dim = dim
        self.spec = spec
        self._index: dict[bytes, tuple[Path, int]] | None = None

    # ----------------------------------------------------------------- reading
    def _shards(self) -> list[str]:
        if not self.dir.is_dir():
            return []
        return sorted(p.name[:-len(".sha.npy")] for p in self.dir.glob("*.sha.npy")
                      if not p.name.startswith("."))

    def _load_index(self) -> dict[bytes, tuple[Path, int]]:
        index: dict[bytes, tuple[Path, int]] = {}
        for shard in self._shards():
            sha = np.load(self.dir / f"{shard}.sha.npy", allow_pickle=False)
            feat_path = self.dir / f"{shard}.feat.npy"
            for row, d in enumerate(sha):
                index.setdefault(d.tobytes(), (feat_path, row))
        return index

    def __len__(self) -> int:
        if self._index is None:
            self._index = self._load_index()
        return len(self._index)

    def get(self, shas) -> tuple[np.ndarray, np.ndarray]:
        """Look images up by sha256.

        Parameters
        ----------
        shas : sequence of str
            Hex sha256 digests.

        Returns
        -------
        found : numpy.ndarray
            Boolean mask over ``shas``.
        features : numpy.ndarray
            (found.sum(), dim) float32: the found ones, in the order of ``shas``.
        """
        if self._index is None:
            self._index = self._load_index()
        keys = [d.tobytes() for d in digests(shas)]
        found = np.array([k in self._index for k in keys], dtype=bool)
        out = np.empty((int(found.sum()), self.dim), dtype=np.float32)
        by_shard: dict[Path, list[tuple[int, int]]] = {}
        j = 0
        for k, f in zip(keys, found):
            if f:
                path, row = self._index[k]
                by_shard.setdefault(path, []).append((j, row))
                j += 1
        for path, pairs in by_shard.items():
            feats = np.load(path, mmap_mode="r", allow_pickle=False)
            if feats.shape[1] != self.dim:
                raise ValueError(f"{path}: {feats.shape[1]}-D features in a {self.dim}-D store")
            dst, src = zip(*pairs)
            out[list(dst)] = feats[list(src)]
        return found, out

    # ----------------------------------------------------------------- writing
    def put(self, shas, feats: np.ndarray) -> Path | None:
        """Append a shard (written atomically, under a unique name).

        Parameters
        ----------
        shas : sequence of str
            Hex sha256 digests, one per row of ``feats``.
        feats : numpy.ndarray
            (n, dim) features.

        Returns
        -------
        Path or None
            The shard's features file; None when there is nothing to add.

        Raises
        ------
        ValueError
            When the rows and digests do not match or the dimension is not the store's.
        """
        feats = np.ascontiguousarray(feats, dtype=np.float32)
        if len(feats) == 0:
            return None
        d = digests(shas)
        if len(d) != len(feats) or feats.shape[1] != self.dim:
            raise ValueError(f"{len(d)} digests for {feats.shape} features (store is {self.dim}-D)")
        open_key_space(self.dir, self.key, self.spec)
        shard = f"{uuid.uuid4().hex}"
        feat_path = self.dir / f"{shard}.feat.npy"
        save_npy(feat_path, feats)                     # features first ...
        save_npy(self.dir / f"{shard}.sha.npy", d)      # ... the key file last marks it complete
        if self._index is not None:
            for row, k in enumerate(d):
                self._index.setdefault(k.tobytes(), (feat_path, row))
        return feat_path


def text_sha256(text: str) -> str:
    """The hex sha256 of a text's UTF-8 bytes (a text's key in a store)."""
    return hashlib.sha256(str(text).encode("utf-8")).hexdigest()


def cached_encoder(encode, root: str | os.PathLike, spec: dict, dim: int):
    """``encode`` (``texts -> (n, dim)`` float32) behind a store, keyed by each text's sha256.

    When the store holds every text, they are read back; otherwise every text is encoded (the
    batches a run without the store makes, so the same bytes) and the missing ones are added.

    Parameters
    ----------
    encode : callable
        ``encode(list of str) -> (n, dim)`` array.
    root : str or PathLike
        The store folder.
    spec : dict
        Everything the embeddings depend on besides the texts (the key space).
    dim : int
        The embedding dimension.

    Returns
    -------
    callable
        ``cached(texts) -> (n, dim)`` float32.
    """
    def cached(texts) -> np.ndarray:
        texts = [str(t) for t in texts]
        shas = [text_sha256(t) for t in texts]
        store = FeatureStore(root, spec, dim)
        found, feats = store.get(shas)
        if found.all():
            log.info("read %d text embeddings from the store %s", len(texts), store.dir)
            return feats
        out = np.asarray(encode(texts), dtype=np.float32)
        new = {s: row for row, (s, f) in enumerate(zip(shas, found)) if not f}  # once a text
        store.put(list(new), out[list(new.values())])
        return out

    return cached
