"""The `label_issues` and `upper_bound` stages by size: time, peak memory, route, and the price
of the bounded route against the exact one.

    python -m benchmarks.bench_supervised                                # 10^4 and 10^5 x 100
    python -m benchmarks.bench_supervised --points 100000x1000           # for 10^6 x 1000
    python -m benchmarks.bench_supervised --real F.npy --index I.parquet --routes exact auto
    python -m benchmarks.bench_supervised --phases 100000 200000 --classes 1000   # parts vs N

Generated points (``NxC``): ``benchmarks._util.cnn_like_features`` (N x ``--dim`` 1280, C
balanced classes), a seeded ``--noise`` (5%) of the labels moved to another class, PCA-50 of
the standardised features (``clusterlens.clustering.reduction.fit_pca``, as data/pca.npy) and
a class -> group table with cuts g2 .. g(C/2) (4 geometric counts, as data/macro). ``--real``:
real features and their index instead (the labels are moved the same way). Each stage runs as
the pipeline runs it (``stages.<stage>.run`` on params.yaml, ``route`` from ``--routes``) in a
fresh Python process (``benchmarks._util.run_child``), which reports its wall and CPU seconds
and its peak RSS (VmHWM: interpreter, libraries and inputs included). Reported per stage and
route: the route taken, the images the fits saw, precision and recall of the moved labels
(label_issues) or the best configuration's test accuracy (upper_bound). Writes ``--out``.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import _util as u
from benchmarks.bench_grid import fmt_table

CHILD = """
def main(args):
    import os, time
    import numpy as np, pandas as pd, yaml
    os.chdir(args["dir"])
    from clusterlens.config.base import parse_stage
    from stages import label_issues, upper_bound
    stage = {"label_issues": label_issues, "upper_bound": upper_bound}[args["stage"]]
    params = yaml.safe_load(open(args["params"]))
    params[args["stage"]]["route"] = args["route"]
    t0, c0 = time.perf_counter(), time.process_time()
    metrics = stage.run(parse_stage(params, stage.Params))
    out = {"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0,
           "route": metrics["route"]}
    if args["stage"] == "label_issues":
        moved = np.load("moved.npy")
        flagged = pd.read_parquet("data/label_issues.parquet")["is_label_issue"].to_numpy()
        tp = int(flagged[moved].sum())
        out.update(issues=int(flagged.sum()), precision=tp / max(1, int(flagged.sum())),
                   recall=tp / len(moved), oof_accuracy=metrics["oof_accuracy"])
    else:
        out.update(best=metrics["best"]["config"], test_accuracy=metrics["best"]["test_accuracy"],
                   configs={k: v["test_accuracy"] for k, v in metrics["configs"].items()})
    return out
"""


PHASES = """
def main(args):
    import time
    import numpy as np, pandas as pd
    from clusterlens.analysis import upper_bound as ub
    from clusterlens.audit import label_issues as li
    n, k, d = args["n"], args["classes"], args["dim"]
    rng = np.random.default_rng(0)
    y = rng.permutation(np.arange(n) % k)
    X = (rng.standard_normal((k, d)) * 0.5)[y] + rng.standard_normal((n, d))
    X = X.astype(np.float32)  # PCA-like scores, as data/pca.npy
    out, c = {}, time.process_time
    t = c(); oof = li.out_of_fold_probabilities(X, y, alpha=0.3 * d / 1280, folds=5,
                                                max_iter=1000, seed=0, max_train=args["max_train"])
    out["oof_fits_and_predictions"] = c() - t
    t = c(); issues = li.find_issues(y, oof.probabilities); out["cleanlab"] = c() - t
    index = pd.DataFrame({"path": np.arange(n).astype(str), "class": y.astype(str)})
    t = c(); li.issues_table(index, [str(i) for i in range(k)], oof.probabilities, issues)
    out["tables"] = c() - t
    t = c(); np.save(args["tmp"], oof.probabilities); out["write"] = c() - t
    out["label_issues_peak_mb"] = peak_mb()
    tr, te = ub.stratified_split(y, 0.2, 0)
    from clusterlens.config.upper_bound import LogRegConfig
    configs = [LogRegConfig(name="lr_C1", C=1.0), LogRegConfig(name="lr_C01", C=0.1),
               LogRegConfig(name="lr_C01_balanced", C=0.1, class_weight="balanced"),
               LogRegConfig(name="pca_C01", C=0.1, features="pca")]
    cuts = {f"g{g}": np.arange(k) % g for g in (2, 6, 22, 79, 500) if g < k}
    t = c(); fit = ub.fit_bound(configs, X, X, y, tr, te, names=[str(i) for i in range(k)],
                                excluded=[], cuts=cuts, max_iter=1000, seed=0,
                                route="bounded", max_train=args["max_train"])
    out["upper_bound"] = c() - t
    out["upper_bound_iterations"] = {n: r["iterations"] for n, r in fit.results.items()}
    return out
