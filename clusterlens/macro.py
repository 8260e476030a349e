"""Macro-categories from the class-centroid dendrogram (SPEC M1-M4), two DVC stages:

``python -m stages.macro tree``    (`macro` stage, M1-M3) class centroids in PCA space, a
    hierarchical linkage over them (``macro.linkage``, Ward by default), the dendrogram, cuts at
    ``macro.groups`` (maxclust) and at ``macro.height_ratios`` (fractions of the maximum merge
    height), the class -> group map of every cut, and the centroid distance heatmap in leaf order.
``python -m stages.macro purity``  (`macro_purity` stage, M4) K-Means purity against the macro
    labels of every ``g<N>`` cut next to the purity against the fine labels, for every K of
    ``kmeans.k``. A separate stage so that changing the K grid does not rebuild the tree.

Cut names used in every output: ``g<N>`` = the tree cut into (at most) N groups
(``fcluster(Z, N, "maxclust")``); ``h<P>`` = the tree cut at P% of the maximum merge height
(``fcluster(Z, P/100 * max(Z[:, 2]), "distance")``). Group ids are scipy's fcluster ids minus 1,
so a cut equals an independent ``fcluster`` call exactly, not just up to relabelling.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.cluster.hierarchy import cophenet, dendrogram, fcluster, leaves_list, linkage
from scipy.spatial.distance import pdist, squareform

from clusterlens.clustering import CLUSTERS_DIR, point_name, point_path
from clusterlens.metrics import purity
from clusterlens.selection import prune_stale
from clusterlens.common import (
    DataError, ParamError, get_logger, load_npy, load_params, log_block, matplotlib_setup, param,
    read_table, require_choice, require_int, run_cli, save_figure, save_npy, write_json,
    write_table,
)

log = get_logger("macro")
LINKAGES = ("ward", "complete", "average", "single", "weighted", "centroid", "median")

OUT_GROUPS = "data/macro/groups.json"
OUT_CLASS_GROUPS = "data/macro/class_groups.csv"
OUT_LINKAGE = "data/macro/linkage.npy"
OUT_CENTROIDS = "data/macro/centroids.npy"
OUT_METRICS = "metrics/macro.json"
OUT_HEIGHT_CUTS = "plots/macro/height_cuts.csv"
OUT_DENDROGRAM = "plots/macro/dendrogram.png"
OUT_HEATMAP = "plots/macro/centroid_distances.png"

OUT_PURITY_METRICS = "metrics/macro_purity.json"
OUT_PURITY_TABLE = "metrics/macro_purity.csv"
OUT_PURITY_LINES = "plots/macro/purity_lines.png"
OUT_PURITY_HEATMAP = "plots/macro/purity_heatmap.png"

LEFT_ORIENTATION_ABOVE = 30  # more classes than this: horizontal dendrogram, one row per leaf


# --------------------------------------------------------------------------- params
def _number(key: str, value, lo: float, hi: float, lo_open: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ParamError(key, f"must be a number, got {value!r}")
    if not ((lo < value) if lo_open else (lo <= value)) or value > hi:
        raise ParamError(key, f"must be in {'(' if lo_open else '['}{lo:g}, {hi:g}], got {value!r}")
    return float(value)


def check_params(params: dict) -> dict:
    """Validate the `macro` section; returns the cleaned values (sorted, de-duplicated lists)."""
    method = require_choice("macro.linkage", param(params, "macro.linkage"), LINKAGES)
    groups = param(params, "macro.groups")
    if not isinstance(groups, list):
        raise ParamError("macro.groups", f"must be a list of group counts, got {groups!r}")
    groups = sorted({require_int("macro.groups", g, 2) for g in groups})
    ratios = param(params, "macro.height_ratios")
    if not isinstance(ratios, list):
        raise ParamError("macro.height_ratios", f"must be a list of fractions, got {ratios!r}")
    ratios = sorted({_number("macro.height_ratios", r, 0.0, 1.0) for r in ratios})
    threshold = _number("macro.color_threshold", param(params, "macro.color_threshold"), 0.0, 1.0)
    heatmap = require_int("macro.heatmap_classes", param(params, "macro.heatmap_classes"), 2)
    return {"linkage": method, "groups": groups, "height_ratios": ratios,
            "color_threshold": threshold, "heatmap_classes": heatmap}


# --------------------------------------------------------------------------- tree and cuts
def class_names(index: pd.DataFrame) -> list[str]:
    """Class names in label order (label i -> names[i]); checks that labels are 0..C-1 and that
    each label has exactly one class name."""
    pairs = index[["label", "class"]].drop_duplicates()
    labels = pairs["label"].to_numpy()
    if len(pairs) != pairs["label"].nunique() or pairs["class"].nunique() != len(pairs):
        raise DataError("data/index.parquet: labels and class names do not map one to one; "
                        "re-run `dvc repro index`")
    if sorted(labels.tolist()) != list(range(len(pairs))):
        raise DataError("data/index.parquet: labels must be 0..C-1; re-run `dvc repro index`")
    return [str(c) for c in pairs.sort_values("label")["class"]]


def class_centroids(X: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(C, d) float64: the mean of every class's rows (computed in float64)."""
    X = np.asarray(X, dtype=np.float64)
    labels = np.asarray(labels)
    return np.stack([X[labels == c].mean(axis=0) for c in range(n_classes)])


