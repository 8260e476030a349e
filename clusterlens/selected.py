"""The selected clustering model: its name and its labels, from the aggregate's results.

The ``clustering`` aggregate records the chosen grid point under ``selected`` (``method``,
``point``, ``metric``, ``value``, ``reason``); its labels are the point's ``.npy`` file in the
grid layout of :mod:`clusterlens.points`, named by the point's ``grid_value`` where it has one
(``kmeans/kclasses.npy`` for the point ``k10`` of the grid value ``classes``). Kept apart from
:mod:`clusterlens.points` so that the stages reading the selection do not share a code
dependency with the clustering grid.
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
    path = labels_path(clustering, sel["method"], sel["point"], clusters_dir)
    if not path.is_file():
        raise DataError(f"{path} (the selected model's labels) is missing: run `dvc repro`")
    return f"{sel['method']}/{sel['point']}", load_npy(path)


def labels_path(clustering: dict, method: str, point: str, clusters_dir: str | os.PathLike):
    """The labels file of a point of the aggregate's results.

    Parameters
    ----------
    clustering : dict
        The aggregate's results (``method -> point -> metrics``, each K grid point with the
        ``grid_value`` its files are named by).
    method, point : str
        e.g. ``kmeans`` and ``k10``.
    clusters_dir : str or PathLike

    Returns
    -------
    Path
        ``<clusters_dir>/kmeans/kclasses.npy`` for a point of grid value ``classes``, else the
        point's own file (``<clusters_dir>/kmeans/k10.npy``).
    """
    value = ((clustering.get(method) or {}).get(point) or {}).get("grid_value")
    if value is not None:
        head = point.split("_", 1)[0] + "_" if method == "agglomerative" else ""
        point = f"{head}k{value}"
    return point_path(method, point, clusters_dir, ".npy")
