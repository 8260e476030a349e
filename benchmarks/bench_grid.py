"""The clustering grid, end to end through `dvc repro`, against a plain K-Means loop.

    python -m benchmarks.bench_grid                      # 10,000 x 1280 generated features
    python -m benchmarks.bench_grid --repeats 5          # more repeats (medians are reported)
    python -m benchmarks.bench_grid --baseline full      # baseline K-Means on all N points
    python -m benchmarks.bench_grid --features F.npy --index index.parquet   # real features
    python -m benchmarks.bench_grid --compare-stages /path/to/patched/stages # a patched copy too

What is timed, in the same run on the same data (baseline and pipeline repeats interleaved, so
both see the same machine load):

- **baseline**: a notebook-style `find_optimal_k` loop, in this process:
  `np.random.seed(42)`; when N > `sample_size` (5,000) it fits a random 5,000-point sample;
  for K = 10, 20, ..., 100: `KMeans(n_clusters=K, random_state=42, n_init=10)`
  `.fit_predict`, then `silhouette_score` on a random 3,000-point subset; on the un-reduced
  1280-D features. Its plotting and printing are left out (they would only add to it).
  `--baseline full` fits all N points instead (sample_size = N).
- **pipeline**: a fresh temporary git + DVC repository per repeat, holding copies of dvc.yaml,
  grid/dvc.yaml and params.yaml, with stages/ and clusterlens/ linked to the code, and with the
  features written to data/features.npy and a matching data/index.parquet (what `extract` and
  `index` leave). Timed:
  one `dvc repro --single-item reduce umap grid/dvc.yaml:kmeans grid/dvc.yaml:agglomerative
  clustering`, which runs `reduce`, `umap` (off by default: it writes its empty outputs, which
  every grid point and the aggregate read), every `kmeans@K` of the default grid, every
  `agglomerative@LINKAGE` (all four linkages, each cut at every K of agglomerative.k) and the
  `clustering` aggregate, each in its own process, with
  DVC's own start-up, dependency hashing, cache saves and lock updates. `--single-item` keeps
  DVC from running `index`/`extract` (their inputs, an image folder, do not exist here: the
  features stand in for them); the GMM, DBSCAN and HDBSCAN grids are set empty in the temporary
  params.yaml because they are not part of this target (`clustering` aggregates what params
  list). The setup (git/dvc init, writing the features) is not timed.

Checks on the last pipeline repeat: the K-Means objective (recomputed in float64 from the saved
labels) at each K is within 1% of scikit-learn's best of n_init (seed 1, float64) on the same
PCA features; and NMI, ARI and purity of every grid point, computed here from the saved labels
with an independent numpy implementation, equal the stage's JSON (to its 6 decimals), as does
the `clustering` aggregate.

Where the time goes: per-stage seconds inside `dvc repro` (from the time each "Running stage"
line appears), the same stage commands run directly (so the rest is DVC's bookkeeping), a no-op
`dvc repro` (DVC's fixed cost), the start-up of a grid-stage process (`python -c "import
stages.grid_point"`, and whether torch gets imported: it must not), and an in-process breakdown of
the grid stages (fits, cuts, metrics, plots).

Results: printed, and written to benchmarks/results/grid.json.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import _util as u

TARGET_RATIO = 5.0
STAGE_TARGETS = ["reduce", "umap", "grid/dvc.yaml:kmeans", "grid/dvc.yaml:agglomerative",
                 "clustering"]
EMPTY_GRIDS = {"gmm.k": [], "dbscan.eps_percentile": [], "hdbscan.min_cluster_size": [],
               "nmf.k": []}


# --------------------------------------------------------------------------- baseline
def notebook_loop(features: np.ndarray, k_range=(10, 100), step=10, sample_size=5000) -> dict:
    """A notebook-style find_optimal_k (its random draws, KMeans arguments and silhouette
    sample), without the plot and the prints."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    np.random.seed(42)  # the notebook's global seed, set before the function runs
    if len(features) > sample_size:
        indices = np.random.choice(len(features), sample_size, replace=False)
        features_sample = features[indices]
    else:
        features_sample = features
    k_values = list(range(k_range[0], k_range[1] + 1, step))
    inertias, sils = [], []
    for k in k_values:
        kmeans = KMeans(n_clusters=k, random_state=42, n_init=10)
        labels_pred = kmeans.fit_predict(features_sample)
        inertias.append(float(kmeans.inertia_))
        sample_for_sil = min(3000, len(features_sample))
        sil_indices = np.random.choice(len(features_sample), sample_for_sil, replace=False)
        sils.append(float(silhouette_score(features_sample[sil_indices],
                                           labels_pred[sil_indices])))
    return {"k": k_values, "inertia": inertias, "silhouette": sils,
            "optimal_k": k_values[int(np.argmax(sils))], "points": len(features_sample)}


