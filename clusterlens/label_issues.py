"""Images whose given class looks wrong: out-of-fold probabilities, then cleanlab.

Every image is scored by a logistic regression that never saw it: a stratified K-fold split,
one fit per fold with the supervised bound's configuration (:func:`clusterlens.upper_bound.
fit_logreg`; ``raw`` features standardised on each fold's training part, as
:func:`clusterlens.upper_bound.feature_views` does, ``pca`` features as given). cleanlab then
finds the label issues (``cleanlab.filter.find_label_issues``), scores every label
(``cleanlab.rank.get_label_quality_scores``: low = suspicious) and estimates the joint
distribution of given and true labels (``cleanlab.count.estimate_joint``), whose off-diagonal
mass is the estimated label-noise rate.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from cleanlab.count import estimate_joint
from cleanlab.filter import find_label_issues
from cleanlab.rank import get_label_quality_scores
from sklearn.model_selection import StratifiedKFold
from threadpoolctl import threadpool_limits

from clusterlens import upper_bound as ub
from clusterlens.config.upper_bound import LogRegConfig
from clusterlens.errors import DataError

ISSUE_COLUMNS = ["path", "class", "label_quality", "suggested_class", "suggested_probability",
                 "is_label_issue", "label_issue_rank"]
PER_CLASS_COLUMNS = ["class", "images", "issues", "noise_rate"]


@dataclass(frozen=True)
class OutOfFold:
    """Out-of-fold predictions: ``probabilities`` (N x C float64, row i from the fold model
    that did not see image i), ``fold`` (N: that fold's number), ``iterations`` (lbfgs
    iterations per fold) and ``converged`` (every fold stopped before ``max_iter``)."""

    probabilities: np.ndarray
    fold: np.ndarray
    iterations: list[int]
    converged: bool


@dataclass(frozen=True)
class LabelIssues:
    """cleanlab's findings: ``quality`` (N label-quality scores, low = suspicious),
    ``is_issue`` (N bool), ``rank`` (N int: 1 = most suspicious issue, 0 = not an issue) and
    ``joint`` (C x C estimated joint of given label (rows) and true label (columns))."""

    quality: np.ndarray
    is_issue: np.ndarray
    rank: np.ndarray
    joint: np.ndarray

    @property
    def noise_rate(self) -> float:
        """Estimated fraction of wrong labels: the joint's off-diagonal mass."""
        return float(1.0 - np.trace(self.joint))

    @property
    def class_noise_rates(self) -> np.ndarray:
        """Per given class, the estimated fraction of its images whose true class differs."""
        rows = self.joint.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(rows > 0, 1.0 - np.diag(self.joint) / rows, np.nan)


# --------------------------------------------------------------------------- checks
def check_labels(labels: np.ndarray, names: list[str]) -> None:
    """Raise :class:`DataError` unless there are at least 2 classes of at least 2 images each.

    Parameters
    ----------
    labels : ndarray of int
        The given class of every image, ``0..C-1``.
    names : list of str
        Class names in label order.
    """
    if len(names) < 2:
        raise DataError(f"only one class ({names[0] if names else 'none'}): finding label "
                        "issues needs at least 2 classes")
    counts = np.bincount(labels, minlength=len(names))
    if counts.min() < 2:
        i = int(counts.argmin())
        raise DataError(f"class {names[i]!r} has {int(counts[i])} image: out-of-fold "
                        "probabilities need at least 2 images per class")


def check_folds(labels: np.ndarray, folds: int) -> int:
    """Return ``folds``; raise ``ValueError`` when it exceeds the smallest class's image count
    (stratified K-fold needs every class in every fold)."""
    smallest = int(np.bincount(labels).min())
    if folds > smallest:
        raise ValueError(f"= {folds} is more than the {smallest} images of the smallest class; "
                         f"use at most {smallest}")
    return folds


# --------------------------------------------------------------------------- probabilities
def fold_view(features: np.ndarray, kind: str, train_idx: np.ndarray) -> np.ndarray:
    """The float64 matrix one fold's classifier sees: ``raw`` standardised with the statistics
    of ``train_idx`` (:func:`clusterlens.upper_bound.feature_views`), ``pca`` as given."""
    if kind == "pca":
        return np.asarray(features, dtype=np.float64)
    return ub.feature_views(features, features[:, :0], train_idx)["raw"]


