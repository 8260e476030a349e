"""`upper_bound` stage: the supervised upper bound (SPEC U1-U3).

A stratified train/test split of the images (``upper_bound.test_size``, ``seed``); one logistic
regression per entry of ``upper_bound.configs`` (seed 000's four: C=1; C=0.1; C=0.1 balanced;
PCA features + C=0.1); train/test accuracy, gap, macro-F1, weighted-F1; the best configuration
(highest test accuracy, first in params order on a tie); its per-class test accuracy; and the same
classifier trained on the macro labels of every ``g<N>`` cut of the `macro` stage, next to the
random baseline 1/groups.

Features: ``raw`` = data/features.npy standardized with a scaler fit on the training split only
(no test statistics leak in); ``pca`` = data/pca.npy as the `reduce` stage wrote it (standardize +
PCA fit on all images without labels, as in seed 000, and as every clustering method sees them).

Every fit uses the same split: ``train_test_split(arange(N), test_size=..., random_state=seed,
stratify=label)``; a split stratified on the fine classes is also stratified on every macro
grouping of them, so the macro scores are measured on the very same test images.
"""
from __future__ import annotations

import argparse
import re
import time
import warnings

import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from clusterlens.common import (
    DataError, ParamError, get_logger, load_npy, load_params, log_block, matplotlib_setup, param,
    read_table, require_int, run_cli, save_figure, write_json, write_table,
)
from clusterlens.macro import OUT_CLASS_GROUPS, class_names, read_class_groups

log = get_logger("upper_bound")
FEATURES = ("raw", "pca")
CONFIG_KEYS = ("name", "C", "class_weight", "features")
NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")
TOP_N = 10

OUT_METRICS = "metrics/upper_bound.json"
OUT_CONFIGS = "metrics/upper_bound_configs.csv"
OUT_PER_CLASS = "metrics/upper_bound_per_class.csv"
OUT_PREDICTIONS = "data/upper_bound/predictions.parquet"
OUT_CONFIGS_PNG = "plots/upper_bound/configs.png"
OUT_PER_CLASS_PNG = "plots/upper_bound/per_class_accuracy.png"
OUT_MACRO_CSV = "plots/upper_bound/macro_accuracy.csv"
OUT_MACRO_PNG = "plots/upper_bound/macro_accuracy.png"


# --------------------------------------------------------------------------- params
def check_configs(value) -> list[dict]:
    key = "upper_bound.configs"
    if not isinstance(value, list) or not value:
        raise ParamError(key, f"must be a non-empty list of configurations, got {value!r}")
    out, seen = [], set()
    for i, cfg in enumerate(value):
        k = f"{key}[{i}]"
        if not isinstance(cfg, dict):
            raise ParamError(k, f"must be a mapping with {', '.join(CONFIG_KEYS)}; got {cfg!r}")
        unknown = sorted(set(cfg) - set(CONFIG_KEYS))
        if unknown:
            raise ParamError(f"{k}.{unknown[0]}",
                             f"is not a known key (use {', '.join(CONFIG_KEYS)})")
        name = cfg.get("name")
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise ParamError(f"{k}.name", f"must be a name of letters, digits, _ or - "
                             f"(no dots: it becomes a metrics key), got {name!r}")
        if name in seen:
            raise ParamError(f"{k}.name", f"{name!r} is used twice")
        seen.add(name)
        C = cfg.get("C", 1.0)
        if isinstance(C, bool) or not isinstance(C, (int, float)) or not C > 0:
            raise ParamError(f"{k}.C", f"must be a positive number, got {C!r}")
        cw = cfg.get("class_weight")
        if cw not in (None, "balanced"):
            raise ParamError(f"{k}.class_weight", f"must be null or balanced, got {cw!r}")
        feats = cfg.get("features", "raw")
        if feats not in FEATURES:
            raise ParamError(f"{k}.features",
                             f"must be one of {', '.join(FEATURES)}; got {feats!r}")
        out.append({"name": name, "C": float(C), "class_weight": cw, "features": feats})
    return out


