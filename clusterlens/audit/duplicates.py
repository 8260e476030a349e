"""Near-duplicate images: candidates from several signals, each verified on the pixels.

1. **Candidates.** Pairs whose perceptual hashes (or one's hash and the other's mirror hash)
   are within ``hash_distance`` bits (:mod:`clusterlens.audit.hashes`: resized, re-encoded and
   mirrored copies), the ``candidates`` nearest feature neighbours of every image (crops, and
   copies whose hash moved), and every pair of files with the same bytes.
   An image takes part in at most ``max_pairs_per_image`` compared pairs (:func:`cap_pairs`:
   blank or near-identical images all propose the same few partners).
2. **Verification.** Each candidate pair is aligned and compared
   (:func:`clusterlens.audit.verification.match_images`). The working images and hashes are
   computed once per distinct file and kept on disk, by sha256
   (:class:`clusterlens.audit.pixels.PixelStore`), not in memory: :func:`stored_working_images`.
3. **Verdict** (:func:`classify`). A pair is a copy when the aligned pictures correlate at
   ``>= COPY_SIMILARITY``, at least ``COPY_AGREEMENT`` of the informative grid cells agree, at
   least ``MIN_INFORMATIVE`` cells are informative, the smaller picture covers at least
   ``MIN_COVERAGE`` of the larger, and the colours agree (chroma distance at most
   ``COPY_COLOUR``, or one picture gray). Its kind:

   - ``exact``: the same bytes;
   - ``mirror``: the pictures match once one is mirrored left-right;
   - ``crop``: one covers less than ``CROP_COVERAGE`` of the other;
   - ``resized``: the same picture at another size, encoding or colouring.

   A pair that is not a copy but agrees in at least ``SCENE_AGREEMENT`` of its cells (with
   the same informative-cell and coverage floors), or a copy in every respect but its colours,
   is ``same_scene``: two shots of one scene, such as a burst or a person photographed twice
   against the same wall. Users who dedupe a training set may drop them; users looking for
   copies may ignore them. Anything else is not reported.

**Groups** are the connected components of the copy pairs (``same_scene`` pairs do not join
groups).

Thresholds measured with ``benchmarks/bench_duplicates.py`` (planted copies: resized to 30-50%,
re-encoded at JPEG quality 60, cropped 2-10% a side, mirrored) on the 3,670 tf_flowers photos
and on Caltech-101 (9,145 photos, look-alikes such as airliners in side view and faces in front
of the same backdrop): see docs/audit.md.
"""
from __future__ import annotations

import contextlib
import functools
import multiprocessing as mp
import signal
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from clusterlens.audit.hashes import hash_pairs, phashes
from clusterlens.audit.neighbours import connected_groups
from clusterlens.audit.pixels import PixelStore, StoredImages
from clusterlens.audit.verification import Coarse, Match, match_images, working_pair

KINDS = ("exact", "resized", "crop", "mirror", "same_scene")
COPY_KINDS = KINDS[:4]
COPY_SIMILARITY = 0.9
COPY_AGREEMENT = 0.95
COPY_COLOUR = 20.0  # chroma distance (CIE a*b*, 97th percentile) above which a pair was recoloured
SCENE_AGREEMENT = 0.75
MIN_INFORMATIVE = 12
MIN_COVERAGE = 0.45
CROP_COVERAGE = 0.95
CACHED_IMAGES = 4096  # images whose working image and coarse views `verify` keeps (LRU)
HASH_K = 5  # nearest hashes looked at per image and mirror state
CHUNK = 512  # items per batch of work (threads, or the pairs sent to a worker process)
FLUSH = 8192  # files read per shard written to the pixel store (a killed run keeps them)
MAX_PAIRS_PER_IMAGE = 100  # compared pairs one image takes part in, at most (:func:`cap_pairs`)
IMAGE_COLUMNS = ["is_near_duplicate", "near_duplicate_kind", "near_duplicate_score",
                 "is_same_scene", "same_scene_score"]
PAIR_COLUMNS = ["row_a", "row_b", "path_a", "path_b", "class_a", "class_b", "kind", "score",
                "similarity", "coverage", "label_conflict", "group"]


