"""Clustering grid points (SPEC C1-C3, C8): one DVC stage per grid point.

``python -m stages.cluster kmeans --k 10``            K-Means at one K
``python -m stages.cluster gmm --k 10``               Gaussian mixture at one K
``python -m stages.cluster dbscan --eps-percentile 25``  DBSCAN, eps from the k-distance curve
``python -m stages.cluster hdbscan --min-cluster-size 15``
``python -m stages.cluster agglomerative --linkage ward``  one merge tree, cut at every K
``python -m stages.cluster nmf --k 10``               K-Means on the NMF factor W (``nmf`` stage)

Each run writes ``data/clusters/<method>/<point>.npy`` (int64 labels in index row order, -1 for
noise) and ``<point>.json`` (the point's metrics), read back by the ``clustering`` aggregate.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from clusterlens import metrics as cm
from clusterlens.common import (
    DataError, ParamError, get_logger, load_params, log_block, param, read_table,
    remove_stale_tmp, require_choice, require_int, run_cli, save_npy, write_json,
)

log = get_logger("cluster")
CLUSTERS_DIR = Path("data/clusters")
PLOTS_DIR = Path("plots/clustering")
LINKAGES = ("ward", "complete", "average", "single")


def point_name(method: str, value) -> str:
    prefix = {"kmeans": "k", "gmm": "k", "nmf": "k", "dbscan": "eps_p", "hdbscan": "mcs",
              "agglomerative": ""}[method]
    return f"{prefix}{value:g}" if isinstance(value, (int, float)) else f"{prefix}{value}"


def point_path(method: str, point: str, clusters_dir=CLUSTERS_DIR, suffix=".json") -> Path:
    """Where a grid point's files live; agglomerative points `<linkage>_k<K>` sit in a folder per
    linkage (the stage's output), e.g. data/clusters/agglomerative/ward/k10.npy."""
    if method == "agglomerative":
        linkage, k = point.rsplit("_", 1)
        return Path(clusters_dir) / method / linkage / f"{k}{suffix}"
    return Path(clusters_dir) / method / f"{point}{suffix}"


def evaluate_labels(X, y, labels, silhouette_sample: int, seed: int, *,
                    sample_distances: np.ndarray | None = None, **extra) -> dict:
    """A grid point's metrics: ``extra`` (the point's own values), `cm.describe`, the internal
    metrics on X (``sample_distances``: see `cm.internal_metrics`) and the external ones
    against the classes y."""
    out = {**cm.describe(labels), **extra}
    out.update(cm.internal_metrics(X, labels, silhouette_sample, seed, sample_distances))
    out.update(cm.external_metrics(y, labels))
    return out


def check_k(key: str, k, n: int) -> int:
    require_int(key, k, 2)
    if k > n:
        raise ParamError(key, f"= {k} is larger than the number of images ({n}); remove it from "
                         "the grid in params.yaml (or add images)")
    return k


def check_at_most_n(key: str, value: int, n: int) -> int:
    """Neighbourhood sizes (DBSCAN/HDBSCAN) cannot exceed the number of images."""
    if value > n:
        raise ParamError(key, f"= {value} is larger than the number of images ({n}); lower it in "
                         "params.yaml (or add images)")
    return value


# --------------------------------------------------------------------------- methods
def run_kmeans(X, k: int, n_init: int, max_iter: int, seed: int,
               engine: str = "sklearn") -> tuple[np.ndarray, dict]:
    """K-Means by ``kmeans.engine``: scikit-learn (default) or faiss (``stages.large_n``:
    CPU, or GPU where faiss has one; same objective within 1%, several times faster at 10^5+)."""
    if engine != "sklearn":
        from clusterlens import large_n

        labels, info = large_n.run_kmeans_engine(engine, X, k, n_init, max_iter, seed)
        return labels, {"inertia": info["inertia"], "iterations": info["iterations"],
                        "engine": engine}
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, n_init=n_init, max_iter=max_iter, random_state=seed).fit(X)
    return km.labels_.astype(np.int64), {"inertia": float(km.inertia_),
                                         "iterations": int(km.n_iter_)}


GMM_REG_COVAR_EXP = (-6, -1)  # reg_covar 1e-6 (scikit-learn's default) ... 1e-1