def check_params(params: dict) -> dict:
    test_size = param(params, "upper_bound.test_size")
    if isinstance(test_size, bool) or not isinstance(test_size, float) or not 0 < test_size < 1:
        raise ParamError("upper_bound.test_size",
                         f"must be a fraction in (0, 1) such as 0.2, got {test_size!r}")
    return {"test_size": test_size,
            "max_iter": require_int("upper_bound.max_iter",
                                    param(params, "upper_bound.max_iter"), 1),
            "configs": check_configs(param(params, "upper_bound.configs")),
            "seed": require_int("seed", param(params, "seed"))}


def check_split(labels: np.ndarray, test_size: float) -> None:
    """Every class needs 2 images, and both sides at least one image per class."""
    counts = np.bincount(labels)
    n, c = len(labels), len(counts)
    if counts.min() < 2:
        raise DataError(f"class label {int(counts.argmin())} has {int(counts.min())} image: a "
                        "stratified split needs at least 2 images per class")
    n_test = int(np.ceil(test_size * n))
    if n_test < c or n - n_test < c:
        raise ParamError("upper_bound.test_size", f"= {test_size} gives {n_test} test and "
                         f"{n - n_test} training images; both must be >= the {c} classes")


# --------------------------------------------------------------------------- model
def stratified_split(labels: np.ndarray, test_size: float, seed: int):
    """(train_idx, test_idx), in train_test_split's own (shuffled) order."""
    idx = np.arange(len(labels))
    tr, te = train_test_split(idx, test_size=test_size, random_state=seed, stratify=labels)
    return tr, te


def feature_views(raw: np.ndarray, pca: np.ndarray, train_idx: np.ndarray) -> dict:
    """features name -> the full N x d matrix used by the classifier (float64)."""
    raw = np.asarray(raw, dtype=np.float64)
    scaler = StandardScaler().fit(raw[train_idx])  # training split only
    return {"raw": scaler.transform(raw), "pca": np.asarray(pca, dtype=np.float64)}


def fit_logreg(X_train, y_train, C: float, class_weight, max_iter: int, seed: int):
    """lbfgs logistic regression (multinomial), BLAS on one thread; returns (model, converged)."""
    model = LogisticRegression(C=C, class_weight=class_weight, max_iter=max_iter,
                               solver="lbfgs", random_state=seed)
    # One BLAS thread: on a 2-core machine the multi-threaded OpenBLAS made these small fits
    # 10-50x slower under load; the result does not depend on the thread count.
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X_train, y_train)
    converged = bool(np.max(model.n_iter_) < max_iter)
    return model, converged


def scores(model, X_train, y_train, X_test, y_test) -> tuple[dict, np.ndarray, np.ndarray]:
    with threadpool_limits(1):
        p_train, p_test = model.predict(X_train), model.predict(X_test)
    train_acc = accuracy_score(y_train, p_train)
    test_acc = accuracy_score(y_test, p_test)
    return ({"train_accuracy": train_acc, "test_accuracy": test_acc, "gap": train_acc - test_acc,
             "macro_f1": f1_score(y_test, p_test, average="macro", zero_division=0),
             "weighted_f1": f1_score(y_test, p_test, average="weighted", zero_division=0)},
            p_train, p_test)


def evaluate_config(cfg: dict, views: dict, y, train_idx, test_idx, max_iter: int,
                    seed: int) -> tuple[dict, np.ndarray, np.ndarray]:
    X = views[cfg["features"]]
    t0 = time.perf_counter()
    model, converged = fit_logreg(X[train_idx], y[train_idx], cfg["C"], cfg["class_weight"],
                                  max_iter, seed)
    res, p_train, p_test = scores(model, X[train_idx], y[train_idx], X[test_idx], y[test_idx])
    res.update({"features": cfg["features"], "dim": int(X.shape[1]), "C": cfg["C"],
                "class_weight": cfg["class_weight"] or "none",
                "iterations": int(np.max(model.n_iter_)), "converged": converged})
    log.info("%s: train %.4f test %.4f (%d iterations%s, %.1f s)", cfg["name"],
             res["train_accuracy"], res["test_accuracy"], res["iterations"],
             "" if converged else ", NOT converged", time.perf_counter() - t0)
    return res, p_train, p_test


def best_config(results: dict[str, dict]) -> str:
    """Highest test accuracy; ties go to the first in params order."""
    return max(results, key=lambda n: (results[n]["test_accuracy"],
                                       -list(results).index(n)))


