"""DVC stage `label_issues`: images whose given class looks wrong, found by cleanlab.

Out-of-fold probabilities (stratified ``label_issues.folds``-fold, seed ``seed``) of an lbfgs
logistic regression on the feature set named by ``fusion.set``, standardised per fold, with the
L2 penalty per training image ``label_issues.alpha`` and ``upper_bound.max_iter`` iterations at
most; then cleanlab's label issues (``label_issues.filter_by``), label quality scores
(``label_issues.rank_by``) and estimated noise rate. Images the user marked ``keep`` in the
corrections (the index's ``correction``) are not issues. Classes under 2 images are not scored
(``excluded_classes``); with under 2 classes left, the outputs say so (``skipped``). Above
``label_issues.max_work`` (images x dimension x classes), the bounded route: data/pca.npy, each
fold fitted on a sample of ``label_issues.max_train`` images (``route`` in the metrics).
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np

from clusterlens.analysis.macro import class_names
from clusterlens.audit import label_issues as li
from clusterlens.config.base import load_params, parse_stage
from clusterlens.config.fusion import FusionParams
from clusterlens.config.label_issues import LabelIssuesParams
from clusterlens.config.upper_bound import UpperBoundParams
from clusterlens.core.cli import run_cli
from clusterlens.core.errors import check_rows
from clusterlens.core.io import load_npy, read_table, save_npy, write_json, write_table
from clusterlens.core.logs import get_logger, log_block
from clusterlens.data import corrections as corr
from clusterlens.features.sets import load_feature_set

log = get_logger("label_issues")

IN_FEATURES = "data/features.npy"
IN_FUSED = "data/fused.npy"
IN_PCA = "data/pca.npy"
IN_INDEX = "data/index.parquet"
OUT_ISSUES = "data/label_issues.parquet"
OUT_PROBABILITIES = "data/oof_probabilities.npy"
OUT_METRICS = "metrics/label_issues.json"
OUT_PER_CLASS = "metrics/label_issues_per_class.csv"


@dataclass(frozen=True)
class Params:
    """What the stage reads from params.yaml (parsed once, in :func:`main`)."""
    label_issues: LabelIssuesParams
    upper_bound: UpperBoundParams
    seed: int
    fusion: FusionParams = FusionParams()


def run(cfg: Params, features_path: str = IN_FEATURES, index_path: str = IN_INDEX,
        fused_path: str = IN_FUSED, pca_path: str = IN_PCA) -> dict:
    """Score every image out of fold, find the label issues, write every output; returns the
    metrics."""
    p, max_iter, seed = cfg.label_issues, cfg.upper_bound.max_iter, cfg.seed
    index = read_table(index_path)
    names = class_names(index, index_path)
    y = index["label"].to_numpy(np.int64)
    excluded = li.excluded_classes(y, names)
    for e in excluded:
        log.warning("class %r (%d image(s)) not scored: %s", e["class"], e["images"], e["reason"])
    if len(names) - len(excluded) < 2:
        return write_skipped(index, names, excluded, p)
    X, source = load_feature_set(cfg.fusion.set, features_path, fused_path,
                                 mmap_threshold_bytes=0)  # read only on the exact route
    check_rows(str(source), len(X), str(index_path), len(y))
    route, why = li.choose_route(len(y), X.shape[1], len(names), route=p.route,
                                 max_work=p.max_work)
    alpha, max_train, dim = p.alpha, None, X.shape[1]
    if route == "bounded":
        X, source = load_npy(pca_path), pca_path
        check_rows(pca_path, len(X), str(index_path), len(y))
        alpha, max_train = li.bounded_alpha(p.alpha, X.shape[1], dim), p.max_train
        log.warning("route bounded (%s): %s (%d-D, alpha %.4g), each fold fitted on a "
                    "stratified sample of at most %d images", why, pca_path, X.shape[1], alpha,
                    max_train)
    else:
        log.info("route exact (%s)", why)
    log_block(log, "label_issues", inputs={
        "features": f"{source} {X.shape} (fusion.set {cfg.fusion.set})",
        "index": f"{index_path} ({len(y)} images, {len(names)} classes)"},
        params={"label_issues.folds": p.folds, "label_issues.alpha": p.alpha,
                "label_issues.filter_by": p.filter_by, "label_issues.rank_by": p.rank_by,
                "upper_bound.max_iter": max_iter, "seed": seed})
    t0 = time.perf_counter()
    scored = li.score_labels(X, y, names, alpha=alpha, folds=p.folds, max_iter=max_iter,
                             seed=seed, filter_by=p.filter_by, rank_by=p.rank_by,
                             max_train=max_train)
    scored = li.silence_kept(scored, corr.kept(index))
    if scored.silenced:
        log.info("%d suspected label issues silenced: kept in data.corrections", scored.silenced)
    oof = scored.oof
    log.info("%d-fold out-of-fold fits (C %s): %s lbfgs iterations%s; with cleanlab %.1f s",
             scored.folds, "/".join(f"{c:.3g}" for c in oof.C), "/".join(map(str, oof.iterations)),
             "" if oof.converged else ", NOT converged", time.perf_counter() - t0)
    if scored.folds < p.folds:
        log.warning("label_issues.folds %d lowered to %d, the largest class's image count",
                    p.folds, scored.folds)
    table = li.issues_table(index, names, scored.probabilities, scored.issues)
    per_class = li.per_class_table(y, names, scored.issues)
    save_npy(OUT_PROBABILITIES, scored.probabilities.astype(np.float32, copy=False))
    write_table(OUT_ISSUES, table)
    write_table(OUT_PER_CLASS, per_class.round(6))
    metrics = write_json(OUT_METRICS, li.summary(
        y, scored, alpha=p.alpha, folds_requested=p.folds, filter_by=p.filter_by,
        rank_by=p.rank_by) | {"route": li.route_record(
            route, why, max_work=p.max_work, max_train=p.max_train, dim=X.shape[1], alpha=alpha,
            oof=oof)})
    if metrics["warning"]:
        log.warning(metrics["warning"])
    worst = table[table["is_label_issue"]].sort_values("label_issue_rank").head(3)
    log_block(log, "label_issues done", outputs={
        OUT_METRICS: f"{metrics['issues']} issues ({metrics['issue_fraction']:.1%}), estimated "
                     f"noise rate {metrics['noise_rate']:.3f}, out-of-fold accuracy "
                     f"{metrics['oof_accuracy']:.4f}",
        OUT_ISSUES: "most suspicious: " + (", ".join(
            f"{r.path} ({r['class']} -> {r.suggested_class})" for _, r in worst.iterrows())
            or "none"),
        OUT_PROBABILITIES: f"{scored.probabilities.shape} float32",
        OUT_PER_CLASS: f"{len(per_class)} classes"})
    return metrics


def write_skipped(index, names, excluded, p: LabelIssuesParams) -> dict:
    """Fewer than 2 classes large enough to score: every output says so; no fits."""
    reason = (f"{len(names) - len(excluded)} class(es) of {li.MIN_IMAGES}+ images; finding "
              "label issues needs 2")
    log.warning("label_issues not computed: %s", reason)
    probs, table, per_class, metrics = li.skipped(index, names, excluded, reason, alpha=p.alpha,
                                                  folds_requested=p.folds, filter_by=p.filter_by,
                                                  rank_by=p.rank_by)
    save_npy(OUT_PROBABILITIES, probs.astype(np.float32))
    write_table(OUT_ISSUES, table)
    write_table(OUT_PER_CLASS, per_class.round(6))
    return write_json(OUT_METRICS, metrics)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Label issues from out-of-fold probabilities.")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    run(parse_stage(load_params(args.params), Params))


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
