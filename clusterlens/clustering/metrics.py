"""Clustering quality metrics: internal ones on the features, external ones against the class
labels. Pure functions over label vectors; noise is the label -1 (:data:`NOISE`).

Conventions:
- internal metrics (silhouette, Davies-Bouldin, Calinski-Harabasz) use the non-noise points
  only, and are None when fewer than 2 clusters remain;
- external metrics use every point, all noise points together counting as one cluster, so a
  method cannot score well by discarding the hard points.
"""
from __future__ import annotations

import numpy as np

from clusterlens.core.sampling import sample_rows

NOISE = -1
HIGHER_IS_BETTER = {
    "silhouette": True, "davies_bouldin": False, "calinski_harabasz": True, "inertia": False,
    "purity": True, "nmi": True, "ami": True, "ari": True, "homogeneity": True,
    "completeness": True, "v_measure": True, "hungarian_accuracy": True, "kappa": True,
    # label-free, measured by the `clustering` aggregate (clusterlens.clustering.label_free)
    "silhouette_umap": True, "silhouette_pca": True,
}
LABEL_FREE = ("silhouette_umap", "silhouette_pca")  # the metrics that choose without labels


def evenness(labels) -> float:
    """How evenly the non-noise points spread over the clusters: the Shannon entropy of the
    cluster sizes over its maximum, log K (Pielou's evenness), in [0, 1]. 1: equal sizes; near
    0: one cluster holds nearly every point, whatever K. 1 for a single cluster, 0 when every
    point is noise."""
    lab = np.asarray(labels)
    lab = lab[lab != NOISE]
    if not len(lab):
        return 0.0
    p = np.unique(lab, return_counts=True)[1] / len(lab)
    if len(p) == 1:
        return 1.0
    return float(-(p * np.log(p)).sum() / np.log(len(p)))


def _skm():
    """scikit-learn's metrics, imported on first use: code that needs only this module's
    constants does not pay for scikit-learn's import."""
    from sklearn import metrics

    return metrics


def contingency(labels_true, labels_pred) -> np.ndarray:
    """Clusters x classes count matrix (rows in sorted cluster order, columns in class order)."""
    return _skm().cluster.contingency_matrix(labels_pred, labels_true)


def purity(labels_true, labels_pred) -> float:
    """Fraction of points whose cluster's majority class is their own class."""
    c = contingency(labels_true, labels_pred)
    return float(c.max(axis=1).sum() / c.sum())


def hungarian_accuracy(labels_true, labels_pred) -> float:
    """Accuracy under the best one-to-one matching of clusters to classes (unmatched = wrong)."""
    c = contingency(labels_true, labels_pred)
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(c, maximize=True)
    return float(c[rows, cols].sum() / c.sum())


def majority_mapping(labels_true, labels_pred) -> dict:
    """cluster -> its most frequent class (ties: the smallest class id)."""
    true = np.asarray(labels_true)
    pred = np.asarray(labels_pred)
    mapping = {}
    for cl in np.unique(pred):
        values, counts = np.unique(true[pred == cl], return_counts=True)
        mapping[cl.item()] = values[np.argmax(counts)].item()
    return mapping


def kappa_after_majority_vote(labels_true, labels_pred) -> float:
    """Cohen's kappa between the classes and each point's cluster-majority class."""
    mapping = majority_mapping(labels_true, labels_pred)
    mapped = np.array([mapping[p] for p in np.asarray(labels_pred).tolist()])
    return float(_skm().cohen_kappa_score(labels_true, mapped))


def nmi(labels_true, labels_pred) -> float:
    """Normalised mutual information (arithmetic mean normalisation) of a labeling."""
    return float(_skm().normalized_mutual_info_score(labels_true, labels_pred))


def ari(labels_true, labels_pred) -> float:
    """Adjusted Rand index of a labeling."""
    return float(_skm().adjusted_rand_score(labels_true, labels_pred))


#: Above this many points the adjusted mutual information is computed on a seeded sample of
#: this many: its expected-MI term costs about N x clusters (53 s at 10^6 points, 2,000
#: clusters, 1,000 classes, against 3.8 s on a 10^5 sample, which moved it by 0.002).
AMI_MAX_N = 100_000


def ami(labels_true, labels_pred, *, seed: int = 0, max_n: int | None = AMI_MAX_N
        ) -> tuple[float, int | None]:
    """Adjusted mutual information of a labeling, and the sample size it used (None: every
    point). Above ``max_n`` points it is computed on a seeded sample of ``max_n`` points
    (:func:`clusterlens.core.sampling.sample_rows`); None: always on every point."""
    y, p = np.asarray(labels_true), np.asarray(labels_pred)
    if max_n is None or len(y) <= max_n:
        return float(_skm().adjusted_mutual_info_score(y, p)), None
    rows = sample_rows(len(y), max_n, seed)
    return float(_skm().adjusted_mutual_info_score(y[rows], p[rows])), int(max_n)