def per_class_accuracy(y_test: np.ndarray, pred: np.ndarray, names: list[str],
                       y_train: np.ndarray | None = None) -> pd.DataFrame:
    """One row per class: test images, correct, accuracy (recall); NaN when no test image.
    Sorted by accuracy (best first), then class name."""
    c = len(names)
    test_count = np.bincount(y_test, minlength=c)
    correct = np.bincount(y_test[pred == y_test], minlength=c)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(test_count > 0, correct / np.maximum(test_count, 1), np.nan)
    df = pd.DataFrame({"class": names, "label": np.arange(c), "test_count": test_count,
                       "correct": correct, "accuracy": acc})
    if y_train is not None:
        df.insert(2, "train_count", np.bincount(y_train, minlength=c))
    return df.sort_values(["accuracy", "class"], ascending=[False, True],
                          na_position="last").reset_index(drop=True)


def per_class_summary(df: pd.DataFrame) -> dict:
    acc = df["accuracy"].dropna()
    return {"mean": float(acc.mean()), "median": float(acc.median()),
            "std": float(acc.std()) if len(acc) > 1 else 0.0,  # sample std (ddof=1), as pandas
            "min": float(acc.min()), "max": float(acc.max()),
            "classes_at_1": int((acc == 1).sum()), "classes_at_0": int((acc == 0).sum()),
            "classes_without_test_images": int(df["accuracy"].isna().sum())}


def macro_scores(cfg: dict, views: dict, fine: np.ndarray, cuts: dict[str, np.ndarray],
                 train_idx, test_idx, max_iter: int, seed: int) -> pd.DataFrame:
    """The given configuration trained on the macro labels of every cut (same split)."""
    X = views[cfg["features"]]
    rows = []
    for name, class_to_group in cuts.items():
        y = class_to_group[fine]
        groups = int(len(np.unique(y)))
        model, converged = fit_logreg(X[train_idx], y[train_idx], cfg["C"], cfg["class_weight"],
                                      max_iter, seed)
        res, _, _ = scores(model, X[train_idx], y[train_idx], X[test_idx], y[test_idx])
        majority = np.bincount(y[train_idx]).argmax()  # predict the largest training group
        rows.append({"target": name, "groups": groups, "test_accuracy": res["test_accuracy"],
                     "train_accuracy": res["train_accuracy"], "macro_f1": res["macro_f1"],
                     "random_baseline": 1.0 / groups,
                     "majority_baseline": float(np.mean(y[test_idx] == majority)),
                     "iterations": int(np.max(model.n_iter_)), "converged": converged})
        log.info("%s (%d groups): test %.4f, random %.4f", name, groups, res["test_accuracy"],
                 1.0 / groups)
    return pd.DataFrame(rows, columns=["target", "groups", "test_accuracy", "train_accuracy",
                                       "macro_f1", "random_baseline", "majority_baseline",
                                       "iterations", "converged"])


# --------------------------------------------------------------------------- plots
def plot_configs(table: pd.DataFrame, best: str, path) -> None:
    import matplotlib.pyplot as plt

    n = len(table)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.5 * n + 2), 4.5))
    x = np.arange(n)
    ax.bar(x - 0.2, table["train_accuracy"], 0.4, label="train", color="#4C72B0")
    ax.bar(x + 0.2, table["test_accuracy"], 0.4, label="test", color="#DD8452")
    for i, v in enumerate(table["test_accuracy"]):
        ax.text(i + 0.2, v + 0.01, f"{v:.3f}", ha="center", fontsize=8)
    ax.set_xticks(x, [f"{c}\n(best)" if c == best else c for c in table["config"]], fontsize=8)
    ax.set_ylim(0, 1.18)
    ax.set_xlabel("logistic regression configuration")
    ax.set_ylabel("accuracy")
    ax.set_title("Supervised upper bound: train and test accuracy per configuration")
    ax.legend(loc="upper center", ncol=2)
    save_figure(fig, path)


