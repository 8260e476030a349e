"""Images whose given class looks wrong: out-of-fold probabilities, then cleanlab.

Every image is scored by a logistic regression that never saw it: a stratified K-fold split,
one fit per fold (:func:`clusterlens.analysis.upper_bound.fit_logreg`, lbfgs, no class weights)
on the features standardised with the statistics of the fold's training part
(:func:`clusterlens.analysis.upper_bound.feature_views`). The fit minimises the mean log loss
of the training images plus ``alpha / 2 * |w|^2``: scikit-learn's ``C`` is
``1 / (alpha * n_train)`` (:func:`inverse_regularisation`), so the penalty per image stays the
same as the folder grows. This penalty is the label-issue search's own and far stronger than
the supervised bound's configurations, which are chosen for test accuracy: a weakly penalised
regression fits the wrong labels of its training folds and scores ambiguous images with high
confidence, and those then pass for label issues.

cleanlab then scores every label (``cleanlab.rank.get_label_quality_scores``: low =
suspicious) and estimates the joint distribution of given and true labels
(``cleanlab.count.estimate_joint``, from the calibrated confident joint), whose off-diagonal
mass is the estimated label-noise rate. The label issues (:func:`find_issues`) are by default
the images of lowest label quality, as many as that noise rate implies (``lowest_quality``:
:func:`issue_count`, which is ``cleanlab.count.num_label_issues`` with
``estimation_method="off_diagonal_calibrated"``), so the issue count and the reported noise
rate agree. Any ``cleanlab.filter.find_label_issues`` rule can be asked for instead (its
default is ``prune_by_noise_rate``; ``low_self_confidence`` is the same lowest-quality cut with
the uncalibrated count, which comes out lower the stronger the penalty).

Small classes (:func:`score_labels`): an image can only be scored out of fold if another image
of its class is in the training part, so classes with fewer than :data:`MIN_IMAGES` images are
left out. Their images get no verdict (``label_quality`` and the probabilities NaN,
``suggested_class`` null, ``is_label_issue`` False, rank 0) and the metrics list the classes
(``excluded_classes``). Every other class is scored whatever its size: with ``folds`` above a
class's image count, stratified K-fold puts each of its images in a different fold, so each is
still scored by a model trained on the class's other images; ``folds`` itself is lowered only
when it exceeds the largest class (scikit-learn needs one class with ``folds`` images).

Bounded cost (:func:`choose_route`): the fits cost about images x feature dimension x classes
per lbfgs iteration. Up to ``max_work`` of it the route is ``exact`` (the above, on the selected
feature set). Above it, the ``bounded`` route fits each fold on a seeded stratified sample of
at most ``max_train`` of its training images (at least :data:`MIN_TRAIN_PER_CLASS` per class,
all of a smaller class) and predicts every held-out image, so every image still gets an
out-of-fold probability; the stage gives it the PCA scores instead of the selected feature set,
standardised per fold like them, with the penalty per image scaled by the ratio of the two
dimensions (:func:`bounded_alpha`), and the probabilities in float32.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from cleanlab.count import estimate_joint
from cleanlab.filter import find_label_issues
from cleanlab.rank import get_label_quality_scores
from sklearn.model_selection import StratifiedKFold
from threadpoolctl import threadpool_limits

from clusterlens.analysis import upper_bound as ub
from clusterlens.core.errors import DataError
from clusterlens.core.sampling import stratified_rows

MIN_IMAGES = 2  # per class: an out-of-fold score needs another image of the class to train on
LOWEST_QUALITY = "lowest_quality"  # the filter of find_issues that is not cleanlab's
FILTER_BY = LOWEST_QUALITY  # the defaults of clusterlens.config.label_issues
RANK_BY = "self_confidence"
MIN_TRAIN_PER_CLASS = 5  # images per class kept in a fold's training sample (bounded route)
PREDICT_CHUNK = 65_536  # rows per predict_proba call on the bounded route
# Issues above this share of the scored images read as features that do not separate the
# classes, not as wrong labels: Northcutt et al. (2021, "Pervasive label errors in test sets")
# estimate 0.15-10.1% label errors across ten widely used data sets.
PLAUSIBLE_FRACTION = 0.2
ISSUE_COLUMNS = ["path", "class", "label_quality", "suggested_class", "suggested_probability",
                 "is_label_issue", "label_issue_rank"]
PER_CLASS_COLUMNS = ["class", "images", "issues", "noise_rate"]


@dataclass(frozen=True)
class OutOfFold:
    """Out-of-fold predictions: ``probabilities`` (N x C float64, row i from the fold model
    that did not see image i), ``fold`` (N: that fold's number), ``C`` (scikit-learn's inverse
    regularisation per fold, :func:`inverse_regularisation`), ``iterations`` (lbfgs iterations
    per fold), ``converged`` (every fold stopped before ``max_iter``) and ``train_rows`` (the
    images each fold's model was fitted on)."""

    probabilities: np.ndarray
    fold: np.ndarray
    C: list[float]
    iterations: list[int]
    converged: bool
    train_rows: tuple[int, ...] = ()


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
def check_folds(labels: np.ndarray, folds: int) -> int:
    """The folds to use: ``folds``, lowered to the largest class's image count when above it.

    Raises ``ValueError`` when a class has fewer than :data:`MIN_IMAGES` images (none of its
    images could be scored by a model that saw the class).
    """
    counts = np.bincount(labels)
    counts = counts[counts > 0]
    if counts.min() < MIN_IMAGES:
        raise ValueError(f"a class has {int(counts.min())} image: out-of-fold probabilities need "
                         f"at least {MIN_IMAGES} images per class")
    return int(min(folds, counts.max()))


def excluded_classes(labels: np.ndarray, names: list[str]) -> list[dict]:
    """The classes too small to be scored out of fold (fewer than :data:`MIN_IMAGES` images),
    as :func:`clusterlens.analysis.upper_bound.excluded_classes` lists them."""
    return ub.excluded_classes(labels, names, MIN_IMAGES, "an out-of-fold score needs")


# --------------------------------------------------------------------------- route
def choose_route(images: int, dim: int, classes: int, *, route: str = "auto",
                 max_work: int) -> tuple[str, str]:
    """The route and why, for ``images`` (all of them) x ``dim`` x ``classes``: the rule of
    :func:`clusterlens.analysis.upper_bound.choose_route`."""
    return ub.choose_route(images, dim, classes, route=route, max_work=max_work)


def bounded_alpha(alpha: float, dim: int, full_dim: int) -> float:
    """The bounded route's penalty per image on ``dim`` standardised PCA scores:
    ``alpha * dim / full_dim``. Standardised features of dimension d have a squared norm of
    about d, so this keeps the penalty per unit of squared norm that ``alpha`` sets on the
    ``full_dim`` selected features (measured on Caltech-101 in docs/stages.md)."""
    return float(alpha) * min(int(dim), int(full_dim)) / int(full_dim)


# --------------------------------------------------------------------------- probabilities
def inverse_regularisation(alpha: float, n_train: int) -> float:
    """scikit-learn's ``C`` for a penalty ``alpha`` per training image: ``1 / (alpha * n_train)``.

    ``LogisticRegression`` minimises ``C * sum(log loss) + |w|^2 / 2``, that is ``C * n_train``
    times the mean log loss plus ``alpha / 2 * |w|^2``.
    """
    if not alpha > 0 or n_train < 1:
        raise ValueError(f"alpha must be > 0 and n_train >= 1, got {alpha!r} and {n_train!r}")
    return 1.0 / (alpha * n_train)


def out_of_fold_probabilities(features: np.ndarray, labels: np.ndarray, *, alpha: float,
                              folds: int, max_iter: int, seed: int,
                              max_train: int | None = None) -> OutOfFold:
    """Predicted class probabilities of every image from a model that never saw it.

    Parameters
    ----------
    features : ndarray, shape (N, D)
        The features (the selected feature set); each fold standardises them with the
        statistics of its training part.
    labels : ndarray of int, shape (N,)
        Given classes ``0..C-1``; each class needs at least :data:`MIN_IMAGES` images.
    alpha : float
        The L2 penalty per training image (> 0): each fold's lbfgs logistic regression has
        ``C = 1 / (alpha * n_train)`` (:func:`inverse_regularisation`), no class weights.
    folds : int
        Stratified K-fold splits (``shuffle=True, random_state=seed``), lowered to the largest
        class's image count when above it (:func:`check_folds`).
    max_iter, seed : int
        lbfgs iteration cap and the solver / split / sample seed.
    max_train : int, optional
        The bounded route: each fold is fitted on ``stratified_rows(its training labels,
        max_train, seed, min_per_class=MIN_TRAIN_PER_CLASS)`` (standardised and penalised on
        those images), predicts all its held-out images in chunks, and the probabilities are
        float32. None (the exact route): every training image, float64.

    Returns
    -------
    OutOfFold
    """
    labels = np.asarray(labels, dtype=np.int64)
    if len(features) != len(labels):
        raise ValueError(f"{len(features)} feature rows but {len(labels)} labels")
    folds = check_folds(labels, folds)
    n_classes = int(labels.max()) + 1
    probs = np.zeros((len(labels), n_classes),
                     dtype=np.float64 if max_train is None else np.float32)
    fold_of = np.full(len(labels), -1, dtype=np.int64)
    cs, iterations, converged, train_rows = [], [], True, []
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # "least populated class ... less than n_splits": see above
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        splits = list(splitter.split(np.zeros(len(labels)), labels))
    for f, (tr, te) in enumerate(splits):
        if max_train is not None:
            tr = tr[stratified_rows(labels[tr], max_train, seed,
                                    min_per_class=MIN_TRAIN_PER_CLASS)]
        X = ub.feature_views(features, features[:, :0], tr)["raw"]
        c = inverse_regularisation(alpha, len(tr))
        model, ok = ub.fit_logreg(X[tr], labels[tr], c, None, max_iter, seed)
        with threadpool_limits(1):
            if max_train is None:
                probs[np.ix_(te, model.classes_)] = model.predict_proba(X[te])
            else:
                for start in range(0, len(te), PREDICT_CHUNK):
                    rows = te[start:start + PREDICT_CHUNK]
                    probs[np.ix_(rows, model.classes_)] = model.predict_proba(X[rows])
        fold_of[te] = f
        cs.append(c)
        iterations.append(int(np.max(model.n_iter_)))
        converged = converged and ok
        train_rows.append(int(len(tr)))
    return OutOfFold(probs, fold_of, cs, iterations, converged, tuple(train_rows))


# --------------------------------------------------------------------------- cleanlab
def find_issues(labels: np.ndarray, probabilities: np.ndarray, *, filter_by: str = FILTER_BY,
                rank_by: str = RANK_BY) -> LabelIssues:
    """Label issues, label-quality scores and joint of given and true labels, from cleanlab.

    Parameters
    ----------
    labels : ndarray of int, shape (N,)
    probabilities : ndarray, shape (N, C)
        Out-of-sample predicted probabilities (:func:`out_of_fold_probabilities`).
    filter_by : str
        :data:`LOWEST_QUALITY` (``lowest_quality``): the images of lowest label quality
        (``rank_by``), as many as :func:`issue_count` of the estimated joint (the noise rate
        times N, which is ``cleanlab.count.num_label_issues`` with
        ``estimation_method="off_diagonal_calibrated"``); ties go to the lower index. Any other
        value: ``cleanlab.filter.find_label_issues(filter_by=...)``.
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
    quality = np.asarray(get_label_quality_scores(labels, probabilities, method=rank_by),
                         dtype=np.float64)
    joint = estimate_joint(labels, probabilities)
    if filter_by == LOWEST_QUALITY:
        ranked = np.argsort(quality, kind="stable")[:issue_count(joint, len(labels))]
    else:
        ranked = find_label_issues(labels, probabilities, filter_by=filter_by,
                                   return_indices_ranked_by=rank_by, n_jobs=1)
    is_issue = np.zeros(len(labels), dtype=bool)
    is_issue[ranked] = True
    rank = np.zeros(len(labels), dtype=np.int64)
    rank[ranked] = np.arange(1, len(ranked) + 1)
    return LabelIssues(quality, is_issue, rank, joint)


def issue_count(joint: np.ndarray, n: int) -> int:
    """The label issues a joint of given and true labels implies among ``n`` images: its
    off-diagonal mass (the noise rate) times ``n``, rounded to the nearest integer (half to
    even, as ``numpy.rint``)."""
    return int(np.rint((1.0 - np.trace(joint)) * n))


# --------------------------------------------------------------------------- every image
@dataclass(frozen=True)
class Scored:
    """Label issues over every image, the small classes left out (:func:`score_labels`).

    ``probabilities`` (N x C, all-NaN rows for images not scored, 0 in the columns of left-out
    classes), ``issues`` (over all N: NaN quality, no issue, rank 0 where not scored; the joint
    C x C, zero in the rows and columns of left-out classes), ``oof`` (the out-of-fold fits,
    over the scored images only, in the order of ``rows``), ``rows`` (the scored images),
    ``excluded`` (the left-out classes, as
    :func:`excluded_classes`) and ``folds`` (the folds used)."""

    probabilities: np.ndarray
    issues: LabelIssues
    oof: OutOfFold
    rows: np.ndarray
    excluded: list
    folds: int
    silenced: int = 0


def silence_kept(scored: Scored, kept: np.ndarray) -> Scored:
    """The findings with the images the user marked ``keep`` no longer issues (their scores
    stay; the other issues are ranked again from 1); ``silenced`` counts the issues turned off.

    Parameters
    ----------
    scored : Scored
        What :func:`score_labels` returns.
    kept : ndarray of bool
        The kept images, over all N.
    """
    kept = np.asarray(kept, dtype=bool)
    issues = scored.issues
    off = issues.is_issue & kept
    if not off.any():
        return scored
    is_issue = issues.is_issue & ~kept
    rank = np.zeros_like(issues.rank)
    order = np.flatnonzero(is_issue)[np.argsort(issues.rank[is_issue], kind="stable")]
    rank[order] = np.arange(1, len(order) + 1)
    return replace(scored, issues=replace(issues, is_issue=is_issue, rank=rank),
                   silenced=scored.silenced + int(off.sum()))


def score_labels(features: np.ndarray, labels: np.ndarray, names: list[str], *, alpha: float,
                 folds: int, max_iter: int, seed: int, filter_by: str = FILTER_BY,
                 rank_by: str = RANK_BY, max_train: int | None = None) -> Scored:
    """:func:`out_of_fold_probabilities` and :func:`find_issues` on the images of the classes
    with at least :data:`MIN_IMAGES` images (relabelled ``0..C'-1``), put back in place; the
    keyword options are theirs.

    With no class left out, the probabilities and findings are exactly those of the two
    functions on all images. Raises :class:`DataError` when fewer than 2 classes are left.
    """
    labels = np.asarray(labels, dtype=np.int64)
    n, c = len(labels), len(names)
    excluded = excluded_classes(labels, names)
    rows = ub.split_rows(labels, excluded)
    kept = np.setdiff1d(np.arange(c), [e["label"] for e in excluded])
    if len(kept) < 2:
        raise DataError(f"{len(kept)} class(es) with at least {MIN_IMAGES} images: finding "
                        "label issues needs 2")
    relabel = np.full(c, -1, dtype=np.int64)
    relabel[kept] = np.arange(len(kept))
    y = relabel[labels[rows]]
    features = features if len(rows) == n else np.asarray(features)[rows]
    oof = out_of_fold_probabilities(features, y, alpha=alpha, folds=folds, max_iter=max_iter,
                                    seed=seed, max_train=max_train)
    found = find_issues(y, oof.probabilities, filter_by=filter_by, rank_by=rank_by)
    if len(rows) == n and len(kept) == c:  # every image scored: the probabilities as they are
        return Scored(oof.probabilities, found, oof, rows, excluded, check_folds(y, folds))
    probs = np.full((n, c), np.nan, dtype=oof.probabilities.dtype)
    probs[rows] = 0.0
    probs[np.ix_(rows, kept)] = oof.probabilities
    quality = np.full(n, np.nan)
    quality[rows] = found.quality
    is_issue = np.zeros(n, dtype=bool)
    is_issue[rows] = found.is_issue
    rank = np.zeros(n, dtype=np.int64)
    rank[rows] = found.rank
    joint = np.zeros((c, c))
    joint[np.ix_(kept, kept)] = found.joint
    return Scored(probs, LabelIssues(quality, is_issue, rank, joint), oof, rows, excluded,
                  check_folds(y, folds))


# --------------------------------------------------------------------------- tables
def issues_table(index: pd.DataFrame, names: list[str], probabilities: np.ndarray,
                 issues: LabelIssues) -> pd.DataFrame:
    """One row per image of ``index`` (``path``, ``class``), columns :data:`ISSUE_COLUMNS`:
    its label quality, the most probable class and its probability, and the issue flag/rank.
    An image not scored (all-NaN probabilities) has no suggested class (null) and NaN scores."""
    scored = ~np.isnan(probabilities).all(axis=1)
    if scored.all():  # no NaN row: the same argmax, without an N x C copy
        best = probabilities.argmax(axis=1)
    else:
        best = np.where(scored, np.nan_to_num(probabilities, nan=-1.0).argmax(axis=1), 0)
    suggested = np.asarray(names, dtype=object)[best].astype(str)
    if not scored.all():
        suggested = np.where(scored, suggested.astype(object), None)
    return pd.DataFrame({
        "path": index["path"].astype(str).to_numpy(),
        "class": index["class"].astype(str).to_numpy(),
        "label_quality": issues.quality,
        "suggested_class": suggested,
        "suggested_probability": np.where(scored, probabilities[np.arange(len(best)), best],
                                          np.nan),
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


def classifier(alpha: float, C: list[float] | None = None) -> dict:
    """The classifier as the metrics record it (``config``): name, features, ``alpha``, the
    ``C`` of each fold (None when nothing was fitted) and class weight."""
    return {"name": f"logreg_alpha{alpha:g}", "features": "raw", "alpha": float(alpha),
            "C": None if C is None else [float(c) for c in C], "class_weight": "none"}


def route_record(route: str, reason: str, *, max_work: int, max_train: int, dim: int,
                 alpha: float, oof: OutOfFold | None = None) -> dict:
    """The metrics' ``route``: ``route`` (exact / bounded), ``reason``, ``max_work``, the
    ``features`` fitted (``selected``: the selected feature set; ``pca``: the PCA scores) and
    their ``dim``, the penalty per image used (``alpha``), and on the bounded route
    ``max_train`` and the images each fold was fitted on (``train_images``)."""
    record = {"route": route, "reason": reason, "max_work": int(max_work),
              "features": "selected" if route == "exact" else "pca", "dim": int(dim),
              "alpha": float(alpha)}
    if route == "bounded":
        record.update(max_train=int(max_train),
                      train_images=list(oof.train_rows) if oof is not None else None)
    return record


def summary(labels: np.ndarray, scored: Scored, *, alpha: float, folds_requested: int,
            filter_by: str, rank_by: str) -> dict:
    """The headline metrics: images, classes, images scored, issues (count, and fraction of the
    scored images), estimated noise rate, out-of-fold accuracy (scored images), the folds
    (used and requested), the classifier (:func:`classifier`) and the classes left out
    (``excluded_classes``: class, images, reason); ``kept`` counts the issues the user's
    ``keep`` corrections silenced (:func:`silence_kept`)."""
    labels = np.asarray(labels, dtype=np.int64)
    rows, issues = scored.rows, scored.issues
    return {
        "images": int(len(labels)), "classes": int(scored.probabilities.shape[1]),
        "scored_images": int(len(rows)),
        "issues": int(issues.is_issue.sum()),
        "issue_fraction": float(issues.is_issue.sum() / len(rows)),
        "kept": int(scored.silenced),
        "noise_rate": issues.noise_rate,
        "oof_accuracy": float(np.mean((scored.probabilities if len(rows) == len(labels) else
                                       scored.probabilities[rows]).argmax(axis=1)
                                      == labels[rows])),
        "folds": int(scored.folds), "folds_requested": int(folds_requested),
        "filter_by": filter_by, "rank_by": rank_by,
        "config": classifier(alpha, scored.oof.C),
        "converged": bool(scored.oof.converged),
        "excluded_classes": ub.public(scored.excluded),
        "warning": plausibility_warning(issues.is_issue.sum() / len(rows)),
    }


def plausibility_warning(issue_fraction: float) -> str | None:
    """A warning when more than :data:`PLAUSIBLE_FRACTION` of the scored images are issues,
    else None."""
    if not issue_fraction > PLAUSIBLE_FRACTION:
        return None
    return (f"{issue_fraction:.0%} of the scored images are suspected label issues, more than "
            f"the {PLAUSIBLE_FRACTION:.0%} that label errors plausibly reach: the features "
            "separate these classes poorly (see the supervised bound), so read the list as "
            "images that are hard to classify, not as wrong labels")


def skipped(index: pd.DataFrame, names: list[str], excluded: list[dict], reason: str, *,
            alpha: float, folds_requested: int, filter_by: str,
            rank_by: str) -> tuple[np.ndarray, pd.DataFrame, pd.DataFrame, dict]:
    """The outputs when no image can be scored (fewer than 2 classes of :data:`MIN_IMAGES`
    images): NaN probabilities, the issue and per-class tables without verdicts, and the
    metrics of :func:`summary` with None scores, no fold ``C`` and ``skipped`` (the reason)."""
    labels = index["label"].to_numpy(np.int64)
    n, c = len(labels), len(names)
    probs = np.full((n, c), np.nan)
    issues = LabelIssues(np.full(n, np.nan), np.zeros(n, dtype=bool),
                         np.zeros(n, dtype=np.int64), np.zeros((c, c)))
    metrics = {"skipped": reason, "images": int(n), "classes": int(c), "scored_images": 0,
               "issues": None, "issue_fraction": None, "kept": 0, "noise_rate": None,
               "oof_accuracy": None, "folds": None, "folds_requested": int(folds_requested),
               "filter_by": filter_by, "rank_by": rank_by, "config": classifier(alpha),
               "converged": None,
               "excluded_classes": ub.public(excluded), "warning": None}
    return (probs, issues_table(index, names, probs, issues),
            per_class_table(labels, names, issues), metrics)
