"""`summary` stage: the gap between unsupervised and supervised (SPEC U4).

One shallow JSON (``metrics/summary.json``) that ``dvc metrics show`` prints readably:

- ``fine``: the selected clustering model (metrics/clustering.json -> selected) with its NMI,
  purity, Hungarian accuracy and ARI, the best K-Means purity over the K grid, next to the
  supervised test accuracy of the best logistic regression configuration, and the gaps;
- ``g<N>`` (one per macro granularity): the best K-Means purity against those macro labels
  (over the K grid) next to the supervised test accuracy on the same macro labels, and the
  random baseline 1/groups.

Unsupervised scores are measured on every image (clustering never sees labels); supervised
accuracies on the held-out test split.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from clusterlens.common import (
    DataError, get_logger, load_params, log_block, matplotlib_setup, read_json, run_cli,
    save_figure, write_json,
)

log = get_logger("summary")
IN_CLUSTERING = "metrics/clustering.json"
IN_UPPER = "metrics/upper_bound.json"
IN_PURITY = "metrics/macro_purity.json"
OUT_METRICS = "metrics/summary.json"
OUT_PNG = "plots/summary/gap.png"
UNSUPERVISED_KEYS = ("nmi", "purity", "hungarian_accuracy", "ari")


def _read(path) -> dict:
    if not Path(path).is_file():
        raise DataError(f"{path} is missing: run `dvc repro`")
    return read_json(path)


def _diff(a, b):
    return None if a is None or b is None else a - b


def build_summary(clustering: dict, upper: dict, purity: dict) -> dict:
    sel = clustering["selected"]
    sel_metrics = clustering[sel["method"]][sel["point"]]
    sup = upper["best"]
    acc = sup["test_accuracy"]
    n_classes = upper["split"]["classes"]
    fine = {"classes": n_classes,
            "unsupervised_model": f"{sel['method']}/{sel['point']}",
            "unsupervised_selected_by": sel["metric"]}
    for key in UNSUPERVISED_KEYS:
        fine[f"unsupervised_{key}"] = sel_metrics.get(key)
    best_fine = purity["best"]["fine"]
    fine.update({
        "kmeans_best_purity": best_fine["purity"], "kmeans_best_k": best_fine["k"],
        "supervised_config": sup["config"], "supervised_test_accuracy": acc,
        "supervised_macro_f1": sup["macro_f1"],
        "gap_vs_hungarian_accuracy": _diff(acc, sel_metrics.get("hungarian_accuracy")),
        "gap_vs_purity": _diff(acc, sel_metrics.get("purity")),
        "gap_vs_kmeans_best_purity": _diff(acc, best_fine["purity"]),
        "random_baseline": 1.0 / n_classes})
    out = {"fine": fine}
    for name, n_groups in purity["targets"].items():
        if name == "fine":
            continue
        sup_macro = upper["macro"].get(name)
        best = purity["best"][name]
        sup_acc = sup_macro["test_accuracy"] if sup_macro else None
        out[name] = {"groups": n_groups, "kmeans_best_purity": best["purity"],
                     "kmeans_best_k": best["k"], "supervised_test_accuracy": sup_acc,
                     "gap": _diff(sup_acc, best["purity"]), "random_baseline": 1.0 / n_groups}
    return out


def plot_gap(summary: dict, path) -> None:
    import matplotlib.pyplot as plt

    levels = [k for k in summary if k != "fine"]
    levels = sorted(levels, key=lambda k: summary[k]["groups"]) + ["fine"]
    labels = [f"{summary[k]['groups']} macro groups\n({k})" if k != "fine"
              else f"{summary['fine']['classes']} fine classes" for k in levels]
    kmeans = [summary[k]["kmeans_best_purity"] for k in levels]
    sup = [summary[k]["supervised_test_accuracy"] for k in levels]
    rand = [summary[k]["random_baseline"] for k in levels]
    x = np.arange(len(levels))
    fig, ax = plt.subplots(figsize=(max(6.5, 2.0 * len(levels) + 2.5), 4.8))
    bars = [(kmeans, "best K-Means purity (unsupervised)", "#4C72B0", -0.2),
            (sup, "logistic regression test accuracy (supervised)", "#DD8452", 0.2)]
    for values, label, color, off in bars:
        vals = [np.nan if v is None else v for v in values]
        ax.bar(x + off, vals, 0.4, label=label, color=color)
        for i, v in enumerate(vals):
            if np.isfinite(v):
                ax.text(i + off, v + 0.01, f"{v:.3f}", ha="center", fontsize=8)
    ax.scatter(x, rand, marker="_", s=600, color="black", zorder=3, label="random 1/categories")
    hung = summary["fine"].get("unsupervised_hungarian_accuracy")
    if hung is not None:
        ax.scatter([x[-1] - 0.2], [hung], marker="*", s=120, color="#C44E52", zorder=4,
                   label=f"selected model {summary['fine']['unsupervised_model']}: "
                         f"Hungarian accuracy")
    ax.set_xticks(x, labels, fontsize=9)
    ax.set_ylim(0, 1.12)
    ax.set_xlabel("target categories")
    ax.set_ylabel("score (fraction of images)")
    ax.set_title("The gap: unsupervised clustering vs the supervised upper bound")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    save_figure(fig, path)


def run(params: dict | None = None, clustering_path: str = IN_CLUSTERING,
        upper_path: str = IN_UPPER, purity_path: str = IN_PURITY) -> dict:
    log_block(log, "summary", inputs={"clustering": clustering_path, "upper bound": upper_path,
                                      "macro purity": purity_path})
    summary = build_summary(_read(clustering_path), _read(upper_path), _read(purity_path))
    summary = write_json(OUT_METRICS, summary)
    matplotlib_setup()
    plot_gap(summary, OUT_PNG)
    f = summary["fine"]
    log_block(log, "summary done", outputs={
        OUT_METRICS: f"fine: {f['unsupervised_model']} hungarian "
                     f"{f['unsupervised_hungarian_accuracy']} vs supervised "
                     f"{f['supervised_test_accuracy']}; " + ", ".join(
                         f"{k}: K-Means {v['kmeans_best_purity']} vs supervised "
                         f"{v['supervised_test_accuracy']}" for k, v in summary.items()
                         if k != "fine"),
        "plot": OUT_PNG})
    return summary


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Unsupervised vs supervised, side by side (U4).")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    run(load_params(args.params))


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
