"""Fusing visual and text features, and seed 003's comparison table (SPEC E6, C5).

Seed 003 clusters four feature sets with K-Means and a Gaussian mixture at K = the number of
classes and compares them by Cohen's kappa after mapping every cluster to its majority class:

- ``visual``: the backbone features as extracted;
- ``text``: the caption embeddings (``stages.captions``, unit rows);
- ``concat``: each L2-normalised, then concatenated (D_v + D_t columns);
- ``weighted``: each standardised and PCA-reduced to a common dimension
  ``min(fusion.dim, D_v, D_t, N)``, L2-normalised, then ``w * visual + (1 - w) * text``
  (seed 003: w = 0.5).

``python -m stages.fusion`` reads ``data/features.npy``, ``data/text_features.npy`` and the
index's labels; writes ``data/fused.npy`` (the set named by ``fusion.set``; for ``visual`` an
N x 0 placeholder, as the visual features are ``data/features.npy`` itself: no copy),
``metrics/fusion.csv`` (the kappa table: method x feature set, with NMI and ARI) and
``metrics/fusion.json`` (the same as feature set -> method -> kappa, and the best pair).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from clusterlens import metrics as cm
from clusterlens.common import (
    DataError, ParamError, get_logger, load_npy, load_params, log_block, param, read_table,
    remove_stale_tmp, require_choice, require_int, run_cli, save_npy, write_json, write_table,
)

log = get_logger("fusion")
FEATURE_SETS = ("visual", "text", "concat", "weighted")
METHODS = ("kmeans", "gmm", "ward")
SET_TITLES = {"visual": "Visual", "text": "Text", "concat": "Fused - Concat",
              "weighted": "Fused - Weighted"}
METHOD_TITLES = {"kmeans": "K-Means", "gmm": "GMM", "ward": "Agglomerative (ward)"}


# --------------------------------------------------------------------------- checks
def check_weight(weight) -> float:
    """``fusion.weight``: the visual share of the weighted average, a number in [0, 1]."""
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) \
            or not 0.0 <= float(weight) <= 1.0:
        raise ParamError("fusion.weight", f"must be a number in [0, 1] (the visual share; "
                         f"seed 003: 0.5), got {weight!r}")
    return float(weight)


def check_fusion(name, weight, dim) -> tuple[str, float, int]:
    """Validate ``fusion.set``, ``fusion.weight``, ``fusion.dim`` before any work."""
    return (require_choice("fusion.set", name, FEATURE_SETS), check_weight(weight),
            require_int("fusion.dim", dim, 1))


def _pair(visual, text) -> tuple[np.ndarray, np.ndarray]:
    v, t = np.asarray(visual), np.asarray(text)
    if v.ndim != 2 or t.ndim != 2:
        raise DataError(f"visual {v.shape} and text {t.shape} features must be 2-D (N, D)")
    if len(v) != len(t):
        raise DataError(f"visual features have {len(v)} rows but text features {len(t)}: "
                        "both must follow the index rows (run `dvc repro`)")
    return v, t


# --------------------------------------------------------------------------- fusion
def l2_normalize(X) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32; all-zero rows stay zero)."""
    X = np.asarray(X, dtype=np.float64)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return (X / np.maximum(norms, 1e-12)).astype(np.float32)


def fuse_concat(visual, text) -> np.ndarray:
    """``[l2(visual), l2(text)]``: (N, D_v + D_t) float32, each half of unit norm."""
    v, t = _pair(visual, text)
    return np.hstack([l2_normalize(v), l2_normalize(t)])


def common_dim(dim: int, n: int, d_visual: int, d_text: int) -> int:
    """The PCA dimension both parts are reduced to: min(dim, D_v, D_t, N)."""
    return int(min(require_int("fusion.dim", dim, 1), d_visual, d_text, n))


def pca_project(X, dim: int, seed: int = 0) -> np.ndarray:
    """Standardise, PCA to ``dim`` components (``stages.reduce.fit_pca``), L2-normalise rows."""
    from clusterlens.reduce import fit_pca

    return l2_normalize(fit_pca(np.asarray(X), int(dim), standardize=True, seed=seed).scores)


def fuse_weighted(visual, text, weight: float = 0.5, dim: int = 384, seed: int = 0) -> np.ndarray:
    """``w * p(visual) + (1 - w) * p(text)`` with ``p`` = standardise + PCA to the common
    dimension + L2 normalisation: (N, min(dim, D_v, D_t, N)) float32. ``weight = 1`` gives
    ``p(visual)`` exactly, ``weight = 0`` gives ``p(text)``."""
    w = check_weight(weight)
    v, t = _pair(visual, text)
    k = common_dim(dim, len(v), v.shape[1], t.shape[1])
    pv, pt = pca_project(v, k, seed), pca_project(t, k, seed)
    return (np.float32(w) * pv + np.float32(1.0 - w) * pt).astype(np.float32)


