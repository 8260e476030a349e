"""UMAP (umap-learn) of a seeded sample of rows: a 2-D view and a low-dimensional embedding.

UMAP followed by a clustering, and the silhouette measured in UMAP space, are recommended for
clustering embeddings (Lowe et al. 2024): the ``umap`` stage gives the 2-D map beside t-SNE and
PCA, and a ``dim``-D embedding of the same rows in which ``clustering`` measures each grid
point's silhouette (``silhouette_umap``, a label-free selection criterion).

numba compiles umap-learn's and pynndescent's functions on first use. :func:`configure_numba`
points numba's cache at a folder of the project, so only the first run pays the compile. It must
run before umap is first imported (numba reads its settings at import). numba compiles for a
generic x86-64 CPU (``NUMBA_CPU_NAME``, set with the other CPU pins by
:func:`clusterlens.core.numerics.pin_cpu_kernels`), so the machine code, and the embedding, are
the same on every CPU kind.
With ``random_state`` set, umap-learn runs single-threaded, so a seed gives identical bytes.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

MIN_POINTS = 5


def configure_numba(cache_dir: str | os.PathLike) -> bool:
    """Set numba's cache folder, before umap-learn is imported; returns False
    (and changes nothing) when numba is already imported in this process, since numba reads
    its settings once, at import (a stage runs in its own process, so it always applies)."""
    import sys

    if "numba" in sys.modules:
        return False
    path = Path(cache_dir).resolve()
    path.mkdir(parents=True, exist_ok=True)
    os.environ["NUMBA_CACHE_DIR"] = str(path)
    return True


def _fit(X, n_components: int, n_neighbors: int, min_dist: float, seed: int):
    """The fitted reducer and the (n, n_components) float32 embedding of the rows of ``X``."""
    import umap

    n = len(X)
    if n < MIN_POINTS:
        raise ValueError(f"UMAP needs at least {MIN_POINTS} points, got {n}")
    reducer = umap.UMAP(n_components=int(n_components), n_neighbors=int(min(n_neighbors, n - 1)),
                        min_dist=float(min_dist), random_state=int(seed), n_jobs=1,
                        init="spectral" if n_components < n - 1 else "random")
    return reducer, reducer.fit_transform(np.asarray(X, dtype=np.float32)).astype(np.float32)


def embed_all(X, rows: np.ndarray, *, n_components: int, n_neighbors: int, min_dist: float,
              seed: int, chunk: int = 20_000) -> np.ndarray:
    """UMAP fitted on the ``rows`` of ``X`` (as :func:`embed`, the same coordinates), every
    other row placed in that embedding by umap-learn's ``transform``, in chunks of ``chunk``
    rows; returns (len(X), n_components) float32."""
    from tqdm.auto import tqdm

    rows = np.asarray(rows, dtype=np.int64)
    reducer, fitted = _fit(X[rows], n_components, n_neighbors, min_dist, seed)
    out = np.empty((len(X), int(n_components)), dtype=np.float32)
    out[rows] = fitted
    rest = np.setdiff1d(np.arange(len(X)), rows)
    for start in tqdm(range(0, len(rest), chunk), desc="umap: transform", unit="chunk",
                      disable=not len(rest)):
        part = rest[start:start + chunk]
        out[part] = reducer.transform(np.asarray(X[part], dtype=np.float32))
    return out


def embed(X, *, n_components: int, n_neighbors: int, min_dist: float, seed: int) -> np.ndarray:
    """umap-learn's UMAP of the rows of ``X`` (Euclidean), seeded.

    Parameters
    ----------
    X : array-like of shape (n, D)
        At least :data:`MIN_POINTS` rows.
    n_components : int
        The embedding's dimension (2 for a view).
    n_neighbors : int
        Capped at n - 1.
    min_dist : float
    seed : int
        ``random_state``: single-threaded, identical bytes for a seed.

    Returns
    -------
    ndarray of shape (n, n_components), float32
    """
    return _fit(X, n_components, n_neighbors, min_dist, seed)[1]
