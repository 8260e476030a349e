"""The clustering grid as a whole: which points it has, its files, and the selected model.

The grid comes from the grid values (never from globbing the clusters folder), so files left
over from points that were removed from the grid do not leak into the aggregate.

A K grid's files are named by the values as params give them (``kmeans/kclasses.json``, see
:mod:`clusterlens.clustering.grid`), its points by the K each resolved to (``k10``), which the point's
JSON records (``k``, beside ``grid_value``). Values that resolve to the same K are one point:
the first in params order is kept and lists the others under ``same_k_values``.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from clusterlens.clustering.grid import DENSITY, METHODS, point_name, point_path
from clusterlens.clustering.metrics import HIGHER_IS_BETTER, LABEL_FREE
from clusterlens.core.errors import DataError
from clusterlens.core.io import load_npy, read_json

log = logging.getLogger("clusterlens.clustering.selection")
# A label-free metric selects only points whose clusters hold the images evenly enough
# (``evenness`` at least this): the silhouette rates one giant cluster plus a few outliers
# highly. Measured with benchmarks/bench_label_free.py: cuts of that kind (single, average and
# some complete linkage) have an evenness of 0.005-0.49, the other points 0.69-1.
MIN_EVENNESS = 0.5


def grid_points(*, kmeans_k=(), agglomerative_linkage=(), agglomerative_k=(), gmm_k=(),
                dbscan_eps_percentile=(), hdbscan_min_cluster_size=(), nmf_k=()
                ) -> dict[str, list[str]]:
    """The point names of every method's grid.

    Parameters
    ----------
    kmeans_k, gmm_k, nmf_k : list of int or str
        K values (integers, or values that follow the class count such as ``classes``).
    agglomerative_linkage, agglomerative_k : list
        Every linkage is cut at every K (points ``<linkage>_k<K>``).
    dbscan_eps_percentile : list of float
    hdbscan_min_cluster_size : list of int

    Returns
    -------
    dict of str to list of str
        method -> the names of its points' files (``k10``, ``kclasses``, ``ward_k10``), in grid
        order, each once; methods with an empty grid are left out. :func:`collect` reads them.
    """
    grid = {
        "kmeans": [point_name("kmeans", k) for k in kmeans_k],
        "agglomerative": [f"{link}_k{k}" for link in agglomerative_linkage
                          for k in agglomerative_k],
        "gmm": [point_name("gmm", k) for k in gmm_k],
        "dbscan": [point_name("dbscan", float(p)) for p in dbscan_eps_percentile],
        "hdbscan": [point_name("hdbscan", m) for m in hdbscan_min_cluster_size],
        "nmf": [point_name("nmf", k) for k in nmf_k],
    }
    return {m: list(dict.fromkeys(pts)) for m, pts in grid.items() if pts}


def resolved_point(method: str, stem: str, metrics: dict) -> str:
    """The point a grid file holds: a K grid's file ``kclasses`` (``ward_kclasses``) holds the
    point of the K its JSON records (``k10``, ``ward_k10``); any other file is its point."""
    if "grid_value" not in metrics or "k" not in metrics:
        return stem
    if method == "agglomerative":
        return f"{stem.split('_', 1)[0]}_k{metrics['k']}"
    return point_name(method, metrics["k"])


def expected_files(grid: dict[str, list[str]]) -> set[str]:
    """Paths (relative to the clusters folder) of every file the grid's stages write."""
    files = set()
    for method, points in grid.items():
        for pt in points:
            for suffix in (".npy", ".json"):
                files.add(point_path(method, pt, ".", suffix).as_posix().removeprefix("./"))
            if method == "agglomerative":
                files.add(f"agglomerative/{pt.split('_', 1)[0]}/tree.npy")
                files.add(f"agglomerative/{pt.split('_', 1)[0]}/cells.npy")  # two-step route
    return files