def feature_set(name: str, visual, text, weight: float = 0.5, dim: int = 384,
                seed: int = 0) -> np.ndarray:
    """One of ``visual`` (as given), ``text`` (as given), ``concat``, ``weighted``; float32."""
    name, weight, dim = check_fusion(name, weight, dim)
    v, t = _pair(visual, text)
    if name == "visual":
        return np.asarray(v, dtype=np.float32)
    if name == "text":
        return np.asarray(t, dtype=np.float32)
    if name == "concat":
        return fuse_concat(v, t)
    return fuse_weighted(v, t, weight, dim, seed)


# --------------------------------------------------------------------------- kappa table
def cluster_labels(X, method: str, k: int, seed: int = 0, n_init: int = 10,
                   max_iter: int = 300, covariance_type: str = "diag",
                   gmm_max_iter: int = 200) -> np.ndarray:
    """K clusters of ``X`` by ``kmeans``, ``gmm`` or ``ward`` (agglomerative), with the same
    code as the clustering grid stages (``stages.cluster``)."""
    from clusterlens import clustering as cluster

    X = np.asarray(X, dtype=np.float64)
    if method == "kmeans":
        return cluster.run_kmeans(X, k, n_init, max_iter, seed)[0]
    if method == "gmm":
        return cluster.run_gmm(X, k, covariance_type, gmm_max_iter, seed)[0]
    if method == "ward":
        return cluster.cut_tree_at(cluster.linkage_tree(X, "ward"), [k])[k]
    raise ParamError("fusion.methods", f"names an unknown method {method!r}; choose from "
                     f"{', '.join(METHODS)}")


def kappa_table(feature_sets: dict, y, k: int | None = None, seed: int = 0,
                methods=("kmeans", "gmm", "ward"), n_init: int = 10, max_iter: int = 300,
                covariance_type: str = "diag", gmm_max_iter: int = 200, progress: bool = True):
    """Seed 003's table: every method x feature set clustered at K (default: the number of
    classes), scored by Cohen's kappa after majority-vote mapping
    (``cluster_metrics.kappa_after_majority_vote``), with NMI and ARI beside it.

    Returns a pandas DataFrame with columns ``features``, ``method``, ``label`` (as the seed
    writes it, e.g. "K-Means (Fused - Concat)"), ``kappa``, ``nmi``, ``ari``; rows in the order
    of ``feature_sets``, then ``methods``.
    """
    import pandas as pd
    from sklearn import metrics as skm
    from tqdm.auto import tqdm

    y = np.asarray(y)
    k = len(np.unique(y)) if k is None else k
    for m in methods:
        require_choice("fusion.methods", m, METHODS)
    require_int("fusion.k", k, 2)
    rows = []
    jobs = [(name, m) for name in feature_sets for m in methods]
    for name, method in tqdm(jobs, desc="kappa table", unit="fit", disable=not progress):
        X = np.asarray(feature_sets[name])
        if len(X) != len(y):
            raise DataError(f"feature set {name!r} has {len(X)} rows, labels {len(y)}")
        if k > len(X):
            raise ParamError("fusion.k", f"= {k} is more than the {len(X)} images")
        labels = cluster_labels(X, method, k, seed, n_init, max_iter, covariance_type,
                                gmm_max_iter)
        rows.append({"features": name, "method": method,
                     "label": f"{METHOD_TITLES.get(method, method)} "
                              f"({SET_TITLES.get(name, name)})",
                     "kappa": cm.kappa_after_majority_vote(y, labels),
                     "nmi": float(skm.normalized_mutual_info_score(y, labels)),
                     "ari": float(skm.adjusted_rand_score(y, labels))})
    return pd.DataFrame(rows, columns=["features", "method", "label", "kappa", "nmi", "ari"])


# --------------------------------------------------------------------------- stage
IN_VISUAL = "data/features.npy"
IN_TEXT = "data/text_features.npy"
OUT_FUSED = "data/fused.npy"
OUT_TABLE = "metrics/fusion.csv"
OUT_METRICS = "metrics/fusion.json"


def fusion_params(params: dict) -> dict:
    """Validated params: fusion.set (visual), fusion.weight (0.5), fusion.dim (384),
    fusion.methods ([kmeans, gmm]); kmeans.n_init/max_iter, gmm.covariance_type/max_iter
    and seed as the clustering grids use them."""
    name, weight, dim = check_fusion(param(params, "fusion.set", "visual"),
                                     param(params, "fusion.weight", 0.5),
                                     param(params, "fusion.dim", 384))
    methods = param(params, "fusion.methods", ["kmeans", "gmm"])
    if not isinstance(methods, list) or not methods:
        raise ParamError("fusion.methods", f"must be a list from {', '.join(METHODS)}, got "
                         f"{methods!r}")
    for m in methods:
        require_choice("fusion.methods", m, METHODS)
    return {"set": name, "weight": weight, "dim": dim, "methods": methods,
            "n_init": require_int("kmeans.n_init", param(params, "kmeans.n_init", 10), 1),
            "max_iter": require_int("kmeans.max_iter", param(params, "kmeans.max_iter", 300), 1),
            "covariance_type": require_choice(
                "gmm.covariance_type", param(params, "gmm.covariance_type", "diag"),
                ("full", "tied", "diag", "spherical")),
            "gmm_max_iter": require_int("gmm.max_iter", param(params, "gmm.max_iter", 200), 1),
            "seed": require_int("seed", param(params, "seed", 0))}


