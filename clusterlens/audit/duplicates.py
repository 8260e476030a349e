"""Near-duplicate images: candidates from several signals, each verified on the pixels.

1. **Candidates.** Pairs whose perceptual hashes (or one's hash and the other's mirror hash)
   are within ``hash_distance`` bits (:mod:`clusterlens.audit.hashes`: resized, re-encoded and
   mirrored copies), the ``candidates`` nearest feature neighbours of every image (crops, and
   copies whose hash moved), and every pair of files with the same bytes.
2. **Verification.** Each candidate pair is aligned and compared
   (:func:`clusterlens.audit.verification.match_images`).
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
from clusterlens.audit.verification import Match, match_images, working_pair

KINDS = ("exact", "resized", "crop", "mirror", "same_scene")
COPY_KINDS = KINDS[:4]
COPY_SIMILARITY = 0.9
COPY_AGREEMENT = 0.95
COPY_COLOUR = 20.0  # chroma distance (CIE a*b*, 97th percentile) above which a pair was recoloured
SCENE_AGREEMENT = 0.75
MIN_INFORMATIVE = 12
MIN_COVERAGE = 0.45
CROP_COVERAGE = 0.95
HASH_K = 5  # nearest hashes looked at per image and mirror state
CHUNK = 512  # items per batch of thread work: Ctrl-C waits for at most one batch
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


def _threaded(fn: Callable, items: Sequence, *, workers: int, desc: str, unit: str) -> list:
    """``[fn(x) for x in items]`` on ``workers`` threads, in order, with a progress bar."""
    out: list = []
    with ThreadPoolExecutor(max_workers=workers) as pool, tqdm(
            total=len(items), desc=desc, unit=unit, mininterval=1.0) as bar:
        for start in range(0, len(items), CHUNK):
            out.extend(pool.map(fn, items[start:start + CHUNK]))
            bar.update(min(CHUNK, len(items) - start))
    return out


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
    root = Path(root)

    def load(rel: str):
        with Image.open(root / rel) as img:
            img.seek(0)
            pair = working_pair(img)
        return pair, phashes(pair[0])

    done = _threaded(load, list(paths), workers=workers, desc="near-duplicates: read",
                     unit="img")
    hashes = np.array([h for _, h in done], dtype=np.uint64).reshape(len(done), 2)
    return [p for p, _ in done], hashes


def candidate_pairs(hashes: np.ndarray, neighbours: np.ndarray, sha256: Sequence[str], *,
                    hash_k: int, hash_distance: int) -> Candidates:
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

    Returns
    -------
    Candidates
    """
    n = len(hashes)
    by_hash = hash_pairs(hashes[:, 0], hashes[:, 1], k=hash_k, max_distance=hash_distance)
    rows = np.repeat(np.arange(n, dtype=np.int64), neighbours.shape[1])
    by_feat = np.stack([rows, neighbours.ravel().astype(np.int64)], axis=1)
    by_feat = by_feat[by_feat[:, 0] != by_feat[:, 1]]
    by_feat.sort(axis=1)
    codes = pd.factorize(pd.Series(list(sha256)))[0]
    order = np.argsort(codes, kind="stable")
    same = codes[order][1:] == codes[order][:-1]  # consecutive equal bytes: a chain per group
    by_bytes = np.sort(np.stack([order[:-1][same], order[1:][same]], axis=1), axis=1)
    parts = [by_hash, by_feat, by_bytes]
    allp = np.unique(np.concatenate([p.reshape(-1, 2) for p in parts]), axis=0)
    key = allp[:, 0] * n + allp[:, 1]
    flags = [np.isin(key, p[:, 0] * n + p[:, 1]) for p in parts]
    return Candidates(pairs=allp, by_hash=flags[0], by_features=flags[1], by_bytes=flags[2])


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


def verify(images: Sequence[tuple[np.ndarray, np.ndarray]], candidates: Candidates, *,
           workers: int = 2) -> NearDuplicates:
    """Verify every candidate pair and keep those with a kind.

    Parameters
    ----------
    images : sequence of (ndarray, ndarray)
        Working image and colour thumbnail of every row (:func:`working_images`).
    candidates : Candidates
        From :func:`candidate_pairs`; pairs with equal bytes are ``exact`` without comparison.
    workers : int
        Threads that compare pairs (OpenCV releases the GIL).

    Returns
    -------
    NearDuplicates
    """
    todo = np.flatnonzero(~candidates.by_bytes)
    def compare(i: int) -> Match | None:
        (a, ca), (b, cb) = images[candidates.pairs[i, 0]], images[candidates.pairs[i, 1]]
        return match_images(a, b, (ca, cb))

    matches = _threaded(compare, list(todo), workers=workers, desc="near-duplicates: verify",
                        unit="pair")
    rows = [(*candidates.pairs[i], "exact", 1.0, 1.0, 1.0)
            for i in np.flatnonzero(candidates.by_bytes)]
    for i, m in zip(todo, matches):
        kind = classify(m)
        if kind:
            rows.append((*candidates.pairs[i], kind, m.agreement, m.similarity, m.coverage))
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
                         workers: int = 2) -> tuple[NearDuplicates, Candidates]:
    """The whole step: working images and hashes (:func:`working_images`), the candidate pairs
    (:func:`candidate_pairs`: hashes, the ``neighbours`` rows, equal ``sha256``), each verified
    (:func:`verify`), and the pairs of two ``kept`` images dropped
    (:meth:`NearDuplicates.without_kept`). Returns the pairs found and the candidates."""
    images, hashes = working_images(root, paths, workers=workers)
    candidates = candidate_pairs(hashes, neighbours, sha256, hash_k=HASH_K,
                                 hash_distance=hash_distance)
    found = verify(images, candidates, workers=workers)
    return found.without_kept(kept), candidates


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
