"""Label-free model selection: each grid point's silhouette in UMAP space and in PCA space.

Choosing the grid point by NMI or ARI needs labels one can trust. The silhouette needs none,
and measured in UMAP space it tracks agreement with the true labels on embeddings (Lowe et al.
2024, 26 data sets). Every point is scored on the same seeded sample of images, in two spaces:

- ``silhouette_umap``: the ``umap`` stage's ``dim``-D embedding of its sample (None for every
  point when UMAP is off);
- ``silhouette_pca``: the PCA features of the same images (of a sample of at most
  :data:`SAMPLE` images when UMAP is off), so that every method, NMF-based ones included, is
  measured in one space.

The noise points of a density method count as one cluster, as for the external metrics
(:mod:`clusterlens.clustering.metrics`), not left out as for the internal ones: these scores
choose a model, and leaving noise out would reward a method for discarding the hard images. A
point with fewer than 2 clusters besides the noise on the sample gets None. Every point also
gets its ``evenness`` (:func:`clusterlens.clustering.metrics.evenness`): a label-free choice
passes over points whose clusters are too uneven
(:data:`clusterlens.clustering.selection.MIN_EVENNESS`). :func:`comparison` then says which
point each kind of choice selects, and the NMI of each.
"""
from __future__ import annotations

import numpy as np

from clusterlens.clustering.metrics import LABEL_FREE, NOISE, evenness

SAMPLE = 5000  # images scored when UMAP is off (its own sample otherwise)


def silhouettes(X: np.ndarray, labelings: dict, rows: np.ndarray) -> dict:
    """The silhouette of each labeling on ``rows``, in the space of ``X``.

    Parameters
    ----------
    X : ndarray of shape (len(rows), d)
        The sampled images' coordinates.
    labelings : dict
        key -> labels of every image (index order); noise is -1.
    rows : ndarray of int
        The sampled images' index rows (the rows of ``X``).

    Returns
    -------
    dict
        key -> silhouette (float), the noise (-1) one cluster, or None with fewer than 2
        clusters besides the noise (or one point a cluster) among the sample's images.
    """
    from sklearn.metrics import pairwise_distances, silhouette_score

    dist = pairwise_distances(np.asarray(X, dtype=np.float64))
    out = {}
    for key, labels in labelings.items():
        lab = np.asarray(labels)[rows]
        clusters = len(np.unique(lab[lab != NOISE]))
        if clusters < 2 or len(np.unique(lab)) >= len(lab):
            out[key] = None
            continue
        out[key] = float(silhouette_score(dist, lab, metric="precomputed"))
    return out


def comparison(results: dict, select, *, label_free: str, label_based: str = "nmi") -> dict:
    """Which grid point the label-free and the label-based choice select, and their NMI.

    Parameters
    ----------
    results : dict
        method -> point -> metrics, ``label_free`` and ``label_based`` among them.
    select : callable
        ``select(results, metric)`` -> the chosen point's record (``method``, ``point``, ...),
        the aggregate's own selection rule.
    label_free, label_based : str
        The metrics compared.

    Returns
    -------
    dict
        ``label_free`` and ``label_based`` (each ``metric``, ``method``, ``point``, ``nmi``),
        ``agree`` (the same point), and ``nmi_lost`` (label-based NMI minus label-free NMI).
    """
    picks = {}
    for kind, metric in (("label_free", label_free), ("label_based", label_based)):
        chosen = select(results, metric)
        picks[kind] = {"metric": metric, "method": chosen["method"], "point": chosen["point"],
                       "nmi": results[chosen["method"]][chosen["point"]].get("nmi")}
    free, based = picks["label_free"], picks["label_based"]
    nmi = (free["nmi"], based["nmi"])
    return {**picks, "agree": (free["method"], free["point"]) == (based["method"], based["point"]),
            "nmi_lost": None if None in nmi else float(nmi[1] - nmi[0])}


def add_scores(results: dict, clusters_dir, *, pca: np.ndarray, umap_rows: np.ndarray,
               umap_reduced: np.ndarray, seed: int) -> str:
    """Add ``silhouette_umap`` and ``silhouette_pca`` to every point of ``results`` (method ->
    point -> metrics; each point's labels read from ``clusters_dir``), on the UMAP sample
    (``umap_rows``, ``umap_reduced``: the ``umap`` stage's), or on a seeded sample of
    :data:`SAMPLE` images when it is empty. Returns the label-free metric to compare with the
    label-based one: ``silhouette_umap`` when UMAP ran, else ``silhouette_pca``."""
    from clusterlens.clustering.selection import labels_path
    from clusterlens.core.io import load_npy
    from clusterlens.core.sampling import sample_rows

    keys = [(m, pt) for m, points in results.items() for pt in points]
    labelings = {(m, pt): load_npy(labels_path(results, m, pt, clusters_dir)) for m, pt in keys}
    has_umap = len(umap_rows) > 0
    rows = np.asarray(umap_rows, dtype=np.int64) if has_umap else sample_rows(len(pca), SAMPLE,
                                                                             seed)
    scores = {"silhouette_pca": silhouettes(np.asarray(pca[rows]), labelings, rows),
              "silhouette_umap": (silhouettes(umap_reduced, labelings, rows) if has_umap
                                  else dict.fromkeys(keys))}
    for m, pt in keys:
        results[m][pt].update({name: scores[name][(m, pt)] for name in LABEL_FREE},
                              evenness=evenness(labelings[(m, pt)]))
    return "silhouette_umap" if has_umap else "silhouette_pca"


def describe(comp: dict) -> str:
    """One line of :func:`comparison`'s record, for logs and the report."""
    free, based = comp["label_free"], comp["label_based"]

    def nmi(v):
        return "n/a" if v is None else f"{v:.4f}"
    return (f"by {free['metric']} (no labels): {free['method']}/{free['point']} (NMI "
            f"{nmi(free['nmi'])}); by {based['metric']}: {based['method']}/{based['point']} (NMI "
            f"{nmi(based['nmi'])})" + ("; the same model" if comp["agree"] else ""))