"""


def phases(sizes: list[int], classes: int, dim: int, max_train: int, work: Path) -> list[dict]:
    """CPU seconds of each part of the two bounded routes on Gaussian PCA-like scores (N x
    ``dim``, ``classes`` classes), one fresh process per N; a straight line through the sizes
    extrapolates the parts that grow with N (the fits on the samples do not)."""
    rows = []
    for n in sizes:
        res = u.run_child(PHASES, {"n": n, "classes": classes, "dim": dim,
                                   "max_train": max_train, "tmp": str(work / "p.npy")},
                          cwd=u.PROJECT)
        res["n"] = n
        print(json.dumps(res), flush=True)
        rows.append(res)
    return rows


def write_inputs(folder: Path, X: np.ndarray, y: np.ndarray, noise: float, seed: int = 0) -> None:
    """data/features.npy, fused.npy, index.parquet (labels moved), pca.npy, macro/class_groups.csv
    and moved.npy under ``folder``."""
    import pandas as pd

    from clusterlens.clustering.reduction import fit_pca

    k = int(y.max()) + 1
    rng = np.random.default_rng(seed + 1)
    moved = np.sort(rng.choice(len(y), int(round(noise * len(y))), replace=False))
    given = y.copy()
    given[moved] = (y[moved] + rng.integers(1, k, len(moved))) % k
    u.write_features(folder, X, given)
    np.save(folder / "data" / "pca.npy",
            fit_pca(X, 50, standardize=True, seed=seed).scores.astype(np.float32))
    np.save(folder / "moved.npy", moved)
    names = [f"class{c:03d}" for c in range(k)]
    groups = sorted({int(round(g)) for g in np.geomspace(2, max(2, k // 2), 4)})
    (folder / "data" / "macro").mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"class": names, **{f"g{g}": np.arange(k) % g for g in groups}}).to_csv(
        folder / "data" / "macro" / "class_groups.csv", index=False)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", nargs="+", default=["10000x100", "100000x100"],
                    help="generated NxC points")
    ap.add_argument("--real", help="real features (.npy) instead of generated points")
    ap.add_argument("--index", help="with --real: its index (a parquet with a label column)")
    ap.add_argument("--routes", nargs="+", default=["auto"], choices=["auto", "exact", "bounded"])
    ap.add_argument("--stages", nargs="+", default=["label_issues", "upper_bound"])
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--noise", type=float, default=0.05)
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per run")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--out", default=str(u.PROJECT / "benchmarks" / "results"
                                         / "supervised.json"))
    ap.add_argument("--phases", type=int, nargs="+", default=None,
                    help="instead: time the bounded routes' parts at these N (x --classes, "
                         "50-D), e.g. 100000 200000, to extrapolate to 10^6")
    ap.add_argument("--classes", type=int, default=1000)
    args = ap.parse_args(argv)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_supervised_"))
    info = u.machine()
    if args.phases:
        res = phases(args.phases, args.classes, 50, 20_000, work)
        Path(args.out).write_text(json.dumps({"machine": info, "args": vars(args),
                                              "phases": res}, indent=2) + "\n")
        return
    rows, results = [], []
    points = [args.real] if args.real else args.points
    try:
        for point in points:
            folder = work / Path(point).stem
            t0 = time.perf_counter()
            if args.real:
                X, y = u.load_features(args.real, args.index)
                y = np.unique(y, return_inverse=True)[1]
            else:
                n, k = (int(v) for v in point.split("x"))
                X, y = u.cnn_like_features(n, args.dim, k, seed=0)
            write_inputs(folder, X, y, args.noise)
            shape = (len(y), X.shape[1], int(y.max()) + 1)
            del X
            print(f"{point}: inputs in {time.perf_counter() - t0:.1f} s", flush=True)
            for stage in args.stages:
                for route in args.routes:
                    res = u.run_child(CHILD, {"dir": str(folder), "stage": stage, "route": route,
                                              "params": str(u.PROJECT / "params.yaml")},
                                      timeout=args.timeout, cwd=u.PROJECT)
                    res.update({"point": point, "shape": shape, "stage": stage,
                                "route_asked": route})
                    results.append(res)
                    if not res["ok"]:
                        print(f"{point} {stage} {route}: failed ({res['rc']}): "
                              f"{res.get('error', '')[-800:]}", flush=True)
                        continue
                    r = res["route"]
                    fitted = (r.get("train_images") if stage == "label_issues"
                              else r.get("fit_images"))
                    score = (f"P {res['precision']:.2f} R {res['recall']:.2f} "
                             f"oof acc {res['oof_accuracy']:.3f}" if stage == "label_issues"
                             else f"test acc {res['test_accuracy']:.3f} ({res['best']})")
                    rows.append(["x".join(map(str, shape)), stage, r["route"],
                                 fitted if isinstance(fitted, int) else
                                 (max(fitted) if fitted else "all"),
                                 f"{res['seconds']:.1f}", f"{res['cpu_seconds']:.1f}",
                                 f"{res['peak_rss_mb']:.0f}", score])
                    print(" | ".join(map(str, rows[-1])), flush=True)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(fmt_table(rows, ["N x D x C", "stage", "route", "fit images", "s", "cpu s",
                           "peak MB", "result"]))
    print(f"\n{u.machine_line(info)}; {args.noise:.0%} labels moved")
    u.write_result(args.out, {"machine": info, "args": vars(args), "results": results}, indent=2)


if __name__ == "__main__":
    main()
