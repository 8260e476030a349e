"""The supervised upper bound: logistic regressions on a stratified train/test split.

Each configuration (:class:`~clusterlens.config.upper_bound.LogRegConfig`) is an lbfgs logistic
regression on one feature view: ``raw`` = the features standardized with a scaler fit on the
training split only (no test statistics leak in); ``pca`` = the PCA scores as given. Scores:
train/test accuracy, their gap, macro-F1 and weighted-F1; per-class test accuracy; and the same
classifier trained on macro labels (class -> group maps), next to the random baseline 1/groups
and the majority-group baseline.

Every fit uses the same split: the folder's own splits when it has them (train on the first split
of the split order, test on the last: :func:`folder_split`), else
``train_test_split(arange(N), test_size=..., random_state=seed, stratify=label)``; a split
stratified on the fine classes is also stratified on every macro grouping of them, so the macro
scores are measured on the very same test images.

Classes too small for the split (fewer than :data:`MIN_IMAGES` images: a stratified split puts
at least one image of every class on each side) are left out of it
(:func:`excluded_classes`, :func:`split_rows`): the bound is measured on the other classes, and
the metrics list the left-out ones by name, image count and reason (``excluded_classes``).

Bounded cost (:func:`choose_route`): an lbfgs iteration costs about training images x feature
dimension x classes. Up to ``max_work`` of it the route is ``exact`` (the above). Above it,
the ``bounded`` route (:func:`bounded_plan`) fits every configuration on a seeded stratified
sample of at most ``max_train`` training images (at least :data:`MIN_FIT_PER_CLASS` per class,
all of a smaller class) and on the PCA scores standardised with that sample's statistics,
whatever its ``features`` (which the metrics record as ``features_used``); configurations that
then coincide are fitted once. Test scores are on the whole test split; the training images
left out of the sample are predicted too (split ``unsampled`` in the predictions).
"""
from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from clusterlens.config.upper_bound import LogRegConfig
from clusterlens.core.errors import DataError
from clusterlens.core.sampling import stratified_rows

log = logging.getLogger("clusterlens.upper_bound")  # the stage's: the fits log as its own lines
TOP_N = 10
MIN_IMAGES = 2  # per class: a stratified split puts one on each side
ROUTES = ("exact", "bounded")
MIN_FIT_PER_CLASS = 5  # training images per class kept in the bounded route's sample
PREDICT_CHUNK = 65_536  # rows per predict call on the bounded route
MACRO_COLUMNS = ["target", "groups", "test_accuracy", "train_accuracy", "macro_f1",
                 "random_baseline", "majority_baseline", "iterations", "converged"]


# --------------------------------------------------------------------------- split
def excluded_classes(labels: np.ndarray, names: list[str], minimum: int = MIN_IMAGES,
                     why: str = "a stratified split needs") -> list[dict]:
    """The classes with fewer than ``minimum`` images, to be left out of a per-class split.

    Parameters
    ----------
    labels : ndarray of int
        The class of every image, ``0..C-1``.
    names : list of str
        Class (folder) names in label order.
    minimum : int
        Images a class needs.
    why : str
        Completes the reason, ``"fewer than <minimum> images: <why> <minimum>"``.

    Returns
    -------
    list of dict
        One ``{"class", "label", "images", "reason"}`` per small class, in label order (empty
        when every class is large enough).
    """
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(names))
    return [{"class": str(names[c]), "label": int(c), "images": int(counts[c]),
             "reason": f"fewer than {minimum} images: {why} {minimum}"}
            for c in range(len(names)) if counts[c] < minimum]


def split_rows(labels: np.ndarray, excluded: list[dict]) -> np.ndarray:
    """The rows (sorted) whose class is not in ``excluded`` (:func:`excluded_classes`)."""
    labels = np.asarray(labels, dtype=np.int64)
    return np.flatnonzero(~np.isin(labels, [e["label"] for e in excluded]))


