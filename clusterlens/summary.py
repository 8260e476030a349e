"""The gap between unsupervised clustering and the supervised upper bound, side by side.

:func:`build_summary` combines three results into one shallow mapping (two levels, so
``dvc metrics show`` prints it readably):

- ``fine``: the selected clustering model with its NMI, purity, Hungarian accuracy and ARI, the
  best K-Means purity over the K grid, next to the supervised test accuracy of the best
  logistic regression configuration, and the gaps;
- ``g<N>`` (one per macro granularity): the best K-Means purity against those macro labels
  next to the supervised test accuracy on the same macro labels, and the random baseline
  1/groups.

Unsupervised scores are measured on every image (clustering never sees labels); supervised
accuracies on the held-out test split. The figure is :func:`clusterlens.plots.summary.plot_gap`.
"""
from __future__ import annotations

UNSUPERVISED_KEYS = ("nmi", "purity", "hungarian_accuracy", "ari")


def _diff(a, b):
    return None if a is None or b is None else a - b


def build_summary(clustering: dict, upper: dict, purity: dict) -> dict:
    """Put the unsupervised and supervised scores side by side.

    Parameters
    ----------
    clustering : dict
        The clustering aggregate: ``selected`` (method, point, metric) and the metrics of every
        grid point under ``<method>/<point>``.
    upper : dict
        The supervised upper bound: ``split.classes``, ``best`` (config, test_accuracy,
        macro_f1) and ``macro`` (target -> {test_accuracy}).
    purity : dict
        K-Means purity against each target: ``targets`` (name -> number of categories) and
        ``best`` (name -> {k, purity}).

    Returns
    -------
    dict
        ``{"fine": {...}, "<target>": {...}, ...}``, every value a scalar or None (a gap is
        None when one of its two scores is missing).
    """
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
