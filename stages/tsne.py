"""DVC stage `tsne`: a seeded 2-D t-SNE embedding of a sample of the PCA features.

The `composition` stage colours it by class and by cluster; through ``data/images.parquet``
it is also the report explorer's t-SNE map. Writes ``data/tsne.npz`` with
``rows`` (index rows of the sample, sorted) and ``embedding`` (len(rows) x 2, float32).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

from clusterlens.clustering import tsne
from clusterlens.config.base import load_params, parse_stage
from clusterlens.config.tsne import TSNEParams
from clusterlens.core.cli import run_cli
from clusterlens.core.io import load_npy, save_npz
from clusterlens.core.logs import get_logger, log_block
from clusterlens.core.sampling import embedded_rows

log = get_logger("tsne")
IN_PCA = "data/pca.npy"
OUT = "data/tsne.npz"


@dataclass(frozen=True)
class Params:
    """What the stage reads from params.yaml (parsed once, in :func:`main`)."""
    seed: int
    tsne: TSNEParams


def check_params_vs_input(cfg: Params, n_rows: int, source: str) -> np.ndarray:
    """The rules that need the data: the sampled rows, at least t-SNE's minimum."""
    return embedded_rows(n_rows, cfg.tsne.sample, cfg.seed, minimum=tsne.MIN_POINTS,
                         key="tsne.sample", what="t-SNE", source=source)


def run(cfg: Params, pca_path: str = IN_PCA, out: str = OUT) -> dict:
    X = load_npy(pca_path)
    p = cfg.tsne
    seed = cfg.seed
    log_block(log, "tsne", inputs={"features": f"{pca_path} {X.shape}"},
              params={"tsne.sample": p.sample, "tsne.perplexity": p.perplexity,
                      "tsne.max_iter": p.max_iter, "seed": seed})
    rows = check_params_vs_input(cfg, len(X), pca_path)
    emb = tsne.embed(X[rows], p.perplexity, seed, p.max_iter)
    save_npz(out, rows=rows.astype(np.int64), embedding=emb)
    log_block(log, "tsne done", outputs={out: f"{len(rows)} points embedded"})
    return {"points": int(len(rows))}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="t-SNE of a seeded sample of the PCA features.")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    run(parse_stage(load_params(args.params), Params))


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
