"""A seeded 2-D t-SNE embedding of a sample of rows.

The embedding depends only on its input (the PCA features) and its settings, so it is computed
once and reused whatever clustering is selected.
"""
from __future__ import annotations

import numpy as np
from sklearn.manifold import TSNE

from clusterlens.core.sampling import sample_rows  # noqa: F401  (the rows to embed)

MIN_POINTS = 4


def embed(X, perplexity: float, seed: int, max_iter: int = 1000) -> np.ndarray:
    """scikit-learn's Barnes-Hut t-SNE, PCA initialisation, seeded.

    Parameters
    ----------
    X : array-like of shape (n, D)
        At least ``MIN_POINTS`` rows.
    perplexity : float
        Capped at (n - 1) / 3 so that small samples still work.
    seed : int
    max_iter : int, default 1000

    Returns
    -------
    ndarray of shape (n, 2), float32

    Raises
    ------
    ValueError
        If ``X`` has fewer than ``MIN_POINTS`` rows.
    """
    n = len(X)
    if n < MIN_POINTS:
        raise ValueError(f"t-SNE needs at least {MIN_POINTS} points, got {n}")
    perplexity = min(perplexity, (n - 1) / 3)
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto",
                max_iter=max_iter, random_state=seed)
    return tsne.fit_transform(np.asarray(X, dtype=np.float32)).astype(np.float32)
