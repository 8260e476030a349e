"""Names and file layout of the clustering grid points.

Every grid point of a method writes ``<clusters_dir>/<method>/<point>.npy`` (int64 labels in
index row order, -1 for noise) and ``<point>.json`` (its metrics). Agglomerative points
``<linkage>_k<K>`` sit in one folder per linkage, beside the tree (``tree.npy``) and, on the
two-step route, every point's K-Means cell (``cells.npy``).
"""
from __future__ import annotations

from pathlib import Path

METHODS = ("kmeans", "agglomerative", "gmm", "dbscan", "hdbscan", "nmf")
DENSITY = ("dbscan", "hdbscan")
_PREFIX = {"kmeans": "k", "gmm": "k", "nmf": "k", "dbscan": "eps_p", "hdbscan": "mcs",
           "agglomerative": ""}


def point_name(method: str, value) -> str:
    """The name of a grid point, e.g. ``k10``, ``eps_p25``, ``mcs15``.

    Parameters
    ----------
    method : str
        One of :data:`METHODS`.
    value : int, float or str
        The point's grid value (numbers are written with ``:g``).

    Returns
    -------
    str
    """
    prefix = _PREFIX[method]
    return f"{prefix}{value:g}" if isinstance(value, (int, float)) else f"{prefix}{value}"


def point_path(method: str, point: str, clusters_dir, suffix: str = ".json") -> Path:
    """Where a grid point's file lives.

    Parameters
    ----------
    method : str
        One of :data:`METHODS`.
    point : str
        The point's name (:func:`point_name`; agglomerative: ``<linkage>_k<K>``).
    clusters_dir : str or PathLike
        The folder of every method's points.
    suffix : str
        ``.json`` (metrics) or ``.npy`` (labels).

    Returns
    -------
    Path
        e.g. ``<clusters_dir>/kmeans/k10.json``, ``<clusters_dir>/agglomerative/ward/k10.npy``.
    """
    if method == "agglomerative":
        linkage, k = point.split("_", 1)  # linkages hold no "_"; K values may (classes_x2)
        return Path(clusters_dir) / method / linkage / f"{k}{suffix}"
    return Path(clusters_dir) / method / f"{point}{suffix}"
