"""`clustering` aggregate stage: every grid point's metrics in one file, the best point per
method, and the selected model (SPEC C4, C5, C7).

The grid is read from params.yaml, never by globbing, so files left over from grid points that
were removed from params do not leak into the aggregate.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from clusterlens.clustering import CLUSTERS_DIR, PLOTS_DIR, point_name, point_path
from clusterlens.metrics import HIGHER_IS_BETTER
from clusterlens.common import (
    DataError, ParamError, get_logger, load_params, log_block, matplotlib_setup, param,
    read_json, require_choice, run_cli, save_figure, write_json, write_table,
)

log = get_logger("clustering")
DENSITY = ("dbscan", "hdbscan")
METHODS = ("kmeans", "agglomerative", "gmm", "dbscan", "hdbscan", "nmf")
SELECT_METRICS = tuple(k for k in HIGHER_IS_BETTER if k != "inertia")


def _list(params, key) -> list:
    value = param(params, key)
    if not isinstance(value, list):
        raise ParamError(key, f"must be a list, got {value!r}")
    return value


def grid_points(params: dict) -> dict[str, list[str]]:
    """method -> the point names the params define (in params order)."""
    grid = {
        "kmeans": [point_name("kmeans", k) for k in _list(params, "kmeans.k")],
        "agglomerative": [f"{link}_k{k}" for link in _list(params, "agglomerative.linkage")
                          for k in _list(params, "agglomerative.k")],
        "gmm": [point_name("gmm", k) for k in _list(params, "gmm.k")],
        "dbscan": [point_name("dbscan", float(p)) for p in _list(params, "dbscan.eps_percentile")],
        "hdbscan": [point_name("hdbscan", m) for m in _list(params, "hdbscan.min_cluster_size")],
        "nmf": [point_name("nmf", k) for k in _list(params, "nmf.k")],
    }
    grid = {m: pts for m, pts in grid.items() if pts}
    if not grid:
        raise ParamError("kmeans.k", "every clustering grid is empty: give at least one K")
    return grid


def expected_files(grid: dict[str, list[str]]) -> set[str]:
    """Paths (relative to the clusters folder) of every file the grid's stages write."""
    files = set()
    for method, points in grid.items():
        for pt in points:
            for suffix in (".npy", ".json"):
                files.add(point_path(method, pt, ".", suffix).as_posix().removeprefix("./"))
            if method == "agglomerative":
                files.add(f"agglomerative/{pt.rsplit('_', 1)[0]}/tree.npy")
                files.add(f"agglomerative/{pt.rsplit('_', 1)[0]}/cells.npy")  # two-step route
    return files


def prune_stale(grid: dict[str, list[str]], clusters_dir=CLUSTERS_DIR,
                methods: tuple[str, ...] = METHODS) -> list[str]:
    """Delete files under ``<clusters_dir>/<method>/`` that no grid point of the params writes
    (points removed from params, temporary files of an interrupted run), so that the folder the
    aggregates depend on holds exactly the current grid, on every machine. Returns what went."""
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


def prune_stale_dendrograms(linkages: list[str], plots_dir=PLOTS_DIR) -> list[str]:
    """Delete dendrogram PNGs of linkages no longer in params (the report depends on the
    plots/clustering folder, which must hold exactly the current outputs)."""
    keep = {f"dendrogram_{link}.png" for link in linkages}
    removed = [f.as_posix() for f in sorted(Path(plots_dir).glob("dendrogram_*.png"))
               if f.name not in keep]
    for f in removed:
        Path(f).unlink()
        log.warning("removed %s (linkage no longer in agglomerative.linkage)", f)
    return removed


def collect(grid: dict[str, list[str]], clusters_dir=CLUSTERS_DIR) -> dict:
    results = {}
    for method, points in grid.items():
        results[method] = {}
        for pt in points:
            path = point_path(method, pt, clusters_dir)
            if not path.is_file():
                raise DataError(f"{path} is missing: run `dvc repro` (grid point {method}/{pt})")
            results[method][pt] = read_json(path)
    return results


def _score(metrics: dict, metric: str):
    v = metrics.get(metric)
    if v is None:
        return None
    return v if HIGHER_IS_BETTER[metric] else -v


def best_per_method(results: dict, metric: str) -> dict:
    best = {}
    for method, points in results.items():
        scored = [(s, pt) for pt, m in points.items() if (s := _score(m, metric)) is not None]
        if scored:
            best[method] = max(scored, key=lambda t: t[0])[1]
    return best