def time_baseline(features: np.ndarray, variant: str) -> dict:
    sample_size = 5000 if variant == "seed" else len(features)
    load = os.getloadavg()[0]
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    res = notebook_loop(features, sample_size=sample_size)
    res["seconds"] = time.perf_counter() - t0
    res["cpu_seconds"] = time.process_time() - cpu0
    res["load_before"] = load
    return res


# --------------------------------------------------------------------------- pipeline
def prepare_repo(path: Path, features, labels, stages_dir: Path | None,
                 grid: dict | None = None) -> Path:
    repo = u.make_repo(path, stages_dir)
    u.write_features(repo, features, labels)
    u.set_params(repo, {**EMPTY_GRIDS, **(grid or {})})
    return repo


def dvc_repro_timed(repo: Path, targets=STAGE_TARGETS) -> dict:
    """One `dvc repro -s <targets>` (:func:`benchmarks._util.repro_timed`, grid stages by their
    short names)."""
    res = u.repro_timed(repo, ["--single-item", *targets], short_names=True)
    return {"seconds": res["seconds"], "stages": res["stages"],
            "dvc_startup": res["before_first_stage"]}


def time_pipeline(workdir: Path, tag: str, i: int, features, labels, stages_dir,
                  grid: dict | None = None) -> dict:
    repo = prepare_repo(workdir / f"{tag}_{i}", features, labels, stages_dir, grid)
    load = os.getloadavg()[0]
    res = dvc_repro_timed(repo)
    res["load_before"] = load
    res["repo"] = str(repo)
    return res


# --------------------------------------------------------------------------- checks
def contingency(y, p) -> np.ndarray:
    _, yi = np.unique(y, return_inverse=True)
    _, pi = np.unique(p, return_inverse=True)
    c = np.zeros((pi.max() + 1, yi.max() + 1), dtype=np.int64)
    np.add.at(c, (pi, yi), 1)
    return c  # clusters x classes; noise (-1) is one cluster like any label


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def independent_metrics(y, p) -> dict:
    """NMI (arithmetic normalisation), ARI, purity: plain numpy from the contingency table."""
    c = contingency(y, p).astype(np.float64)
    n = c.sum()
    a, b = c.sum(axis=1), c.sum(axis=0)
    nz = c > 0
    mi = float((c[nz] / n * np.log(c[nz] * n / np.outer(a, b)[nz])).sum())
    ha, hb = _entropy(a), _entropy(b)
    if c.shape[0] == 1 and c.shape[1] == 1 or c.shape[0] == c.shape[1] == 0:
        nmi = 1.0
    elif mi == 0:
        nmi = 0.0
    else:
        nmi = mi / ((ha + hb) / 2)
    comb = lambda x: x * (x - 1) / 2  # noqa: E731
    index, sa, sb, total = comb(c).sum(), comb(a).sum(), comb(b).sum(), comb(n)
    expected = sa * sb / total
    ari = 1.0 if (sa + sb) / 2 == expected else (index - expected) / ((sa + sb) / 2 - expected)
    return {"nmi": nmi, "ari": float(ari), "purity": float(c.max(axis=1).sum() / n)}


def objective(X: np.ndarray, labels: np.ndarray) -> float:
    """Sum of squared distances of the points to their cluster's mean (float64)."""
    X = np.asarray(X, dtype=np.float64)
    total = 0.0
    for c in np.unique(labels):
        pts = X[labels == c]
        total += float(((pts - pts.mean(axis=0)) ** 2).sum())
    return total