def external_metrics(labels_true, labels_pred, *, seed: int = 0,
                     ami_max_n: int | None = AMI_MAX_N) -> dict:
    """Every external metric of a labeling against the classes.

    Parameters
    ----------
    labels_true : array-like of shape (n,)
        The classes.
    labels_pred : array-like of shape (n,)
        The clusters; all noise points (-1) together count as one cluster.
    seed, ami_max_n : int
        The AMI's sample above ``ami_max_n`` points (:func:`ami`).

    Returns
    -------
    dict
        ``purity``, ``nmi``, ``ami``, ``ari``, ``homogeneity``, ``completeness``,
        ``v_measure``, ``hungarian_accuracy``, ``kappa`` (floats), and ``ami_sample`` (the
        AMI's sample size) when the AMI was computed on a sample.
    """
    y, p = np.asarray(labels_true), np.asarray(labels_pred)
    h, c, v = _skm().homogeneity_completeness_v_measure(y, p)
    ami_value, ami_sample = ami(y, p, seed=seed, max_n=ami_max_n)
    out = {
        "purity": purity(y, p),
        "nmi": nmi(y, p),
        "ami": ami_value,
        "ari": ari(y, p),
        "homogeneity": float(h), "completeness": float(c), "v_measure": float(v),
        "hungarian_accuracy": hungarian_accuracy(y, p),
        "kappa": kappa_after_majority_vote(y, p),
    }
    if ami_sample is not None:
        out["ami_sample"] = ami_sample
    return out


def silhouette_sample_indices(n: int, sample: int, seed: int) -> np.ndarray:
    """All points when n <= sample, else a seeded sample of `sample` points (sorted)."""
    return sample_rows(n, sample, seed)


# Largest distance matrix `silhouette_distances` keeps for several labelings to share (the
# default 5,000-point sample of float32 features: 100 MB).
SHARED_DISTANCES_MAX_BYTES = 1 << 30


def silhouette_distances(X, silhouette_sample: int = 5000, seed: int = 0,
                         max_bytes: int = SHARED_DISTANCES_MAX_BYTES) -> np.ndarray | None:
    """The Euclidean distances among the silhouette sample of all of X (the points
    `internal_metrics` samples when no point is noise), for several labelings of the same points
    to share: the cuts of one agglomerative tree (the distances are most of a silhouette's time:
    0.27 of 0.42 s at 5,000 points). None when the matrix would take more than ``max_bytes``;
    each silhouette then computes its own distances in chunks, as scikit-learn does."""
    X = np.asarray(X)
    idx = silhouette_sample_indices(len(X), silhouette_sample, seed)
    if len(idx) ** 2 * X.dtype.itemsize > max_bytes:
        return None
    return _skm().pairwise_distances(X[idx])


def internal_metrics(X, labels, silhouette_sample: int = 5000, seed: int = 0,
                     sample_distances: np.ndarray | None = None) -> dict:
    """Silhouette (on a seeded sample), Davies-Bouldin, Calinski-Harabasz of the non-noise
    points.

    Parameters
    ----------
    X : array-like of shape (n, d)
    labels : array-like of shape (n,)
    silhouette_sample, seed : int
        The silhouette uses at most ``silhouette_sample`` points
        (:func:`silhouette_sample_indices`).
    sample_distances : ndarray, optional
        :func:`silhouette_distances` of the same X, sample and seed, used when no point is
        noise (the same numbers, without computing the distances again).

    Returns
    -------
    dict
        ``silhouette``, ``davies_bouldin``, ``calinski_harabasz``: None with fewer than 2
        clusters (or as many clusters as points) left.

    Raises
    ------
    ValueError
        When ``sample_distances`` does not match the sample.
    """
    X = np.asarray(X)
    labels = np.asarray(labels)
    keep = labels != NOISE
    Xk, lk = X[keep], labels[keep]
    n_clusters = len(np.unique(lk))
    out = {"silhouette": None, "davies_bouldin": None, "calinski_harabasz": None}
    if n_clusters < 2 or n_clusters >= len(lk):
        return out
    idx = silhouette_sample_indices(len(lk), silhouette_sample, seed)
    if len(np.unique(lk[idx])) >= 2:
        if sample_distances is not None and keep.all():
            if sample_distances.shape != (len(idx), len(idx)):
                raise ValueError(f"sample_distances has shape {sample_distances.shape}, the "
                                 f"silhouette sample has {len(idx)} points")
            out["silhouette"] = float(_skm().silhouette_score(sample_distances, lk[idx],
                                                              metric="precomputed"))
        else:
            out["silhouette"] = float(_skm().silhouette_score(Xk[idx], lk[idx]))
    out["davies_bouldin"] = float(_skm().davies_bouldin_score(Xk, lk))
    out["calinski_harabasz"] = float(_skm().calinski_harabasz_score(Xk, lk))
    return out


def describe(labels) -> dict:
    """``n_clusters`` (noise excluded) and ``noise_fraction`` of a labeling."""
    labels = np.asarray(labels)
    clusters = np.unique(labels[labels != NOISE])
    return {"n_clusters": int(len(clusters)),
            "noise_fraction": float(np.mean(labels == NOISE)) if len(labels) else 0.0}
