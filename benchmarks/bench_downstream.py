"""Time and peak memory of the feature-side and downstream stages at large N.

    python -m benchmarks.bench_downstream                       # 10^5 x 1,280, 100 classes
    python -m benchmarks.bench_downstream --n 20000 --classes 100 --skip captions

On generated CNN-like features (:func:`benchmarks._util.cnn_like_features`) and a matching
index, each measurement runs in a fresh Python process that reports its own peak resident set
(VmHWM, which includes the pages of a memory-mapped input that were read):

- ``captions``, ``fusion``, ``reduce``, ``tsne``, ``macro``, ``macro_purity``: the stages' own
  ``run`` with the default params, except ``captions.sample: 2000`` (the default 0 captions
  nothing above ``captions.max_n``; this measures the sample route, and ``fusion`` then compares
  the sets on those rows). The K-Means labels that ``macro_purity`` scores are the classes with
  30% of the images moved to a random cluster, at K = 0.5, 1, 1.5, 2 x classes;
- ``reduce`` also with its ``blocked`` route (``reduce.max_exact_n`` below N) from a read-only
  memory map (``large_n.mmap_threshold_mb: 0``), and at ``--blocked-n`` rows (default 2 x
  10^5), for the estimate at 10^6;
- ``images``: the work of the `images` stage that grows with N (centre distances, the
  per-image table, the representatives, the audit table, the parquet and CSV files); its
  thumbnail figures draw a fixed number of images (``images.show``, ``pairs``, ``clusters``);
- ``composition``: the composition table, the row-normalised matrix and the heatmap, and the
  two 2-D views (t-SNE sample and every image's PCA view); the montage draws a fixed number of
  thumbnails.

``summary`` reads a handful of metrics files whatever N is, and is not measured. Writes
``benchmarks/results/downstream_<N>.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import _util as u

PARAMS = {"seed": 0, "data": {"root": "."},
          "extract": {"backbone": "efficientnet_lite0", "weights": "DEFAULT", "image_size": 224,
                      "resize": "center_crop", "batch_size": 64, "device": "cpu", "workers": 0,
                      "precision": "fp32", "jit": "auto", "store": "none"},
          "captions": {"template": "seed003", "batch_size": 256, "sample": 2000},
          "fusion": {"set": "visual", "methods": ["kmeans", "gmm"]},
          "kmeans": {"k": [], "n_init": 10, "max_iter": 300},
          "gmm": {"k": [], "covariance_type": "diag", "max_iter": 200},
          "reduce": {"standardize": True, "n_components": 50},
          "tsne": {"sample": 3000, "perplexity": 30, "max_iter": 1000},
          "macro": {"linkage": "ward", "groups": "auto",
                    "height_ratios": [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9], "color_threshold": 0.5,
                    "heatmap_classes": 50}}

STAGE = """
def main(a):
    import importlib, time
    from clusterlens.config.base import parse_stage
    stage = importlib.import_module("stages." + a["stage"])
    cfg = parse_stage(a["params"], stage.Params)
    t = time.perf_counter()
    out = stage.run(cfg)
    res = {"seconds": time.perf_counter() - t}
    if isinstance(out, dict):
        res.update({k: out[k] for k in ("route", "sample", "n_init", "k") if k in out})
    return res
"""

IMAGES = """
def main(a):
    import time
    import numpy as np, pandas as pd
    from clusterlens.audit.image_table import images_table, headline, tsne_columns, LABEL_ISSUE_COLUMNS
    from clusterlens.audit.image_table import NEIGHBOUR_COLUMNS
    from clusterlens.audit.duplicates import IMAGE_COLUMNS
    from clusterlens.audit.leaks import LEAK_IMAGE_COLUMNS
    from clusterlens.audit.issues import audit_table, issue_counts
    from clusterlens.audit.representatives import centre_distances, representatives
    from clusterlens.core.io import write_table, read_table
    from clusterlens.data.quality import SCORE_COLUMNS, FLAG_COLUMNS
    index = read_table("data/index.parquet")
    n = len(index)
    for c in SCORE_COLUMNS: index[c] = 0.0
    for c in FLAG_COLUMNS: index[c] = False
    pca, labels = np.load("data/pca.npy"), np.load("data/labels.npy")
    emb = np.load("data/tsne.npz")
    li = pd.DataFrame({"path": index["path"], "label_quality": 0.5, "suggested_class": "",
                       "suggested_probability": 0.5, "is_label_issue": False,
                       "label_issue_rank": -1})
    nb = pd.DataFrame({"path": index["path"], "duplicate_group": -1, "outlier_score": 0.1,
                       "outlier_rank": np.arange(n), "is_near_duplicate": False,
                       "near_duplicate_kind": "", "near_duplicate_score": 0.0,
                       "is_same_scene": False, "same_scene_score": 0.0, "is_leak": False,
                       "leak_score": 0.0})
    t = time.perf_counter()
    d = centre_distances(pca, labels)
    table = images_table(index, labels, d, np.load("data/pca_2d.npy"),
                         tsne_columns(n, emb["rows"], emb["embedding"]), li, nb)
    write_table("data/images.parquet", table)
    write_table("data/images.csv", table)
    reps = representatives(labels, d, table["path"].to_numpy(), table["class"].to_numpy(), 10, 5)
    summary = audit_table(table)
    headline(table, "kmeans/k"), issue_counts(summary)
    return {"seconds": time.perf_counter() - t, "clusters": len(reps)}
