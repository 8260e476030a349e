"""K-Means engines and agglomerative routes at large N (clusterlens/clustering/kmeans_engines.py, two_step.py).

    python -m benchmarks.bench_large_n                 # N = 10^5 and 10^6 (about 15-25 min here)
    python -m benchmarks.bench_large_n --quick         # N = 10^4 and 10^5 (a few minutes)
    python -m benchmarks.bench_large_n --workdir /tmp/ln --keep   # keep (and reuse) the data

Data: seeded Gaussian blobs, 256-D float32: ``--blobs`` (100) centres drawn N(0, 0.5^2) per
dimension, points = centre + N(0, 1) noise (every blob is well apart from the others in 256-D,
so the generating labels are a fair target for every route), balanced, rows in random order.
The largest N is generated in blocks straight into a .npy (no copy in memory); each smaller N
is its first rows, saved as its own .npy (a random sample, since rows are shuffled).

Every measurement runs in a fresh Python process (benchmarks/_util.py ``run_child``): imports,
then the features loaded as the stage loads them (``np.load``; or memory-mapped, rows marked
mmap), then the timed call. Reported: wall and CPU seconds of the call, the process's peak RSS
(VmHWM: this process alone, interpreter and libraries included; for a memory map it also counts
the file pages it touched, which the OS can drop), and the 1-minute load average before it.

1. **K-Means, K = ``--k`` (100)**: ``stages.large_n.kmeans_sklearn`` (the baseline:
   scikit-learn's ``KMeans``, greedy k-means++) and ``kmeans_faiss`` (faiss k-means++, every
   point used), the same ``--n-init`` (1) and ``--max-iter`` (20) for both, interleaved at each N;
   plus faiss with its own training subsample (256 points per centroid, faiss' default). Ratio
   columns: scikit-learn's seconds / faiss' (wall and CPU), faiss' objective / scikit-learn's
   (the float64 inertia on all points, computed the same way for both). ARI against the
   generating labels.
2. **Agglomerative routes, cut at K = ``--k``**: the exact trees as ``stages.grid_point`` builds
   them (ward: fastcluster's O(N)-memory ``linkage_vector``; complete: ``fastcluster.linkage``,
   the 8 x N^2-byte distance matrix) at the sizes they can do here (``--exact-ward-sizes``,
   ``--exact-complete-sizes``), then projected to 10^5 and 10^6 (not run: time as N^max(2,
   measured slope), memory: ward linear, complete the 8 x N^2 prediction); and the two-step
   route (``two_step_tree`` + ``cut_two_step``: K-Means cells, ``--n-centroids`` 2000, faiss by
   default, then the weighted linkage over the cells) for ward and complete at every N, ward with
   the scikit-learn engine too, and ward with the features memory-mapped at the largest N. At the
   largest exact-ward size the two-step labels are also compared with the exact tree's (ARI).

Threads: every process runs with OpenMP and BLAS limited to one thread (``--threads 1``), as the
``cluster`` stage runs (its ``threadpool_limits(1)``): on this shared 2-core machine two threads
spin-wait whenever another job holds a core, and the comparison would measure the load. faiss'
bundled libgomp/OpenBLAS obey OMP_NUM_THREADS. CPU seconds are the steadier figure under load.

Points projected to take longer than ``--max-seconds`` (900) or more memory than ``--max-gib``
(16) are not run. Writes benchmarks/results/large_n.json.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import _util as u
from benchmarks.bench_grid import fmt_table

GIB = 1024.0  # MB per GiB


# ---------------------------------------------------------------------- data
def write_blobs(path: Path, n: int, dim: int, centers: int, seed: int, spread: float = 0.5,
                chunk: int = 50_000) -> None:
    """``path`` (n, dim) float32 and ``<stem>_labels.npy``: balanced Gaussian blobs, rows in a
    seeded random order, written block by block into an open_memmap."""
    rng = np.random.default_rng(seed)
    C = (spread * rng.standard_normal((centers, dim))).astype(np.float32)
    labels = rng.permutation(np.arange(n) % centers).astype(np.int64)
    tmp = path.with_suffix(".tmp.npy")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, dim))
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        out[start:stop] = C[labels[start:stop]] + rng.standard_normal((stop - start, dim),
                                                                      dtype=np.float32)
    out.flush()
    del out
    np.save(path.with_name(path.stem + "_labels.npy"), labels)
    os.replace(tmp, path)


def prefix_file(big: Path, n: int) -> Path:
    """The first n rows of ``big`` (and of its labels) as their own .npy files."""
    path = big.with_name(f"blobs_{n}.npy")
    if not path.is_file():
        src = np.load(big, mmap_mode="r")
        np.save(path.with_name(path.stem + "_labels.npy"),
                np.load(big.with_name(big.stem + "_labels.npy"))[:n])
        np.save(path, np.ascontiguousarray(src[:n]))
    return path


# ---------------------------------------------------------------------- child snippets
# peak_mb()/rss_mb() come from the launcher in benchmarks/_util.py (VmHWM / VmRSS).
KMEANS = r'''
import os, time
import numpy as np
def main(a):
    from clusterlens.clustering import kmeans_engines, two_step
    from clusterlens.core.io import load_features
    import faiss, sklearn.cluster  # the engines' imports, before the base is noted
    from sklearn.metrics import adjusted_rand_score
    base = rss_mb()
    X = np.load(a["features"])
    y = np.load(a["labels"])
    inp = rss_mb()
    load = os.getloadavg()[0]
    t = time.perf_counter(); c0 = time.process_time()
    kw = {"max_points_per_centroid": a["mppc"]} if a.get("mppc") else {}
    labels, info = kmeans_engines.run_kmeans_engine(a["engine"], X, a["k"], a["n_init"], a["max_iter"],
                                        a["seed"], **kw)
    sec = time.perf_counter() - t; cpu = time.process_time() - c0
    return {"seconds": sec, "cpu_seconds": cpu, "base_rss_mb": base, "input_rss_mb": inp,
            "load_before": load, "inertia": info["inertia"], "iterations": info["iterations"],
            "ari_truth": adjusted_rand_score(y, labels), "device": info["device"],
            "init": info["init"]}
'''

AGGLO = r'''
import os, time
from pathlib import Path
import numpy as np
def anon_mb():  # anonymous (not file-backed) resident memory: a memory map's pages are not in it
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
def main(a):
    from clusterlens.clustering import kmeans_engines, two_step
    from clusterlens.core.io import load_features
    from clusterlens.clustering import methods as c
    import faiss, fastcluster, scipy.sparse, sklearn.cluster, sklearn.metrics  # noqa
    from sklearn.metrics import adjusted_rand_score
    base = rss_mb()
    X = load_features(a["features"], 0 if a.get("mmap") else None)
    y = np.load(a["labels"])
    inp = rss_mb(); inp_anon = anon_mb()
    load = os.getloadavg()[0]
    t = time.perf_counter(); c0 = time.process_time()
    k = a["k"]
    out = {}
    if a["route"] == "exact":
        Z = c.linkage_tree(X, a["linkage"])
        labels = c.cut_tree_at(Z, [k])[k]
    else:
        res = two_step.two_step_tree(X, a["linkage"], a["n_centroids"], 0, a["engine"])
        labels = two_step.cut_two_step(res, [k])[k]
        out.update(cells=res.info["cells"], train_points=res.info["train_points"],
                   kmeans_iterations=res.info["kmeans"]["iterations"])
    sec = time.perf_counter() - t; cpu = time.process_time() - c0
    out.update({"seconds": sec, "cpu_seconds": cpu, "base_rss_mb": base, "input_rss_mb": inp,
                "input_anon_mb": inp_anon, "end_anon_mb": anon_mb(), "load_before": load,
                "ari_truth": adjusted_rand_score(y, labels)})
    if a.get("save"):
        np.save(a["save"], labels)
    if a.get("compare") and os.path.isfile(a["compare"]):
        out["ari_exact"] = adjusted_rand_score(np.load(a["compare"]), labels)
    return out
'''


# ---------------------------------------------------------------------- formatting
def fmt_mb(mb) -> str:
    if not mb:
        return "-"
    return f"{mb / GIB:.2f} GiB" if mb >= GIB else f"{mb:.0f} MB"


def fmt_s(s) -> str:
    if s is None:
        return "-"
    if s >= 3600:
        return f"{s / 3600:.1f} h"
    return f"{s:.1f} s" if s < 600 else f"{s / 60:.0f} min"


def fmt_n(n: int) -> str:
    e = round(math.log10(n))
    return f"10^{e}" if 10 ** e == n else f"{n:,}"


# ---------------------------------------------------------------------- main
def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="N = 10^4, 10^5")
    ap.add_argument("--sizes", type=lambda s: [int(float(x)) for x in s.split(",")],
                    help="comma-separated N for K-Means and the two-step route")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--blobs", type=int, default=100, help="generating blobs (default 100)")
    ap.add_argument("--k", type=int, default=100, help="K-Means K and the cut's K (default 100)")
    ap.add_argument("--n-init", type=int, default=1)
    ap.add_argument("--max-iter", type=int, default=20)
    ap.add_argument("--n-centroids", type=int, default=2000, help="two-step cells (default 2000)")
    ap.add_argument("--exact-ward-sizes", type=lambda s: [int(float(x)) for x in s.split(",")],
                    default=[10_000, 20_000])
    ap.add_argument("--exact-complete-sizes",
                    type=lambda s: [int(float(x)) for x in s.split(",")], default=[10_000, 20_000])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="OpenMP/BLAS threads (0: defaults)")
    ap.add_argument("--max-seconds", type=float, default=900.0)
    ap.add_argument("--max-gib", type=float, default=16.0)
    ap.add_argument("--workdir", type=Path, help="data folder (reused when it holds the data)")
    ap.add_argument("--keep", action="store_true", help="keep the generated data")
    ap.add_argument("--out", type=Path, default=u.PROJECT / "benchmarks/results/large_n.json")
    args = ap.parse_args(argv)

    sizes = args.sizes or ([10_000, 100_000] if args.quick else [100_000, 1_000_000])
    if args.quick:
        args.exact_ward_sizes = [s for s in args.exact_ward_sizes if s <= 10_000] or [5_000]
        args.exact_complete_sizes = [s for s in args.exact_complete_sizes if s <= 10_000] or [5_000]
    info = u.machine()
    try:
        import faiss

        info["faiss"] = faiss.__version__
    except ImportError:
        raise SystemExit("faiss is not installed: pip install faiss-cpu") from None
    import hashlib

    import fastcluster

    info["fastcluster"] = fastcluster.__version__
    code = ["clusterlens/clustering/kmeans_engines.py", "clusterlens/clustering/two_step.py",
            "stages/grid_point.py"]
    info["code_sha256"] = {rel: hashlib.sha256((u.PROJECT / rel).read_bytes()).hexdigest()[:12]
                           for rel in code}
    print(f"machine: {u.machine_line(info)}; faiss {info['faiss']}", flush=True)
    print(f"sizes: {sizes}; {args.dim}-D blobs ({args.blobs}); K = {args.k}; K-Means n_init "
          f"{args.n_init}, max_iter {args.max_iter}; threads {args.threads or 'default'}; "
          f"limits {args.max_seconds:g} s, {args.max_gib:g} GiB", flush=True)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="clusterlens-bench-large-n-"))
    workdir.mkdir(parents=True, exist_ok=True)
    nmax = max(sizes + args.exact_ward_sizes + args.exact_complete_sizes)
    big = workdir / f"blobs_{nmax}.npy"
    meta = workdir / "meta.json"
    want = {"n": nmax, "dim": args.dim, "blobs": args.blobs, "seed": args.seed}
    if not big.is_file() or not meta.is_file() or json.loads(meta.read_text()) != want:
        t = time.perf_counter()
        write_blobs(big, nmax, args.dim, args.blobs, args.seed)
        meta.write_text(json.dumps(want))
        print(f"generated {big} ({big.stat().st_size / 2**30:.2f} GiB) in "
              f"{time.perf_counter() - t:.0f} s", flush=True)
    files = {n: prefix_file(big, n) if n != nmax else big
             for n in sorted(set(sizes + args.exact_ward_sizes + args.exact_complete_sizes))}
    env = u.thread_env(args.threads)
    timeout = 2 * args.max_seconds
    rows: list[dict] = []
    t_start = time.perf_counter()

    def run(kind: str, a: dict) -> dict:
        r = u.run_child(KMEANS if kind == "kmeans" else AGGLO, a, timeout=timeout, env=env)
        if not r.get("ok"):
            r["status"] = "timeout" if r.get("rc") == "timeout" else "failed"
        else:
            r["status"] = "measured"
        return r

    def record(group: str, what: str, n: int, res: dict, **extra) -> dict:
        row = {"group": group, "what": what, "n": n, **{k: v for k, v in res.items()
                                                        if k not in ("ok",)}, **extra}
        rows.append(row)
        err = f"  {str(res.get('error', ''))[-300:]}" if res.get("status") in ("failed",
                                                                                "timeout") else ""
        print(f"  {group:8s} {what:34s} N={n:>9,d}  {fmt_s(row.get('seconds')):>9s} "
              f"(CPU {fmt_s(row.get('cpu_seconds'))})  {fmt_mb(row.get('peak_rss_mb')):>10s}  "
              f"{row['status']}{err}  [{time.perf_counter() - t_start:.0f} s elapsed, load "
              f"{os.getloadavg()[0]:.2f}]", flush=True)
        return row

    def labels_of(n: int) -> str:
        p = files[n]
        return str(p.with_name(p.stem + "_labels.npy"))

    # ---- 1. K-Means engines, interleaved per N
    km = {"k": args.k, "n_init": args.n_init, "max_iter": args.max_iter, "seed": args.seed}
    print("K-Means:", flush=True)
    for n in sizes:
        a = {**km, "features": str(files[n]), "labels": labels_of(n)}
        prev = [r for r in rows if r["what"] == "sklearn" and r["status"] == "measured"]
        proj = prev[-1]["seconds"] * n / prev[-1]["n"] if prev else None
        if proj and proj > args.max_seconds:
            record("kmeans", "sklearn", n, {"status": "projected", "seconds": proj},
                   note=f"not run: projected {proj:.0f} s > {args.max_seconds:g} s")
        else:
            record("kmeans", "sklearn", n, run("kmeans", {**a, "engine": "sklearn"}))
        record("kmeans", "faiss", n, run("kmeans", {**a, "engine": "faiss"}))
        record("kmeans", "faiss, 256 pts/centroid sample", n,
               run("kmeans", {**a, "engine": "faiss", "mppc": 256}))

    # ---- 2. agglomerative routes
    print("Agglomerative:", flush=True)
    ward_ref = workdir / "exact_ward_labels.npy"
    ward_ref.unlink(missing_ok=True)
    big_ward = max(args.exact_ward_sizes)
    for linkage, exact_sizes in (("ward", args.exact_ward_sizes),
                                 ("complete", args.exact_complete_sizes)):
        for n in sorted(exact_sizes):
            a = {"features": str(files[n]), "labels": labels_of(n), "k": args.k,
                 "route": "exact", "linkage": linkage}
            if linkage == "ward" and n == big_ward:
                a["save"] = str(ward_ref)
            pred_gib = 8 * n * n / 2**30 if linkage == "complete" else None
            if pred_gib and pred_gib > args.max_gib:
                record("agglo", f"exact {linkage}", n, {"status": "predicted",
                                                        "peak_rss_mb": pred_gib * GIB})
                continue
            record("agglo", f"exact {linkage}", n, run("agglo", a),
                   predicted_peak_mb=pred_gib * GIB if pred_gib else None)
        meas = sorted((r for r in rows if r["what"] == f"exact {linkage}"
                       and r["status"] == "measured"), key=lambda r: r["n"])
        if meas:  # projections to the large sizes
            last = meas[-1]
            slope = 2.0
            if len(meas) >= 2:
                s = math.log(last["cpu_seconds"] / meas[-2]["cpu_seconds"]) / math.log(
                    last["n"] / meas[-2]["n"])
                slope = max(2.0, s)
            work = max(last["peak_rss_mb"] - last["base_rss_mb"], 1.0)
            for n in sizes:
                if n <= last["n"]:
                    continue
                sec = last["cpu_seconds"] * (n / last["n"]) ** slope
                mem = (last["base_rss_mb"] + 8 * n * n / 2**20 if linkage == "complete"
                       else last["base_rss_mb"] + work * n / last["n"])
                record("agglo", f"exact {linkage}", n,
                       {"status": "projected", "seconds": sec, "cpu_seconds": sec,
                        "peak_rss_mb": mem},
                       note=f"not run: CPU time x N^{slope:.2f} from N={last['n']:,}; memory "
                            + ("8 x N^2 bytes" if linkage == "complete" else "x N"))
    # two-step: ward at the largest exact-ward size first (ARI against the exact labels)
    two = {"route": "two_step", "k": args.k, "n_centroids": args.n_centroids}
    plan = [(big_ward, "ward", "faiss", False)]
    for n in sizes:
        plan += [(n, "ward", "faiss", False), (n, "complete", "faiss", False)]
        plan += [(n, "ward", "sklearn", False)]
    plan.append((max(sizes), "ward", "faiss", True))
    seen = set()
    for n, linkage, engine, mmap in plan:
        if (n, linkage, engine, mmap) in seen:
            continue
        seen.add((n, linkage, engine, mmap))
        what = f"two-step {linkage} ({engine}{', mmap' if mmap else ''})"
        prev = [r for r in rows if r["what"] == what and r["status"] == "measured"]
        proj = prev[-1]["seconds"] * n / prev[-1]["n"] if prev else None
        if proj and proj > args.max_seconds:
            record("agglo", what, n, {"status": "projected", "seconds": proj},
                   note=f"not run: projected {proj:.0f} s > {args.max_seconds:g} s")
            continue
        a = {**two, "features": str(files[n]), "labels": labels_of(n), "linkage": linkage,
             "engine": engine, "mmap": mmap}
        if n == big_ward and linkage == "ward":
            a["compare"] = str(ward_ref)
        record("agglo", what, n, run("agglo", a))

    elapsed = time.perf_counter() - t_start
    info["load_avg_at_end"] = os.getloadavg()
    report(rows, info, args, sizes, elapsed)
    if not args.keep and not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)


def report(rows: list[dict], info: dict, args, sizes: list[int], elapsed: float) -> None:
    print(f"\n== K-Means, K={args.k}, n_init={args.n_init}, max_iter={args.max_iter}, "
          f"{args.dim}-D blobs, {args.threads or 'default'} thread(s); ratios against "
          "scikit-learn at the same N, this run")
    table = []
    for n in sizes:
        base = next((r for r in rows if r["what"] == "sklearn" and r["n"] == n), None)
        for r in (r for r in rows if r["group"] == "kmeans" and r["n"] == n):
            ok = base and base.get("status") == "measured" and r.get("status") == "measured"
            if ok:
                r["speedup_wall"] = base["seconds"] / r["seconds"]
                r["speedup_cpu"] = base["cpu_seconds"] / r["cpu_seconds"]
                r["objective_ratio"] = r["inertia"] / base["inertia"]
            table.append([r["what"], fmt_n(n), fmt_s(r.get("seconds")),
                          fmt_s(r.get("cpu_seconds")), fmt_mb(r.get("peak_rss_mb")),
                          f"{r['inertia']:.6g}" if r.get("inertia") else "-",
                          r.get("iterations", "-"),
                          f"{r['ari_truth']:.3f}" if r.get("ari_truth") is not None else "-",
                          f"{r['speedup_wall']:.2f}" if ok else "-",
                          f"{r['speedup_cpu']:.2f}" if ok else "-",
                          f"{r['objective_ratio']:.4f}" if ok else "-",
                          f"{r['load_before']:.1f}" if r.get("load_before") else "-",
                          r["status"]])
    print(fmt_table(table, ["engine", "N", "wall", "CPU", "peak RSS", "inertia", "iter",
                            "ARI", "speed-up wall", "speed-up CPU", "objective ratio",
                            "load", "status"]))
    print("   speed-up = scikit-learn seconds / this row's; objective ratio = this row's "
          "float64 inertia / scikit-learn's (lower is better); ARI vs the generating blobs")

    print(f"\n== Agglomerative routes, cut at K={args.k} (two-step: {args.n_centroids} "
          "K-Means cells, weighted linkage over them)")
    from clusterlens.clustering import two_step
    base_mb = next((r["base_rss_mb"] for r in rows if r.get("base_rss_mb")), 200.0)
    table = []
    for r in sorted((r for r in rows if r["group"] == "agglo"), key=lambda r: (r["what"], r["n"])):
        n, linkage = r["n"], r["what"].split()[1]
        work = (two_step.exact_peak_bytes(n, linkage, args.dim) if r["what"].startswith("exact")
                else two_step.two_step_peak_bytes(n, args.n_centroids, args.dim))
        # interpreter + libraries, the features (a memory map's pages count in VmHWM too), the
        # labels the benchmark loads, and what stages.large_n predicts for the route itself
        r["predicted_peak_mb"] = (r.get("base_rss_mb") or base_mb) + (n * args.dim * 4
                                                                    + n * 8 + work) / 2**20
        table.append([r["what"], fmt_n(n), fmt_s(r.get("seconds")),
                      fmt_s(r.get("cpu_seconds")), fmt_mb(r.get("peak_rss_mb")),
                      fmt_mb(r["predicted_peak_mb"]), fmt_mb(r.get("end_anon_mb")),
                      f"{r['ari_truth']:.3f}" if r.get("ari_truth") is not None else "-",
                      f"{r['ari_exact']:.3f}" if r.get("ari_exact") is not None else "-",
                      f"{r['load_before']:.1f}" if r.get("load_before") else "-",
                      r["status"] + (f" ({r['note']})" if r.get("note") else "")])
    print(fmt_table(table, ["route", "N", "wall", "CPU", "peak RSS", "predicted",
                            "anon after", "ARI truth", "ARI vs exact", "load", "status"]))
    print(f"   peak RSS: the process's VmHWM (interpreter + libraries ~{fmt_mb(base_mb)}, the "
          "features, and for a memory map the file pages it read, which the OS may drop); "
          "predicted: that base + features + stages.large_n's exact_peak_bytes / "
          "two_step_peak_bytes; anon after: anonymous RSS at the end of the call (a memory map's "
          "pages are not in it); projected rows were not run")
    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": info, "sizes": sizes, "elapsed_s": elapsed,
                               "settings": {k: (str(v) if isinstance(v, Path) else v)
                                            for k, v in vars(args).items()},
                               "rows": rows}, indent=2, default=str) + "\n")
    print(f"\nwrote {out} (total {elapsed / 60:.1f} min)")


if __name__ == "__main__":
    main()
