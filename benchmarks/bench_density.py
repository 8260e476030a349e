"""DBSCAN and HDBSCAN grid points at large N (clusterlens/clustering/density.py).

    python -m benchmarks.bench_density                       # N = 40,000 (both routes), 10^5, 10^6
    python -m benchmarks.bench_density --sizes 20000 100000  # fewer sizes

Data: seeded Gaussian blobs in 50-D (the PCA scores the grid clusters: ``reduce.n_components``
50), ``--blobs`` (100) centres drawn N(0, 2^2) per dimension, points = centre + N(0, 1), 2% of
them scattered uniformly (noise), rows in random order, saved as .npy.

Every measurement runs in a fresh Python process (``benchmarks._util.run_child``): the features
loaded, then the grid point's call timed (``dbscan_point`` at ``--percentile`` (50) with
``min_samples`` 10; ``hdbscan_point`` with ``min_cluster_size`` ``--mcs`` (25)), with the
stages' default switch point (``--max-exact-n``, ``max_exact_n`` 20,000): every point up to it,
a seeded sample of that many above. At ``--compare`` (twice the switch point: half the points
in the sample) both routes run, the exact one forced (``max_exact_n`` None), and the sampled
labels are compared with the exact ones (ARI over every point, and over the points both call
clustered). Reported: seconds,
peak RSS, clusters, noise share. Writes benchmarks/results/density.json.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from benchmarks import _util as u
from benchmarks.bench_grid import fmt_table

RESULTS = u.PROJECT / "benchmarks" / "results" / "density.json"

CHILD = """
import time
import numpy as np
from clusterlens.clustering import methods

def main(args):
    X = np.load(args["features"])
    t0 = time.perf_counter()
    if args["method"] == "dbscan":
        res = methods.dbscan_point(X, args["percentile"], 0, min_samples=10,
                                   max_exact_n=args["max_exact_n"])
    else:
        res = methods.hdbscan_point(X, args["mcs"], 0, min_samples=None,
                                    max_exact_n=args["max_exact_n"])
    seconds = time.perf_counter() - t0
    (labels, info), = res.points.values()
    np.save(args["labels"], labels)
    return {"seconds": seconds, "route": info.get("route", "exact"),
            "clusters": int(len(set(labels.tolist()) - {-1})),
            "noise": float((labels < 0).mean())}
"""


def make_data(n: int, folder: Path, blobs: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=2.0, size=(blobs, 50))
    X = centres[rng.integers(0, blobs, n)] + rng.normal(size=(n, 50))
    noise = rng.random(n) < 0.02
    X[noise] = rng.uniform(X.min(), X.max(), size=(int(noise.sum()), 50))
    path = folder / f"blobs_{n}.npy"
    np.save(path, X.astype(np.float32))
    return path


def main(argv=None) -> dict:
    from sklearn.metrics import adjusted_rand_score

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[100_000, 1_000_000],
                    help="N above the switch point (none: the comparison only)")
    ap.add_argument("--max-exact-n", type=int, default=20_000,
                    help="the switch point (the stages' default, 20,000)")
    ap.add_argument("--compare", type=int, help="N where both routes run (default: twice the "
                                                 "switch point)")
    ap.add_argument("--blobs", type=int, default=100)
    ap.add_argument("--percentile", type=float, default=50)
    ap.add_argument("--mcs", type=int, default=25)
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    info = u.machine()
    print(u.machine_line(info))
    rows, table = [], []
    switch_n = args.max_exact_n
    args.compare = args.compare or 2 * switch_n
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        plan = [(args.compare, None), (args.compare, switch_n)] + [(n, switch_n)
                                                                   for n in args.sizes]
        for n, switch in plan:
            path = tmp / f"blobs_{n}.npy"
            if not path.is_file():
                make_data(n, tmp, args.blobs)
            for method in ("dbscan", "hdbscan"):
                labels = tmp / f"{method}_{n}_{switch}.npy"
                res = u.run_child(CHILD, {"features": str(path), "method": method,
                                          "percentile": args.percentile, "mcs": args.mcs,
                                          "max_exact_n": switch, "labels": str(labels)},
                                  timeout=args.timeout)
                res.update({"n": n, "method": method, "max_exact_n": switch})
                if res["ok"] and n == args.compare and switch is not None:
                    exact = np.load(tmp / f"{method}_{n}_None.npy")
                    got = np.load(labels)
                    both = (exact >= 0) & (got >= 0)
                    res["ari_vs_exact"] = float(adjusted_rand_score(exact, got))
                    res["both_clustered"] = float(both.mean())
                    res["ari_both_clustered"] = float(adjusted_rand_score(exact[both], got[both]))
                rows.append(res)
                if not res["ok"]:
                    print(f"N={n} {method}: failed: {res.get('error', res.get('rc'))}")
                    continue
                table.append([n, method, res["route"], f"{res['seconds']:.1f}",
                              f"{res['peak_rss_mb']:.0f}", res["clusters"], f"{res['noise']:.3f}",
                              f"{res['ari_vs_exact']:.3f}" if "ari_vs_exact" in res else "",
                              f"{res['ari_both_clustered']:.3f}" if "ari_vs_exact" in res else ""])
                print(fmt_table(table[-1:], HEADER).splitlines()[-1], flush=True)
    print()
    print(fmt_table(table, HEADER))
    out = {"machine": info, "args": vars(args), "rows": rows}
    u.write_result(args.out, out)
    return out


HEADER = ["N", "method", "route", "seconds", "peak RSS MB", "clusters", "noise",
          "ARI vs exact", "ARI (both clustered)"]

if __name__ == "__main__":
    main()