def run_gmm(X, k: int, covariance_type: str, max_iter: int, seed: int):
    """Gaussian mixture on float64. Data with exact duplicate rows (e.g. text features of
    images that share a caption) can collapse a component's covariance; the fit is then retried
    with ten times the covariance regularisation (``reg_covar``, 1e-6 up to 1e-1), logged and
    recorded in the point's metrics, rather than failing the grid."""
    from sklearn.mixture import GaussianMixture

    X = np.asarray(X, dtype=np.float64)
    exp = GMM_REG_COVAR_EXP[0]
    while True:
        reg = float(10.0 ** exp)
        try:
            gmm = GaussianMixture(n_components=k, covariance_type=covariance_type,
                                  max_iter=max_iter, reg_covar=reg, random_state=seed).fit(X)
            break
        except ValueError as exc:
            if "ill-defined empirical covariance" not in str(exc) or exp >= GMM_REG_COVAR_EXP[1]:
                raise DataError(f"gmm at K = {k}: the mixture could not be fitted even with "
                                f"reg_covar {reg:g} ({str(exc).split('.')[0]}); lower gmm.k or "
                                "try gmm.covariance_type: spherical") from None
            log.warning("gmm K=%d: collapsed covariance with reg_covar %g (duplicate points?); "
                        "retrying with %g", k, reg, 10.0 ** (exp + 1))
            exp += 1
    return gmm.predict(X).astype(np.int64), {"bic": float(gmm.bic(X)),
                                             "converged": bool(gmm.converged_),
                                             "reg_covar": reg}


def dbscan_eps(X, min_samples: int, percentile: float) -> float:
    """eps = the given percentile of every point's distance to its min_samples-th neighbour."""
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=min(min_samples, len(X))).fit(X)
    dist, _ = nn.kneighbors(X)
    return float(np.percentile(dist[:, -1], percentile))


def run_dbscan(X, percentile: float, min_samples: int):
    from sklearn.cluster import DBSCAN

    eps = dbscan_eps(X, min_samples, percentile)
    labels = DBSCAN(eps=eps, min_samples=min_samples).fit_predict(X)
    return labels.astype(np.int64), {"eps": eps}


def run_hdbscan(X, min_cluster_size: int, min_samples):
    from sklearn.cluster import HDBSCAN

    labels = HDBSCAN(min_cluster_size=min_cluster_size, min_samples=min_samples,
                     copy=True).fit_predict(X)
    return labels.astype(np.int64), {}


def linkage_tree(X, method: str) -> np.ndarray:
    """The full merge tree on all points. ward/single: fastcluster's O(N)-memory vector routine;
    complete/average: fastcluster's O(N^2)-memory routine on the condensed distance matrix."""
    import fastcluster

    X = np.asarray(X, dtype=np.float64)
    if method in ("ward", "single"):
        return fastcluster.linkage_vector(X, method=method, metric="euclidean")
    return fastcluster.linkage(X, method=method, metric="euclidean")


def cut_heights(Z: np.ndarray, ks: list[int]) -> dict[int, float]:
    """For each K, a height at which a horizontal cut of the (monotone) tree leaves K clusters:
    midway between the merge that would leave K-1 clusters and the one before it."""
    n = len(Z) + 1
    out = {}
    for k in ks:
        below = Z[n - k - 1, 2] if n - k - 1 >= 0 else 0.0
        above = Z[n - k, 2]
        out[k] = float((below + above) / 2)
    return out


def plot_dendrogram(Z: np.ndarray, ks: list[int], path, linkage: str, leaves: int = 30,
                    unit: str = "images") -> None:
    """The top of the merge tree (its last ``leaves`` merges; leaf labels are point counts), with
    the cut for every K in the grid marked."""
    import matplotlib.pyplot as plt
    from scipy.cluster.hierarchy import dendrogram

    from clusterlens.common import matplotlib_setup, save_figure

    matplotlib_setup()
    n = len(Z) + 1
    fig, ax = plt.subplots(figsize=(12, 5.5))
    def leaf_label(i: int) -> str:  # a single image is "(1)", like the merged groups
        return f"({int(Z[i - n, 3]) if i >= n else 1})"

    dendrogram(Z, truncate_mode="lastp", p=min(leaves, n), leaf_label_func=leaf_label,
               leaf_rotation=90, leaf_font_size=8, color_threshold=0, above_threshold_color="#4C72B0",
               ax=ax)
    heights = cut_heights(Z, ks)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, k in enumerate(sorted(heights)):
        if k > min(leaves, n):  # the cut lies below the drawn part of the tree
            continue
        ax.axhline(heights[k], ls="--", lw=1, color=colors[(i + 1) % len(colors)],
                   label=f"cut at K={k} (height {heights[k]:.3g})")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper right", fontsize=8)
    ax.set_xlabel(f"merged groups (in brackets: number of {unit}), last {min(leaves, n)} of {n}")
    ax.set_ylabel(f"{linkage} merge height (PCA space)")
    ax.set_title(f"Agglomerative clustering, {linkage} linkage: top of the dendrogram of "
                 f"{n} {unit}")
    save_figure(fig, path)