def select_model(results: dict, metric: str, max_noise: float) -> dict:
    """The best point over all methods by ``metric``; a density method qualifies only if its
    noise fraction is at most ``max_noise`` (else the next best is taken)."""
    ranked = sorted(((s, method, pt) for method, points in results.items()
                     for pt, m in points.items() if (s := _score(m, metric)) is not None),
                    key=lambda t: (-t[0], t[1], t[2]))
    skipped = []
    for _, method, pt in ranked:
        m = results[method][pt]
        if method in DENSITY and m["noise_fraction"] > max_noise:
            skipped.append(f"{method}/{pt} (noise {m['noise_fraction']:.1%})")
            continue
        reason = f"highest {metric} ({m[metric]:.4f})"
        if skipped:
            reason += (f"; skipped better-scoring {', '.join(skipped[:5])} with noise above "
                       f"select.max_noise={max_noise:g}")
        return {"method": method, "point": pt, "metric": metric, "value": m[metric],
                "noise_fraction": m["noise_fraction"], "reason": reason}
    raise DataError(f"no grid point has a value for select.metric={metric!r} within "
                    f"select.max_noise={max_noise:g}")


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
    """K-Means K recommended by the highest silhouette (seed 001's rule) and by the elbow."""
    pts = sorted(kmeans.values(), key=lambda m: m["k"])
    scored = [m for m in pts if m.get("silhouette") is not None]
    return {"by_silhouette": max(scored, key=lambda m: m["silhouette"])["k"] if scored else None,
            "by_elbow": elbow_k([m["k"] for m in pts], [m["inertia"] for m in pts])}


def plot_metrics_vs_k(results: dict, path) -> None:
    import matplotlib.pyplot as plt

    keys = ["silhouette", "nmi", "ari", "purity"]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.8))
    for ax, key in zip(axes, keys):
        for method, points in results.items():
            series: dict[str, list] = {}
            for pt, m in points.items():
                if "k" not in m or m.get(key) is None:
                    continue
                label = method if method != "agglomerative" else f"agglo-{m['linkage']}"
                series.setdefault(label, []).append((m["k"], m[key]))
            for label, xy in series.items():
                xy.sort()
                ax.plot([x for x, _ in xy], [v for _, v in xy], marker="o", label=label)
        ax.set_xlabel("number of clusters K")
        ax.set_ylabel(key)
        ax.set_title(f"{key} vs K")
    axes[0].legend(fontsize=7)
    fig.suptitle("Clustering metrics per method and K")
    save_figure(fig, path)


OUT_METRICS = "metrics/clustering.json"
OUT_TABLE = "metrics/clustering_table.csv"
OUT_INERTIA = "plots/clustering/kmeans_inertia.csv"
OUT_SILHOUETTE = "plots/clustering/kmeans_silhouette.csv"
OUT_VS_K = "plots/clustering/metrics_vs_k.png"


def run(params: dict, clusters_dir=CLUSTERS_DIR) -> dict:
    metric = require_choice("select.metric", param(params, "select.metric"), SELECT_METRICS)
    max_noise = param(params, "select.max_noise")
    if not isinstance(max_noise, (int, float)) or not 0 <= max_noise <= 1:
        raise ParamError("select.max_noise", f"must be a fraction in [0, 1], got {max_noise!r}")
    grid = grid_points(params)
    log_block(log, "clustering", inputs={"grid": {m: len(p) for m, p in grid.items()}},
              params={"select.metric": metric, "select.max_noise": max_noise})
    prune_stale(grid, clusters_dir)
    prune_stale_dendrograms(_list(params, "agglomerative.linkage"))
    results = collect(grid, clusters_dir)
    best = best_per_method(results, metric)
    selected = select_model(results, metric, float(max_noise))
    out = {"selected": selected, "best": {m: {"point": pt, metric: results[m][pt][metric]}
                                          for m, pt in best.items()}}
    if "kmeans" in results:
        out["kmeans_recommended_k"] = recommended_k(results["kmeans"])
    out.update(results)
    out = write_json(OUT_METRICS, out)
    rows = [{"method": m, "point": pt, **v} for m, pts in results.items() for pt, v in pts.items()]
    write_table(OUT_TABLE, pd.DataFrame(rows))
    if "kmeans" in results:
        km = sorted(results["kmeans"].values(), key=lambda m: m["k"])
        ks = [m["k"] for m in km]
        write_table(OUT_INERTIA, pd.DataFrame({"k": ks, "inertia": [m["inertia"] for m in km]}))
        write_table(OUT_SILHOUETTE, pd.DataFrame({"k": ks,
                                                  "silhouette": [m["silhouette"] for m in km]}))
    matplotlib_setup()
    plot_metrics_vs_k(results, OUT_VS_K)
    log_block(log, "clustering done", outputs={
        OUT_METRICS: f"selected {selected['method']}/{selected['point']}: {selected['reason']}",
        OUT_TABLE: f"{len(rows)} grid points", "plots": f"{OUT_INERTIA}, {OUT_SILHOUETTE}, {OUT_VS_K}"})
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Aggregate the clustering grid.")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    run(load_params(args.params))


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
