"""DVC stage `tsne`: a seeded 2-D t-SNE embedding of a sample of the PCA features.

The `composition` stage colours it by class and by cluster; through ``data/images.parquet``
it is also the report explorer's t-SNE map. Writes ``data/tsne.npz`` with
``rows`` (index rows of the sample, sorted) and ``embedding`` (len(rows) x 2, float32).
"""
from __future__ import annotations

import argparse

import numpy as np

from clusterlens.clustering import tsne
from clusterlens.config.base import load_params, parse_section, require_seed
from clusterlens.config.tsne import TSNEParams
from clusterlens.core.cli import run_cli
from clusterlens.core.errors import ParamError
from clusterlens.core.io import load_npy, save_npz
from clusterlens.core.logs import get_logger, log_block

log = get_logger("tsne")
IN_PCA = "data/pca.npy"
OUT = "data/tsne.npz"


def run(params: dict, pca_path: str = IN_PCA, out: str = OUT) -> dict:
    seed = require_seed(params)
    p = parse_section(params, "tsne", TSNEParams)
    X = load_npy(pca_path)
    rows = tsne.sample_rows(len(X), p.sample, seed)
    log_block(log, "tsne", inputs={"features": f"{pca_path} {X.shape}"},
              params={"tsne.sample": p.sample, "tsne.perplexity": p.perplexity,
                      "tsne.max_iter": p.max_iter, "seed": seed})
    if len(rows) < tsne.MIN_POINTS:
        raise ParamError("tsne.sample", f"t-SNE needs at least {tsne.MIN_POINTS} points, got "
                         f"{len(rows)} ({pca_path} has {len(X)} rows)")
    emb = tsne.embed(X[rows], p.perplexity, seed, p.max_iter)
    save_npz(out, rows=rows.astype(np.int64), embedding=emb)
    log_block(log, "tsne done", outputs={out: f"{len(rows)} points embedded"})
    return {"points": int(len(rows))}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="t-SNE of a seeded sample of the PCA features.")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    run(load_params(args.params))


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
