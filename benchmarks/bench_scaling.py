"""Time and peak memory of every stage and clustering method against N.

    python -m benchmarks.bench_scaling --quick      # N = 10^3, 10^4 (a few minutes)
    python -m benchmarks.bench_scaling              # N = 10^3, 10^4, 3x10^4, 10^5

Every measurement runs in a fresh Python process (the stage's own imports, then its inputs
loaded from .npy files as the stage loads them, then the timed call); its peak memory is that
process's peak resident set size (``ru_maxrss``), the honest figure for a stage process. Cheap
measurements (under 5 s) are repeated (``--repeats``, default 3) and the median kept.

What is measured (the functions the stages call, with the pipeline's default parameters):

- ``index``: ``stages.index.build_index`` (scan, read, sha256, full decode; 2 worker threads) on
  generated 32x32 PNG trees (10 classes) at every N, and on CIFAR-10 JPEGs (a 1,000-image copy,
  and the 10,000-image shared folder);
- ``extract`` (per image): ``stages.extract.extract_features`` with EfficientNet-Lite0 on 256
  CIFAR-10 images at image_size 64 and 224, CPU, batch 64, after a 64-image warm-up (model
  loading is reported separately); per-image time is what scales with N: the stage's loop
  timing, without the per-call setup of trace, freeze and oneDNN Graph warm-up (reported apart);
- ``reduce``: ``stages.reduce.fit_pca`` (standardize + exact covariance PCA, 50 components) on
  generated N x 1280 float32 features (the ReLU'd Gaussian mixture of ``benchmarks/_util.py``);
- on those PCA features (N x 50): K-Means K=10 (n_init=10, max_iter=300), GMM diag K=10,
  DBSCAN (eps = 25th percentile of the 10-NN distance, min_samples=10), HDBSCAN
  (min_cluster_size=10), agglomerative trees (ward and single: fastcluster's O(N)-memory vector
  routine; complete and average: the O(N^2) distance matrix), the agglomerative stage's
  ``cut_tree_at`` on the single-linkage tree (4 Ks; for comparison also scipy's ``cut_tree``,
  which the stage used to call), and one grid point's metrics
  (``evaluate_labels``: silhouette on a 5,000 sample, Davies-Bouldin, Calinski-Harabasz, external
  metrics) - each as ``stages.grid_point`` runs it;
- ``upper_bound``: ``stages.upper_bound``'s split, standardisation and ``fit_logreg`` (lbfgs,
  C=1, the first default config, raw 1280-D features) plus its predictions.

Threads: every process except extraction runs with OpenMP and BLAS limited to one thread
(``--threads 1``, the default; ``--threads 0`` leaves the libraries' defaults). On this shared
2-core machine the default two threads make K-Means, GMM and the PCA spin-wait at every parallel
barrier whenever another process holds a core: the same fit then takes 1x to 30x its one-thread
time, which would bury the growth orders in noise (see benchmarks/README.md). One thread is also
what the change proposed for the grid stages uses (benchmarks/README.md). Extraction
keeps torch's default (2 threads), as the `extract` stage runs.

Points that would take longer than ``--max-seconds`` (600) or need more than ``--max-gib`` (20)
of memory, by the projection from the points already measured, are not run; their projected
values are reported (marked ``projected``). Growth orders are the slopes of log(seconds) and
log(peak RSS above the interpreter's own) against log(N); the N at which each method stops fitting
in 24 GiB, and at which it passes one hour, are projected from the largest measured point with
the method's known order.

Writes benchmarks/results/scaling.csv and benchmarks/results/scaling.png.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import _util as u

GIB = 1024.0  # MB per GiB
MACHINE_GIB = 24.0

# (stage, method): (time order, memory order) - the known asymptotic orders, used to project
# skipped points and the feasibility limits (the empirical slopes are printed beside them).
ORDERS = {
    ("index", "generated PNG 32x32"): (1, 1),
    ("index", "CIFAR-10 JPEG"): (1, 1),
    ("extract", "Lite0 64px (per image)"): (1, 0),
    ("extract", "Lite0 224px (per image)"): (1, 0),
    ("reduce", "fit_pca 1280->50"): (1, 1),
    ("cluster", "kmeans K=10"): (1, 1),
    ("cluster", "gmm diag K=10"): (1, 1),
    ("cluster", "dbscan p25"): (2, 1),
    ("cluster", "hdbscan mcs10"): (2, 1),
    ("cluster", "agglomerative ward"): (2, 1),
    ("cluster", "agglomerative single"): (2, 1),
    ("cluster", "agglomerative complete"): (2, 2),
    ("cluster", "agglomerative average"): (2, 2),
    ("cluster", "cut_tree_at single (4 K)"): (1, 1),
    ("cluster", "scipy cut_tree single (4 K)"): (2, 1),
    ("cluster", "metrics (1 grid point)"): (1, 1),
    ("upper_bound", "logreg raw C=1"): (1, 1),
}

# ---------------------------------------------------------------------- child snippets
# Each snippet: imports what the stage imports, notes the RSS then (``base``: the interpreter and
# libraries), loads its inputs, then times the call. peak_mb()/rss_mb() come from the launcher
# (benchmarks/_util.py): VmHWM / VmRSS of this process.
PRELUDE = r'''
import os, sys, time
import numpy as np
'''

CODE = {}
CODE["index"] = PRELUDE + r'''
def main(a):
    from clusterlens.data.index import build_index
    base = rss_mb()
    t = time.perf_counter(); c0 = time.process_time()
    index, rejected, info = build_index(a["root"], min_side=8, drop_duplicates=False, workers=2)
    sec = time.perf_counter() - t; cpu = time.process_time() - c0
    assert len(index) == a["n"], (len(index), a["n"], rejected.head())
    return {"seconds": sec, "cpu_seconds": cpu, "base_rss_mb": base, "input_rss_mb": base}
'''
CODE["extract"] = PRELUDE + r'''
def main(a):
    import torch
    from clusterlens.features.backbones import build_backbone
    from clusterlens.features.extraction import extract_features
    base = rss_mb()
    paths = a["paths"]
    t = time.perf_counter(); c0 = time.process_time()
    bb = build_backbone("efficientnet_lite0", "DEFAULT", a["size"])
    load = time.perf_counter() - t
    kw = dict(image_size=a["size"], resize="squash", batch_size=64, device="cpu", workers=0,
              progress=False)
    extract_features(bb, a["root"], paths[:64], **kw)  # warm-up
    inp = rss_mb()
    t = time.perf_counter(); c0 = time.process_time()
    feats, info = extract_features(bb, a["root"], paths[64:], **kw)
    sec = time.perf_counter() - t; cpu = time.process_time() - c0
    # per image: the stage's own loop timing; the call's one-off setup (trace, freeze, oneDNN
    # Graph warm-up: a constant per run, not per image) is reported apart
    return {"seconds": sec, "cpu_seconds": cpu, "per_image": info["seconds"] / len(feats),
            "setup_seconds": sec - info["seconds"],
            "model_load_seconds": load, "base_rss_mb": base, "input_rss_mb": inp,
            "threads": torch.get_num_threads()}
'''
CODE["reduce"] = PRELUDE + r'''
def main(a):
    from clusterlens.clustering.reduction import fit_pca
    base = rss_mb()
    X = np.load(a["features"])
    inp = rss_mb()
    t = time.perf_counter(); c0 = time.process_time()
    res = fit_pca(X, 50, True, 0)
    sec = time.perf_counter() - t; cpu = time.process_time() - c0
    if a.get("save"):
        np.save(a["save"], res.scores)
    return {"seconds": sec, "cpu_seconds": cpu, "base_rss_mb": base, "input_rss_mb": inp}
'''
CODE["cluster"] = PRELUDE + r'''
def main(a):
    from clusterlens.clustering import methods as c
    import fastcluster, sklearn.cluster, sklearn.mixture, sklearn.neighbors  # the stage's own
    import scipy.cluster.hierarchy  # lazy imports, loaded before the base is noted
    base = rss_mb()
    X = np.load(a["pca"])
    m = a["method"]
    if m in ("cut", "scipy_cut"):
        Z = np.load(a["tree"])
    if m == "metrics":
        import pandas as pd
        y = np.load(a["labels"])
        lab = np.load(a["kmeans_labels"])
    inp = rss_mb()
    t = time.perf_counter(); c0 = time.process_time()
    out = None
    if m == "kmeans":
        out, _ = c.run_kmeans(X, 10, 10, 300, 0)
    elif m == "gmm":
        out, _ = c.run_gmm(X, 10, "diag", 200, 0)
    elif m == "dbscan":
        out, _ = c.run_dbscan(X, 25.0, 10)
    elif m == "hdbscan":
        out, _ = c.run_hdbscan(X, 10, None)
    elif m.startswith("agglomerative"):
        out = c.linkage_tree(X, m.split()[1])
    elif m == "cut":
        c.cut_tree_at(Z, [5, 10, 15, 20])
    elif m == "scipy_cut":  # what cut_tree_at used to do
        scipy.cluster.hierarchy.cut_tree(Z, n_clusters=[5, 10, 15, 20])
    elif m == "metrics":
        c.evaluate_labels(X, y, lab, 5000, 0)
    sec = time.perf_counter() - t; cpu = time.process_time() - c0
    if a.get("save") and out is not None:
        np.save(a["save"], out)
    return {"seconds": sec, "cpu_seconds": cpu, "base_rss_mb": base, "input_rss_mb": inp}
'''
CODE["upper_bound"] = PRELUDE + r'''
def main(a):
    from clusterlens.analysis import upper_bound as ub
    base = rss_mb()
    raw = np.load(a["features"]); pca = np.load(a["pca"]); y = np.load(a["labels"])
    inp = rss_mb()
    t = time.perf_counter(); c0 = time.process_time()
    tr, te = ub.stratified_split(y, 0.2, 0)
    views = ub.feature_views(raw, pca, tr)
    X = views["raw"]
    model, converged = ub.fit_logreg(X[tr], y[tr], 1.0, None, 1000, 0)
    res, _, _ = ub.scores(model, X[tr], y[tr], X[te], y[te])
    sec = time.perf_counter() - t; cpu = time.process_time() - c0
    return {"seconds": sec, "cpu_seconds": cpu, "base_rss_mb": base, "input_rss_mb": inp,
            "test_accuracy": res["test_accuracy"], "iterations": int(np.max(model.n_iter_)),
            "converged": converged}
'''


def code_fingerprint() -> dict[str, str]:
    """sha256 (first 12 hex digits) of every stages/ and clusterlens/ module: the code the
    measurements ran."""
    import hashlib

    files = sorted(p for d in ("stages", "clusterlens") for p in (u.PROJECT / d).rglob("*.py"))
    return {p.relative_to(u.PROJECT).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()[:12]
            for p in files}


# ---------------------------------------------------------------------- data preparation
def make_png_tree(root: Path, n: int, classes: int = 10, seed: int = 0) -> Path:
    """root/classNN/IIIIIII.png: n 32x32 RGB PNGs, class-specific colour and stripes + noise."""
    from PIL import Image

    if (root / ".complete").is_file():
        return root
    if root.exists():
        shutil.rmtree(root)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:32]
    patterns = [(xx // 4) % 2, (yy // 4) % 2, ((xx + yy) // 4) % 2, ((xx - yy) // 4) % 2]
    for c in range(classes):
        (root / f"class{c:02d}").mkdir(parents=True)
    colors = rng.integers(30, 230, (classes, 3))
    for i in range(n):
        c = i % classes
        arr = colors[c] * (0.6 + 0.4 * patterns[c % 4])[..., None]
        arr = arr + rng.normal(0, 12, arr.shape)
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB").save(
            root / f"class{c:02d}" / f"{i:07d}.png", compress_level=1)
    (root / ".complete").write_text("")  # hidden: index lists it as rejected, not an image
    return root


def cifar_subset(root: Path, per_class: int) -> Path:
    if (root / ".complete").is_file():
        return root
    if root.exists():
        shutil.rmtree(root)
    for cls in sorted(p for p in u.CIFAR.iterdir() if p.is_dir()):
        (root / cls.name).mkdir(parents=True)
        for f in sorted(cls.iterdir())[:per_class]:
            shutil.copy(f, root / cls.name / f.name)
    (root / ".complete").write_text("")
    return root


# ---------------------------------------------------------------------- projection
def fit_slope(points: list[tuple[float, float]]) -> float | None:
    pts = [(n, v) for n, v in points if v and v > 0]
    if len(pts) < 2:
        return None
    x = np.log10([p[0] for p in pts])
    y = np.log10([p[1] for p in pts])
    return float(np.polyfit(x, y, 1)[0])


def project(rows: list[dict], n: int, key: str, order: float) -> float | None:
    """Value of ``key`` at n from the largest measured point, growing as N^max(order, slope
    of the last two measured points) (small N are dominated by fixed costs, so the empirical
    slope there can be below the true order, never a safe basis on its own)."""
    meas = sorted((r for r in rows if r["status"] == "measured" and r.get(key)),
                  key=lambda r: r["n"])
    if not meas:
        return None
    last = meas[-1]
    slope = order
    if len(meas) >= 2:
        s = fit_slope([(r["n"], r[key]) for r in meas[-2:]])
        if s is not None:
            slope = max(order, s)
    return last[key] * (n / last["n"]) ** slope


def limit_n(row: dict, key: str, order: float, budget: float) -> float | None:
    """N at which ``key`` (grown from this row as N^order) reaches ``budget``."""
    v = row.get(key)
    if not v or order <= 0:
        return None
    return row["n"] * (budget / v) ** (1 / order)


# ---------------------------------------------------------------------- measuring
def measure(kind: str, args: dict, repeats: int, timeout: float, env: dict | None = None
            ) -> dict:
    runs = []
    for _ in range(repeats):
        r = u.run_child(CODE[kind], args, timeout=timeout, env=env)
        if not r.get("ok"):
            return {"status": "failed" if r.get("rc") != "timeout" else "timeout",
                    "error": str(r.get("error", ""))[-500:], "wall_seconds": r.get("wall_seconds")}
        runs.append(r)
        args = {k: v for k, v in args.items() if k != "save"}  # outputs saved once
        if r["seconds"] >= 5.0:  # expensive: one run is enough
            break
    best = sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]  # the median run
    best = dict(best)
    best["runs"] = [round(r["seconds"], 4) for r in runs]
    best["status"] = "measured"
    return best


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="N up to 10^4 (a few minutes)")
    ap.add_argument("--sizes", type=lambda s: [int(float(x)) for x in s.split(",")],
                    help="comma-separated N values (overrides --quick)")
    ap.add_argument("--repeats", type=int, default=3, help="runs of measurements under 5 s")
    ap.add_argument("--max-seconds", type=float, default=600.0,
                    help="do not run a point projected to take longer (default 600)")
    ap.add_argument("--max-gib", type=float, default=20.0,
                    help="do not run a point projected to need more memory (default 20)")
    ap.add_argument("--threads", type=int, default=1,
                    help="OpenMP/BLAS threads of every measured process except extraction "
                         "(default 1: see the module docstring; 0 = the libraries' defaults)")
    ap.add_argument("--only", help="comma-separated stages to run (index,extract,reduce,"
                    "cluster,upper_bound)")
    ap.add_argument("--workdir", type=Path,
                    help="data folder (kept; generated trees and features are reused)")
    ap.add_argument("--out", type=Path, default=u.PROJECT / "benchmarks/results")
    args = ap.parse_args(argv)

    sizes = args.sizes or ([1_000, 10_000] if args.quick else [1_000, 10_000, 30_000, 100_000])
    only = set(args.only.split(",")) if args.only else {"index", "extract", "reduce", "cluster",
                                                         "upper_bound"}
    info = u.machine()
    code_start = code_fingerprint()
    print(f"machine: {u.machine_line(info)}", flush=True)
    print(f"sizes: {sizes}; limits per point: {args.max_seconds:g} s, {args.max_gib:g} GiB; "
          f"OpenMP/BLAS threads: {args.threads or 'library default'} (extraction: torch "
          "default)", flush=True)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="clusterlens-bench-scaling-"))
    workdir.mkdir(parents=True, exist_ok=True)
    timeout = 2 * args.max_seconds
    rows: list[dict] = []
    t_start = time.perf_counter()

    def record(stage, method, n, res, note=""):
        row = {"stage": stage, "method": method, "n": n, "status": res.get("status"),
               "seconds": res.get("seconds"), "cpu_seconds": res.get("cpu_seconds"),
               "per_image_seconds": res.get("per_image"),
               "peak_rss_mb": res.get("peak_rss_mb"), "base_rss_mb": res.get("base_rss_mb"),
               "input_rss_mb": res.get("input_rss_mb"), "runs": res.get("runs"), "note": note}
        if row["peak_rss_mb"] and row["base_rss_mb"]:
            row["work_mb"] = max(row["peak_rss_mb"] - row["base_rss_mb"], 0.1)
        if res.get("status") not in ("measured", "projected"):
            row["note"] = (note + " " + str(res.get("error", ""))[-200:]).strip()
        rows.append(row)
        sec = f"{row['seconds']:.3g} s" if row["seconds"] else "-"
        mem = f"{row['peak_rss_mb']:.0f} MB" if row["peak_rss_mb"] else "-"
        print(f"  {stage:11s} {method:28s} N={n:>7d}  {sec:>10s}  {mem:>9s}  {row['status']}"
              f"{'  ' + row['note'] if row['note'] else ''}  [{time.perf_counter() - t_start:.0f}"
              f" s elapsed]", flush=True)
        return row

    def gated(stage, method, n, kind, a, note=""):
        """Run a point unless its projection exceeds the limits; then record the projection."""
        prev = [r for r in rows if r["stage"] == stage and r["method"] == method]
        t_ord, m_ord = ORDERS[(stage, method)]
        p_sec = project(prev, n, "seconds", t_ord)
        p_work = project(prev, n, "work_mb", m_ord)
        base = next((r["base_rss_mb"] for r in prev if r.get("base_rss_mb")), 200.0)
        p_mem = base + p_work if p_work else None
        if (p_sec and p_sec > args.max_seconds) or (p_mem and p_mem > args.max_gib * GIB):
            why = []
            if p_sec and p_sec > args.max_seconds:
                why.append(f"projected {p_sec:.0f} s > {args.max_seconds:g} s")
            if p_mem and p_mem > args.max_gib * GIB:
                why.append(f"projected {p_mem / GIB:.1f} GiB > {args.max_gib:g} GiB")
            return record(stage, method, n, {"status": "projected", "seconds": p_sec,
                                             "peak_rss_mb": p_mem, "base_rss_mb": base},
                          "not run: " + ", ".join(why))
        return record(stage, method, n, measure(kind, a, args.repeats, timeout,
                                                u.thread_env(args.threads)), note)

    # ---- index
    if "index" in only:
        print("index: generating image trees (not timed) ...", flush=True)
        for n in sizes:
            root = make_png_tree(workdir / f"png_{n}", n)
            gated("index", "generated PNG 32x32", n, "index", {"root": str(root), "n": n})
        if u.CIFAR.is_dir():
            for n in [s for s in (1_000, 10_000) if s <= max(sizes)]:
                root = u.CIFAR if n == 10_000 else cifar_subset(workdir / f"cifar_{n}", n // 10)
                gated("index", "CIFAR-10 JPEG", n, "index", {"root": str(root), "n": n})
        else:
            print(f"  (no {u.CIFAR}: CIFAR-10 index rows skipped)")

    # ---- extract (per image)
    if "extract" in only:
        if u.CIFAR.is_dir():
            rng = np.random.default_rng(0)
            files = sorted(p.relative_to(u.CIFAR).as_posix() for p in u.CIFAR.glob("*/*.jpg"))
            paths = [files[i] for i in sorted(rng.choice(len(files), 320, replace=False))]
            for size in (64, 224):
                res = measure("extract", {"root": str(u.CIFAR), "paths": paths, "size": size},
                              1, timeout)
                if res.get("status") == "measured":
                    res["seconds_256"] = res["seconds"]
                record("extract", f"Lite0 {size}px (per image)", 256, res,
                       f"{res.get('per_image', 0) * 1000:.1f} ms/image, "
                       f"{1 / res['per_image']:.0f} img/s, model load "
                       f"{res.get('model_load_seconds', 0):.1f} s, setup per call "
                       f"{res.get('setup_seconds', 0):.1f} s, torch threads "
                       f"{res.get('threads')}" if res.get("per_image") else "")
        else:
            print(f"  (no {u.CIFAR}: extract skipped)")

    # ---- reduce, clustering, upper bound on generated features
    if only & {"reduce", "cluster", "upper_bound"}:
        for n in sizes:
            feats_path = workdir / f"features_{n}.npy"
            labels_path = workdir / f"labels_{n}.npy"
            pca_path = workdir / f"pca_{n}.npy"
            if not feats_path.is_file():
                X, y = u.cnn_like_features(n)
                np.save(feats_path, X)
                np.save(labels_path, y)
                del X, y
            print(f"N={n}: features {feats_path.stat().st_size / 2**20:.0f} MB", flush=True)
            r = gated("reduce", "fit_pca 1280->50", n, "reduce",
                      {"features": str(feats_path), "save": str(pca_path)})
            if not pca_path.is_file():  # reduce not run (--only): make the PCA untimed
                u.run_child(CODE["reduce"], {"features": str(feats_path), "save": str(pca_path)},
                            env=u.thread_env(args.threads))
            if "reduce" not in only:
                rows.remove(r)
            if "cluster" in only:
                km_path = workdir / f"kmeans_{n}.npy"
                tree_path = workdir / f"tree_single_{n}.npy"
                common = {"pca": str(pca_path)}
                gated("cluster", "kmeans K=10", n, "cluster",
                      {**common, "method": "kmeans", "save": str(km_path)})
                if km_path.is_file():
                    gated("cluster", "metrics (1 grid point)", n, "cluster",
                          {**common, "method": "metrics", "labels": str(labels_path),
                           "kmeans_labels": str(km_path)})
                gated("cluster", "gmm diag K=10", n, "cluster", {**common, "method": "gmm"})
                gated("cluster", "dbscan p25", n, "cluster", {**common, "method": "dbscan"})
                gated("cluster", "hdbscan mcs10", n, "cluster", {**common, "method": "hdbscan"})
                for link in ("ward", "single", "complete", "average"):
                    a = {**common, "method": f"agglomerative {link}"}
                    if link == "single":
                        a["save"] = str(tree_path)
                    gated("cluster", f"agglomerative {link}", n, "cluster", a)
                if tree_path.is_file():
                    gated("cluster", "cut_tree_at single (4 K)", n, "cluster",
                          {**common, "method": "cut", "tree": str(tree_path)})
                    gated("cluster", "scipy cut_tree single (4 K)", n, "cluster",
                          {**common, "method": "scipy_cut", "tree": str(tree_path)})
            if "upper_bound" in only:
                gated("upper_bound", "logreg raw C=1", n, "upper_bound",
                      {"features": str(feats_path), "pca": str(pca_path),
                       "labels": str(labels_path)})

    code_end = code_fingerprint()
    if code_end != code_start:
        changed = sorted(k for k in set(code_start) | set(code_end)
                         if code_start.get(k) != code_end.get(k))
        print(f"WARNING: the code changed during the run: {', '.join(changed)}; the rows that "
              "use them may mix two versions", flush=True)
    info["stages_sha256"] = code_end
    info["stages_changed_during_run"] = code_end != code_start
    summary = summarise(rows)
    write_outputs(rows, summary, info, sizes, args, time.perf_counter() - t_start)
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)


def summarise(rows: list[dict]) -> list[dict]:
    out = []
    for (stage, method), (t_ord, m_ord) in ORDERS.items():
        rs = [r for r in rows if r["stage"] == stage and r["method"] == method]
        if not rs:
            continue
        meas = sorted((r for r in rs if r["status"] == "measured"), key=lambda r: r["n"])
        big = [r for r in meas if r["n"] >= 10_000]
        basis = big if len(big) >= 2 else meas
        # CPU seconds: the measured processes run one thread (index: its 2 worker threads), so
        # CPU time is their work, whatever else the shared machine runs; wall time is not.
        t_slope = fit_slope([(r["n"], r.get("cpu_seconds") or r["seconds"]) for r in basis]) \
            if stage != "extract" else None
        w_slope = fit_slope([(r["n"], r["seconds"]) for r in basis]) if stage != "extract" \
            else None
        m_slope = fit_slope([(r["n"], r.get("work_mb")) for r in basis]) if stage != "extract" \
            else None
        last = meas[-1] if meas else None
        s = {"stage": stage, "method": method, "time_order_theory": t_ord,
             "memory_order_theory": m_ord, "time_slope": t_slope, "wall_time_slope": w_slope,
             "memory_slope": m_slope,
             "slope_from": ",".join(str(r["n"]) for r in basis),
             "largest_measured_n": last["n"] if last else None}
        if last and stage != "extract":
            base = last.get("base_rss_mb") or 0
            work_budget = MACHINE_GIB * GIB - base
            s["n_at_24gib"] = limit_n(last, "work_mb", m_ord, work_budget) if m_ord else None
            key = "cpu_seconds" if last.get("cpu_seconds") else "seconds"
            s["n_at_1h"] = limit_n(last, key, max(t_ord, t_slope or 0), 3600.0)
        elif last:  # extract: per image; memory is per batch, not per N
            s["n_at_1h"] = 3600.0 / last["per_image_seconds"]
            s["n_at_24gib"] = None
        out.append(s)
    return out


def fmt_n(x) -> str:
    if x is None:
        return "-"
    if x == math.inf or x > 1e12:
        return "unbounded"
    exp = math.floor(math.log10(x))
    return f"{x / 10 ** exp:.1f}e{exp}"


def write_outputs(rows, summary, info, sizes, args, elapsed) -> None:
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "scaling.csv"
    fields = ["stage", "method", "n", "status", "seconds", "cpu_seconds", "rate_per_s",
              "per_image_seconds",
              "peak_rss_mb", "base_rss_mb", "input_rss_mb", "runs", "note"]
    with open(csv_path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            r = dict(r)
            if r.get("seconds"):
                r["rate_per_s"] = round((r["n"] if r["stage"] != "extract" else 256)
                                        / r["seconds"], 2)
            for k in ("seconds", "cpu_seconds", "per_image_seconds", "peak_rss_mb", "base_rss_mb",
                      "input_rss_mb"):
                if isinstance(r.get(k), float):
                    r[k] = round(r[k], 4)
            r["runs"] = " ".join(map(str, r["runs"])) if r.get("runs") else ""
            w.writerow(r)
    summary_path = out / "scaling_summary.json"
    summary_path.write_text(json.dumps({"machine": info, "sizes": sizes, "elapsed_s": elapsed,
                                        "limits": {"max_seconds": args.max_seconds,
                                                   "max_gib": args.max_gib},
                                        "summary": summary}, indent=2, default=str) + "\n")

    # ---- printed tables
    print(f"\n== Scaling: seconds and peak RSS of a fresh process per point "
          f"(machine: {u.machine_line(info)})")
    ns = sorted({r["n"] for r in rows if r["stage"] != "extract"})
    header = ["stage", "method"] + [f"N={n:,}" for n in ns]
    table = []
    for (stage, method) in ORDERS:
        rs = {r["n"]: r for r in rows if r["stage"] == stage and r["method"] == method}
        if not rs or stage == "extract":
            continue
        cells = []
        for n in ns:
            r = rs.get(n)
            if not r or not r.get("seconds"):
                cells.append("-" if not r else r["status"])
                continue
            mark = "~" if r["status"] == "projected" else ""
            mem = f"{r['peak_rss_mb'] / GIB:.1f}G" if r.get("peak_rss_mb", 0) and \
                r["peak_rss_mb"] >= GIB else (f"{r['peak_rss_mb']:.0f}M" if r.get("peak_rss_mb")
                                              else "?")
            cells.append(f"{mark}{r['seconds']:.3g}s {mark}{mem}")
        table.append([stage, method] + cells)
    from benchmarks.bench_grid import fmt_table

    print(fmt_table(table, header))
    print("   cells: seconds and peak RSS; ~ = projected, not run (over the per-point limits)")
    ex = [r for r in rows if r["stage"] == "extract" and r["status"] == "measured"]
    if ex:
        print("\n== Extraction per image (256 CIFAR-10 images after a 64-image warm-up, CPU, "
              "batch 64, fp32)")
        print(fmt_table([[r["method"], f"{r['per_image_seconds'] * 1000:.1f} ms",
                          f"{1 / r['per_image_seconds']:.0f}", f"{r['peak_rss_mb']:.0f} MB",
                          r["note"]] for r in ex],
                        ["what", "per image", "images/s", "peak RSS", "note"]))
    print("\n== Growth orders (log-log slopes) and limits")
    print(fmt_table([[s["stage"], s["method"],
                      f"{s['time_slope']:.2f}" if s["time_slope"] is not None else "-",
                      f"{s['wall_time_slope']:.2f}" if s.get("wall_time_slope") is not None
                      else "-",
                      f"N^{s['time_order_theory']}",
                      f"{s['memory_slope']:.2f}" if s["memory_slope"] is not None else "-",
                      f"N^{s['memory_order_theory']}" if s["memory_order_theory"] else "const",
                      s["slope_from"], fmt_n(s.get("n_at_24gib")), fmt_n(s.get("n_at_1h"))]
                     for s in summary],
                    ["stage", "method", "CPU-time slope", "wall slope", "theory",
                     "memory slope", "theory", "slope from N", "N at 24 GiB", "N at 1 h"]))
    print("   slopes of log(time) and log(peak RSS above the interpreter + imports) vs log(N), "
          "fitted on the measured points with N >= 10^4 (else all); N at 24 GiB / 1 h: projected "
          "from the largest measured point with the known order (time: CPU seconds, with the "
          "larger of the known order and the measured slope)")
    plot(rows, out / "scaling.png", info)
    print(f"\nwrote {csv_path}, {summary_path}, {out / 'scaling.png'} "
          f"(total {elapsed / 60:.1f} min)")


def plot(rows, path: Path, info) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(15, 6.5))
    cmap = plt.get_cmap("tab20")
    keys = [k for k in ORDERS if k[0] != "extract"]
    for i, key in enumerate(keys):
        rs = sorted((r for r in rows if (r["stage"], r["method"]) == key and r.get("seconds")),
                    key=lambda r: r["n"])
        if not rs:
            continue
        color = cmap(i % 20)
        label = f"{key[0]}: {key[1]}" if key[0] != "cluster" else key[1]
        for ax, field in ((axes[0], "seconds"), (axes[1], "peak_rss_mb")):
            xs = [r["n"] for r in rs if r.get(field)]
            ys = [r[field] / (GIB if field == "peak_rss_mb" else 1) for r in rs if r.get(field)]
            ax.plot(xs, ys, "-", color=color, lw=1.5, label=label if field == "seconds" else None)
            mx = [(r["n"], r[field]) for r in rs if r.get(field) and r["status"] == "measured"]
            px = [(r["n"], r[field]) for r in rs if r.get(field) and r["status"] == "projected"]
            scale = GIB if field == "peak_rss_mb" else 1
            if mx:
                ax.plot([a for a, _ in mx], [b / scale for _, b in mx], "o", color=color, ms=5)
            if px:
                ax.plot([a for a, _ in px], [b / scale for _, b in px], "o", mfc="none",
                        color=color, ms=7)
    ex = [r for r in rows if r["stage"] == "extract" and r.get("per_image_seconds")]
    ns = sorted({r["n"] for r in rows if r["stage"] != "extract"})
    for r, style in zip(ex, (":", "-.")):
        if ns:
            axes[0].plot(ns, [r["per_image_seconds"] * n for n in ns], style, color="k", lw=1,
                         label=f"extract: {r['method'].replace(' (per image)', '')} "
                               f"(256-image rate x N)")
    axes[0].axhline(600, color="0.5", lw=0.8, ls="--")
    axes[0].text(ns[-1] if ns else 1e5, 650, "10 min", color="0.4", fontsize=8, ha="right")
    axes[1].axhline(MACHINE_GIB, color="#C44E52", lw=1, ls="--")
    axes[1].text(ns[0] if ns else 1e3, MACHINE_GIB * 1.08, "24 GiB (this machine)",
                 color="#C44E52", fontsize=8)
    for ax, title, ylabel in ((axes[0], "time vs N", "seconds"),
                              (axes[1], "peak memory (RSS of the process) vs N", "GiB")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("N (images / points)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=7, loc="lower right", ncol=1, framealpha=0.9)
    fig.suptitle("clusterlens scaling (filled: measured, hollow: projected) - "
                 f"{info.get('cpu', '')}, {info.get('cpus')} cores, {info.get('ram_gib')} GiB",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)


if __name__ == "__main__":
    main()