def plot_per_class(df: pd.DataFrame, config: str, path) -> None:
    import matplotlib.pyplot as plt

    acc = df["accuracy"].dropna()
    with_bars = len(df) <= 40
    fig, axes = plt.subplots(1, 2 if with_bars else 1, squeeze=False,
                             figsize=(13 if with_bars else 7, max(4.5, 0.22 * len(df) + 1.5)
                                      if with_bars else 4.5))
    ax = axes[0, 0]
    ax.hist(acc, bins=np.linspace(0, 1, 21), color="#4C72B0", edgecolor="white")
    ax.axvline(acc.mean(), color="#C44E52", ls="--", label=f"mean {acc.mean():.3f}")
    ax.axvline(acc.median(), color="#55A868", ls=":", label=f"median {acc.median():.3f}")
    ax.set_xlabel("per-class test accuracy")
    ax.set_ylabel("number of classes")
    ax.set_title(f"Distribution of per-class accuracy ({config}, {len(acc)} classes)")
    ax.legend()
    if with_bars:
        ax = axes[0, 1]
        ordered = df.iloc[::-1]
        ax.barh(range(len(ordered)), ordered["accuracy"].fillna(0), color="#DD8452")
        ax.set_yticks(range(len(ordered)),
                      [f"{c} (n={t})" for c, t in zip(ordered["class"], ordered["test_count"])],
                      fontsize=8)
        ax.set_xlim(0, 1.05)
        ax.set_xlabel("test accuracy")
        ax.set_ylabel("class (test images)")
        ax.set_title("Per-class test accuracy")
    save_figure(fig, path)


def plot_macro(table: pd.DataFrame, fine_acc: float, n_classes: int, config: str, path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    mac = table[table["target"] != "fine"]
    xs = list(mac["groups"]) + [n_classes]
    ax.plot(xs, list(mac["test_accuracy"]) + [fine_acc], marker="o", color="#4C72B0",
            label="test accuracy (macro groups, then fine classes)")
    ax.plot(xs, [1.0 / x for x in xs], marker="s", ls="--", color="0.4",
            label="random baseline 1/groups")
    ax.plot(xs, list(mac["majority_baseline"]) + [float(table["majority_baseline"].iloc[-1])],
            marker="^", ls=":", color="#55A868", label="majority-group baseline")
    ax.axhline(fine_acc, color="#C44E52", ls="-.", lw=1,
               label=f"fine-grained ({n_classes} classes): {fine_acc:.3f}")
    ax.set_xscale("log")
    ax.set_xticks(sorted(set(xs)), [str(x) for x in sorted(set(xs))])
    ax.minorticks_off()
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("number of target categories (log scale)")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"Logistic regression on data-driven macro-categories ({config})")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    ax.grid(alpha=0.3)
    save_figure(fig, path)


