"""DVC stage `umap`: a seeded UMAP of a sample of the PCA features, as a 2-D map and a
``umap.dim``-D embedding.

The 2-D map is the report's and the explorer's UMAP view (beside t-SNE and PCA); ``clustering``
measures each grid point's silhouette in the ``dim``-D embedding (``silhouette_umap``). Writes
``data/umap.npz`` with ``rows`` (index rows of the sample, sorted), ``embedding`` (len(rows) x 2)
and ``reduced`` (len(rows) x dim), float32; with ``umap.enabled: false``, no rows. With
``umap.grid``, ``data/umap_features.npy`` holds every image's ``dim``-D coordinates (the
sample's fit, the others placed by ``transform``) for the grid's ``space: umap``; else N x 0.
numba's compiled code is cached in ``.cache/numba`` (only the first run compiles).
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np

from clusterlens.clustering import umap_embed
from clusterlens.config.base import load_params, parse_stage
from clusterlens.config.umap import UMAPParams
from clusterlens.core.cli import run_cli
from clusterlens.core.io import save_npy, save_npz
from clusterlens.core.logs import get_logger, log_block
from clusterlens.core.sampling import embedded_rows

log = get_logger("umap")
IN_PCA = "data/pca.npy"
OUT = "data/umap.npz"
OUT_FEATURES = "data/umap_features.npy"
NUMBA_CACHE = ".cache/numba"


@dataclass(frozen=True)
class Params:
    """What the stage reads from params.yaml (parsed once, in :func:`main`)."""
    seed: int
    umap: UMAPParams


def check_params_vs_input(cfg: Params, n_rows: int, source: str) -> np.ndarray:
    """The rules that need the data: the sampled rows, at least UMAP's minimum."""
    return embedded_rows(n_rows, cfg.umap.sample, cfg.seed, minimum=umap_embed.MIN_POINTS,
                         key="umap.sample", what="UMAP", source=source)


def run(cfg: Params, pca_path: str = IN_PCA, out: str = OUT,
        out_features: str = OUT_FEATURES) -> dict:
    p = cfg.umap
    seed = cfg.seed
    X = np.load(pca_path, mmap_mode="r")
    if not p.enabled or not p.grid:  # the grid's UMAP features: a placeholder
        save_npy(out_features, np.zeros((len(X), 0), np.float32))
    if not p.enabled:
        log.info("umap.enabled: false: no UMAP map, no silhouette_umap")
        save_npz(out, rows=np.zeros(0, np.int64), embedding=np.zeros((0, 2), np.float32),
                 reduced=np.zeros((0, p.dim), np.float32))
        return {"points": 0}
    log_block(log, "umap", inputs={"features": f"{pca_path} {X.shape}"},
              params={"umap.sample": p.sample, "umap.dim": p.dim,
                      "umap.n_neighbors": p.n_neighbors, "umap.min_dist": p.min_dist,
                      "umap.grid": p.grid, "seed": seed})
    rows = check_params_vs_input(cfg, len(X), pca_path)
    if not umap_embed.configure_numba(NUMBA_CACHE):
        log.info("numba was already imported: its cache and CPU settings stay as they were")
    t0 = time.perf_counter()
    kw = dict(n_neighbors=p.n_neighbors, min_dist=p.min_dist, seed=seed)
    view = umap_embed.embed(X[rows], n_components=2, **kw)
    t1 = time.perf_counter()
    if p.grid:
        every = umap_embed.embed_all(X, rows, n_components=p.dim, **kw)
        save_npy(out_features, every)
        reduced = every[rows]
    else:
        reduced = umap_embed.embed(X[rows], n_components=p.dim, **kw)
    save_npz(out, rows=rows.astype(np.int64), embedding=view, reduced=reduced)
    log_block(log, "umap done", outputs={out: f"{len(rows)} points: 2-D map in {t1 - t0:.1f} s, "
                                              f"{p.dim}-D in {time.perf_counter() - t1:.1f} s"})
    return {"points": int(len(rows))}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="UMAP of a seeded sample of the PCA features.")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    run(parse_stage(load_params(args.params), Params))


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