def check_outputs(repo: Path) -> dict:
    import pandas as pd
    import yaml
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    params = yaml.safe_load((repo / "params.yaml").read_text())
    X = np.load(repo / "data/pca.npy")
    y = pd.read_parquet(repo / "data/index.parquet")["label"].to_numpy()
    agg = json.loads((repo / "metrics/clustering.json").read_text())
    kmeans_rows, metric_rows = [], []
    X64 = X.astype(np.float64)
    for v in params["kmeans"]["k"]:  # files named by the grid value (`kclasses`), K in the JSON
        labels = np.load(repo / f"data/clusters/kmeans/k{v}.npy")
        reported = json.loads((repo / f"data/clusters/kmeans/k{v}.json").read_text())
        k = reported["k"]
        with threadpool_limits(1):
            ref = KMeans(n_clusters=k, n_init=params["kmeans"]["n_init"],
                         max_iter=params["kmeans"]["max_iter"], random_state=1).fit(X64)
        obj = objective(X, labels)
        kmeans_rows.append({"k": k, "pipeline_objective": obj,
                            "pipeline_inertia_json": reported["inertia"],
                            "sklearn_best_of_n_init": float(ref.inertia_),
                            "ratio": obj / float(ref.inertia_),
                            "ok": obj <= 1.01 * float(ref.inertia_)})
    points = [("kmeans", "k", repo / f"data/clusters/kmeans/k{v}")
              for v in params["kmeans"]["k"]]
    points += [("agglomerative", f"{link}_k", repo / f"data/clusters/agglomerative/{link}/k{v}")
               for link in params["agglomerative"]["linkage"] for v in params["agglomerative"]["k"]]
    for method, head, stem in points:
        labels = np.load(stem.with_suffix(".npy"))
        reported = json.loads(stem.with_suffix(".json").read_text())
        point = f"{head}{reported['k']}"  # the aggregate names a point by its K
        mine = independent_metrics(y, labels)
        row = {"method": method, "point": point}
        ok = True
        for key, value in mine.items():
            diff = abs(reported[key] - value)
            agg_diff = abs(agg[method][point][key] - reported[key])
            row[key] = reported[key]
            row[f"{key}_diff"] = diff
            ok &= diff <= 5e-7 + 1e-12 and agg_diff == 0
        row["ok"] = bool(ok)
        metric_rows.append(row)
    return {"kmeans": kmeans_rows, "metrics": metric_rows,
            "objective_ok": all(r["ok"] for r in kmeans_rows),
            "metrics_ok": all(r["ok"] for r in metric_rows)}


# --------------------------------------------------------------------------- where the time goes
def stage_commands(repo: Path) -> dict[str, str]:
    import yaml

    params = yaml.safe_load((repo / "params.yaml").read_text())
    cmds = {"reduce": "python -m stages.reduce", "umap": "python -m stages.umap"}
    for k in params["kmeans"]["k"]:
        cmds[f"kmeans@{k}"] = f"python -m stages.grid_point kmeans --k {k}"
    for link in params["agglomerative"]["linkage"]:
        cmds[f"agglomerative@{link}"] = f"python -m stages.grid_point agglomerative --linkage {link}"
    cmds["clustering"] = "python -m stages.clustering"
    return cmds


def direct_stage_times(repo: Path) -> dict[str, float]:
    """Each stage's command run directly (no DVC), in pipeline order, in the finished repo
    (it rewrites the same outputs)."""
    out = {}
    for name, cmd in stage_commands(repo).items():
        r = u.run_measured(cmd.split(), cwd=repo)
        if r["rc"] != 0:
            raise RuntimeError(f"{cmd} failed:\n{r['stderr'][-2000:]}")
        out[name] = r["seconds"]
    return out