@dataclass(frozen=True)
class Candidates:
    """Candidate pairs ``(row_a < row_b)``, sorted, with the signals that proposed each.

    Attributes
    ----------
    pairs : ndarray of int64, shape (P, 2)
    by_hash, by_features, by_bytes : ndarray of bool, shape (P,)
    """

    pairs: np.ndarray
    by_hash: np.ndarray
    by_features: np.ndarray
    by_bytes: np.ndarray

    def __len__(self) -> int:
        return len(self.pairs)


@dataclass(frozen=True)
class NearDuplicates:
    """Verified pairs, sorted by kind (in :data:`KINDS` order), then score (highest first).

    Attributes
    ----------
    row_a, row_b : ndarray of int64, shape (P,)
    kind : ndarray of str, shape (P,)
        One of :data:`KINDS`.
    score : ndarray of float64, shape (P,)
        Share of informative cells that agree (1.0 for ``exact``).
    similarity : ndarray of float64, shape (P,)
        Correlation of the aligned pictures (1.0 for ``exact``).
    coverage : ndarray of float64, shape (P,)
        Share of the larger picture the smaller covers (1.0 for ``exact``).
    """

    row_a: np.ndarray
    row_b: np.ndarray
    kind: np.ndarray
    score: np.ndarray
    similarity: np.ndarray
    coverage: np.ndarray

    def __len__(self) -> int:
        return len(self.row_a)

    def copies(self) -> np.ndarray:
        """Boolean mask of the copy pairs (every kind but ``same_scene``)."""
        return np.isin(self.kind, COPY_KINDS)

    def without_kept(self, kept: np.ndarray) -> NearDuplicates:
        """The pairs left when those whose two images the user marked ``keep`` are dropped."""
        kept = np.asarray(kept, dtype=bool)
        stay = ~(kept[self.row_a] & kept[self.row_b])
        return NearDuplicates(*(getattr(self, f.name)[stay] for f in fields(self)))


def _threaded_chunks(fn: Callable, items: Sequence, *, workers: int, desc: str, unit: str):
    """Yield ``[fn(x) for x in chunk]`` for each chunk of :data:`CHUNK` items, computed on
    ``workers`` threads, in order, with one progress bar."""
    with ThreadPoolExecutor(max_workers=workers) as pool, tqdm(
            total=len(items), desc=desc, unit=unit, mininterval=1.0) as bar:
        for start in range(0, len(items), CHUNK):
            out = list(pool.map(fn, items[start:start + CHUNK]))
            bar.update(len(out))
            yield out


_WORK: dict = {}  # what a forked worker computes: ``make`` (set before the fork) and its ``fn``