def write_visual_only(p: dict, n: int) -> dict:
    """Without text features (``captions.enabled: false``) only ``fusion.set: visual`` works;
    the comparison table is empty."""
    import pandas as pd

    if p["set"] != "visual":
        raise ParamError("fusion.set", f"= {p['set']} needs text features, but captions.enabled "
                         "is false: set captions.enabled: true, or fusion.set: visual")
    log.info("no text features (captions.enabled: false): visual only, no comparison table")
    save_npy(OUT_FUSED, np.zeros((n, 0), np.float32))
    write_table(OUT_TABLE, pd.DataFrame(columns=["features", "method", "label", "kappa", "nmi",
                                                 "ari"]))
    return write_json(OUT_METRICS, {"enabled": False})


def selected_set(params: dict) -> str:
    """``fusion.set`` (``visual`` when the key is absent, as in params files older than it)."""
    return require_choice("fusion.set", param(params, "fusion.set", "visual"), FEATURE_SETS)


def load_selected(params: dict, visual_path: str = IN_VISUAL,
                  fused_path: str = OUT_FUSED) -> tuple[np.ndarray, str]:
    """The feature set that ``reduce``, ``nmf`` and ``upper_bound`` work on: the visual features
    (``data/features.npy``) or the fused/text set the ``fusion`` stage wrote. Returns (features,
    a description of where they came from)."""
    name = selected_set(params)
    if name == "visual":
        return load_npy(visual_path), f"{visual_path} (fusion.set: visual)"
    if not Path(fused_path).is_file():
        raise DataError(f"{fused_path} is missing: run `dvc repro fusion` first")
    X = load_npy(fused_path)
    if X.ndim != 2 or X.shape[1] == 0:
        raise DataError(f"{fused_path} holds no {name!r} features (it was written for another "
                        "fusion.set): run `dvc repro fusion`")
    return X, f"{fused_path} (fusion.set: {name})"


def run(params: dict, visual_path: str = IN_VISUAL, text_path: str = IN_TEXT,
        index_path: str = "data/index.parquet") -> dict:
    p = fusion_params(params)
    for path in (visual_path, text_path, index_path):
        if not Path(path).is_file():
            raise DataError(f"{path} is missing: run `dvc repro` (extract, captions) first")
    remove_stale_tmp(OUT_FUSED, OUT_TABLE, OUT_METRICS)
    visual, text = _pair(load_npy(visual_path), load_npy(text_path))
    y = read_table(index_path)["label"].to_numpy()
    if text.shape[1] == 0:  # captions.enabled: false
        return write_visual_only(p, len(visual))
    if len(y) != len(visual):
        raise DataError(f"{index_path} has {len(y)} rows but {visual_path} {len(visual)}")
    k = len(np.unique(y))
    log_block(log, "fusion", inputs={"visual": f"{visual_path} {visual.shape}",
                                     "text": f"{text_path} {text.shape}", "classes": k},
              params={f"fusion.{key}": p[key] for key in ("set", "weight", "dim", "methods")})
    sets = {name: feature_set(name, visual, text, p["weight"], p["dim"], p["seed"])
            for name in FEATURE_SETS}
    chosen = sets[p["set"]]
    save_npy(OUT_FUSED, chosen if p["set"] != "visual" else np.zeros((len(chosen), 0),
                                                                      np.float32))
    table = kappa_table(sets, y, k, p["seed"], p["methods"], p["n_init"], p["max_iter"],
                        p["covariance_type"], p["gmm_max_iter"])
    write_table(OUT_TABLE, table.round(6))
    best = table.loc[table["kappa"].idxmax()]
    metrics = {name: {r.method: r.kappa for r in table[table.features == name].itertuples()}
               for name in FEATURE_SETS}
    metrics["best"] = {"features": best["features"], "method": best["method"],
                       "kappa": float(best["kappa"])}
    metrics["k"] = k
    metrics["weighted_dim"] = int(sets["weighted"].shape[1])
    metrics = write_json(OUT_METRICS, metrics)
    log_block(log, "fusion done", outputs={
        OUT_FUSED: f"{p['set']} {chosen.shape}" + (" (placeholder: visual = "
                                                    f"{visual_path})" if p["set"] == "visual"
                                                    else ""),
        OUT_TABLE: "\n" + table.to_string(index=False, float_format=lambda x: f"{x:.4f}"),
        OUT_METRICS: f"best {best['label']} kappa {best['kappa']:.4f}"})
    return metrics


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Visual + text feature fusion, kappa table (E6).")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    run(load_params(args.params))


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