"""

COMPOSITION = """
def main(a):
    import time
    import numpy as np
    from clusterlens.analysis.composition import composition_table, row_normalised
    from clusterlens.core.io import read_table
    from clusterlens.report.figures.composition import plot_heatmap, plot_side_by_side
    from clusterlens.report.figures.style import matplotlib_setup
    index = read_table("data/index.parquet")
    classes = index["class"].astype(str).to_numpy()
    labels = np.load("data/labels.npy")
    emb = np.load("data/tsne.npz")
    matplotlib_setup()
    t = time.perf_counter()
    table = composition_table(labels, classes)
    shares = row_normalised(labels, classes, sorted(set(classes.tolist())))
    plot_heatmap(shares, dict(zip(table["cluster"], table["size"])), "heatmap", "heatmap.png")
    t_table = time.perf_counter() - t
    rows = emb["rows"]
    plot_side_by_side(emb["embedding"], classes[rows], labels[rows], "t-SNE", "t-SNE", "tsne.png")
    t_tsne = time.perf_counter() - t - t_table
    plot_side_by_side(np.load("data/pca_2d.npy"), classes, labels, "PC", "PCA", "pca.png")
    return {"seconds": time.perf_counter() - t, "table_and_heatmap_seconds": t_table,
            "tsne_view_seconds": t_tsne,
            "pca_view_seconds": time.perf_counter() - t - t_table - t_tsne}
"""


def noisy_labels(y: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Cluster labels near the classes: class mod k, 30% moved to a random cluster."""
    rng = np.random.default_rng(seed)
    out = y % k
    move = rng.random(len(y)) < 0.3
    out[move] = rng.integers(0, k, move.sum())
    return out.astype(np.int64)


def measure(name: str, code: str, args: dict, cwd: Path, env: dict) -> dict:
    t = time.perf_counter()
    res = u.run_child(code, args, cwd=cwd, env=env, timeout=3600)
    res["wall"] = time.perf_counter() - t
    if not res.get("ok"):
        print(f"{name}: FAILED\n{res.get('error')}", flush=True)
    else:
        print(f"{name}: {res.get('seconds', 0):.1f} s in the call, {res['wall']:.1f} s process, "
              f"peak {res['peak_rss_mb'] / 1024:.2f} GiB "
              + json.dumps({k: v for k, v in res.items() if k in ("route", "sample", "n_init", "k")}),
              flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--blocked-n", type=int, default=200_000)
    ap.add_argument("--skip", nargs="*", default=[])
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_downstream_"))
    env = u.bench_env()
    env["PYTHONPATH"] = str(u.PROJECT)
    info = u.machine()
    print(u.machine_line(info), flush=True)
    feats, y = u.cnn_like_features(args.n, 1280, args.classes, seed=0)
    u.write_features(work, feats, y)
    del feats
    out = {"n": args.n, "classes": args.classes, "machine": info, "stages": {}}
    res = out["stages"]
    params = json.loads(json.dumps(PARAMS))
    run = lambda name, p, stage=None: measure(name, STAGE, {"stage": stage or name, "params": p},  # noqa: E731
                                               work, env)
    if "captions" not in args.skip:
        res["captions"] = run("captions", params)
        timing = json.loads((work / "logs/captions_timing.json").read_text())
        res["captions"]["timing"] = timing
    else:  # text features as captions writes them at its default max_n
        from clusterlens.features.sets import comparison_rows

        rows = comparison_rows(y, 2000, 0)
        rng = np.random.default_rng(1)
        text = rng.standard_normal((len(rows), 384)).astype(np.float32)
        np.save(work / "data/text_features.npy", text / np.linalg.norm(text, axis=1, keepdims=True))
    res["fusion"] = run("fusion", params)
    res["reduce"] = run("reduce", params)
    res["reduce_blocked_mmap"] = run("reduce blocked, memory-mapped", {
        **params, "reduce": {**params["reduce"], "max_exact_n": args.n - 1},
        "large_n": {"mmap_threshold_mb": 0}}, "reduce")
    res["tsne"] = run("tsne", params)
    ks = [max(2, round(f * args.classes)) for f in (0.5, 1, 1.5, 2)]
    (work / "data/clusters/kmeans").mkdir(parents=True, exist_ok=True)
    for k in ks:
        np.save(work / f"data/clusters/kmeans/k{k}.npy", noisy_labels(y, k, k))
    np.save(work / "data/labels.npy", noisy_labels(y, args.classes, 0))
    res["macro"] = run("macro", params)
    res["macro_purity"] = run("macro_purity", {**params, "kmeans": {**params["kmeans"], "k": ks}})
    res["images"] = measure("images (the part that grows with N)", IMAGES, {}, work, env)
    res["composition"] = measure("composition (table, heatmap, 2-D views)", COMPOSITION, {}, work,
                                 env)
    if args.blocked_n:
        big = work / "big"
        feats, y2 = u.cnn_like_features(args.blocked_n, 1280, args.classes, seed=0)
        u.write_features(big, feats, y2)
        del feats
        res["reduce_blocked_mmap_big"] = measure(
            f"reduce blocked, memory-mapped, N = {args.blocked_n}", STAGE,
            {"stage": "reduce", "params": {**params, "reduce": {**params["reduce"]},
                                           "large_n": {"mmap_threshold_mb": 0}}}, big, env)
        res["reduce_blocked_mmap_big"]["n"] = args.blocked_n
        shutil.rmtree(big)
    path = u.PROJECT / "benchmarks" / "results" / f"downstream_{args.n}.json"
    path.write_text(json.dumps(out, indent=1, default=str) + "\n")
    print(f"wrote {path}; inputs in {work}")


if __name__ == "__main__":
    os.environ.setdefault("MPLBACKEND", "Agg")
    main()
