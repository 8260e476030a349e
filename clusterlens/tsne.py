"""`tsne` stage: a seeded 2-D t-SNE embedding of a sample of the PCA features (SPEC R3).

The embedding depends only on the PCA features and the ``tsne.*`` params, so it is computed once
and reused whatever clustering is selected; the `composition` stage colours it by class and by
cluster. Writes ``data/tsne.npz`` with ``rows`` (index rows of the sample, sorted) and
``embedding`` (len(rows) x 2, float32).
"""
from __future__ import annotations

import argparse

import numpy as np

from clusterlens.common import (
    ParamError, get_logger, load_npy, load_params, log_block, param, require_int, run_cli,
    save_npz,
)

log = get_logger("tsne")
OUT = "data/tsne.npz"


def sample_rows(n: int, sample: int, seed: int) -> np.ndarray:
    """All rows when n <= sample, else a seeded uniform sample of ``sample`` rows (sorted)."""
    if n <= sample:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=sample, replace=False))


def check_perplexity(value, n: int) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ParamError("tsne.perplexity", f"must be a positive number, got {value!r}")
    return float(value)


def embed(X: np.ndarray, perplexity: float, seed: int, max_iter: int = 1000) -> np.ndarray:
    """scikit-learn's Barnes-Hut t-SNE, PCA initialisation, seeded.
    Perplexity is capped at (n - 1) / 3 so that small samples still work."""
    from sklearn.manifold import TSNE

    n = len(X)
    if n < 4:
        raise ParamError("tsne.sample", f"t-SNE needs at least 4 points, got {n}")
    perplexity = min(perplexity, (n - 1) / 3)
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto",
                max_iter=max_iter, random_state=seed)
    return tsne.fit_transform(np.asarray(X, dtype=np.float32)).astype(np.float32)


def run(params: dict, pca_path="data/pca.npy", out=OUT) -> dict:
    seed = require_int("seed", param(params, "seed"))
    sample = require_int("tsne.sample", param(params, "tsne.sample"), 4)
    max_iter = require_int("tsne.max_iter", param(params, "tsne.max_iter"), 250)
    X = load_npy(pca_path)
    perplexity = check_perplexity(param(params, "tsne.perplexity"), len(X))
    rows = sample_rows(len(X), sample, seed)
    log_block(log, "tsne", inputs={"features": f"{pca_path} {X.shape}"},
              params={"tsne.sample": sample, "tsne.perplexity": perplexity,
                      "tsne.max_iter": max_iter, "seed": seed})
    emb = embed(X[rows], perplexity, seed, max_iter)
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