def public(excluded: list[dict]) -> list[dict]:
    """``excluded`` as the metrics list it: class (folder name), images and reason."""
    return [{"class": e["class"], "images": e["images"], "reason": e["reason"]}
            for e in excluded]


def check_stratifiable(labels: np.ndarray) -> None:
    """Raise :class:`DataError` unless every class has at least 2 images."""
    counts = np.bincount(labels)
    if counts.min() < MIN_IMAGES:
        raise DataError(f"class label {int(counts.argmin())} has {int(counts.min())} image: a "
                        "stratified split needs at least 2 images per class")


def check_test_size(labels: np.ndarray, test_size: float) -> float:
    """Return ``test_size``; raise ``ValueError`` unless both sides of the split get at least
    as many images as there are classes (the classes present in ``labels``)."""
    n, c = len(labels), len(np.unique(labels))
    n_test = int(np.ceil(test_size * n))
    if n_test < c or n - n_test < c:
        raise ValueError(f"= {test_size} gives {n_test} test and {n - n_test} training images; "
                         f"both must be >= the {c} classes")
    return test_size


def stratified_split(labels: np.ndarray, test_size: float, seed: int,
                     rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The (train, test) image indices, in ``train_test_split``'s own (shuffled) order.

    ``rows`` (e.g. :func:`split_rows`) restricts the split to those images; the indices
    returned are still rows of ``labels``. ``None`` (every image) gives the same split as
    ``rows = arange(N)``.
    """
    rows = np.arange(len(labels)) if rows is None else np.asarray(rows, dtype=np.int64)
    tr, te = train_test_split(np.arange(len(rows)), test_size=test_size, random_state=seed,
                              stratify=np.asarray(labels)[rows])
    return rows[tr], rows[te]


def folder_split(splits: np.ndarray, train: str, test: str,
                 rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The (train, test) image indices of the folder's own splits, in row order.

    Parameters
    ----------
    splits : ndarray of str
        Each image's split (the index's ``split``).
    train, test : str
        The training and the evaluation split (:func:`clusterlens.data.splits.train_and_test`).
    rows : ndarray of int, optional
        Restrict to these images (e.g. :func:`split_rows`).

    Raises
    ------
    ValueError
        When either side is empty.
    """
    splits = np.asarray(splits, dtype=object)
    rows = np.arange(len(splits)) if rows is None else np.asarray(rows, dtype=np.int64)
    tr, te = rows[splits[rows] == train], rows[splits[rows] == test]
    for name, side in ((train, tr), (test, te)):
        if not len(side):
            raise ValueError(f"split {name!r} has no image of a class the bound can use")
    return tr, te


@dataclass(frozen=True)
class Bound:
    """What :func:`fit_bound` finds: ``results`` (config name -> scores), ``best`` (its name),
    ``p_train``/``p_test`` (the best config's predictions), ``per_class`` (its per-class test
    accuracy), ``macro`` (its scores on every macro cut) and ``macro_plot`` (those with the
    fine row, for the figure), ``route`` (the metrics' record of the route: ``route``,
    ``reason``, ``max_work``, ``train_images``, ``fit_images`` (those the fits saw) and
    ``features``: ``configured`` or ``pca``), ``fit_idx`` (the training images the fits saw: all of the
    training split on the exact route, its sample on the bounded one) and ``p_unsampled``
    (the best config's predictions of the other training images, in ``train_idx`` order)."""

    results: dict
    best: str
    p_train: np.ndarray
    p_test: np.ndarray
    per_class: pd.DataFrame
    macro: pd.DataFrame
    macro_plot: pd.DataFrame
    route: dict
    fit_idx: np.ndarray | None = None
    p_unsampled: np.ndarray | None = None

    def predictions(self, index: pd.DataFrame, names: list[str], y: np.ndarray,
                    train_idx: np.ndarray, test_idx: np.ndarray) -> pd.DataFrame:
        """:func:`predictions_table` of this fit on the split ``train_idx``/``test_idx``."""
        if self.fit_idx is None:
            return predictions_table(index, names, y, train_idx, test_idx, self.p_train,
                                     self.p_test)
        return predictions_table(index, names, y, self.fit_idx, test_idx, self.p_train,
                                 self.p_test, train_idx[~np.isin(train_idx, self.fit_idx)],
                                 self.p_unsampled)

    def configs_table(self) -> pd.DataFrame:
        """One row per configuration: ``config`` and its scores."""
        return pd.DataFrame([{"config": n, **r} for n, r in self.results.items()])


def fit_bound(configs: list[LogRegConfig], raw: np.ndarray | None, pca: np.ndarray,
              y: np.ndarray, train_idx: np.ndarray, test_idx: np.ndarray, *, names: list[str],
              excluded: list[dict], cuts: dict[str, np.ndarray], max_iter: int,
              seed: int, route: str = "exact", max_work: int = 0,
              max_train: int = 0) -> Bound:
    """Fit every configuration on one split (:func:`fit_configs`), pick the best
    (:func:`best_config`), and score it per class and on every macro cut.

    ``route``, ``max_work``: :func:`choose_route` on the training images, the dimension of
    ``raw`` and the classes, logged. ``exact``: on ``raw`` (standardised) and ``pca``;
    ``bounded``: :func:`bounded_plan` with ``max_train`` (``raw`` is not read).
    """
    route, reason = choose_route(len(train_idx), raw.shape[1], len(names) - len(excluded),
                                 route=route, max_work=max_work)
    (log.warning if route == "bounded" else log.info)(route_message(route, reason, max_train))
    if route == "exact":
        fit_idx, views, chunk = train_idx, feature_views(raw, pca, train_idx), None
    else:
        fit_idx, views = bounded_plan(pca, y, train_idx, max_train=max_train, seed=seed)
        chunk = PREDICT_CHUNK
    results, preds = fit_configs(configs, views, y, fit_idx, test_idx, max_iter, seed,
                                 chunk=chunk)
    best = best_config(results)
    best_cfg = next(c for c in configs if c.name == best)
    p_train, p_test, model = preds[best]
    per_class = per_class_accuracy(y[test_idx], p_test, names, y[fit_idx], excluded)
    macro = macro_scores(best_cfg, views, y, cuts, fit_idx, test_idx, max_iter, seed,
                         chunk=chunk)
    macro_plot = with_fine_row(macro, results[best], y, fit_idx, test_idx,
                               len(names) - len(excluded))
    record = {"route": route, "reason": reason, "max_work": int(max_work),
              "train_images": int(len(train_idx)), "fit_images": int(len(fit_idx)),
              "features": "configured" if route == "exact" else "pca"}
    if route == "exact":
        return Bound(results, best, p_train, p_test, per_class, macro, macro_plot, record)
    unsampled = train_idx[~np.isin(train_idx, fit_idx)]
    p_unsampled = predict(model, views[best_cfg.features], unsampled, chunk)
    for r in results.values():
        r["features_used"] = "pca"
    return Bound(results, best, p_train, p_test, per_class, macro, macro_plot, record, fit_idx,
                 p_unsampled)


def work(images: int, dim: int, classes: int) -> int:
    """The size that sets a fit's cost: ``images x dim x classes`` (one lbfgs iteration's
    multiply-adds over those images)."""
    return int(images) * int(dim) * int(classes)


def choose_route(images: int, dim: int, classes: int, *, route: str = "auto",
                 max_work: int) -> tuple[str, str]:
    """The route and why: ``exact`` when ``route`` is ``exact``, or ``auto`` and
    :func:`work` (here: the training images, the dimension of the selected feature set, the
    classes) is at most ``max_work``; else ``bounded``.

    Returns
    -------
    route : {"exact", "bounded"}
    reason : str
        E.g. ``"7316 x 1280 x 102 = 9.55e+08 > max_work 2e+08"``.
    """
    if route not in ("auto", *ROUTES):
        raise ValueError(f"route must be auto, exact or bounded, got {route!r}")
    w = work(images, dim, classes)
    size = f"{images} x {dim} x {classes} = {w:.3g}"
    if route != "auto":
        return route, f"forced ({size})"
    if w <= max_work:
        return "exact", f"{size} <= max_work {max_work:.3g}"
    return "bounded", f"{size} > max_work {max_work:.3g}"


def route_message(route: str, reason: str, max_train: int) -> str:
    """The log line of the route decision."""
    how = (f": every configuration on the PCA scores (standardised) and a stratified sample of "
           f"at most {max_train} training images" if route == "bounded" else "")
    return f"route {route} ({reason}){how}"


def bounded_plan(pca: np.ndarray, y: np.ndarray, train_idx: np.ndarray, *, max_train: int,
                 seed: int) -> tuple[np.ndarray, dict]:
    """The bounded route's training images and feature views.

    Returns
    -------
    fit_idx : ndarray of int64
        ``stratified_rows(y[train_idx], max_train, seed, min_per_class=MIN_FIT_PER_CLASS)``
        of ``train_idx``, in ``train_idx`` order (all of it when it has at most ``max_train``
        images).
    views : dict
        ``raw`` and ``pca`` -> the same N x d float64 matrix: the PCA scores standardised with
        the statistics of ``fit_idx``.
    """
    train_idx = np.asarray(train_idx, dtype=np.int64)
    fit_idx = train_idx[stratified_rows(np.asarray(y)[train_idx], max_train, seed,
                                        min_per_class=MIN_FIT_PER_CLASS)]
    X = feature_views(pca, pca[:, :0], fit_idx)["raw"]
    return fit_idx, {"raw": X, "pca": X}


def predict(model, X: np.ndarray, rows: np.ndarray | None = None,
            chunk: int | None = None) -> np.ndarray:
    """``model.predict(X[rows])`` (``rows`` None: all of ``X``) with BLAS on one thread,
    ``chunk`` rows at a time (None: in one call)."""
    with threadpool_limits(1):
        if chunk is None:
            return model.predict(X if rows is None else X[rows])
        rows = np.arange(len(X)) if rows is None else rows
        out = [model.predict(X[rows[s:s + chunk]]) for s in range(0, len(rows), chunk)]
        return np.concatenate(out) if out else np.array([], dtype=np.int64)


def split_info(images: int, classes: int, *, folders: tuple[str, str] | None,
               test_size: float, seed: int) -> dict:
    """The metrics' ``split``: images and classes in it, ``train``/``test`` counts (0 until
    fitted), ``source`` (``folder`` or ``stratified``), ``train_split``/``test_split`` (the
    folder's splits used, None for a stratified split), ``test_size`` (None with the folder's
    splits) and ``seed``."""
    return {"images": int(images), "classes": int(classes), "train": 0, "test": 0,
            "source": "folder" if folders else "stratified",
            "train_split": folders[0] if folders else None,
            "test_split": folders[1] if folders else None,
            "test_size": None if folders else test_size, "seed": seed}


def split_text(split: dict) -> str:
    """E.g. ``folder splits: 800 train (train) / 200 test (test)`` or ``stratified split: ...``."""
    if split["source"] == "folder":
        return (f"folder splits: {split['train']} train ({split['train_split']}) / "
                f"{split['test']} test ({split['test_split']})")
    return (f"stratified split: {split['train']} train / {split['test']} test (test_size "
            f"{split['test_size']}, seed {split['seed']})")


def train_test(labels: np.ndarray, rows: np.ndarray, *, splits: np.ndarray,
               folders: tuple[str, str] | None, test_size: float, seed: int,
               names: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The split the bound uses: the folder's own (:func:`folder_split`) when ``folders``
    names its training and evaluation split, else :func:`stratified_split`. Test images whose
    class has no training image (they can only be predicted wrong) are logged, by class name
    (``names``, in label order).

    Raises
    ------
    DataError
        When a split of ``folders`` has no usable image.
    """
    if folders is None:
        return stratified_split(labels, test_size, seed, rows)
    try:
        tr, te = folder_split(splits, *folders, rows)
    except ValueError as exc:
        raise DataError(f"data.root: {exc}; the bound trains on the first split and tests on "
                        f"the last ({' -> '.join(folders)})") from None
    labels = np.asarray(labels)
    unseen = sorted(set(labels[te].tolist()) - set(labels[tr].tolist()))
    if unseen:
        log.warning("classes without a training image in split %r: %s (their test images "
                    "count as wrong)", folders[0],
                    ", ".join(str(names[u]) if names else str(u) for u in unseen))
    return tr, te


def feature_views(raw: np.ndarray, pca: np.ndarray, train_idx: np.ndarray) -> dict:
    """Features name (``raw``, ``pca``) -> the full N x d float64 matrix the classifier sees;
    ``raw`` is standardized with statistics of the training rows only."""
    raw = np.asarray(raw, dtype=np.float64)
    scaler = StandardScaler().fit(raw[train_idx])
    return {"raw": scaler.transform(raw), "pca": np.asarray(pca, dtype=np.float64)}


# --------------------------------------------------------------------------- fits
def fit_logreg(X_train: np.ndarray, y_train: np.ndarray, C: float, class_weight: str | None,
               max_iter: int, seed: int) -> tuple[LogisticRegression, bool]:
    """Fit an lbfgs (multinomial) logistic regression with BLAS on one thread.

    Returns
    -------
    model : LogisticRegression
    converged : bool
        Whether it stopped before ``max_iter`` iterations.
    """
    model = LogisticRegression(C=C, class_weight=class_weight, max_iter=max_iter,
                               solver="lbfgs", random_state=seed)
    # One BLAS thread: multi-threaded OpenBLAS makes these small fits many times slower on a
    # loaded 2-core machine; the result does not depend on the thread count.
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X_train, y_train)
    converged = bool(np.max(model.n_iter_) < max_iter)
    return model, converged


def scores(model, X_train, y_train, X_test, y_test,
           chunk: int | None = None) -> tuple[dict, np.ndarray, np.ndarray]:
    """Train/test accuracy, gap, test macro- and weighted-F1; and the two predictions
    (:func:`predict`, ``chunk`` rows at a time)."""
    p_train, p_test = predict(model, X_train, None, chunk), predict(model, X_test, None, chunk)
    train_acc = accuracy_score(y_train, p_train)
    test_acc = accuracy_score(y_test, p_test)
    return ({"train_accuracy": train_acc, "test_accuracy": test_acc, "gap": train_acc - test_acc,
             "macro_f1": f1_score(y_test, p_test, average="macro", zero_division=0),
             "weighted_f1": f1_score(y_test, p_test, average="weighted", zero_division=0)},
            p_train, p_test)


def evaluate_config(cfg: LogRegConfig, views: dict, y: np.ndarray, train_idx: np.ndarray,
                    test_idx: np.ndarray, max_iter: int, seed: int,
                    chunk: int | None = None) -> tuple[dict, np.ndarray, np.ndarray]:
    """Fit one configuration on the training split and score it.

    Returns
    -------
    result : dict
        :func:`scores`, then features, dim, C, class_weight, iterations, converged.
    p_train, p_test : ndarray
        Its predictions on the two splits.
    """
    return fit_and_score(cfg, views, y, train_idx, test_idx, max_iter, seed, chunk)[:3]


def fit_and_score(cfg: LogRegConfig, views: dict, y: np.ndarray, train_idx: np.ndarray,
                  test_idx: np.ndarray, max_iter: int, seed: int,
                  chunk: int | None = None) -> tuple[dict, np.ndarray, np.ndarray, object]:
    """:func:`evaluate_config`, and the fitted model as a fourth value."""
    X = views[cfg.features]
    model, converged = fit_logreg(X[train_idx], y[train_idx], cfg.C, cfg.class_weight,
                                  max_iter, seed)
    res, p_train, p_test = scores(model, X[train_idx], y[train_idx], X[test_idx], y[test_idx],
                                  chunk)
    res.update({"features": cfg.features, "dim": int(X.shape[1]), "C": cfg.C,
                "class_weight": cfg.class_weight or "none",
                "iterations": int(np.max(model.n_iter_)), "converged": converged})
    return res, p_train, p_test, model


def fit_configs(configs: list[LogRegConfig], views: dict, y: np.ndarray, train_idx: np.ndarray,
                test_idx: np.ndarray, max_iter: int, seed: int,
                chunk: int | None = None) -> tuple[dict, dict]:
    """:func:`evaluate_config` for every configuration, in order, each logged as it finishes.
    A configuration whose fit equals an earlier one's (the same view matrix, ``C`` and class
    weight: on the bounded route ``raw`` and ``pca`` are one matrix) reuses it.

    Returns
    -------
    results : dict
        Configuration name -> its result.
    predictions : dict
        Configuration name -> its (p_train, p_test, model).
    """
    results, preds, done = {}, {}, {}
    for cfg in configs:
        t0 = time.perf_counter()
        key = (id(views[cfg.features]), cfg.C, cfg.class_weight)
        if key in done:
            res, p_train, p_test, model = done[key]
            res = {**res, "features": cfg.features}
        else:
            res, p_train, p_test, model = fit_and_score(cfg, views, y, train_idx, test_idx,
                                                        max_iter, seed, chunk)
            done[key] = (res, p_train, p_test, model)
        results[cfg.name], preds[cfg.name] = res, (p_train, p_test, model)
        log.info("%s: train %.4f test %.4f (%d iterations%s, %.1f s)", cfg.name,
                 res["train_accuracy"], res["test_accuracy"], res["iterations"],
                 "" if res["converged"] else ", NOT converged", time.perf_counter() - t0)
    return results, preds


def best_config(results: dict[str, dict]) -> str:
    """The configuration with the highest test accuracy; ties go to the first."""
    return max(results, key=lambda n: (results[n]["test_accuracy"],
                                       -list(results).index(n)))


def macro_scores(cfg: LogRegConfig, views: dict, fine: np.ndarray, cuts: dict[str, np.ndarray],
                 train_idx: np.ndarray, test_idx: np.ndarray, max_iter: int,
                 seed: int, chunk: int | None = None) -> pd.DataFrame:
    """The configuration trained on the macro labels of every cut, on the same split.

    Returns
    -------
    DataFrame
        One row per cut, columns :data:`MACRO_COLUMNS`; a cut whose groups the training
        images fall in fewer than 2 of (possible only when classes are left out of the split)
        has no row.
    """
    X = views[cfg.features]
    rows = []
    for name, class_to_group in cuts.items():
        y = class_to_group[fine]
        groups = int(len(np.unique(y[train_idx])))
        if groups < 2:  # the classes left in the split all fall in one group: nothing to learn
            continue
        model, converged = fit_logreg(X[train_idx], y[train_idx], cfg.C, cfg.class_weight,
                                      max_iter, seed)
        res, _, _ = scores(model, X[train_idx], y[train_idx], X[test_idx], y[test_idx], chunk)
        majority = np.bincount(y[train_idx]).argmax()  # predict the largest training group
        rows.append({"target": name, "groups": groups, "test_accuracy": res["test_accuracy"],
                     "train_accuracy": res["train_accuracy"], "macro_f1": res["macro_f1"],
                     "random_baseline": 1.0 / groups,
                     "majority_baseline": float(np.mean(y[test_idx] == majority)),
                     "iterations": int(np.max(model.n_iter_)), "converged": converged})
        log.info("%s (%d groups): test %.4f, random %.4f", name, groups, res["test_accuracy"],
                 1.0 / groups)
    return pd.DataFrame(rows, columns=MACRO_COLUMNS)


def with_fine_row(macro: pd.DataFrame, best: dict, y: np.ndarray, train_idx: np.ndarray,
                  test_idx: np.ndarray, n_classes: int) -> pd.DataFrame:
    """The macro table followed by a ``fine`` row: the best configuration on the classes."""
    fine_majority = float(np.mean(y[test_idx] == np.bincount(y[train_idx]).argmax()))
    fine_row = pd.DataFrame([{
        "target": "fine", "groups": n_classes, "test_accuracy": best["test_accuracy"],
        "train_accuracy": best["train_accuracy"], "macro_f1": best["macro_f1"],
        "random_baseline": 1.0 / n_classes, "majority_baseline": fine_majority,
        "iterations": best["iterations"], "converged": best["converged"]}])
    return pd.concat([macro, fine_row], ignore_index=True) if len(macro) else fine_row


# --------------------------------------------------------------------------- tables
def per_class_accuracy(y_test: np.ndarray, pred: np.ndarray, names: list[str],
                       y_train: np.ndarray | None = None,
                       excluded: list[dict] = ()) -> pd.DataFrame:
    """One row per class: test images, correct, accuracy (recall; NaN without a test image),
    and the training count when ``y_train`` is given. Sorted by accuracy (best first), then
    class name. The classes of ``excluded`` (:func:`excluded_classes`) have no row."""
    c = len(names)
    test_count = np.bincount(y_test, minlength=c)
    correct = np.bincount(y_test[pred == y_test], minlength=c)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(test_count > 0, correct / np.maximum(test_count, 1), np.nan)
    df = pd.DataFrame({"class": names, "label": np.arange(c), "test_count": test_count,
                       "correct": correct, "accuracy": acc})
    if y_train is not None:
        df.insert(2, "train_count", np.bincount(y_train, minlength=c))
    df = df[~df["label"].isin([e["label"] for e in excluded])]
    return df.sort_values(["accuracy", "class"], ascending=[False, True],
                          na_position="last").reset_index(drop=True)


def per_class_summary(df: pd.DataFrame) -> dict:
    """Mean, median, sample std, min and max of the per-class accuracy, and class counts at 1,
    at 0 and without test images."""
    acc = df["accuracy"].dropna()
    return {"mean": float(acc.mean()), "median": float(acc.median()),
            "std": float(acc.std()) if len(acc) > 1 else 0.0,  # sample std (ddof=1), as pandas
            "min": float(acc.min()), "max": float(acc.max()),
            "classes_at_1": int((acc == 1).sum()), "classes_at_0": int((acc == 0).sum()),
            "classes_without_test_images": int(df["accuracy"].isna().sum())}


def predictions_table(index: pd.DataFrame, names: list[str], y: np.ndarray,
                      train_idx: np.ndarray, test_idx: np.ndarray, p_train: np.ndarray,
                      p_test: np.ndarray, unsampled: np.ndarray | None = None,
                      p_unsampled: np.ndarray | None = None) -> pd.DataFrame:
    """One row per image of ``index`` (``path``, ``class``): its split, the predicted class
    and whether it is correct. Images in neither split (their class was left out) have split
    ``excluded`` and no prediction (``predicted`` and ``correct`` null). ``unsampled`` (the
    bounded route's training images outside the sample; ``train_idx`` is then the sample) have
    split ``unsampled`` and the predictions ``p_unsampled``."""
    split = np.full(len(y), "excluded", dtype=object)
    pred_all = np.full(len(y), -1, dtype=np.int64)
    if unsampled is not None and len(unsampled):
        split[unsampled], pred_all[unsampled] = "unsampled", p_unsampled
    split[train_idx] = "train"
    split[test_idx] = "test"
    pred_all[train_idx], pred_all[test_idx] = p_train, p_test
    if (pred_all >= 0).all():
        predicted, correct = [names[i] for i in pred_all], pred_all == y
    else:
        predicted = [names[i] if i >= 0 else None for i in pred_all]
        correct = pd.array(np.where(pred_all >= 0, pred_all == y, False), dtype="boolean")
        correct[pred_all < 0] = pd.NA
    return pd.DataFrame({
        "path": index["path"].astype(str), "class": index["class"].astype(str),
        "split": split.astype(str), "predicted": predicted, "correct": correct})


def summary(split: dict, results: dict[str, dict], best: str, per_class: pd.DataFrame,
            macro: pd.DataFrame, excluded: list[dict] | None = None) -> dict:
    """The metrics: the split, the best configuration, every configuration, the per-class
    summary with the :data:`TOP_N` best and worst classes, the macro scores, convergence, and
    the classes left out of the split (``excluded_classes``: class, images, reason)."""
    ranked = per_class.dropna(subset=["accuracy"])
    worst = ranked.sort_values(["accuracy", "class"], ascending=[True, True]).head(TOP_N)
    return {
        "split": split,
        "best": {"config": best, **{k: results[best][k] for k in
                                    ("test_accuracy", "train_accuracy", "gap", "macro_f1",
                                     "weighted_f1")}},
        "configs": results,
        "per_class": per_class_summary(per_class),
        "best_classes": {r["class"]: r["accuracy"] for _, r in ranked.head(TOP_N).iterrows()},
        "worst_classes": {r["class"]: r["accuracy"] for _, r in worst.iterrows()},
        "macro": {r["target"]: {"groups": int(r["groups"]), "test_accuracy": r["test_accuracy"],
                                "train_accuracy": r["train_accuracy"], "macro_f1": r["macro_f1"],
                                "random_baseline": r["random_baseline"],
                                "majority_baseline": r["majority_baseline"],
                                "converged": bool(r["converged"])}
                  for _, r in macro.iterrows()},
        "all_converged": bool(all(r["converged"] for r in results.values())
                              and (macro["converged"].all() if len(macro) else True)),
        "excluded_classes": public(excluded or []),
    }


def skipped_tables(index: pd.DataFrame, names: list[str],
                   y: np.ndarray) -> tuple[pd.DataFrame, ...]:
    """The tables when no bound can be fitted: configurations, per-class and macro tables with
    their columns and no rows, and :func:`predictions_table` with every image ``excluded``."""
    none = np.array([], dtype=np.int64)
    configs = pd.DataFrame(columns=["config", "train_accuracy", "test_accuracy", "gap",
                                    "macro_f1", "weighted_f1"])
    return (configs, per_class_accuracy(none, none, names, none).iloc[:0],
            pd.DataFrame(columns=MACRO_COLUMNS),
            predictions_table(index, names, y, none, none, none, none))


def skipped_summary(split: dict, reason: str, excluded: list[dict]) -> dict:
    """The metrics when no bound can be fitted (fewer than 2 classes left in the split): the
    keys of :func:`summary`, scores None, and ``skipped`` (the reason)."""
    none = dict.fromkeys(("test_accuracy", "train_accuracy", "gap", "macro_f1", "weighted_f1"))
    return {"skipped": reason, "split": split, "best": {"config": None, **none}, "configs": {},
            "per_class": {**dict.fromkeys(("mean", "median", "std", "min", "max")),
                          "classes_at_1": 0, "classes_at_0": 0,
                          "classes_without_test_images": 0},
            "best_classes": {}, "worst_classes": {}, "macro": {}, "all_converged": True,
            "excluded_classes": public(excluded)}