def cut_tree_at(Z: np.ndarray, ks: list[int]) -> dict[int, np.ndarray]:
    """The tree cut into K clusters for every K: the clusters left after its first N - K
    merges, numbered in order of their first point (the labels of scipy's ``cut_tree``, which
    walks every merged subtree in Python: O(N^2) for chained trees, 26 s for single linkage on
    10,000 points; this is O(N) per K). A cut that falls between merges of equal height follows
    the tree's own merge order, where scipy may take another of the tied merges."""
    n = len(Z) + 1
    left = Z[:, 0].astype(np.int64).tolist()
    right = Z[:, 1].astype(np.int64).tolist()
    merged_at = np.full(2 * n - 1, n - 1, dtype=np.int64)  # row that merges each node away
    merged_at[Z[:, 0].astype(np.int64)] = np.arange(n - 1)
    merged_at[Z[:, 1].astype(np.int64)] = np.arange(n - 1)
    made_at = np.concatenate([np.full(n, -1, dtype=np.int64), np.arange(n - 1)])
    out = {}
    for k in sorted(ks):
        m = n - k  # merges applied
        label = np.full(2 * n - 1, -1, dtype=np.int64)
        roots = np.flatnonzero((made_at < m) & (merged_at >= m))  # the K clusters' top nodes
        label[roots] = np.arange(len(roots))
        lab = label.tolist()
        for i in range(m - 1, -1, -1):  # top-down: a merged node passes its cluster on
            lab[left[i]] = lab[right[i]] = lab[n + i]
        leaves = np.asarray(lab[:n], dtype=np.int64)
        _, first, inverse = np.unique(leaves, return_index=True, return_inverse=True)
        rank = np.empty(len(first), dtype=np.int64)
        rank[np.argsort(first, kind="stable")] = np.arange(len(first))
        out[k] = rank[inverse.ravel()]
    return out