# --------------------------------------------------------------------------- stage
def run(params: dict, features_path: str = "data/features.npy", pca_path: str = "data/pca.npy",
        index_path: str = "data/index.parquet", groups_path: str = OUT_CLASS_GROUPS,
        fused_path: str = "data/fused.npy") -> dict:
    p = check_params(params)
    index = read_table(index_path)
    names = class_names(index)
    y = index["label"].to_numpy(np.int64)
    check_split(y, p["test_size"])
    from clusterlens.fusion import load_selected

    raw, features_path = load_selected(params, features_path, fused_path)
    pca = load_npy(pca_path)
    for path, arr in ((features_path, raw), (pca_path, pca)):
        if len(arr) != len(y):
            raise DataError(f"{path} has {len(arr)} rows but {index_path} has {len(y)}: "
                            "re-run `dvc repro`")
    _, cuts = read_class_groups(groups_path, names)
    log_block(log, "upper_bound", inputs={
        "features": f"{features_path} {raw.shape}", "pca": f"{pca_path} {pca.shape}",
        "index": f"{index_path} ({len(names)} classes)",
        "macro cuts": f"{groups_path}: {', '.join(cuts) or 'none'}"},
        params={"upper_bound.test_size": p["test_size"], "upper_bound.max_iter": p["max_iter"],
                "upper_bound.configs": ", ".join(c["name"] for c in p["configs"]),
                "seed": p["seed"]})
    t0 = time.perf_counter()
    train_idx, test_idx = stratified_split(y, p["test_size"], p["seed"])
    views = feature_views(raw, pca, train_idx)
    results, preds = {}, {}
    for cfg in p["configs"]:
        results[cfg["name"]], p_train, p_test = evaluate_config(
            cfg, views, y, train_idx, test_idx, p["max_iter"], p["seed"])
        preds[cfg["name"]] = (p_train, p_test)
    best = best_config(results)
    best_cfg = next(c for c in p["configs"] if c["name"] == best)
    p_train, p_test = preds[best]
    per_class = per_class_accuracy(y[test_idx], p_test, names, y[train_idx])
    summary = per_class_summary(per_class)
    ranked = per_class.dropna(subset=["accuracy"])
    worst = ranked.sort_values(["accuracy", "class"], ascending=[True, True]).head(TOP_N)
    macro = macro_scores(best_cfg, views, y, cuts, train_idx, test_idx, p["max_iter"], p["seed"])
    fine_majority = float(np.mean(y[test_idx] == np.bincount(y[train_idx]).argmax()))
    fine_row = pd.DataFrame([{
        "target": "fine", "groups": len(names), "test_accuracy": results[best]["test_accuracy"],
        "train_accuracy": results[best]["train_accuracy"], "macro_f1": results[best]["macro_f1"],
        "random_baseline": 1.0 / len(names), "majority_baseline": fine_majority,
        "iterations": results[best]["iterations"], "converged": results[best]["converged"]}])
    macro_plot = pd.concat([macro, fine_row], ignore_index=True) if len(macro) else fine_row
    seconds = time.perf_counter() - t0

    configs_table = pd.DataFrame([{"config": n, **r} for n, r in results.items()])
    write_table(OUT_CONFIGS, configs_table.round(6))
    write_table(OUT_PER_CLASS, per_class.round(6))
    write_table(OUT_MACRO_CSV, macro_plot.round(6))
    split = np.full(len(y), "train", dtype=object)
    split[test_idx] = "test"
    pred_all = np.empty(len(y), dtype=np.int64)
    pred_all[train_idx], pred_all[test_idx] = p_train, p_test
    write_table(OUT_PREDICTIONS, pd.DataFrame({
        "path": index["path"].astype(str), "class": index["class"].astype(str),
        "split": split.astype(str), "predicted": [names[i] for i in pred_all],
        "correct": pred_all == y}))
    matplotlib_setup()
    plot_configs(configs_table, best, OUT_CONFIGS_PNG)
    plot_per_class(per_class, best, OUT_PER_CLASS_PNG)
    plot_macro(macro_plot, results[best]["test_accuracy"], len(names), best, OUT_MACRO_PNG)

    metrics = {
        "split": {"images": len(y), "classes": len(names), "train": len(train_idx),
                  "test": len(test_idx), "test_size": p["test_size"], "seed": p["seed"]},
        "best": {"config": best, **{k: results[best][k] for k in
                                    ("test_accuracy", "train_accuracy", "gap", "macro_f1",
                                     "weighted_f1")}},
        "configs": results,
        "per_class": summary,
        "best_classes": {r["class"]: r["accuracy"] for _, r in ranked.head(TOP_N).iterrows()},
        "worst_classes": {r["class"]: r["accuracy"] for _, r in worst.iterrows()},
        "macro": {r["target"]: {"groups": int(r["groups"]), "test_accuracy": r["test_accuracy"],
                                "train_accuracy": r["train_accuracy"], "macro_f1": r["macro_f1"],
                                "random_baseline": r["random_baseline"],
                                "majority_baseline": r["majority_baseline"],
                                "converged": bool(r["converged"])}
                  for _, r in macro.iterrows()},
        "all_converged": bool(configs_table["converged"].all()
                              and (macro["converged"].all() if len(macro) else True)),
    }
    metrics = write_json(OUT_METRICS, metrics)
    log_block(log, "upper_bound done", outputs={
        OUT_METRICS: f"best {best}: test {results[best]['test_accuracy']:.4f} "
                     f"(train {results[best]['train_accuracy']:.4f}); fits took {seconds:.1f} s",
        OUT_CONFIGS: f"{len(configs_table)} configurations",
        OUT_PER_CLASS: f"{len(per_class)} classes, mean {summary['mean']:.3f}",
        OUT_MACRO_CSV: ", ".join(f"{r.target}: {r.test_accuracy:.3f}"
                                 for r in macro_plot.itertuples()),
        OUT_PREDICTIONS: "split and best-config prediction per image",
        "plots": ", ".join([OUT_CONFIGS_PNG, OUT_PER_CLASS_PNG, OUT_MACRO_PNG])})
    return metrics


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Logistic regression upper bound (SPEC U1-U3).")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    run(load_params(args.params))


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