def build_tree(centroids: np.ndarray, method: str = "ward") -> np.ndarray:
    """scipy linkage matrix over the centroids (Euclidean)."""
    if len(centroids) < 2:
        raise DataError(f"a tree needs at least 2 classes, got {len(centroids)}")
    return linkage(np.asarray(centroids, dtype=np.float64), method=method, metric="euclidean")


def split_granularities(groups: list[int], n_classes: int) -> tuple[list[int], list[int]]:
    """(kept, skipped): a cut into N >= C groups would just be the classes, so it is skipped."""
    return [g for g in groups if g < n_classes], [g for g in groups if g >= n_classes]


def group_cut_name(n: int) -> str:
    return f"g{n}"


def height_cut_name(ratio: float) -> str:
    return f"h{round(ratio * 100, 4):g}"


def cut_maxclust(Z: np.ndarray, n: int) -> np.ndarray:
    """Class -> group id (0-based) for the tree cut into at most n groups."""
    return fcluster(Z, n, criterion="maxclust").astype(np.int64) - 1


def cut_at_height(Z: np.ndarray, ratio: float) -> tuple[np.ndarray, float]:
    """Class -> group id (0-based) for the cut at ``ratio`` x the maximum merge height."""
    height = float(ratio * Z[:, 2].max())
    return fcluster(Z, height, criterion="distance").astype(np.int64) - 1, height


def make_cuts(Z: np.ndarray, groups: list[int], ratios: list[float]) -> dict[str, dict]:
    """Every cut, by name, in params order: g<N> cuts first, then h<P> cuts."""
    cuts = {}
    for n in groups:
        lab = cut_maxclust(Z, n)
        cuts[group_cut_name(n)] = {"criterion": "maxclust", "requested_groups": n,
                                   "n_groups": int(len(np.unique(lab))), "labels": lab}
    for r in ratios:
        lab, h = cut_at_height(Z, r)
        cuts[height_cut_name(r)] = {"criterion": "distance", "height_ratio": r, "height": h,
                                    "n_groups": int(len(np.unique(lab))), "labels": lab}
    return cuts


def group_members(labels: np.ndarray, names: list[str]) -> dict[str, list[str]]:
    """group id -> its class names (in class order)."""
    return {str(g): [names[i] for i in np.flatnonzero(labels == g)]
            for g in np.unique(labels).tolist()}


def cophenetic_correlation(Z: np.ndarray, centroids: np.ndarray) -> float:
    if len(centroids) < 3:
        return float("nan")
    return float(cophenet(Z, pdist(centroids))[0])


# --------------------------------------------------------------------------- plots
def dendrogram_layout(n: int, max_name: int) -> dict:
    """Figure size, font size and orientation for n leaves (names up to max_name characters)."""
    if n <= LEFT_ORIENTATION_ABOVE:
        font = 10 if n <= 15 else 9
        rotate = n > 12 or max_name > 4
        width = max(8.0, 0.34 * n + 2.0)
        height = 6.0 + (0.07 * max_name if rotate else 0.0)
        return {"orientation": "top", "font": font, "figsize": (width, height),
                "rotation": 90 if rotate else 0}
    font = 8 if n <= 400 else 6
    row = font * 1.5 / 72  # inches per leaf row
    return {"orientation": "left", "font": font, "rotation": 0,
            "figsize": (9.0 + 0.07 * max_name, n * row + 1.8)}


