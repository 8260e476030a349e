"""The feature set the reduction, NMF and supervised-bound stages work on.

Four sets exist (see :mod:`clusterlens.features.fusion`): ``visual`` (the backbone features as
extracted), ``text`` (the caption embeddings), ``concat`` and ``weighted`` (two fusions of both).
The visual features are read from the extracted feature file itself; the other three from the
file the fusion step wrote, which for ``visual`` holds an N x 0 placeholder.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from clusterlens.core.errors import DataError
from clusterlens.core.io import load_npy

FEATURE_SETS = ("visual", "text", "concat", "weighted")


def load_feature_set(name: str, visual_path: str | os.PathLike,
                     fused_path: str | os.PathLike) -> tuple[np.ndarray, str]:
    """Load the feature set ``name``.

    Parameters
    ----------
    name : {"visual", "text", "concat", "weighted"}
        The selected set.
    visual_path : str or PathLike
        The extracted visual features (``.npy``, N x D), returned for ``visual``.
    fused_path : str or PathLike
        The set the fusion step wrote (``.npy``), returned for every other name.

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
        return load_npy(visual_path), f"{visual_path} (fusion.set: visual)"
    if not Path(fused_path).is_file():
        raise DataError(f"{fused_path} is missing: run `dvc repro fusion` first")
    X = load_npy(fused_path)
    if X.ndim != 2 or X.shape[1] == 0:
        raise DataError(f"{fused_path} holds no {name!r} features (it was written for another "
                        "fusion.set): run `dvc repro fusion`")
    return X, f"{fused_path} (fusion.set: {name})"
