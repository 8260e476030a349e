"""Perceptual hashes: candidate copies that survive resizing, re-encoding and mirroring.

Every image gets two 64-bit DCT hashes (``imagehash.phash``, BSD-2-Clause): one of the picture
and one of its left-right mirror. A resized or re-encoded copy has a hash within a few bits of
its original's; a mirrored copy's hash is near the original's mirror hash. Crops move the hash
far, so crops come from the feature neighbours instead (:mod:`clusterlens.audit.duplicates`).

The search over hashes is faiss's exact binary k-nearest-neighbour search (Hamming distance on
packed bits), block by block over the queries; its work grows as N^2 (about 2 x 10^12 bit
comparisons at 10^6 images). Above ``exact_max_n`` images it searches a faiss binary inverted
file instead (:data:`IVF_PROBE` of about 4 sqrt(N) lists, k-means seeded): about
``N / lists * IVF_PROBE`` comparisons per query.
"""
from __future__ import annotations

import imagehash
import numpy as np
from PIL import Image

HASH_BITS = 64
IVF_PROBE = 16           # lists searched per query by the inverted-file search


def phashes(gray: np.ndarray) -> tuple[int, int]:
    """(hash, mirror hash) of a grayscale uint8 image, as unsigned 64-bit integers."""
    img = Image.fromarray(gray, mode="L")
    h = imagehash.phash(img)
    m = imagehash.phash(img.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    return _to_int(h), _to_int(m)


def _to_int(h: imagehash.ImageHash) -> int:
    return int(str(h), 16)  # imagehash's hex form: the bits in row order, most significant first


def _packed(values: np.ndarray) -> np.ndarray:
    """uint64 hashes as faiss's packed binary codes: (N, 8) uint8, big-endian."""
    return np.ascontiguousarray(np.asarray(values, dtype=">u8")).view(np.uint8).reshape(-1, 8)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bitwise Hamming distance between two arrays of uint64 hashes (elementwise), int64."""
    x = np.bitwise_xor(np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64))
    return np.unpackbits(x.astype(">u8").view(np.uint8).reshape(-1, 8), axis=1).sum(
        axis=1).astype(np.int64)


def hash_pairs(hashes: np.ndarray, mirror_hashes: np.ndarray, *, k: int,
               max_distance: int, block: int = 65536, exact_max_n: int | None = None,
               seed: int = 0) -> np.ndarray:
    """Pairs of images whose hashes (or one's hash and the other's mirror hash) are close.

    Parameters
    ----------
    hashes, mirror_hashes : ndarray of uint64, shape (N,)
        From :func:`phashes`.
    k : int
        Nearest hashes looked at per image and per kind of query (as it is, mirrored).
    max_distance : int
        Largest Hamming distance kept, in bits (of 64).
    block : int
        Query rows per faiss call.
    exact_max_n : int, optional
        Above this many images, the inverted-file search (:func:`binary_index`); None: always
        exact.
    seed : int
        Seeds the inverted file's k-means and its training sample.

    Returns
    -------
    ndarray of int64, shape (P, 2)
        Distinct pairs ``(i, j)``, ``i < j``, sorted.
    """
    n = len(hashes)
    if n < 2:
        return np.empty((0, 2), dtype=np.int64)
    k = min(k + 1, n)
    index = binary_index(_packed(hashes), ivf=exact_max_n is not None and n > exact_max_n,
                         seed=seed)
    found = []
    for queries in (hashes, mirror_hashes):
        codes = _packed(queries)
        for start in range(0, n, block):
            dist, idx = index.search(codes[start:start + block], k)
            rows = np.repeat(np.arange(start, start + len(dist), dtype=np.int64), k)
            keep = (dist.ravel() <= max_distance) & (idx.ravel() >= 0)
            found.append(np.stack([rows[keep], idx.ravel()[keep].astype(np.int64)], axis=1))
    pairs = np.concatenate(found)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    pairs.sort(axis=1)
    return np.unique(pairs, axis=0) if len(pairs) else np.empty((0, 2), dtype=np.int64)


def binary_index(codes: np.ndarray, *, ivf: bool, seed: int = 0):
    """A faiss index of packed 64-bit codes: exact (``IndexBinaryFlat``), or with ``ivf`` an
    inverted file of about 4 sqrt(N) lists (64 to 16,384; k-means on a seeded sample of 16
    codes per list), :data:`IVF_PROBE` of them searched per query."""
    import faiss

    n = len(codes)
    if not ivf:
        index = faiss.IndexBinaryFlat(HASH_BITS)
        index.add(codes)
        return index
    nlist = int(min(16_384, max(64, round(4 * np.sqrt(n))), max(1, n // 16)))
    index = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(HASH_BITS), HASH_BITS, nlist)
    index.cp.seed = int(seed)
    rows = np.sort(np.random.default_rng(seed).choice(n, size=min(n, 16 * nlist), replace=False))
    index.train(codes[rows])
    index.add(codes)
    index.nprobe = min(IVF_PROBE, nlist)
    return index
