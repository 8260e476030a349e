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
accuracies on the held-out test split. The figure is :func:`clusterlens.report.figures.summary.plot_gap`.

:func:`build_headline` picks the few numbers a run is judged by into one flat mapping: the only
file declared as DVC ``metrics:``, so that ``dvc exp show`` and ``dvc metrics diff`` stay short
(every other metrics file is a plain output).
"""
from __future__ import annotations

from clusterlens.data.quality import KINDS as QUALITY_KINDS

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
        "random_baseline": 1.0 / max(n_classes, 1)})  # 0 when the bound was skipped
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


#: The headline's keys, in the order `dvc exp show` prints them as columns.
HEADLINE_KEYS = (
    "model", "clusters", "nmi", "ari", "purity", "accuracy", "noise",
    "kmeans_k", "kmeans_nmi", "upper_bound", "gap",
    "images", "classes", "rejected", "variance_kept",
    "label_issues", "near_duplicates", "duplicate_pairs", "same_scene_pairs", "leak_rate",
    "corrections", *QUALITY_KINDS)


def build_headline(index: dict, reduce: dict, clustering: dict, upper: dict,
                   label_issues: dict, neighbours: dict) -> dict:
    """The headline numbers of a run, flat and few (``dvc exp show`` columns).

    Parameters
    ----------
    index : dict
        The index metrics: ``images``, ``classes``, ``rejected``, ``quality_flags``,
        ``corrections``.
    reduce : dict
        The PCA metrics: ``variance_retained``.
    clustering : dict
        The clustering aggregate: ``selected`` (method, point), ``best.kmeans.point`` and the
        metrics of every grid point under ``<method>/<point>``.
    upper : dict
        The supervised upper bound: ``best.test_accuracy``.
    label_issues : dict
        The label-issue metrics: ``issues``.
    neighbours : dict
        The near-duplicate metrics: ``images_in_groups``, ``duplicate_pairs``,
        ``pairs_same_scene``, ``splits``, ``leaks``.

    Returns
    -------
    dict
        The keys of :data:`HEADLINE_KEYS`, in that order. ``model`` is the selected
        ``method/point`` and ``clusters`` its number of clusters; ``nmi``, ``ari``, ``purity``,
        ``accuracy`` (Hungarian) and ``noise`` (fraction left unclustered) are its scores;
        ``kmeans_k`` / ``kmeans_nmi`` the K-Means grid point of highest NMI; ``upper_bound`` the
        supervised test accuracy and ``gap`` = ``upper_bound - accuracy``; ``variance_kept`` the
        PCA's retained variance; ``near_duplicates`` the images in near-duplicate groups,
        ``duplicate_pairs`` / ``same_scene_pairs`` the verified copy pairs and same-scene pairs;
        ``leak_rate`` the share of the images outside the training split with a copy in an
        earlier split (None without splits); ``corrections`` the corrections applied;
        one count per image-quality flag (``blurry``, ..., ``odd_aspect_ratio``) from the
        index. A value whose source is missing (e.g. no K-Means grid) is None.
    """
    sel = clustering.get("selected") or {}
    method, point = sel.get("method"), sel.get("point")
    scores = (clustering.get(method) or {}).get(point) or {}
    km_point = ((clustering.get("best") or {}).get("kmeans") or {}).get("point")
    km = (clustering.get("kmeans") or {}).get(km_point) or {}
    bound = (upper.get("best") or {}).get("test_accuracy")
    out = {
        "model": f"{method}/{point}" if method else None,
        "clusters": scores.get("n_clusters"),
        "nmi": scores.get("nmi"), "ari": scores.get("ari"), "purity": scores.get("purity"),
        "accuracy": scores.get("hungarian_accuracy"),
        "noise": scores.get("noise_fraction", sel.get("noise_fraction")),
        "kmeans_k": km.get("k", km.get("n_clusters")), "kmeans_nmi": km.get("nmi"),
        "upper_bound": bound, "gap": _diff(bound, scores.get("hungarian_accuracy")),
        "images": index.get("images"), "classes": index.get("classes"),
        "rejected": index.get("rejected"), "variance_kept": reduce.get("variance_retained"),
        "label_issues": label_issues.get("issues"),
        "near_duplicates": neighbours.get("images_in_groups"),
        "duplicate_pairs": neighbours.get("duplicate_pairs"),
        "same_scene_pairs": neighbours.get("pairs_same_scene"),
        "leak_rate": ((neighbours.get("leaks") or {}).get("overall") or {}).get("rate")
        if neighbours.get("splits") else None,
        "corrections": sum((index.get("corrections") or {}).get(a, 0)
                           for a in ("relabel", "exclude", "keep")),
        **{k: (index.get("quality_flags") or {}).get(k) for k in QUALITY_KINDS}}
    return {key: out[key] for key in HEADLINE_KEYS}