def prune_stale(grid: dict[str, list[str]], clusters_dir: str | os.PathLike,
                methods: tuple[str, ...] = METHODS) -> list[str]:
    """Delete the files under ``<clusters_dir>/<method>/`` that no grid point writes.

    Points removed from the grid and temporary files of an interrupted run go, so that the
    folder the aggregates depend on holds exactly the current grid, on every machine.
    ``.gitignore`` files stay; emptied folders are removed.

    Parameters
    ----------
    grid : dict of str to list of str
        As from :func:`grid_points`.
    clusters_dir : str or PathLike
    methods : tuple of str
        The method folders to clean.

    Returns
    -------
    list of str
        The removed files, relative to ``clusters_dir``.
    """
    keep = expected_files(grid)
    removed = []
    for method in methods:
        folder = Path(clusters_dir) / method
        if not folder.is_dir():
            continue
        for f in sorted(folder.rglob("*"), reverse=True):
            rel = f.relative_to(clusters_dir).as_posix()
            if f.is_file() and f.name != ".gitignore" and rel not in keep:
                f.unlink()
                removed.append(rel)
            elif f.is_dir() and not any(f.iterdir()):
                f.rmdir()
    if removed:
        log.warning("removed %d file(s) of grid points no longer in params.yaml: %s",
                    len(removed), ", ".join(removed[:10]) + (" ..." if len(removed) > 10 else ""))
    return removed


def prune_stale_dendrograms(linkages: list[str], plots_dir: str | os.PathLike) -> list[str]:
    """Delete the ``dendrogram_<linkage>.png`` files in ``plots_dir`` of linkages not in
    ``linkages`` (the folder must hold exactly the current outputs). Returns what went."""
    keep = {f"dendrogram_{link}.png" for link in linkages}
    removed = [f.as_posix() for f in sorted(Path(plots_dir).glob("dendrogram_*.png"))
               if f.name not in keep]
    for f in removed:
        Path(f).unlink()
        log.warning("removed %s (linkage no longer in agglomerative.linkage)", f)
    return removed


def collect(grid: dict[str, list[str]], clusters_dir: str | os.PathLike) -> dict:
    """Every grid point's metrics: method -> point -> the point's JSON.

    Points are named by their K (:func:`resolved_point`). A file whose K an earlier file of
    the grid already has is left out (logged); the kept point lists its grid value under
    ``same_k_values``.

    Raises
    ------
    DataError
        Naming the first missing point file.
    """
    results = {}
    for method, stems in grid.items():
        results[method] = {}
        for stem in dict.fromkeys(stems):
            path = point_path(method, stem, clusters_dir)
            if not path.is_file():
                raise DataError(f"{path} is missing: run `dvc repro` (grid point {method}/{stem})")
            metrics = read_json(path)
            pt = resolved_point(method, stem, metrics)
            if pt in results[method]:
                kept = results[method][pt]
                kept.setdefault("same_k_values", []).append(metrics["grid_value"])
                log.warning("%s: grid values %s and %s are both K = %d: one grid point, %s/%s",
                            method, kept["grid_value"], metrics["grid_value"], metrics["k"],
                            method, pt)
                continue
            results[method][pt] = metrics
    return results


def resolved_grids(results: dict) -> dict[str, str]:
    """method -> its K grid as ``value=K`` pairs in params order (``classes_x0.5=5,
    classes=10``; values sharing a K after the kept one), for the logs; methods whose points
    record no ``grid_value`` are left out."""
    out = {}
    for method, points in results.items():
        if method not in METHODS:  # the aggregate's own entries (selected, best, ...)
            continue
        pairs = [f"{v}={m['k']}" for m in points.values() if "grid_value" in m
                 for v in [m["grid_value"], *m.get("same_k_values", [])]]
        if pairs:
            out[method] = ", ".join(dict.fromkeys(pairs))
    return out


def _score(metrics: dict, metric: str):
    v = metrics.get(metric)
    if v is None:
        return None
    return v if HIGHER_IS_BETTER[metric] else -v


def best_per_method(results: dict, metric: str) -> dict:
    """method -> its point with the best ``metric`` (methods without a value are left out)."""
    best = {}
    for method, points in results.items():
        scored = [(s, pt) for pt, m in points.items() if (s := _score(m, metric)) is not None]
        if scored:
            best[method] = max(scored, key=lambda t: t[0])[1]
    return best


