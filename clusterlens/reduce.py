"""`reduce` stage: standardize + PCA (SPEC R1, R2).

``reduce.n_components`` is an integer (number of components) or a fraction in (0, 1) (keep the
fewest components whose cumulative explained variance reaches it). The full spectrum is computed
once (exact, deterministic ``covariance_eigh`` / full SVD), so the explained-variance curve and the
variance at 2/10/50/100 components are exact whatever ``n_components`` is.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

from clusterlens.common import (
    ParamError, get_logger, load_params, log_block, matplotlib_setup, param,
    read_table, remove_stale_tmp, require_bool, require_int, run_cli, save_figure, save_npy,
    save_npz, write_json, write_table,
)

log = get_logger("reduce")
VARIANCE_AT = (2, 10, 50, 100)
EXACT_LIMIT = 4096  # above min(N, D) = this, a randomized solver is used


def check_n_components(value, n_samples: int, n_features: int) -> int | float:
    key = "reduce.n_components"
    limit = min(n_samples, n_features)
    if isinstance(value, bool):
        raise ParamError(key, f"must be an integer or a fraction in (0, 1), got {value!r}")
    if isinstance(value, int):
        if not 1 <= value <= limit:
            raise ParamError(key, f"= {value} must be between 1 and min(images, feature dim) = "
                             f"min({n_samples}, {n_features}) = {limit}")
        return value
    if isinstance(value, float):
        if not 0.0 < value <= 1.0:
            raise ParamError(key, f"= {value} as a variance fraction must be in (0, 1]")
        return value
    raise ParamError(key, f"must be an integer or a fraction in (0, 1), got {value!r}")


@dataclass
class PCAResult:
    scores: np.ndarray  # (N, k) float32
    n_components: int
    explained_variance_ratio: np.ndarray  # full spectrum (or the first components computed)
    scaler_mean: np.ndarray
    scaler_scale: np.ndarray
    pca_mean: np.ndarray
    components: np.ndarray  # (k, D)

    @property
    def cumulative(self) -> np.ndarray:
        return np.cumsum(self.explained_variance_ratio)

    def variance_at(self, k: int) -> float:
        cum = self.cumulative
        return float(cum[min(k, len(cum)) - 1])


def fit_pca(features: np.ndarray, n_components, standardize: bool = True,
            seed: int = 0) -> PCAResult:
    """Standardize (optional) then PCA; returns the first k component scores and the spectrum."""
    X = np.asarray(features, dtype=np.float64)
    n, d = X.shape
    n_components = check_n_components(n_components, n, d)
    if standardize:
        scaler = StandardScaler().fit(X)
        X = scaler.transform(X)
        s_mean, s_scale = scaler.mean_, scaler.scale_
    else:
        s_mean, s_scale = np.zeros(d), np.ones(d)
    limit = min(n, d)
    if limit <= EXACT_LIMIT:
        pca = PCA(n_components=None, svd_solver="covariance_eigh" if n >= d else "full")
    else:
        want = n_components if isinstance(n_components, int) else min(limit, 1024)
        want = max(want, min(limit, max(VARIANCE_AT)))
        pca = PCA(n_components=want, svd_solver="randomized", random_state=seed)
    pca.fit(X)
    ratio = np.nan_to_num(pca.explained_variance_ratio_, nan=0.0)
    if isinstance(n_components, float):
        cum = np.cumsum(ratio)
        reach = np.flatnonzero(cum >= n_components - 1e-12)
        if len(reach) == 0:
            raise ParamError("reduce.n_components", f"= {n_components}: the first {len(cum)} "
                             f"components explain only {cum[-1]:.3f}; use an integer")
        k = int(reach[0]) + 1
    else:
        k = n_components
    components = pca.components_[:k]
    scores = (X - pca.mean_) @ components.T
    return PCAResult(scores=scores.astype(np.float32), n_components=k,
                     explained_variance_ratio=ratio, scaler_mean=s_mean, scaler_scale=s_scale,
                     pca_mean=pca.mean_, components=components)


def reduce_metrics(res: PCAResult, n_features: int) -> dict:
    m = {"n_components": res.n_components, "input_dim": int(n_features),
         "images": int(res.scores.shape[0]),
         "variance_retained": res.variance_at(res.n_components)}
    for k in VARIANCE_AT:
        m[f"variance_at_{k}"] = res.variance_at(k)
    return m


# --------------------------------------------------------------------------- plots
def class_colors(n: int):
    import matplotlib.pyplot as plt

    if n <= 10:
        return [plt.get_cmap("tab10")(i) for i in range(n)]
    if n <= 20:
        return [plt.get_cmap("tab20")(i) for i in range(n)]
    cmap = plt.get_cmap("gist_ncar")
    return [cmap(0.05 + 0.9 * i / max(n - 1, 1)) for i in range(n)]


def plot_pca_2d(coords: np.ndarray, classes: np.ndarray, path, variance: tuple[float, float],
                seed: int = 0) -> None:
    import matplotlib.pyplot as plt

    names = sorted(pd.unique(classes))
    colors = class_colors(len(names))
    order = np.random.default_rng(seed).permutation(len(coords))  # no class drawn on top
    color_of = {c: colors[i] for i, c in enumerate(names)}
    fig, ax = plt.subplots(figsize=(9 if len(names) <= 20 else 8, 7))
    size = float(np.clip(8000 / max(len(coords), 1), 3, 30))
    ax.scatter(coords[order, 0], coords[order, 1], s=size, alpha=0.7, linewidths=0,
               c=[color_of[c] for c in classes[order]])
    # Standardized CNN features have a few far outliers: frame the central 99% of the points
    # and say how many fall outside, rather than squeezing everyone into a corner.
    lo, hi = np.percentile(coords, [0.5, 99.5], axis=0)
    pad = 0.08 * (hi - lo + 1e-12)
    lo, hi = lo - pad, hi + pad
    outside = int((~((coords >= lo) & (coords <= hi)).all(axis=1)).sum())
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    if outside:
        ax.text(0.01, 0.01, f"{outside} outlying points outside the view", fontsize=8,
                transform=ax.transAxes, color="0.3")
    if len(names) <= 30:
        for c in names:
            ax.scatter([], [], color=color_of[c], label=c, s=30)
        ax.legend(title="class", bbox_to_anchor=(1.01, 1), loc="upper left",
                  fontsize=8 if len(names) <= 20 else 6, frameon=False)
    ax.set_xlabel(f"PC 1 ({variance[0]:.1%} of variance)")
    ax.set_ylabel(f"PC 2 ({variance[1]:.1%} of variance)")
    ax.set_title(f"PCA 2-D view coloured by class ({len(coords)} images, {len(names)} classes)")
    save_figure(fig, path)


def plot_explained_variance(res: PCAResult, path) -> None:
    import matplotlib.pyplot as plt

    cum = res.cumulative
    x = np.arange(1, len(cum) + 1)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(x, cum, color="#4C72B0", label="cumulative")
    ax.bar(x, res.explained_variance_ratio, color="#DD8452", alpha=0.6, label="per component")
    ax.axvline(res.n_components, color="#C44E52", ls="--",
               label=f"kept: {res.n_components} ({res.variance_at(res.n_components):.1%})")
    ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("number of principal components (log scale)")
    ax.set_ylabel("explained variance ratio")
    ax.set_title("PCA explained variance")
    ax.legend(loc="center right")
    save_figure(fig, path)


# --------------------------------------------------------------------------- stage
OUT_PCA = "data/pca.npy"
OUT_PCA_2D = "data/pca_2d.npy"
OUT_MODEL = "data/pca_model.npz"
OUT_METRICS = "metrics/reduce.json"
OUT_CURVE = "plots/reduce/explained_variance.csv"
OUT_CURVE_PNG = "plots/reduce/explained_variance.png"
OUT_SCATTER = "plots/reduce/pca_2d.png"


def run(params: dict, features_path: str = "data/features.npy",
        index_path: str = "data/index.parquet", fused_path: str = "data/fused.npy") -> dict:
    standardize = require_bool("reduce.standardize", param(params, "reduce.standardize"))
    n_components = param(params, "reduce.n_components")
    seed = require_int("seed", param(params, "seed"))
    from clusterlens.fusion import load_selected

    features, source = load_selected(params, features_path, fused_path)
    features_path = source  # named in the messages below
    index = read_table(index_path)
    if len(index) != len(features):
        raise ValueError(f"{features_path} has {len(features)} rows but {index_path} has "
                         f"{len(index)}: re-run `dvc repro`")
    check_n_components(n_components, *features.shape)
    remove_stale_tmp(OUT_PCA, OUT_PCA_2D, OUT_MODEL, OUT_METRICS, OUT_CURVE, OUT_CURVE_PNG,
                     OUT_SCATTER)  # left by a run killed mid-write
    log_block(log, "reduce", inputs={"features": f"{features_path} {features.shape}"},
              params={"reduce.standardize": standardize, "reduce.n_components": n_components,
                      "seed": seed})
    res = fit_pca(features, n_components, standardize, seed)
    metrics = reduce_metrics(res, features.shape[1])
    save_npy(OUT_PCA, res.scores)
    coords = res.scores[:, :2] if res.n_components >= 2 else fit_pca(
        features, 2, standardize, seed).scores
    save_npy(OUT_PCA_2D, np.ascontiguousarray(coords))
    save_npz(OUT_MODEL, scaler_mean=res.scaler_mean, scaler_scale=res.scaler_scale,
             pca_mean=res.pca_mean, components=res.components,
             explained_variance_ratio=res.explained_variance_ratio)
    cum = res.cumulative
    write_table(OUT_CURVE, pd.DataFrame({"component": np.arange(1, len(cum) + 1),
                                         "explained_variance": res.explained_variance_ratio.round(6),
                                         "cumulative_variance": cum.round(6)}))
    matplotlib_setup()
    plot_explained_variance(res, OUT_CURVE_PNG)
    plot_pca_2d(coords, index["class"].astype(str).to_numpy(), OUT_SCATTER,
                (float(res.explained_variance_ratio[0]),
                 float(res.explained_variance_ratio[1]) if len(cum) > 1 else 0.0), seed)
    metrics = write_json(OUT_METRICS, metrics)
    log_block(log, "reduce done", outputs={
        OUT_PCA: f"{res.scores.shape[0]} x {res.n_components} float32 "
                 f"({metrics['variance_retained']:.1%} of variance)",
        OUT_PCA_2D: "2-D coordinates", OUT_MODEL: "scaler + PCA parameters",
        OUT_METRICS: ", ".join(f"{k}={metrics[f'variance_at_{k}']:.3f}" for k in VARIANCE_AT),
        "plots": ", ".join([OUT_CURVE, OUT_CURVE_PNG, OUT_SCATTER])})
    return metrics


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Standardize + PCA (SPEC R1, R2).")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    run(load_params(args.params))


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