def noop_repro_seconds(repo: Path, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = u.sh(repo, "dvc", "repro", "--single-item", *STAGE_TARGETS)
        times.append(time.perf_counter() - t0)
        if "Running stage" in res.stdout:
            raise RuntimeError("the no-op dvc repro ran a stage")
    return u.median(times)


def startup_times(repo: Path, repeats: int = 5) -> dict:
    snippets = {
        "python -c pass": "pass",
        "import numpy": "import numpy",
        "import stages.grid_point": "import stages.grid_point",
        "import stages.reduce": "import stages.reduce",
        "import stages.clustering": "import stages.clustering",
    }
    out = {}
    for name, code in snippets.items():
        out[name] = u.median([u.run_measured([sys.executable, "-c", code], cwd=repo)["seconds"]
                              for _ in range(repeats)])
    probe = ("import sys, stages.grid_point, stages.clustering, stages.reduce; "
             "print(sorted(m for m in ('torch', 'torchvision', 'matplotlib', 'pandas', "
             "'sklearn', 'scipy') if m in sys.modules))")
    r = u.run_measured([sys.executable, "-c", probe], cwd=repo)
    mods_cluster = u.run_measured([sys.executable, "-c", (
        "import sys, stages.grid_point; print('torch' in sys.modules, "
        "'torchvision' in sys.modules)")], cwd=repo)["stdout"].split()
    out["modules_after_grid_imports"] = r["stdout"].strip()
    out["torch_imported_by_stages.cluster"] = mods_cluster[0] == "True"
    out["torchvision_imported_by_stages.cluster"] = mods_cluster[1] == "True"
    imp = subprocess.run([sys.executable, "-X", "importtime", "-c", "import stages.grid_point"],
                         cwd=repo, capture_output=True, text=True, env=u.bench_env())
    top = {}
    for line in imp.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
        if m and len(m.group(3)) <= 3:  # top-level packages only
            top[m.group(4)] = int(m.group(2)) / 1e6
    out["importtime_top"] = dict(sorted(top.items(), key=lambda kv: -kv[1])[:6])
    return out


BREAKDOWN_CODE = r'''
import time, numpy as np, pandas as pd
def main(args):
    import os
    os.chdir(args["repo"])
    from clusterlens.clustering import methods as c
    from clusterlens.clustering import metrics as cm
    from clusterlens.report.figures.clustering import plot_dendrogram
    from threadpoolctl import threadpool_limits
    X = np.load("data/pca.npy"); y = pd.read_parquet("data/index.parquet")["label"].to_numpy()
    out = {}
    limiter = threadpool_limits(args["threads"]) if args["threads"] else None
    def t(name, f, *a, **kw):
        s = time.perf_counter(); r = f(*a, **kw); out[name] = out.get(name, 0) + time.perf_counter() - s
        return r
    ks = args["ks"]
    for k in args["kmeans_k"]:
        lab, _ = t("kmeans: fit (all K)", c.run_kmeans, X, k, args["n_init"], 300, 0)
        t("kmeans: internal metrics (all K)", cm.internal_metrics, X, lab, 5000, 0)
        t("kmeans: external metrics (all K)", cm.external_metrics, y, lab)
    for link in ("ward", "complete", "average", "single"):
        Z = t(f"agglomerative {link}: tree", c.linkage_tree, X, link)
        t(f"agglomerative {link}: dendrogram plot", plot_dendrogram, Z, ks,
          f"/tmp/_bench_dendro_{os.getpid()}.png", link)
        cuts = t(f"agglomerative {link}: cut_tree_at", c.cut_tree_at, Z, ks)
        name = f"agglomerative {link}: metrics ({len(ks)} cuts)"
        shared = t(name, cm.silhouette_distances, X, 5000, 0)  # as the stage does
        for k, lab in cuts.items():
            t(name, c.evaluate_labels, X, y, lab, 5000, 0, sample_distances=shared)
    os.unlink(f"/tmp/_bench_dendro_{os.getpid()}.png")
    if limiter is not None:
        limiter.restore_original_limits()
    return out
'''


def in_stage_breakdown(repo: Path, threads: int | None) -> dict:
    """The grid stages' steps timed in one process, with the libraries' default thread count
    (threads=None) or with OpenMP/BLAS limited to ``threads``."""
    import pandas as pd
    import yaml

    from clusterlens.clustering.grid import n_classes, resolve_k

    params = yaml.safe_load((repo / "params.yaml").read_text())
    c = n_classes(pd.read_parquet(repo / "data/index.parquet")["label"])  # for `classes` K
    ks = [resolve_k(v, c) for v in params["agglomerative"]["k"]]
    kmeans_k = [resolve_k(v, c) for v in params["kmeans"]["k"]]
    res = u.run_child(BREAKDOWN_CODE, {"repo": str(repo), "ks": ks,
                                       "kmeans_k": kmeans_k,
                                       "n_init": params["kmeans"]["n_init"],
                                       "threads": threads})
    if not res.get("ok"):
        return {"error": res.get("error")}
    return {k: v for k, v in res.items()
            if k not in ("ok", "process_seconds", "peak_rss_mb", "wall_seconds")}


# --------------------------------------------------------------------------- report
def fmt_table(rows: list[list], header: list[str]) -> str:
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for j, r in enumerate(cells):
        lines.append("  ".join(c.rjust(w) if i else c.ljust(w)
                               for i, (c, w) in enumerate(zip(r, widths))))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


GRID_MODULES = ["stages/grid_point.py", "stages/clustering.py", "stages/reduce.py",
                "clusterlens/clustering/methods.py", "clusterlens/clustering/metrics.py",
                "clusterlens/clustering/selection.py", "clusterlens/clustering/reduction.py"]


def fingerprint(repo: Path) -> dict[str, str]:
    """sha256 (12 hex digits) of the grid's code as a temporary repository runs it."""
    import hashlib

    return {name: hashlib.sha256((repo / name).read_bytes()).hexdigest()[:12]
            for name in GRID_MODULES if (repo / name).is_file()}


def grouped(stages: dict[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, sec in stages.items():
        out[name.split("@")[0]] = out.get(name.split("@")[0], 0.0) + sec
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000, help="generated points (default 10,000)")
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--seed", type=int, default=0, help="seed of the generated features")
    ap.add_argument("--features", help="a real features .npy instead of generated ones")
    ap.add_argument("--index", help="index.parquet (label column) or labels .npy for --features")
    ap.add_argument("--repeats", type=int, default=3,
                    help="repeats of the baseline and of the pipeline (medians reported)")
    ap.add_argument("--baseline", choices=["seed", "full"], default="seed",
                    help="seed: the loop as written (fits a 5,000-point sample when N > 5,000); "
                         "full: fit all N points")
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--compare-stages", type=Path,
                    help="also time the pipeline with this copy of stages/ (e.g. patched)")
    ap.add_argument("--compare-label", help="name of the --compare-stages variant in the table")
    ap.add_argument("--workdir", type=Path, help="where the temporary repos go (default: a "
                    "new folder under /tmp, deleted at the end unless --keep)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary repositories")
    ap.add_argument("--k", type=int, nargs="+",
                    help="kmeans.k and agglomerative.k of the temporary repositories (default: "
                         "params.yaml's)")
    ap.add_argument("--linkage", nargs="+",
                    help="agglomerative.linkage of the temporary repositories (default: "
                         "params.yaml's)")
    ap.add_argument("--no-breakdown", action="store_true",
                    help="skip the where-the-time-goes measurements")
    ap.add_argument("--out", type=Path, default=u.PROJECT / "benchmarks/results/grid.json")
    args = ap.parse_args(argv)

    info = u.machine()
    print(f"machine: {u.machine_line(info)}", flush=True)
    if args.features:
        features, labels = u.load_features(args.features, args.index)
        source = f"{args.features} {features.shape}"
    else:
        features, labels = u.cnn_like_features(args.n, args.dim, seed=args.seed)
        source = (f"generated: {args.n} x {args.dim} ReLU'd 10-class Gaussian mixture, float32, "
                  f"seed {args.seed}")
    print(f"features: {source}", flush=True)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="clusterlens-bench-grid-"))
    workdir.mkdir(parents=True, exist_ok=True)
    variants = {"pipeline": None}
    if args.compare_stages:
        label = args.compare_label or f"pipeline ({args.compare_stages})"
        variants[label] = args.compare_stages.resolve()

    grid = {}
    if args.k:
        grid.update({"kmeans.k": args.k, "agglomerative.k": args.k})
    if args.linkage:
        grid["agglomerative.linkage"] = args.linkage
    base_runs, pipe_runs = [], {v: [] for v in variants}
    for i in range(args.repeats):  # interleaved: every variant sees the same load pattern
        if not args.skip_baseline:
            b = time_baseline(features, args.baseline)
            base_runs.append(b)
            print(f"[{i + 1}/{args.repeats}] baseline ({b['points']} points fitted): "
                  f"{b['seconds']:.1f} s (CPU {b['cpu_seconds']:.0f} s; 1-min load average "
                  f"before: {b['load_before']:.2f})", flush=True)
        for j, (name, stages_dir) in enumerate(variants.items()):
            p = time_pipeline(workdir, f"v{j}", i, features, labels, stages_dir, grid)
            pipe_runs[name].append(p)
            print(f"[{i + 1}/{args.repeats}] {name}: {p['seconds']:.1f} s "
                  f"({', '.join(f'{k} {v:.1f}' for k, v in grouped(p['stages']).items())}; "
                  f"load before: {p['load_before']:.2f})", flush=True)

    n = len(features)
    results = {"machine": info, "features": source, "n": n, "repeats": args.repeats,
               "baseline_variant": args.baseline, "target_ratio": TARGET_RATIO,
               "code_sha256": {name: fingerprint(Path(pipe_runs[name][0]["repo"]))
                                 for name in variants}}
    rows = []
    base_med = None
    if base_runs:
        base_med = u.median([b["seconds"] for b in base_runs])
        pts = base_runs[0]["points"]
        what = ("baseline: notebook loop, K=10..100 step 10, n_init=10, 1280-D"
                + (f" (fits its {pts}-point sample)" if pts < n else ""))
        rows.append([what, pts, f"{base_med:.1f}", f"{10 * pts / base_med:.0f} pt-fits/s",
                     "1.00"])
        results["baseline"] = {"median_seconds": base_med, "points": pts,
                               "runs": [b["seconds"] for b in base_runs],
                               "cpu_seconds": [b["cpu_seconds"] for b in base_runs],
                               "load_before": [b["load_before"] for b in base_runs],
                               "optimal_k": base_runs[0]["optimal_k"]}
    results["pipeline"] = {}
    for name, runs in pipe_runs.items():
        med = u.median([r["seconds"] for r in runs])
        ratio = base_med / med if base_med else None
        rows.append([f"{name}: dvc repro -s reduce kmeans agglomerative clustering", n,
                     f"{med:.1f}", f"{n / med:.0f} points/s",
                     f"{ratio:.2f}" if ratio else "-"])
        stage_names = list(runs[0]["stages"])
        results["pipeline"][name] = {
            "median_seconds": med, "runs": [r["seconds"] for r in runs],
            "load_before": [r["load_before"] for r in runs],
            "ratio_baseline_over_pipeline": ratio,
            "target_met": (ratio >= TARGET_RATIO) if ratio else None,
            "median_stage_seconds": {s: u.median([r["stages"].get(s) for r in runs])
                                     for s in stage_names},
            "median_dvc_startup": u.median([r["dvc_startup"] for r in runs]),
        }
    print("\n== Clustering grid, 10 K-Means fits (baseline) vs the default grid through DVC")
    print(f"   ({n} points; medians of {args.repeats} interleaved runs; ratio = baseline "
          f"seconds / pipeline seconds, target >= {TARGET_RATIO:g})")
    print(fmt_table(rows, ["what", "points", "seconds", "rate", "ratio"]))
    if base_runs:
        print("   baseline runs: " + ", ".join(f"{b['seconds']:.1f}" for b in base_runs))
    for name, r in results["pipeline"].items():
        print(f"   {name} runs: " + ", ".join(f"{s:.1f}" for s in r["runs"]))

    # checks on the last repeat of every variant
    results["checks"] = {}
    for name, runs in pipe_runs.items():
        chk = check_outputs(Path(runs[-1]["repo"]))
        results["checks"][name] = chk
        print(f"\n== Checks ({name}, last repeat)")
        print(fmt_table([[r["k"], f"{r['pipeline_objective']:.6g}",
                          f"{r['sklearn_best_of_n_init']:.6g}", f"{r['ratio']:.5f}",
                          "ok" if r["ok"] else "FAIL"] for r in chk["kmeans"]],
                        ["K", "pipeline objective", "sklearn best of n_init (seed 1)",
                         "ratio", "within 1%"]))
        bad = [r for r in chk["metrics"] if not r["ok"]]
        worst = max(max(r["nmi_diff"], r["ari_diff"], r["purity_diff"]) for r in chk["metrics"])
        print(f"NMI/ARI/purity of {len(chk['metrics'])} grid points vs an independent "
              f"computation from the saved labels: {'all equal' if not bad else 'MISMATCH'} "
              f"(largest difference {worst:.1e}; the stage writes 6 decimals; the clustering "
              f"aggregate holds the same values)")
        for r in bad:
            print(f"   MISMATCH {r}")

    if not args.no_breakdown:
        results["where"] = {}
        for name, runs in pipe_runs.items():
            repo = Path(runs[-1]["repo"])
            print(f"\n== Where the time goes ({name})", flush=True)
            direct = direct_stage_times(repo)
            noop = noop_repro_seconds(repo)
            start = startup_times(repo)
            brk = in_stage_breakdown(repo, None)
            brk1 = in_stage_breakdown(repo, 1)
            in_dvc = results["pipeline"][name]["median_stage_seconds"]
            rows = [[s, f"{in_dvc.get(s, 0):.2f}", f"{direct[s]:.2f}",
                     f"{in_dvc.get(s, 0) - direct[s]:+.2f}"] for s in direct]
            tot_dvc = results["pipeline"][name]["median_seconds"]
            rows.append(["(dvc start-up before the first stage)",
                         f"{results['pipeline'][name]['median_dvc_startup']:.2f}", "", ""])
            rows.append(["total", f"{tot_dvc:.2f}", f"{sum(direct.values()):.2f}",
                         f"{tot_dvc - sum(direct.values()):+.2f}"])
            print(fmt_table(rows, ["stage", "in dvc repro (median)", "run directly",
                                   "dvc bookkeeping"]))
            print(f"no-op `dvc repro -s {' '.join(STAGE_TARGETS)}` (all up to date): "
                  f"{noop:.2f} s")
            print("process start-up (median of 5): " + ", ".join(
                f"{k} {v:.2f} s" for k, v in start.items() if isinstance(v, float)))
            print(f"torch imported by `import stages.grid_point`: "
                  f"{start['torch_imported_by_stages.cluster']} (torchvision: "
                  f"{start['torchvision_imported_by_stages.cluster']}); modules present after "
                  f"importing the grid stages: {start['modules_after_grid_imports']}")
            print("import time of stages.grid_point by top-level package (s): " + ", ".join(
                f"{k} {v:.2f}" for k, v in start["importtime_top"].items()))
            if "error" not in brk and "error" not in brk1:
                print("in-process breakdown of the grid stages' work (one run each, s; the "
                      "functions called directly, so a thread limit set in a stage's main() does "
                      "not apply: both settings shown):")
                print(fmt_table([[k, f"{v:.2f}", f"{brk1.get(k, float('nan')):.2f}"]
                                 for k, v in brk.items()],
                                ["step", "default threads", "1 thread"]))
            else:
                print(f"breakdown failed: {brk.get('error') or brk1.get('error')}")
            results["where"][name] = {"direct_stage_seconds": direct, "noop_repro_seconds": noop,
                                      "startup": start, "in_process_breakdown": brk,
                                      "in_process_breakdown_1_thread": brk1}

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"\nwrote {args.out}")
    for name, r in results["pipeline"].items():
        if r["ratio_baseline_over_pipeline"]:
            verdict = "MET" if r["target_met"] else "NOT met"
            print(f"{name}: {r['ratio_baseline_over_pipeline']:.2f}x the baseline: target "
                  f">= {TARGET_RATIO:g}x {verdict}")
    ok = all(c["objective_ok"] and c["metrics_ok"] for c in results["checks"].values())
    print(f"checks: {'all passed' if ok else 'FAILED'}")
    if not args.keep and not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
