"""K-Means, GMM and NMF grid points at 10^5-10^6 images: one grid point per fresh process, as
its stage runs it (``stages.grid_point.run`` on one thread), with the large-N defaults of
params.yaml (``kmeans.max_exact_n``, ``gmm.max_exact_n``, ``nmf.max_exact_n``).

    python -m benchmarks.bench_grid_large_n --n 100000 --classes 100
    python -m benchmarks.bench_grid_large_n --n 1000000 --classes 1000 \\
        --points kmeans:classes_x2 gmm:classes_x2 nmf:classes_x2 kmeans:classes_x0.5
    python -m benchmarks.bench_grid_large_n --n 100000 --classes 100 --nmf-dim 1280 --points
    python -m benchmarks.bench_grid_large_n --n 20000 --classes 100 --exact   # both routes, ARI
    python -m benchmarks.bench_grid_large_n --n 1000000 --classes 1000 --aggregate --points

Data: ``benchmarks._util.cnn_like_features(n, dim=50, k=classes)`` stands in for the PCA
features (``data/pca.npy``), with a matching ``data/index.parquet``. The ``nmf`` points cluster
``W`` of an NMF of those features (10 components, the stage's sample route), computed once and
timed as ``nmf`` (``--nmf-dim D``: the ``nmf`` stage itself on D-dimensional generated features,
memory-mapped like the stage's input at large N).

Per point: wall and CPU seconds of the whole ``run`` (fit, scoring, writing), the scoring's own
CPU seconds (``methods.score_points``), peak RSS (VmHWM of the child), the route and sample
recorded in the point's JSON, NMI and ARI against the generating classes. CPU seconds of a
one-thread process are what its wall time is on an idle core; on a shared machine wall time
is longer. ``--exact``: the same points with the switch off (``max_exact_n: null``), and the
ARI between the two routes' labels. Results: printed, and written to
benchmarks/results/grid_large_n.json.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks._util import PROJECT, cnn_like_features, index_table, machine, machine_line, run_child

CHILD = r"""
import time, json
import numpy as np
from pathlib import Path

def main(a):
    import yaml
    from threadpoolctl import threadpool_limits
    from stages import grid_point
    from clusterlens.clustering import methods
    params = yaml.safe_load(open(a["params"]))
    for section, values in a["overrides"].items():
        params[section].update(values)
    cfg, value = grid_point.parse_point(params, a["method"], a["value"])
    spent = {"score_cpu": 0.0}
    score = methods.score_points
    def timed(*args, **kw):
        t = time.process_time()
        out = score(*args, **kw)
        spent["score_cpu"] += time.process_time() - t
        return out
    grid_point.methods.score_points = timed
    w, c = time.perf_counter(), time.process_time()
    with threadpool_limits(1):
        summary = grid_point.run(a["method"], value, cfg, pca_path=a["pca"], index_path=a["index"],
                                 out_dir=Path(a["out"]), plots_dir=Path(a["out"]) / "plots",
                                 nmf_path=a["nmf"])
    (name, point), = summary.items()
    labels = np.load(Path(a["out"]) / a["method"] / f"k{a['value']}.npy")
    np.save(Path(a["out"]) / f"{a['tag']}.npy", labels)
    keep = ("k", "route", "sample", "n_init", "engine", "iterations", "inertia", "bic", "nmi",
            "ari", "silhouette", "converged")
    return {"wall": time.perf_counter() - w, "cpu": time.process_time() - c,
            **spent, **{k: point[k] for k in keep if k in point}}
"""

NMF_CHILD = r"""
import time
import numpy as np

def main(a):
    import yaml
    from threadpoolctl import threadpool_limits
    from stages import nmf as nmf_stage
    from clusterlens.config.base import parse_stage
    params = yaml.safe_load(open(a["params"]))
    params["nmf"].update(a["overrides"])
    params["fusion"]["set"] = "visual"
    cfg = parse_stage(params, nmf_stage.Params)
    w, c = time.perf_counter(), time.process_time()
    with threadpool_limits(1):
        out = nmf_stage.run(cfg, features_path=a["features"], out=a["out"],
                            metrics_path=a["metrics"], fused_path=a["features"])
    return {"wall": time.perf_counter() - w, "cpu": time.process_time() - c, **out}
"""


def make_data(work: Path, n: int, classes: int, dim: int, seed: int) -> dict:
    """pca.npy, index.parquet and (nmf) W for ``n`` generated points, reused when present."""
    stamp = work / f"data_{n}_{classes}_{dim}_{seed}.json"
    paths = {"pca": str(work / f"pca_{n}_{classes}.npy"),
             "index": str(work / f"index_{n}_{classes}.parquet"),
             "nmf": str(work / f"nmf_{n}_{classes}.npz")}
    if not stamp.is_file():
        X, y = cnn_like_features(n, dim=dim, k=classes, seed=seed)
        np.save(paths["pca"], X)
        index_table(y).to_parquet(paths["index"], index=False)
        from threadpoolctl import threadpool_limits

        from clusterlens.clustering import nmf
        t = time.process_time()
        with threadpool_limits(1):
            W, info = nmf.fit_nmf_sampled(X, 10, 300, 0, sample=min(n, 20_000))
        np.savez(paths["nmf"], W=W)
        stamp.write_text(json.dumps({"nmf_cpu_50d": time.process_time() - t}))
    return paths


AGGREGATE_CHILD = r"""
import json, os, time
from pathlib import Path
import numpy as np