def plot_dendrogram(Z: np.ndarray, names: list[str], threshold_ratio: float, path,
                    method: str = "ward") -> None:
    import matplotlib.pyplot as plt

    n = len(names)
    lay = dendrogram_layout(n, max(len(s) for s in names))
    threshold = threshold_ratio * float(Z[:, 2].max())
    n_at = int(len(np.unique(fcluster(Z, threshold, criterion="distance"))))
    fig, ax = plt.subplots(figsize=lay["figsize"])
    dendrogram(Z, labels=names, orientation=lay["orientation"], color_threshold=threshold,
               above_threshold_color="0.55", leaf_font_size=lay["font"],
               leaf_rotation=lay["rotation"], ax=ax)
    label = (f"colour threshold: {threshold_ratio:.0%} of max height ({threshold:.3g}) "
             f"-> {n_at} groups")
    if lay["orientation"] == "top":
        ax.axhline(threshold, color="#C44E52", ls="--", lw=1.2, label=label)
        ax.set_xlabel("class")
        ax.set_ylabel(f"merge height ({method} distance)")
        ax.legend(loc="upper right", fontsize=9)
    else:
        ax.axvline(threshold, color="#C44E52", ls="--", lw=1.2, label=label)
        ax.set_ylabel("class")
        ax.set_xlabel(f"merge height ({method} distance)")
        ax.invert_yaxis()  # first leaf at the top, reading order
        ax.legend(loc="upper left", fontsize=9)
        ax.tick_params(axis="x", labeltop=True, top=True)  # height axis readable at both ends
    ax.set_title(f"Dendrogram of the {n} class centroids ({method} linkage, PCA space)")
    save_figure(fig, path)


def plot_centroid_distances(centroids: np.ndarray, Z: np.ndarray, names: list[str], n_show: int,
                            path) -> list[str]:
    """Euclidean centroid distances in dendrogram leaf order, the first n_show leaves. Returns
    the class names shown, in order."""
    import matplotlib.pyplot as plt

    order = leaves_list(Z)[:n_show]
    D = squareform(pdist(centroids))[np.ix_(order, order)]
    shown = [names[i] for i in order]
    n = len(shown)
    cell, font = (0.36, 9) if n <= 30 else (0.2, 7) if n <= 80 else (0.17, 6)
    side = max(6.0, n * cell)
    max_name = max(len(s) for s in shown)
    fig, ax = plt.subplots(figsize=(side + 2.2 + 0.06 * max_name, side + 1.5 + 0.06 * max_name))
    im = ax.imshow(D, cmap="viridis_r", interpolation="nearest")
    ax.set_xticks(range(n), shown, rotation=90 if max_name > 3 else 0, fontsize=font)
    ax.set_yticks(range(n), shown, fontsize=font)
    ax.set_xlabel("class (dendrogram leaf order)")
    ax.set_ylabel("class (dendrogram leaf order)")
    fig.colorbar(im, ax=ax, shrink=0.6, label="Euclidean distance between centroids (PCA space)")
    total = len(names)
    scope = f"all {total} classes" if n == total else f"first {n} of {total} classes"
    ax.set_title(f"Class-centroid distances in dendrogram leaf order ({scope})")
    save_figure(fig, path)
    return shown