def _init_worker() -> None:
    """A worker process: Ctrl-C is the parent's to handle (it ends the pool)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _WORK["fn"] = _WORK["make"]()


def _work_chunk(items: Sequence) -> list:
    return list(map(_WORK["fn"], items))


def _in_chunks(make: Callable[[], Callable], items: Sequence, *, workers: int, desc: str,
               unit: str):
    """Yield ``[fn(x) for x in chunk]`` for each chunk of :data:`CHUNK` items, in order, with one
    progress bar, where ``fn = make()``: computed in ``workers`` forked processes where the
    platform forks (decoding and comparing are partly Python, so threads share one core), else
    in ``workers`` threads. Each process calls ``make`` once, so ``fn`` may keep a cache."""
    if workers > 1 and "fork" in mp.get_all_start_methods() and len(items) > CHUNK:
        _WORK["make"] = make
        try:
            chunks = [items[i:i + CHUNK] for i in range(0, len(items), CHUNK)]
            with mp.get_context("fork").Pool(workers, initializer=_init_worker) as pool, \
                    tqdm(total=len(items), desc=desc, unit=unit, mininterval=1.0) as bar:
                for chunk, out in zip(chunks, pool.imap(_work_chunk, chunks)):
                    bar.update(len(chunk))
                    yield out
        finally:
            _WORK.clear()
        return
    yield from _threaded_chunks(make(), items, workers=workers, desc=desc, unit=unit)


def _reader(root: Path) -> Callable:
    def load(rel: str):
        with Image.open(root / rel) as img:
            img.seek(0)
            pair = working_pair(img)
        return pair, phashes(pair[0])
    return load


def working_images(root: str | Path, paths: Sequence[str], *,
                   workers: int = 2) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray]:
    """Working images and perceptual hashes of ``root / path`` for every path, in order.

    Returns
    -------
    images : list of (ndarray, ndarray)
        :func:`clusterlens.audit.verification.working_pair` of each file: grayscale working
        image and colour thumbnail.
    hashes : ndarray of uint64, shape (N, 2)
        Hash and mirror hash (:func:`clusterlens.audit.hashes.phashes`).
    """
    done = [y for chunk in _in_chunks(functools.partial(_reader, Path(root)), list(paths),
                                      workers=workers, desc="near-duplicates: read",
                                      unit="img") for y in chunk]
    hashes = np.array([h for _, h in done], dtype=np.uint64).reshape(len(done), 2)
    return [p for p, _ in done], hashes


def stored_working_images(root: str | Path, paths: Sequence[str], sha256: Sequence[str], *,
                          store: str | Path, workers: int = 2,
                          flush: int = FLUSH) -> tuple[StoredImages, int]:
    """:func:`working_images` through a disk store (:class:`clusterlens.audit.pixels.PixelStore`):
    the files whose bytes (``sha256``, hex) are not stored yet are read (one file per distinct
    digest) and appended to the store a shard per ``flush`` files; every row is then read back
    from disk on demand.

    Returns
    -------
    images : StoredImages
        The working image and colour thumbnail of every row (and ``images.hashes``); close it
        when done.
    decoded : int
        Files read (the rest came from the store).
    """
    pixels = PixelStore(store)
    sha = np.asarray(list(sha256), dtype=object)
    located = pixels.locate(sha)
    missing = np.flatnonzero(located.shard < 0)
    todo = missing[~pd.Series(sha[missing]).duplicated().to_numpy()]  # one file per digest
    if len(todo):
        rels = np.asarray(paths, dtype=object)[todo]
        batch: list = []
        done = 0
        chunks = _in_chunks(functools.partial(_reader, Path(root)), list(rels),
                            workers=workers, desc="near-duplicates: read", unit="img")
        for chunk in chunks:
            batch.extend(chunk)
            if len(batch) >= flush:
                pixels.put(sha[todo[done:done + len(batch)]], [p for p, _ in batch],
                           np.array([h for _, h in batch], dtype=np.uint64))
                done += len(batch)
                batch = []
        pixels.put(sha[todo[done:done + len(batch)]], [p for p, _ in batch],
                   np.array([h for _, h in batch], dtype=np.uint64).reshape(-1, 2))
        located = pixels.locate(sha)
    return StoredImages(located), len(todo)


def candidate_pairs(hashes: np.ndarray, neighbours: np.ndarray, sha256: Sequence[str], *,
                    hash_k: int, hash_distance: int, exact_max_n: int | None = None,
                    seed: int = 0) -> Candidates:
    """Every candidate pair and the signals that proposed it.

    Parameters
    ----------
    hashes : ndarray of uint64, shape (N, 2)
        Hash and mirror hash of every image.
    neighbours : ndarray of int64, shape (N, k)
        Nearest feature neighbours of every image (k may be 0).
    sha256 : sequence of str, length N
        Content hashes; files with equal bytes are always candidates.
    hash_k : int
        Nearest hashes looked at per image (and per mirror state).
    hash_distance : int
        Largest Hamming distance of a hash candidate, in bits of 64.
    exact_max_n, seed : int
        Above ``exact_max_n`` images the hashes are searched in an inverted file seeded by
        ``seed`` (:func:`clusterlens.audit.hashes.hash_pairs`); None: always exactly.

    Returns
    -------
    Candidates
    """
    n = len(hashes)
    by_hash = hash_pairs(hashes[:, 0], hashes[:, 1], k=hash_k, max_distance=hash_distance,
                         exact_max_n=exact_max_n, seed=seed)
    rows = np.repeat(np.arange(n, dtype=np.int64), neighbours.shape[1])
    by_feat = np.stack([rows, neighbours.ravel().astype(np.int64)], axis=1)
    by_feat = by_feat[by_feat[:, 0] != by_feat[:, 1]]
    by_feat.sort(axis=1)
    codes = pd.factorize(pd.Series(list(sha256)))[0]
    order = np.argsort(codes, kind="stable")
    same = codes[order][1:] == codes[order][:-1]  # consecutive equal bytes: a chain per group
    by_bytes = np.sort(np.stack([order[:-1][same], order[1:][same]], axis=1), axis=1)
    parts = [p.reshape(-1, 2) for p in (by_hash, by_feat, by_bytes)]
    keys = [p[:, 0] * n + p[:, 1] for p in parts]   # row-major order of (row_a, row_b)
    key = np.unique(np.concatenate(keys))
    allp = np.stack([key // n, key % n], axis=1) if n else np.empty((0, 2), dtype=np.int64)
    flags = [np.isin(key, k) for k in keys]
    return Candidates(pairs=allp, by_hash=flags[0], by_features=flags[1], by_bytes=flags[2])


def cap_pairs(candidates: Candidates, max_per_image: int) -> tuple[Candidates, dict]:
    """At most ``max_per_image`` compared pairs per image.

    Each image proposes a bounded number of pairs (its ``candidates`` feature neighbours, its
    ``HASH_K`` nearest hashes as it is and mirrored, its neighbours in the chain of equal
    bytes), but many images can propose the same one: among 10^4 blank images, every one's
    nearest hashes are the same few blank rows, each then compared with all the others. A pair
    to compare (``by_bytes`` pairs are not compared and always stay) is kept when it is among
    the ``max_per_image`` pairs of each of its two images with the lowest-numbered other image.
    Below the cap nothing changes.

    Returns
    -------
    Candidates
        The pairs kept.
    dict
        ``max_pairs_per_image``, ``pairs_dropped`` and ``images_capped`` (images that had more).
    """
    compared = np.flatnonzero(~candidates.by_bytes)
    pairs = candidates.pairs[compared]
    ends = pairs.T.ravel()                                    # row_a of each, then row_b
    partner = pairs[:, ::-1].T.ravel()
    order = np.lexsort((partner, ends))                       # per image, by partner row
    sorted_ends = ends[order]
    start = np.searchsorted(sorted_ends, sorted_ends, side="left")
    rank = np.empty(len(ends), dtype=np.int64)
    rank[order] = np.arange(len(ends)) - start               # place in its image's list
    rank = rank.reshape(2, -1).max(axis=0)
    degree = np.bincount(ends, minlength=1)
    drop = compared[rank >= max_per_image]
    info = {"max_pairs_per_image": int(max_per_image), "pairs_dropped": int(len(drop)),
            "images_capped": int((degree > max_per_image).sum())}
    if not len(drop):
        return candidates, info
    keep = np.ones(len(candidates), dtype=bool)
    keep[drop] = False
    return Candidates(*(getattr(candidates, f.name)[keep] for f in fields(candidates))), info


def candidates_text(candidates: Candidates, n: int, how: dict, store) -> str:
    """One log line: the candidate pairs per signal, and the files read for the store
    (``how``: :func:`find_near_duplicates`' record)."""
    decoded, hash_search = how["decoded"], how["hash_search"]
    return (f"{len(candidates)} candidate pairs ({len(candidates) / max(n, 1):.1f} per image): "
            f"{candidates.by_hash.sum()} by hash ({hash_search} search; neighbours.exact_max_n), "
            f"{candidates.by_features.sum()} by features, "
            f"{candidates.by_bytes.sum()} same bytes; {decoded} files read, the rest from the "
            f"pixel store ({store or 'temporary'})")


def cap_text(cap: dict) -> str:
    """One log line of :func:`cap_pairs`' record."""
    if not cap["pairs_dropped"]:
        return (f"no image in more than neighbours.max_pairs_per_image "
                f"({cap['max_pairs_per_image']}) candidate pairs")
    return (f"{cap['images_capped']} images were in more than neighbours.max_pairs_per_image "
            f"({cap['max_pairs_per_image']}) candidate pairs (e.g. blank or near-identical "
            f"images): {cap['pairs_dropped']} pairs beyond it not compared")


def classify(match: Match | None) -> str:
    """The kind of a verified pair (:data:`KINDS`), or ``""`` when it is not reported."""
    if match is None or match.informative < MIN_INFORMATIVE or match.coverage < MIN_COVERAGE:
        return ""
    recoloured = bool(match.colour > COPY_COLOUR)  # NaN (a gray picture): colour not compared
    if match.similarity >= COPY_SIMILARITY and match.agreement >= COPY_AGREEMENT:
        if recoloured:
            return "same_scene"
        if match.mirrored:
            return "mirror"
        return "crop" if match.coverage < CROP_COVERAGE else "resized"
    return "same_scene" if match.agreement >= SCENE_AGREEMENT else ""


def _comparer(images, pairs: np.ndarray) -> Callable[[int], tuple | None]:
    """``compare(i)``: the reported row of candidate pair ``i``, or None; each image's working
    image, colours and coarse views kept for the last :data:`CACHED_IMAGES` images used."""
    @functools.lru_cache(maxsize=CACHED_IMAGES)
    def image(row: int) -> tuple[np.ndarray, np.ndarray, Coarse]:
        gray, colour = images[row]
        return gray, colour, Coarse(gray)

    def compare(i: int) -> tuple | None:
        (a, ca, va), (b, cb, vb) = image(pairs[i, 0]), image(pairs[i, 1])
        m = match_images(a, b, (ca, cb), coarse_views=(va, vb))
        kind = classify(m)
        return (*pairs[i], kind, m.agreement, m.similarity, m.coverage) if kind else None
    return compare


def _compared_rows(images, pairs: np.ndarray, todo: np.ndarray, workers: int):
    """Yield the reported rows of each chunk of pairs ``todo``, in order (:func:`_in_chunks`)."""
    for out in _in_chunks(functools.partial(_comparer, images, pairs), todo, workers=workers,
                          desc="near-duplicates: verify", unit="pair"):
        yield [r for r in out if r is not None]


def verify(images: Sequence[tuple[np.ndarray, np.ndarray]], candidates: Candidates, *,
           workers: int = 2) -> NearDuplicates:
    """Verify every candidate pair and keep those with a kind.

    Parameters
    ----------
    images : sequence of (ndarray, ndarray)
        Working image and colour thumbnail of every row (:func:`working_images`, or read from
        disk on each access: :func:`stored_working_images`).
    candidates : Candidates
        From :func:`candidate_pairs`; pairs with equal bytes are ``exact`` without comparison.
    workers : int
        Processes that compare pairs (forked; threads where the platform cannot fork). The
        result does not depend on it.

    Returns
    -------
    NearDuplicates
    """
    todo = np.flatnonzero(~candidates.by_bytes)
    rows = [(*candidates.pairs[i], "exact", 1.0, 1.0, 1.0)
            for i in np.flatnonzero(candidates.by_bytes)]
    for out in _compared_rows(images, candidates.pairs, todo, workers):
        rows.extend(out)   # only the reported pairs are held
    df = pd.DataFrame(rows, columns=["a", "b", "kind", "score", "similarity", "coverage"])
    df["order"] = df["kind"].map({k: i for i, k in enumerate(KINDS)})
    df = df.sort_values(["order", "score", "a", "b"], ascending=[True, False, True, True],
                        kind="stable")
    return NearDuplicates(row_a=df["a"].to_numpy(np.int64), row_b=df["b"].to_numpy(np.int64),
                          kind=df["kind"].to_numpy(str), score=df["score"].to_numpy(float),
                          similarity=df["similarity"].to_numpy(float),
                          coverage=df["coverage"].to_numpy(float))


def find_near_duplicates(root: str | Path, paths: Sequence[str], sha256: Sequence[str],
                         neighbours: np.ndarray, *, kept: np.ndarray, hash_distance: int,
                         store: str | Path | None = None, workers: int = 2,
                         max_pairs_per_image: int = MAX_PAIRS_PER_IMAGE,
                         exact_max_n: int | None = None, seed: int = 0
                         ) -> tuple[NearDuplicates, Candidates, dict]:
    """The whole step: working images and hashes through the pixel store ``store``
    (:func:`stored_working_images`; None: a temporary folder, removed at the end), the
    candidate pairs (:func:`candidate_pairs`: hashes, the ``neighbours`` rows, equal
    ``sha256``; the hashes searched exactly up to ``exact_max_n`` images) capped per image
    (:func:`cap_pairs`), each verified (:func:`verify`), and the pairs of two ``kept`` images
    dropped (:meth:`NearDuplicates.without_kept`).

    Returns
    -------
    NearDuplicates, Candidates
        The pairs found; the candidates compared (after the cap).
    dict
        ``decoded`` (files read; the others came from the store), ``hash_search`` (``exact`` or
        ``inverted_file``) and ``pair_cap`` (:func:`cap_pairs`' record).
    """
    with contextlib.ExitStack() as stack:
        if store is None:
            store = stack.enter_context(tempfile.TemporaryDirectory(prefix="clusterlens-pixels-"))
        images, decoded = stored_working_images(root, paths, sha256, store=store,
                                                workers=workers)
        stack.enter_context(images)
        candidates = candidate_pairs(images.hashes, neighbours, sha256, hash_k=HASH_K,
                                     hash_distance=hash_distance, exact_max_n=exact_max_n,
                                     seed=seed)
        candidates, cap = cap_pairs(candidates, max_pairs_per_image)
        found = verify(images, candidates, workers=workers)
    ivf = exact_max_n is not None and len(paths) > exact_max_n
    return found.without_kept(kept), candidates, {
        "decoded": int(decoded), "hash_search": "inverted_file" if ivf else "exact",
        "pair_cap": cap}


def copy_groups(n: int, found: NearDuplicates) -> np.ndarray:
    """Group of every row: connected components of the copy pairs, numbered 0, 1, ... in the
    order of their first row; -1 for a row in no copy pair. Returns int64, shape (n,)."""
    keep = found.copies()
    return connected_groups(n, found.row_a[keep], found.row_b[keep])


def image_columns(n: int, found: NearDuplicates) -> pd.DataFrame:
    """Per image (n rows, in row order), :data:`IMAGE_COLUMNS`: whether it is in a copy pair,
    the kind and score of its best copy pair (``""`` and 0.0 when none), and likewise for
    ``same_scene`` pairs."""
    out = pd.DataFrame({"is_near_duplicate": np.zeros(n, bool), "near_duplicate_kind": "",
                        "near_duplicate_score": 0.0, "is_same_scene": np.zeros(n, bool),
                        "same_scene_score": 0.0})
    copies = found.copies()
    for mask, flag, kind_col, score_col in ((copies, "is_near_duplicate", "near_duplicate_kind",
                                             "near_duplicate_score"),
                                            (~copies, "is_same_scene", None, "same_scene_score")):
        rows = np.concatenate([found.row_a[mask], found.row_b[mask]])
        scores = np.concatenate([found.score[mask], found.score[mask]])
        kinds = np.concatenate([found.kind[mask], found.kind[mask]])
        order = np.lexsort((-scores, rows))          # per row, its best pair first
        rows, scores, kinds = rows[order], scores[order], kinds[order]
        first = np.ones(len(rows), bool)
        first[1:] = rows[1:] != rows[:-1]
        out.loc[rows[first], flag] = True
        out.loc[rows[first], score_col] = np.round(scores[first], 4)
        if kind_col:
            out.loc[rows[first], kind_col] = kinds[first]
    return out[IMAGE_COLUMNS]


def pairs_table(found: NearDuplicates, paths, classes, groups: np.ndarray) -> pd.DataFrame:
    """One row per reported pair with :data:`PAIR_COLUMNS`; ``label_conflict`` when the two
    images' classes differ; ``group`` is the copy group (-1 for ``same_scene`` pairs outside
    any)."""
    paths, classes = np.asarray(paths, dtype=object), np.asarray(classes, dtype=object)
    a, b = found.row_a, found.row_b
    return pd.DataFrame({
        "row_a": a, "row_b": b, "path_a": paths[a], "path_b": paths[b],
        "class_a": classes[a], "class_b": classes[b], "kind": found.kind,
        "score": np.round(found.score, 4), "similarity": np.round(found.similarity, 4),
        "coverage": np.round(found.coverage, 4), "label_conflict": classes[a] != classes[b],
        "group": np.where(found.copies(), groups[a], -1)}, columns=PAIR_COLUMNS)


def summary(pairs_df: pd.DataFrame, groups: np.ndarray) -> dict:
    """Counts: pairs per kind, copy groups, images in them, label conflicts among copies."""
    copies = pairs_df[pairs_df["kind"] != "same_scene"]
    out = {"duplicate_pairs": int(len(copies)),
           "duplicate_groups": int(groups.max() + 1) if len(groups) else 0,
           "images_in_groups": int((groups >= 0).sum()),
           "label_conflicts": int(copies["label_conflict"].sum()),
           "conflict_groups": int(copies.loc[copies["label_conflict"], "group"].nunique())}
    counts = pairs_df["kind"].value_counts()
    out.update({f"pairs_{k}": int(counts.get(k, 0)) for k in KINDS})
    return out
