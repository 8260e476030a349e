"""The selected clustering model: its name and its labels, from the aggregate's results.

The ``clustering`` aggregate records the chosen grid point under ``selected`` (``method``,
``point``, ``metric``, ``value``, ``reason``); its labels are the point's ``.npy`` file in the
grid layout of :mod:`clusterlens.points`. Kept apart from :mod:`clusterlens.points` so that the
stages reading the selection do not share a code dependency with the clustering grid.
"""
from __future__ import annotations

import os

import numpy as np

from clusterlens.errors import DataError
from clusterlens.io import load_npy
from clusterlens.points import point_path


def selected_labels(clustering: dict, clusters_dir: str | os.PathLike) -> tuple[str, np.ndarray]:
    """The selected model's name and labels.

    Parameters
    ----------
    clustering : dict
        The aggregate's results (with a ``selected`` entry holding ``method`` and ``point``).
    clusters_dir : str or PathLike
        The folder of every method's grid points.

    Returns
    -------
    name : str
        ``<method>/<point>``, e.g. ``kmeans/k10`` or ``agglomerative/ward_k10``.
    labels : ndarray of shape (n_images,)
        Cluster label of each image in index order (noise as -1).

    Raises
    ------
    DataError
        If there is no selection, or its labels file is missing.
    """
    sel = clustering.get("selected") or {}
    if "method" not in sel or "point" not in sel:
        raise DataError("the clustering results have no selected model: run "
                        "`dvc repro clustering`")
    path = point_path(sel["method"], sel["point"], clusters_dir, ".npy")
    if not path.is_file():
        raise DataError(f"{path} (the selected model's labels) is missing: run `dvc repro`")
    return f"{sel['method']}/{sel['point']}", load_npy(path)
