"""A short name for each cluster, from its members' captions.

Each captioned image has a top-1 caption label (``label1`` of ``data/captions.parquet``: an
ImageNet class name, or CLIP's zero-shot one). A cluster is named by the labels that are most
characteristic of it: frequent among its members and rare elsewhere. A label ``w`` scores
``p(w | c) * log(p(w | c) / p(w))`` in cluster ``c`` (its share of the cluster times the log of
its lift over the whole folder: the cluster's term of the KL divergence of its label mix from
the folder's), and the name joins the best :data:`WORDS` labels with a positive score, best first
("golden retriever / Labrador retriever"). Ties go to the label first in alphabetical order.
A cluster without captioned members, and noise, get no name ("").
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from clusterlens.clustering.metrics import NOISE

WORDS = 2  # labels in a name
MIN_SHARE = 0.1  # a label names a cluster only when at least this share of its captions has it


def cluster_names(labels: np.ndarray, caption_rows: np.ndarray, caption_labels,
                  *, words: int = WORDS) -> dict[int, str]:
    """cluster -> name.

    Parameters
    ----------
    labels : ndarray of shape (n_images,)
        Cluster of every image (noise: -1).
    caption_rows : ndarray of int
        The index rows of the captioned images (all of them, or a sample).
    caption_labels : sequence of str
        Their top-1 caption labels, in the same order.
    words : int
        Labels in a name, at most.

    Returns
    -------
    dict
        Every cluster of ``labels`` but noise -> its name ("" without captioned members or a
        characteristic label).
    """
    labels = np.asarray(labels)
    clusters = sorted(int(c) for c in np.unique(labels) if c != NOISE)
    names = dict.fromkeys(clusters, "")
    if not len(caption_rows):
        return names
    df = pd.DataFrame({"cluster": labels[np.asarray(caption_rows, dtype=np.int64)],
                       "label": np.asarray(caption_labels, dtype=object).astype(str)})
    df = df[df["cluster"] != NOISE]
    if df.empty:
        return names
    overall = df["label"].value_counts(normalize=True)
    counts = df.groupby(["cluster", "label"]).size().rename("n").reset_index()
    counts["share"] = counts["n"] / counts.groupby("cluster")["n"].transform("sum")
    counts["score"] = counts["share"] * np.log(counts["share"] / counts["label"].map(overall))
    counts = counts[(counts["score"] > 0) & (counts["share"] >= MIN_SHARE)]
    counts = counts.sort_values(["cluster", "score", "label"], ascending=[True, False, True],
                                kind="stable")
    for c, group in counts.groupby("cluster", sort=True):
        names[int(c)] = " / ".join(group["label"].head(words))
    return names


def names_from_captions(labels: np.ndarray, paths, captions: pd.DataFrame, *,
                        words: int = WORDS) -> dict[int, str]:
    """:func:`cluster_names` from the caption table (``path``, ``label1``; any subset of the
    images, matched to ``paths``, the index's, by path; none when it has no ``path``)."""
    if "path" not in captions.columns or captions.empty:
        return cluster_names(labels, np.zeros(0, np.int64), [], words=words)
    rows = pd.Index(np.asarray(paths, dtype=object)).get_indexer(captions["path"])
    found = rows >= 0
    return cluster_names(labels, rows[found], captions["label1"].to_numpy()[found], words=words)