# --------------------------------------------------------------------------- stage
def run(method: str, value, params: dict, pca_path="data/pca.npy",
        index_path="data/index.parquet", out_dir: Path = CLUSTERS_DIR,
        plots_dir: Path = PLOTS_DIR, nmf_path="data/nmf.npz") -> dict:
    from clusterlens import large_n

    seed = require_int("seed", param(params, "seed"))
    sample = require_int("metrics.silhouette_sample",
                         param(params, "metrics.silhouette_sample"), 2)
    lp = large_n.check_large_n_params(params)  # kmeans.engine, agglomerative.route, ...
    X = large_n.load_features(pca_path, lp["mmap_threshold_bytes"])
    y = read_table(index_path)["label"].to_numpy()
    n = len(X)
    results = {}
    if method == "kmeans":
        k = check_k("kmeans.k", int(value), n)
        labels, extra = run_kmeans(X, k, require_int("kmeans.n_init",
                                                     param(params, "kmeans.n_init"), 1),
                                   require_int("kmeans.max_iter",
                                               param(params, "kmeans.max_iter"), 1), seed,
                                   lp["engine"])
        results[point_name(method, k)] = (labels, {"k": k, **extra})
    elif method == "nmf":
        # K-Means (the kmeans.* settings) on W; the metrics below are on the PCA features like
        # every other method's (seed 004 scores its NMF clusters on the PCA features too)
        k = check_k("nmf.k", int(value), n)
        with np.load(nmf_path) as z:
            W = z["W"]
        labels, extra = run_kmeans(W, k, require_int("kmeans.n_init",
                                                     param(params, "kmeans.n_init"), 1),
                                   require_int("kmeans.max_iter",
                                               param(params, "kmeans.max_iter"), 1), seed,
                                   lp["engine"])
        results[point_name(method, k)] = (labels, {"k": k, "nmf_components": int(W.shape[1]),
                                                   "inertia_on_w": extra["inertia"],
                                                   "iterations": extra["iterations"]})
    elif method == "gmm":
        k = check_k("gmm.k", int(value), n)
        cov = require_choice("gmm.covariance_type", param(params, "gmm.covariance_type"),
                             ("full", "tied", "diag", "spherical"))
        labels, extra = run_gmm(X, k, cov, require_int("gmm.max_iter",
                                                       param(params, "gmm.max_iter"), 1), seed)
        results[point_name(method, k)] = (labels, {"k": k, **extra})
    elif method == "dbscan":
        pct = float(value)
        if not 0 < pct <= 100:
            raise ParamError("dbscan.eps_percentile", f"values must be in (0, 100], got {value}")
        ms = check_at_most_n("dbscan.min_samples",
                             require_int("dbscan.min_samples", param(params, "dbscan.min_samples"),
                                         1), n)
        labels, extra = run_dbscan(X, pct, ms)
        results[point_name(method, value)] = (labels, {"eps_percentile": pct, **extra})
    elif method == "hdbscan":
        mcs = check_at_most_n("hdbscan.min_cluster_size",
                              require_int("hdbscan.min_cluster_size", int(value), 2), n)
        ms = param(params, "hdbscan.min_samples")
        if ms is not None:
            check_at_most_n("hdbscan.min_samples", require_int("hdbscan.min_samples", ms, 1), n)
        labels, extra = run_hdbscan(X, mcs, ms)
        results[point_name(method, mcs)] = (labels, {"min_cluster_size": mcs})
    elif method == "agglomerative":
        linkage = require_choice("agglomerative.linkage", value, LINKAGES)
        ks = param(params, "agglomerative.k")
        if not isinstance(ks, list) or not ks:
            raise ParamError("agglomerative.k", "must be a non-empty list of integers")
        ks = [check_k("agglomerative.k", k, n) for k in ks]
        route = large_n.choose_agglomerative_route(n, linkage, lp["route"], lp["max_exact_n"],
                                                   dim=X.shape[1],
                                                   n_centroids=lp["n_centroids"])
        folder = Path(out_dir) / method / linkage
        how = {"route": route["route"], "route_reason": route["reason"]}
        if route["route"] == "exact":
            Z = linkage_tree(X, linkage)
            cuts = cut_tree_at(Z, ks)
            unit = "images"
        else:  # K-Means cells, the linkage over the cells, labels through each point's cell
            res = large_n.two_step_tree(X, linkage, lp["n_centroids"], seed, lp["engine"])
            Z = res.tree
            save_npy(folder / "cells.npy", res.assign.astype(np.int64))
            cuts = large_n.cut_two_step(res, ks)
            unit = "K-Means cells"
            how["cells"] = int(len(res.sizes))
        save_npy(folder / "tree.npy", Z)
        plot_dendrogram(Z, ks, Path(plots_dir) / f"dendrogram_{linkage}.png", linkage, unit=unit)
        for k, labels in cuts.items():
            results[f"{linkage}_k{k}"] = (labels, {"k": k, "linkage": linkage, **how})
    else:
        raise ParamError("method", f"unknown clustering method {method!r}")
    log_block(log, f"cluster {method} {value}", inputs={"features": f"{pca_path} {X.shape}"},
              params={"seed": seed, "metrics.silhouette_sample": sample})
    # the cuts of one tree label the same points: their silhouettes share one distance matrix
    shared = cm.silhouette_distances(X, sample, seed) if len(results) > 1 else None
    summary = {}
    for name, (labels, extra) in results.items():
        metrics = evaluate_labels(X, y, labels, sample, seed, sample_distances=shared, **extra)
        remove_stale_tmp(point_path(method, name, out_dir, ".npy"),
                         point_path(method, name, out_dir))  # left by a run killed mid-write
        save_npy(point_path(method, name, out_dir, ".npy"), labels)
        summary[name] = write_json(point_path(method, name, out_dir), metrics)
        sil = metrics["silhouette"]
        log.info("%s/%s: %d clusters, noise %.3f, silhouette %s, NMI %.3f", method, name,
                 metrics["n_clusters"], metrics["noise_fraction"],
                 "n/a" if sil is None else f"{sil:.3f}", metrics["nmi"])
    log_block(log, f"cluster {method} {value} done", outputs={
        point_path(method, name, out_dir, ".npy").as_posix() + " + .json":
            f"{m['n_clusters']} clusters, NMI {m['nmi']:.3f}" for name, m in summary.items()})
    return summary


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Run one clustering grid point.")
    ap.add_argument("method", choices=["kmeans", "gmm", "dbscan", "hdbscan", "agglomerative",
                                       "nmf"])
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--k", type=int)
    g.add_argument("--eps-percentile", type=float)
    g.add_argument("--min-cluster-size", type=int)
    g.add_argument("--linkage")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    value = next(v for v in (args.k, args.eps_percentile, args.min_cluster_size, args.linkage)
                 if v is not None)
    # One OpenMP/BLAS thread. DVC runs the grid points one after another, and each is many small
    # parallel regions (K-Means' Lloyd iterations, the silhouette's distance blocks): on a shared
    # 2-core machine, when any other process holds a core, the default 2 threads spin-wait at
    # every barrier (K-Means at 10,000 x 50: 1.6 s on one thread, 1.1-5.8 s on two). With one
    # thread the labels also no longer depend on the machine's core count (the Lloyd reductions
    # sum in a thread-dependent order).
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        run(args.method, value, load_params(args.params))


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
