"""The clustering grid's vocabulary: K values that follow the number of classes (``classes``,
``classes_x<f>``), the names of the grid points and where their files live.

Every K grid (``kmeans.k``, ``gmm.k``, ``nmf.k``, ``agglomerative.k``) holds integers >= 2 or
symbolic values that each grid stage resolves at run time from the number of classes C in the
index:

==================  ==========================================================================
``classes``         C
``classes_x<f>``    f x C rounded to an integer (halves up), at least 2; f > 0 is a decimal
                    number such as ``0.5``, ``1.5`` or ``2``
==================  ==========================================================================

So ``[classes_x0.5, classes, classes_x1.5, classes_x2]`` is ``[5, 10, 15, 20]`` for 10 classes
and ``[4, 7, 11, 14]`` for 7. A value is a plain word in a DVC stage name
(``kmeans@classes_x0.5``) and in a file name (``data/clusters/kmeans/kclasses_x0.5.npy``);
each point's JSON records the value (``grid_value``) and the K it resolved to (``k``). Values
that resolve to the same K are one grid point: :func:`resolve_grid` keeps the first.

Every grid point of a method writes ``<clusters_dir>/<method>/<point>.npy`` (int64 labels in
index row order, -1 for noise) and ``<point>.json`` (its metrics). Agglomerative points
``<linkage>_k<K>`` sit in one folder per linkage, beside the tree (``tree.npy``) and, on the
two-step route, every point's K-Means cell (``cells.npy``).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

K_METHODS = ("kmeans", "gmm", "nmf")  # one stage per K value; agglomerative cuts at every K

CLASSES = "classes"
_HOW = ("`classes` (the number of classes) or `classes_x<f>` (f times the number of classes, "
        "e.g. classes_x0.5, classes_x2)")
FORMS = f"integers >= 2, {_HOW}"  # what a K grid holds
FORM = f"an integer >= 2, {_HOW}"  # what one of its values is
_SYMBOLIC = re.compile(r"classes(?:_x(\d+(?:\.\d+)?))?")


def factor(value: Any) -> float | None:
    """The class-count factor of a grid value: ``f`` of ``classes_x<f>``, 1 for ``classes``,
    None for an integer K.

    Raises
    ------
    ValueError
        If ``value`` is neither an integer >= 2 nor a symbolic form (message ends in the value).
    """
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 2:
            raise ValueError(f"values must each be {FORM}, got {value!r}")
        return None
    match = _SYMBOLIC.fullmatch(value) if isinstance(value, str) else None
    f = (1.0 if match.group(1) is None else float(match.group(1))) if match else 0.0
    if f <= 0:
        raise ValueError(f"values must each be {FORM}, got {value!r}")
    return f


def check_k_grid(value: Any) -> list:
    """A K grid as params give it: a list of integers >= 2 and symbolic values (may be empty).

    Raises
    ------
    ValueError
        ``must be a list of ..., got <value>``, listing the accepted forms.
    """
    if isinstance(value, list):
        try:
            for v in value:
                factor(v)
            return value
        except ValueError:
            pass
    raise ValueError(f"must be a list of {FORMS}, got {value!r}")


def parse_k_value(value: int | str) -> int | str:
    """A grid value as params hold it, from the command line's text (``"10"`` -> 10,
    ``"classes_x1.5"`` unchanged) or as it is.

    Raises
    ------
    ValueError
        If it is neither an integer >= 2 nor a symbolic form.
    """
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    factor(value)
    return value


def resolve_k(value: int | str, n_classes: int) -> int:
    """The K of one grid value for ``n_classes`` classes.

    Parameters
    ----------
    value : int or str
        An integer K, ``classes`` or ``classes_x<f>``.
    n_classes : int
        The number of classes in the index (>= 1).

    Returns
    -------
    int
        ``value`` itself, or ``max(2, round(f * n_classes))`` with halves rounded up.
    """
    f = factor(value)
    if f is None:
        return int(value)
    return max(2, math.floor(f * n_classes + 0.5))


@dataclass(frozen=True)
class GridK:
    """One value of a K grid and the K it resolves to.

    Attributes
    ----------
    value : int or str
        As in params.yaml.
    k : int
        The resolved K.
    same_as : int, str or None
        The earlier value of the grid that resolves to the same K (this one is then not a grid
        point of its own), else None.
    """
    value: int | str
    k: int
    same_as: int | str | None = None


def resolve_grid(values: list, n_classes: int) -> list[GridK]:
    """Every value of a K grid with its K, in params order; a value whose K an earlier value
    already has is marked ``same_as`` that value (repeated values are listed once)."""
    first: dict[int, int | str] = {}
    out = []
    for v in dict.fromkeys(values):
        k = resolve_k(v, n_classes)
        out.append(GridK(v, k, first.get(k)))
        first.setdefault(k, v)
    return out


def n_classes(labels) -> int:
    """The number of classes among the index's labels (``0..C-1``), an array or a list."""
    import numpy as np  # here: the config models import this module, and need no numpy

    return int(len(np.unique(np.asarray(labels))))


# --------------------------------------------------------------------------- points and files
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
