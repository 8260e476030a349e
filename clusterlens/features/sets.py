"""The feature set the reduction, NMF and supervised-bound stages work on.

Four sets exist (see :mod:`clusterlens.features.fusion`): ``visual`` (the backbone features as
extracted), ``text`` (the caption embeddings), ``concat`` and ``weighted`` (two fusions of both).
The visual features are read from the extracted feature file itself; the other three from the
file the fusion step wrote, which for ``visual`` holds an N x 0 placeholder.

Above a size (``captions.max_n``, ``fusion.max_n``) the captions (when ``captions.sample`` is not
0) and the comparison of the sets run on the rows of :func:`comparison_rows`, a seeded sample
stratified by class.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from clusterlens.core.errors import DataError
from clusterlens.core.io import load_features
from clusterlens.core.sampling import sample_rows, stratified_rows

FEATURE_SETS = ("visual", "text", "concat", "weighted")
MIN_PER_CLASS = 10  # images per class in a comparison sample (K = its classes)


def comparison_rows(y, m: int | None, seed: int, *,
                    min_per_class: int = MIN_PER_CLASS) -> np.ndarray:
    """The rows the captions and the feature-set comparison use: every row when ``len(y) <= m``
    (or ``m`` is None), else a seeded sample of about ``m`` rows, stratified by class.

    When ``m`` cannot give every class ``min_per_class`` rows, a seeded subset of
    ``max(2, m // min_per_class)`` classes is kept first, so that the comparison at K = the
    sample's classes has clusters of several images (1,000 classes and ``m = 2000``: 200
    classes, 10 images each).

    Parameters
    ----------
    y : array-like of shape (N,)
        The class labels.
    m : int or None
        The most rows (None: all).
    seed : int
    min_per_class : int, default ``MIN_PER_CLASS``

    Returns
    -------
    ndarray of int64, sorted
    """
    y = np.asarray(y)
    n = len(y)
    if m is None or n <= m:
        return np.arange(n, dtype=np.int64)
    classes = np.unique(y)
    keep = max(2, m // min_per_class)
    if len(classes) > keep:
        chosen = classes[sample_rows(len(classes), keep, seed)]
        sub = np.flatnonzero(np.isin(y, chosen))
        return sub[stratified_rows(y[sub], m, seed, min_per_class=min_per_class)]
    return stratified_rows(y, m, seed, min_per_class=min_per_class)


def sample_route(y, max_n: int | None, seed: int,
                 sample: int | None = None) -> tuple[np.ndarray | None, dict]:
    """Above ``max_n`` rows, the rows of :func:`comparison_rows` (about ``sample`` of them, or
    ``max_n`` when ``sample`` is None; none when it is 0), and what the metrics record.

    Returns
    -------
    rows : ndarray of int64, or None
        None when ``len(y) <= max_n`` (or ``max_n`` is None): every row, no sample.
    route : dict
        ``{}`` without a sample; ``route: "off"`` with ``images_total`` and ``max_n`` when
        ``sample`` is 0 (``rows`` is then empty); else ``route: "sample"``, ``sample`` (rows
        kept), ``images_total`` and ``max_n``.
    """
    n = len(y)
    if max_n is None or n <= max_n:
        return None, {}
    if sample == 0:
        return np.zeros(0, dtype=np.int64), {"route": "off", "images_total": int(n),
                                             "max_n": int(max_n)}
    rows = comparison_rows(y, max_n if sample is None else sample, seed)
    return rows, {"route": "sample", "sample": int(len(rows)), "images_total": int(n),
                  "max_n": int(max_n)}


def comparison_plan(y, n_text: int, max_n: int | None, captions_max_n: int | None,
                    seed: int, captions_sample: int | None = None
                    ) -> tuple[np.ndarray | None, np.ndarray | None, dict]:
    """The rows the feature-set comparison uses, and where their text features are.

    With a text feature per image, the rows of :func:`sample_route` (``max_n``); with the
    text features of the captions' sample (``captions_max_n``, ``captions_sample``, ``n_text``
    rows), those rows, sampled again by :func:`sample_route` when they are more than ``max_n``.

    Parameters
    ----------
    y : array-like of shape (N,)
        The class labels of every image.
    n_text : int
        The rows of the text features (N, or the captions' sample).
    max_n, captions_max_n : int or None
        ``fusion.max_n`` and ``captions.max_n``.
    seed : int
    captions_sample : int or None
        ``captions.sample``: the size of the captions' sample (None: ``captions_max_n``).

    Returns
    -------
    rows : ndarray of int64, or None
        Index rows compared (None: every image).
    text_rows : ndarray of int64, or None
        Their rows in the text features (None: all).
    route : dict
        ``{}`` when every image is compared, else ``route: "sample"``, ``sample``,
        ``images_total``, ``max_n`` and, for the captions' sample, ``captions_sample``.

    Raises
    ------
    DataError
        If the text features have neither N rows nor the captions' sample's.
    """
    y = np.asarray(y)
    n = len(y)
    if n_text == n:
        rows, route = sample_route(y, max_n, seed)
        return rows, rows, route
    captioned, _ = sample_route(y, captions_max_n, seed, captions_sample)
    if captioned is None or len(captioned) != n_text:
        raise DataError(f"the text features have {n_text} rows: neither the {n} images nor the "
                        f"captions' sample (captions.max_n = {captions_max_n}); re-run "
                        "`dvc repro captions`")
    sub, _ = sample_route(y[captioned], max_n, seed)
    sub = np.arange(n_text, dtype=np.int64) if sub is None else sub
    return captioned[sub], sub, {"route": "sample", "sample": int(len(sub)), "images_total": n,
                                 "max_n": max_n, "captions_sample": int(n_text)}


def load_feature_set(name: str, visual_path: str | os.PathLike,
                     fused_path: str | os.PathLike, *,
                     mmap_threshold_bytes: int | None = None) -> tuple[np.ndarray, str]:
    """Load the feature set ``name``.

    Parameters
    ----------
    name : {"visual", "text", "concat", "weighted"}
        The selected set.
    visual_path : str or PathLike
        The extracted visual features (``.npy``, N x D), returned for ``visual``.
    fused_path : str or PathLike
        The set the fusion step wrote (``.npy``), returned for every other name.
    mmap_threshold_bytes : int or None, default None
        A file larger than this is memory-mapped read-only instead of read
        (:func:`clusterlens.core.io.load_features`; ``large_n.mmap_threshold_mb``); None: never.

    Returns
    -------
    X : ndarray
        The features, as stored.
    description : str
        Where they came from, e.g. ``"data/fused.npy (fusion.set: concat)"``, for messages.

    Raises
    ------
    ValueError
        If ``name`` is not one of :data:`FEATURE_SETS`.
    DataError
        If the fused file is missing, or holds no features (it was written for ``visual``).
    """
    if name not in FEATURE_SETS:
        raise ValueError(f"unknown feature set {name!r}; choose from {', '.join(FEATURE_SETS)}")
    if name == "visual":
        return (load_features(visual_path, mmap_threshold_bytes),
                f"{visual_path} (fusion.set: visual)")
    if not Path(fused_path).is_file():
        raise DataError(f"{fused_path} is missing: run `dvc repro fusion` first")
    X = load_features(fused_path, mmap_threshold_bytes)
    if X.ndim != 2 or X.shape[1] == 0:
        raise DataError(f"{fused_path} holds no {name!r} features (it was written for another "
                        "fusion.set): run `dvc repro fusion`")
    return X, f"{fused_path} (fusion.set: {name})"