# --------------------------------------------------------------------------- `macro` stage
def run(params: dict, pca_path: str = "data/pca.npy",
        index_path: str = "data/index.parquet") -> dict:
    p = check_params(params)
    X = load_npy(pca_path)
    index = read_table(index_path)
    if len(index) != len(X):
        raise DataError(f"{pca_path} has {len(X)} rows but {index_path} has {len(index)}: "
                        "re-run `dvc repro`")
    names = class_names(index)
    n_classes = len(names)
    kept, skipped = split_granularities(p["groups"], n_classes)
    log_block(log, "macro", inputs={"pca": f"{pca_path} {X.shape}",
                                    "index": f"{index_path} ({n_classes} classes)"},
              params={f"macro.{k}": v for k, v in p.items()})
    if skipped:
        log.warning("macro.groups %s skipped: not fewer than the %d classes", skipped, n_classes)
    labels = index["label"].to_numpy()
    centroids = class_centroids(X, labels, n_classes)
    Z = build_tree(centroids, p["linkage"])
    cuts = make_cuts(Z, kept, p["height_ratios"])
    max_height = float(Z[:, 2].max())
    threshold = p["color_threshold"] * max_height

    save_npy(OUT_CENTROIDS, centroids)
    save_npy(OUT_LINKAGE, Z)
    counts = np.bincount(labels, minlength=n_classes)
    table = pd.DataFrame({"class": names, "label": np.arange(n_classes), "images": counts})
    for name, cut in cuts.items():
        table[name] = cut["labels"]
    write_table(OUT_CLASS_GROUPS, table)
    listing = {"classes": n_classes, "linkage": p["linkage"], "max_height": max_height,
               "leaf_order": [names[i] for i in leaves_list(Z)],
               "cuts": {name: {**{k: v for k, v in cut.items() if k != "labels"},
                               "groups": group_members(cut["labels"], names)}
                        for name, cut in cuts.items()}}
    write_json(OUT_GROUPS, listing)
    heights = [c for c in cuts.values() if c["criterion"] == "distance"]
    write_table(OUT_HEIGHT_CUTS, pd.DataFrame({
        "height_ratio": [c["height_ratio"] for c in heights],
        "height": [round(c["height"], 6) for c in heights],
        "groups": [c["n_groups"] for c in heights]}))

    matplotlib_setup()
    plot_dendrogram(Z, names, p["color_threshold"], OUT_DENDROGRAM, p["linkage"])
    shown = plot_centroid_distances(centroids, Z, names, min(p["heatmap_classes"], n_classes),
                                    OUT_HEATMAP)
    metrics = {
        "classes": n_classes, "linkage": p["linkage"],
        "cophenetic_correlation": cophenetic_correlation(Z, centroids),
        "max_height": max_height, "color_threshold": threshold,
        "groups_at_color_threshold": int(len(np.unique(fcluster(Z, threshold, "distance")))),
        "skipped_groups": skipped,
        "groups": {n: c["n_groups"] for n, c in cuts.items() if c["criterion"] == "maxclust"},
        "largest_group": {n: int(np.bincount(c["labels"]).max()) for n, c in cuts.items()
                          if c["criterion"] == "maxclust"},
        "groups_at_height": {n: c["n_groups"] for n, c in cuts.items()
                             if c["criterion"] == "distance"},
        "heatmap_classes": len(shown),
    }
    metrics = write_json(OUT_METRICS, metrics)
    log_block(log, "macro done", outputs={
        OUT_CLASS_GROUPS: "class x cut group ids: " + ", ".join(
            f"{n}={c['n_groups']}" for n, c in cuts.items()),
        OUT_GROUPS: "group -> class names for every cut",
        OUT_LINKAGE: f"scipy linkage {Z.shape}", OUT_CENTROIDS: f"{centroids.shape}",
        OUT_METRICS: f"cophenetic correlation {metrics['cophenetic_correlation']}",
        "plots": ", ".join([OUT_DENDROGRAM, OUT_HEATMAP, OUT_HEIGHT_CUTS])})
    return metrics


# --------------------------------------------------------------------------- `macro_purity`
def kmeans_grid(params: dict) -> list[int]:
    ks = param(params, "kmeans.k")
    if not isinstance(ks, list):
        raise ParamError("kmeans.k", f"must be a list, got {ks!r}")
    ks = [require_int("kmeans.k", k, 2) for k in ks]
    if not ks:
        raise ParamError("kmeans.k", "is empty: macro_purity scores the K-Means grid, give a K")
    return list(dict.fromkeys(ks))


