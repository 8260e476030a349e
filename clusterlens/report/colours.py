"""Colours shared by the static 2-D views and the report's explorer.

Classes take the colours of a fixed palette in sorted-name order. Each cluster takes the
colour of the class it is matched to (the Hungarian assignment of clusters to classes, on the
cluster x class counts), so that a cluster and its class look alike in the "by class" and "by
cluster" views. Clusters left over when there are more clusters than classes take the colour of
their majority class and a marker of their own.
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np
import pandas as pd

from clusterlens.clustering.metrics import NOISE

# matplotlib's tab10, then the lighter half of tab20, as hex
TAB10 = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
         "#7f7f7f", "#bcbd22", "#17becf"]
TAB20_LIGHT = ["#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2",
               "#c7c7c7", "#dbdb8d", "#9edae5"]
NOISE_COLOUR = "#BBBBBB"
# marker shapes for the leftover clusters, as (matplotlib, plotly) names; the first is a circle
MARKERS = [("o", "circle"), ("s", "square"), ("D", "diamond"), ("^", "triangle-up"),
           ("v", "triangle-down"), ("P", "cross"), ("*", "star"), ("<", "triangle-left"),
           (">", "triangle-right"), ("h", "hexagon"), ("p", "pentagon"), ("X", "x")]


def palette(n: int) -> list[str]:
    """``n`` distinct colours as ``#rrggbb``: tab10 up to 10, tab10 + its light half up to 20,
    else evenly spaced hues at alternating lightness."""
    if n <= 10:
        return TAB10[:n]
    if n <= 20:
        return (TAB10 + TAB20_LIGHT)[:n]
    out = []
    for i in range(n):
        r, g, b = colorsys.hls_to_rgb(i / n, 0.42 if i % 2 else 0.6, 0.75)
        out.append(f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}")
    return out


@dataclass(frozen=True)
class ClusterStyle:
    """How one cluster is drawn: ``colour`` (its class's), ``marker`` (index into
    :data:`MARKERS`; 0 for a matched cluster), ``cls`` (the class it is matched to, or its
    majority class), ``matched`` (whether the Hungarian assignment gave it that class)."""

    colour: str
    marker: int
    cls: str
    matched: bool

    def name(self, cluster: int) -> str:
        """Legend name: ``c3 = cat`` when matched, ``c7 ~ cat`` for a leftover cluster."""
        return f"c{cluster} {'=' if self.matched else '~'} {self.cls}"


def class_colours(class_order: list[str]) -> dict[str, str]:
    """Class name -> colour, in the given (sorted) order."""
    return dict(zip(class_order, palette(len(class_order))))


def cluster_styles(labels, classes, class_order: list[str]) -> dict[int, ClusterStyle]:
    """Each cluster's colour and marker, matched to the classes.

    Parameters
    ----------
    labels : array-like of shape (n,)
        Cluster label of each point (``NOISE`` is left out of the result).
    classes : array-like of shape (n,)
        Class name of each point.
    class_order : list of str
        Every class, in the order that gives the class colours (:func:`class_colours`).

    Returns
    -------
    dict
        Cluster label -> :class:`ClusterStyle`. The Hungarian assignment (maximising the
        images shared) gives each class at most one cluster that shares images with it; a
        cluster it leaves out takes its majority class's colour and the next unused marker for
        that class.
    """
    from scipy.optimize import linear_sum_assignment

    labels = np.asarray(labels)
    classes = np.asarray(classes, dtype=object)
    colours = class_colours(class_order)
    clusters = sorted(int(c) for c in set(labels.tolist()) if c != NOISE)
    if not clusters:
        return {}
    counts = np.zeros((len(clusters), len(class_order)), dtype=np.int64)
    kept = labels != NOISE
    codes = pd.Index(class_order).get_indexer(classes[kept])
    np.add.at(counts, (np.searchsorted(np.asarray(clusters), labels[kept]), codes), 1)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    matched = {clusters[r]: class_order[c] for r, c in zip(rows, cols) if counts[r, c] > 0}
    used: dict[str, int] = {}
    out = {}
    for i, c in enumerate(clusters):
        if c in matched:
            out[c] = ClusterStyle(colours[matched[c]], 0, matched[c], True)
            continue
        cls = class_order[int(counts[i].argmax())]
        used[cls] = used.get(cls, 0) + 1
        out[c] = ClusterStyle(colours[cls], 1 + (used[cls] - 1) % (len(MARKERS) - 1), cls, False)
    return out