def out_of_fold_probabilities(features: np.ndarray, labels: np.ndarray, cfg: LogRegConfig,
                              folds: int, max_iter: int, seed: int) -> OutOfFold:
    """Predicted class probabilities of every image from a model that never saw it.

    Parameters
    ----------
    features : ndarray, shape (N, D)
        The feature view ``cfg.features`` names (the selected set for ``raw``, PCA scores for
        ``pca``).
    labels : ndarray of int, shape (N,)
        Given classes ``0..C-1``; each class needs at least ``folds`` images.
    cfg : LogRegConfig
        The logistic regression (C, class_weight, features).
    folds : int
        Stratified K-fold splits (``shuffle=True, random_state=seed``).
    max_iter, seed : int
        lbfgs iteration cap and the solver / split seed.

    Returns
    -------
    OutOfFold
    """
    labels = np.asarray(labels, dtype=np.int64)
    if len(features) != len(labels):
        raise ValueError(f"{len(features)} feature rows but {len(labels)} labels")
    check_folds(labels, folds)
    n_classes = int(labels.max()) + 1
    probs = np.zeros((len(labels), n_classes), dtype=np.float64)
    fold_of = np.full(len(labels), -1, dtype=np.int64)
    iterations, converged = [], True
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for f, (tr, te) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
        X = fold_view(features, cfg.features, tr)
        model, ok = ub.fit_logreg(X[tr], labels[tr], cfg.C, cfg.class_weight, max_iter, seed)
        with threadpool_limits(1):
            probs[np.ix_(te, model.classes_)] = model.predict_proba(X[te])
        fold_of[te] = f
        iterations.append(int(np.max(model.n_iter_)))
        converged = converged and ok
    return OutOfFold(probs, fold_of, iterations, converged)


# --------------------------------------------------------------------------- cleanlab
def find_issues(labels: np.ndarray, probabilities: np.ndarray,
                filter_by: str = "prune_by_noise_rate",
                rank_by: str = "self_confidence") -> LabelIssues:
    """cleanlab's label issues, label-quality scores and joint of given and true labels.

    Parameters
    ----------
    labels : ndarray of int, shape (N,)
    probabilities : ndarray, shape (N, C)
        Out-of-sample predicted probabilities (:func:`out_of_fold_probabilities`).
    filter_by : str
        ``cleanlab.filter.find_label_issues(filter_by=...)``.
    rank_by : str
        The score of ``get_label_quality_scores(method=...)``, also the issues' ranking.

    Returns
    -------
    LabelIssues
    """
    labels = np.asarray(labels, dtype=np.int64)
    probabilities = np.asarray(probabilities)
    if probabilities.shape != (len(labels), int(labels.max()) + 1):
        raise ValueError(f"probabilities of shape {probabilities.shape} do not match "
                         f"{len(labels)} labels of {int(labels.max()) + 1} classes")
    ranked = find_label_issues(labels, probabilities, filter_by=filter_by,
                               return_indices_ranked_by=rank_by, n_jobs=1)
    quality = get_label_quality_scores(labels, probabilities, method=rank_by)
    is_issue = np.zeros(len(labels), dtype=bool)
    is_issue[ranked] = True
    rank = np.zeros(len(labels), dtype=np.int64)
    rank[ranked] = np.arange(1, len(ranked) + 1)
    joint = estimate_joint(labels, probabilities)
    return LabelIssues(np.asarray(quality, dtype=np.float64), is_issue, rank, joint)


# --------------------------------------------------------------------------- tables
def issues_table(index: pd.DataFrame, names: list[str], probabilities: np.ndarray,
                 issues: LabelIssues) -> pd.DataFrame:
    """One row per image of ``index`` (``path``, ``class``), columns :data:`ISSUE_COLUMNS`:
    its label quality, the most probable class and its probability, and the issue flag/rank."""
    best = probabilities.argmax(axis=1)
    return pd.DataFrame({
        "path": index["path"].astype(str).to_numpy(),
        "class": index["class"].astype(str).to_numpy(),
        "label_quality": issues.quality,
        "suggested_class": np.asarray(names, dtype=object)[best].astype(str),
        "suggested_probability": probabilities[np.arange(len(best)), best],
        "is_label_issue": issues.is_issue,
        "label_issue_rank": issues.rank}, columns=ISSUE_COLUMNS)


def per_class_table(labels: np.ndarray, names: list[str], issues: LabelIssues) -> pd.DataFrame:
    """One row per class in label order, columns :data:`PER_CLASS_COLUMNS`: images, label
    issues among them and the estimated noise rate of that given class."""
    c = len(names)
    return pd.DataFrame({
        "class": names, "images": np.bincount(labels, minlength=c),
        "issues": np.bincount(labels[issues.is_issue], minlength=c),
        "noise_rate": issues.class_noise_rates}, columns=PER_CLASS_COLUMNS)


def summary(labels: np.ndarray, oof: OutOfFold, issues: LabelIssues, cfg: LogRegConfig,
            folds: int, filter_by: str, rank_by: str) -> dict:
    """The headline metrics: images, classes, issues (count and fraction), estimated noise
    rate, out-of-fold accuracy, the folds and the classifier's configuration."""
    n = len(labels)
    return {
        "images": int(n), "classes": int(oof.probabilities.shape[1]),
        "issues": int(issues.is_issue.sum()),
        "issue_fraction": float(issues.is_issue.sum() / n),
        "noise_rate": issues.noise_rate,
        "oof_accuracy": float(np.mean(oof.probabilities.argmax(axis=1) == labels)),
        "folds": int(folds), "filter_by": filter_by, "rank_by": rank_by,
        "config": {"name": cfg.name, "features": cfg.features, "C": cfg.C,
                   "class_weight": cfg.class_weight or "none"},
        "converged": bool(oof.converged),
    }