def read_class_groups(path, names: list[str]) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """The class -> group table and its g<N> cuts (class label -> group id arrays)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} is missing: run `dvc repro macro`")
    table = read_table(path)
    if table["class"].astype(str).tolist() != names:
        raise DataError(f"{path} does not list the classes of data/index.parquet: "
                        "re-run `dvc repro macro`")
    cuts = {c: table[c].to_numpy(np.int64) for c in table.columns
            if c.startswith("g") and c[1:].isdigit()}
    return table, cuts


def purity_table(kmeans_labels: dict[int, np.ndarray], fine: np.ndarray,
                 cuts: dict[str, np.ndarray]) -> pd.DataFrame:
    """One row per K: purity against the fine labels and against every macro cut."""
    rows = []
    for k, pred in kmeans_labels.items():
        row = {"k": k, "fine": purity(fine, pred)}
        for name, class_to_group in cuts.items():
            row[name] = purity(class_to_group[fine], pred)
        rows.append(row)
    return pd.DataFrame(rows, columns=["k", "fine", *cuts])


def _targets(table: pd.DataFrame, cuts: dict[str, np.ndarray], n_classes: int) -> dict[str, int]:
    """target column -> number of target categories, coarse to fine."""
    out = {name: int(len(np.unique(g))) for name, g in cuts.items()}
    out = dict(sorted(out.items(), key=lambda t: t[1]))
    out["fine"] = n_classes
    return out


def plot_purity_lines(table: pd.DataFrame, targets: dict[str, int], path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    xs = list(targets.values())
    for _, row in table.iterrows():
        ax.plot(xs, [row[t] for t in targets], marker="o", label=f"K={int(row['k'])}")
    ax.set_xscale("log")
    ax.set_xticks(sorted(set(xs)), [str(x) for x in sorted(set(xs))])
    ax.minorticks_off()
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("number of target categories (log scale; rightmost = the fine classes)")
    ax.set_ylabel("K-Means cluster purity")
    ax.set_title("K-Means purity against macro-categories and fine classes")
    ax.legend(title="K-Means", fontsize=8)
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def plot_purity_heatmap(table: pd.DataFrame, targets: dict[str, int], path) -> None:
    import matplotlib.pyplot as plt

    M = table[list(targets)].to_numpy(dtype=float)
    cols = [f"{n} classes\n(fine)" if t == "fine" else f"{n} groups\n({t})"
            for t, n in targets.items()]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(cols) + 2.5),
                                    max(3.0, 0.55 * len(M) + 1.8)))
    im = ax.imshow(M, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    for i in range(M.shape[0]):
        for j in range(M.shape[1]):
            ax.text(j, i, f"{M[i, j]:.3f}", ha="center", va="center", fontsize=9)
    ax.set_xticks(range(len(cols)), cols, fontsize=8)
    ax.set_yticks(range(len(M)), [f"K={int(k)}" for k in table["k"]])
    ax.set_xlabel("target categories (macro -> fine)")
    ax.set_ylabel("K-Means clusters")
    fig.colorbar(im, ax=ax, label="purity")
    ax.set_title("K-Means purity: clusters x number of target categories")
    save_figure(fig, path)


def run_purity(params: dict, clusters_dir=CLUSTERS_DIR, groups_path: str = OUT_CLASS_GROUPS,
               index_path: str = "data/index.parquet") -> dict:
    ks = kmeans_grid(params)
    # the folder this stage depends on must hold exactly the current grid (see clustering.py)
    prune_stale({"kmeans": [point_name("kmeans", k) for k in ks]}, clusters_dir, ("kmeans",))
    index = read_table(index_path)
    names = class_names(index)
    fine = index["label"].to_numpy(np.int64)
    _, cuts = read_class_groups(groups_path, names)
    log_block(log, "macro_purity", inputs={"class groups": f"{groups_path} ({', '.join(cuts)})",
                                           "clusters": f"{clusters_dir}/kmeans"},
              params={"kmeans.k": ks})
    if not cuts:
        log.warning("no macro granularity (every macro.groups value was >= the class count): "
                    "purity against the fine labels only")
    labels = {}
    for k in ks:
        path = point_path("kmeans", point_name("kmeans", k), clusters_dir, suffix=".npy")
        if not path.is_file():
            raise DataError(f"{path} is missing: run `dvc repro` (K-Means grid point k{k})")
        lab = load_npy(path)
        if len(lab) != len(fine):
            raise DataError(f"{path} has {len(lab)} labels but {index_path} has {len(fine)} "
                            "rows: re-run `dvc repro`")
        labels[k] = lab
    table = purity_table(labels, fine, cuts)
    targets = _targets(table, cuts, len(names))
    write_table(OUT_PURITY_TABLE, table.round(6))
    best = {}
    for t in targets:
        i = int(table[t].to_numpy().argmax())
        best[t] = {"k": int(table["k"].iloc[i]), "purity": float(table[t].iloc[i])}
    out = {"classes": len(names), "targets": targets,
           **{point_name("kmeans", int(r["k"])): {t: float(r[t]) for t in targets}
              for _, r in table.iterrows()},
           "best": best}
    out = write_json(OUT_PURITY_METRICS, out)
    matplotlib_setup()
    plot_purity_lines(table, targets, OUT_PURITY_LINES)
    plot_purity_heatmap(table, targets, OUT_PURITY_HEATMAP)
    log_block(log, "macro_purity done", outputs={
        OUT_PURITY_TABLE: f"{len(table)} K x {len(targets)} targets",
        OUT_PURITY_METRICS: ", ".join(f"{t}: best K={b['k']} purity {b['purity']:.3f}"
                                      for t, b in best.items()),
        "plots": f"{OUT_PURITY_LINES}, {OUT_PURITY_HEATMAP}"})
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Macro-categories from the class-centroid tree.")
    ap.add_argument("step", nargs="?", default="tree", choices=["tree", "purity"],
                    help="tree: the `macro` stage (M1-M3); purity: `macro_purity` (M4)")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    if args.step == "tree":
        run(params)
    else:
        run_purity(params)


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