def select_model(results: dict, metric: str, max_noise: float) -> dict:
    """The best point over all methods by ``metric``.

    A density method's point qualifies only if its noise fraction is at most ``max_noise``;
    for a label-free ``metric`` (:data:`clusterlens.clustering.metrics.LABEL_FREE`), a point
    qualifies only if its ``evenness`` is at least :data:`MIN_EVENNESS`. Else the next best is
    taken, and the reason says which were skipped. Ties go to the method, then point, name first
    in alphabetical order.

    Returns
    -------
    dict
        ``method``, ``point``, ``metric``, ``value``, ``noise_fraction``, ``reason``.

    Raises
    ------
    DataError
        When no point qualifies.
    """
    ranked = sorted(((s, method, pt) for method, points in results.items()
                     for pt, m in points.items() if (s := _score(m, metric)) is not None),
                    key=lambda t: (-t[0], t[1], t[2]))
    skipped, uneven = [], []
    for _, method, pt in ranked:
        m = results[method][pt]
        if method in DENSITY and m["noise_fraction"] > max_noise:
            skipped.append(f"{method}/{pt} (noise {m['noise_fraction']:.1%})")
            continue
        if metric in LABEL_FREE and m.get("evenness", 1.0) < MIN_EVENNESS:
            uneven.append(f"{method}/{pt} (evenness {m['evenness']:.2f})")
            continue
        reason = f"highest {metric} ({m[metric]:.4f})"
        if skipped:
            reason += (f"; skipped better-scoring {', '.join(skipped[:5])} with noise above "
                       f"select.max_noise={max_noise:g}")
        if uneven:
            reason += (f"; skipped {len(uneven)} better-scoring point(s) whose clusters are "
                       f"uneven (evenness below {MIN_EVENNESS:g}: one cluster holds most "
                       f"images), e.g. {', '.join(uneven[:3])}")
        return {"method": method, "point": pt, "metric": metric, "value": m[metric],
                "noise_fraction": m["noise_fraction"], "reason": reason}
    raise DataError(f"no grid point has a value for select.metric={metric!r} within "
                    f"select.max_noise={max_noise:g}" + (
                        f" and an evenness of at least {MIN_EVENNESS:g}" if uneven else ""))


def elbow_k(ks, inertias):
    """The elbow of the inertia curve: the K farthest below the straight line from the first to
    the last point, both axes scaled to [0, 1] (the "kneedle" rule). None with fewer than 3 Ks."""
    if len(ks) < 3:
        return None
    x = np.asarray(ks, dtype=float)
    y = np.asarray(inertias, dtype=float)
    x = (x - x[0]) / (x[-1] - x[0])
    y = (y - y.min()) / (np.ptp(y) or 1.0)
    line = y[0] + (y[-1] - y[0]) * x
    return int(ks[int(np.argmax(line - y))])


def recommended_k(kmeans: dict) -> dict:
    """The K-Means K with the highest silhouette (``by_silhouette``) and at the elbow of the
    inertia curve (``by_elbow``, :func:`elbow_k`); None where there is none."""
    pts = sorted(kmeans.values(), key=lambda m: m["k"])
    scored = [m for m in pts if m.get("silhouette") is not None]
    return {"by_silhouette": max(scored, key=lambda m: m["silhouette"])["k"] if scored else None,
            "by_elbow": elbow_k([m["k"] for m in pts], [m["inertia"] for m in pts])}


def summarize(results: dict, metric: str, max_noise: float) -> dict:
    """The aggregate: ``selected`` (:func:`select_model`), ``best`` per method (its point and
    value), ``kmeans_recommended_k`` (with a K-Means grid), then every method's points."""
    best = best_per_method(results, metric)
    selected = select_model(results, metric, float(max_noise))
    out = {"selected": selected, "best": {m: {"point": pt, metric: results[m][pt][metric]}
                                          for m, pt in best.items()}}
    if "kmeans" in results:
        out["kmeans_recommended_k"] = recommended_k(results["kmeans"])
    out.update(results)
    return out


def results_table(results: dict) -> pd.DataFrame:
    """One row per grid point: ``method``, ``point``, then its metrics."""
    return pd.DataFrame([{"method": m, "point": pt, **v}
                         for m, pts in results.items() for pt, v in pts.items()])


def kmeans_curves(kmeans: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The K-Means inertia and silhouette against K, as two tables (``k`` + the value)."""
    km = sorted(kmeans.values(), key=lambda m: m["k"])
    ks = [m["k"] for m in km]
    return (pd.DataFrame({"k": ks, "inertia": [m["inertia"] for m in km]}),
            pd.DataFrame({"k": ks, "silhouette": [m["silhouette"] for m in km]}))


# --------------------------------------------------------------------------- the selected model
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