def main(a):
    from clusterlens.clustering import grid as g, selection
    from clusterlens.config.base import load_params, parse_stage
    from stages import clustering
    os.chdir(a["work"])
    cfg = parse_stage(load_params(a["params"]), clustering.Params)
    grid = clustering.grid_points(cfg)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2 * a["classes"], a["n"]).astype(np.int64)
    for f in sorted(selection.expected_files(grid)):
        p = Path("data/clusters") / f
        p.parent.mkdir(parents=True, exist_ok=True)
        if f.endswith(".npy"):
            np.save(p, labels)
            continue
        method, stem = f.split("/")[0], p.stem
        m = {"n_clusters": 10, "noise_fraction": 0.0, "silhouette": float(rng.uniform(0, .2)),
             "nmi": float(rng.uniform(.3, .7)), "ari": 0.1, "inertia": 1.0}
        if method in ("kmeans", "gmm", "nmf", "agglomerative"):
            value = stem.split("_k")[-1].removeprefix("k")
            value = int(value) if value.isdigit() else value
            m.update(grid_value=value, k=g.resolve_k(value, a["classes"]))
        if method == "agglomerative":
            m.update(linkage=stem.split("_")[0], route="two_step")
        p.write_text(json.dumps(m))
    w, c = time.perf_counter(), time.process_time()
    out = clustering.run(cfg)
    return {"wall": time.perf_counter() - w, "cpu": time.process_time() - c,
            "points": sum(len(v) for v in grid.values()), "selected": out["selected"]["point"]}
"""


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--dim", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--points", nargs="*", default=["kmeans:classes_x2", "gmm:classes_x2",
                                                    "nmf:classes_x2"])
    ap.add_argument("--exact", action="store_true", help="also run with max_exact_n: null")
    ap.add_argument("--nmf-dim", type=int, default=0, help="time the nmf stage on N x D")
    ap.add_argument("--aggregate", action="store_true",
                    help="time the `clustering` aggregate on the default grid's point files "
                         "(labels of N images, generated metrics)")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--timeout", type=float, default=3600)
    args = ap.parse_args(argv)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_grid_large_n_"))
    work.mkdir(parents=True, exist_ok=True)
    info = machine()
    print(machine_line(info), flush=True)
    rows = []
    params = str(PROJECT / "params.yaml")
    if args.nmf_dim:
        feats = work / f"features_{args.n}_{args.nmf_dim}.npy"
        if not feats.is_file():
            mm = np.lib.format.open_memmap(feats, mode="w+", dtype=np.float32,
                                           shape=(args.n, args.nmf_dim))
            for start in range(0, args.n, 100_000):
                stop = min(args.n, start + 100_000)
                mm[start:stop] = cnn_like_features(stop - start, dim=args.nmf_dim, k=args.classes,
                                                   seed=args.seed + start)[0]
            mm.flush()
            del mm
        for tag, over in (("nmf stage", {}),) + ((("nmf stage exact", {"max_exact_n": None}),)
                                                  if args.exact else ()):
            res = run_child(NMF_CHILD, {"params": params, "overrides": over,
                                        "features": str(feats), "out": str(work / "nmf_out.npz"),
                                        "metrics": str(work / "nmf_out.json")},
                            timeout=args.timeout)
            res.update(point=tag, n=args.n, dim=args.nmf_dim)
            rows.append(res)
            print(json.dumps(res), flush=True)
    if args.aggregate:
        agg = work / "aggregate"
        agg.mkdir(exist_ok=True)
        res = run_child(AGGREGATE_CHILD, {"params": params, "work": str(agg), "n": args.n,
                                          "classes": args.classes}, timeout=args.timeout)
        res.update(point="clustering aggregate", n=args.n, classes=args.classes)
        rows.append(res)
        print(json.dumps(res), flush=True)
    paths = make_data(work, args.n, args.classes, args.dim, args.seed) if args.points else {}
    for spec in args.points:
        method, value = spec.split(":")
        section = "kmeans" if method == "nmf" else method
        routes = [("default", {})] + ([("exact", {section: {"max_exact_n": None}})]
                                      if args.exact else [])
        labels = {}
        for route, over in routes:
            tag = f"{method}_{value}_{route}"
            res = run_child(CHILD, {"params": params, "overrides": over, "method": method,
                                    "value": value, "out": str(work / "out"), "tag": tag,
                                    **paths}, timeout=args.timeout)
            res.update(point=spec, run=route, n=args.n, classes=args.classes)
            if res.get("ok"):
                labels[route] = np.load(work / "out" / f"{tag}.npy")
            rows.append(res)
            print(json.dumps(res), flush=True)
        if len(labels) == 2:
            from sklearn.metrics import adjusted_rand_score

            ari = float(adjusted_rand_score(labels["exact"], labels["default"]))
            rows.append({"point": spec, "ari_sample_vs_exact": ari})
            print(f"{spec}: ARI sample route vs exact {ari:.4f}", flush=True)
    out = PROJECT / "benchmarks" / "results" / "grid_large_n.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(out.read_text()) if out.is_file() else {}
    entry = previous.setdefault(f"{args.n}x{args.classes}", {"rows": []})
    entry["machine"] = info
    entry["rows"] = [r for r in entry["rows"] if (r.get("point"), r.get("run"))
                     not in {(x.get("point"), x.get("run")) for x in rows}] + rows
    out.write_text(json.dumps(previous, indent=1))
    print(f"written {out}")


if __name__ == "__main__":
    main()
