"""The `label_issues` computation at 10^4 and 10^5 images: time and peak memory.

    python -m benchmarks.bench_label_issues                       # 10^4 (raw + pca), 10^5 (pca)
    python -m benchmarks.bench_label_issues --raw-max 100000      # raw at 10^5 too (+3 min)
    python -m benchmarks.bench_label_issues --sizes 2000 --raw-max 2000   # a quick check

Data: ``benchmarks._util.cnn_like_features`` (ReLU'd Gaussian mixture shaped like pooled CNN
features, ``--dim`` 1280, ``--classes`` 10, balanced), then a seeded ``--noise`` (5%) of the
labels moved to another class. Two feature views, as the stage's two routes fit them: ``raw``
(the 1280-D features, standardised on each fold's training part, penalty ``--alpha`` per image:
the exact route) and ``pca`` (PCA-50 scores from
``clusterlens.clustering.reduction.fit_pca``, as data/pca.npy, standardised per fold, penalty
``alpha x 50 / dim``, and with ``--max-train`` a stratified training sample per fold: the
bounded route). ``raw`` runs only up to ``--raw-max`` images (10^4) by default: at 10^5 x 1280
the five folds take minutes and GBs (float64 copies of the matrix per fold); ``--raw-max
100000`` includes it. ``benchmarks.bench_supervised`` times the stages themselves.

Each point runs in a fresh Python process (``benchmarks._util.run_child``, OpenMP/BLAS on one
thread, as the stage's fits run): it loads the .npy files, then times
``clusterlens.audit.label_issues.out_of_fold_probabilities`` (``--folds`` 5, ``max_iter`` 1000) and
``find_issues`` (cleanlab, ``prune_by_noise_rate``, ``self_confidence``). Reported: wall and CPU
seconds of each, the process's peak RSS (VmHWM: interpreter, libraries and inputs included) and
the RSS before the timed calls, and the detection figures (precision / recall of the flagged
images against the moved labels). Writes ``--out`` (benchmarks/results/label_issues.json).
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import _util as u
from benchmarks.bench_grid import fmt_table

CHILD = """
def main(args):
    import time
    import numpy as np
    from clusterlens.audit import label_issues as li

    X = np.load(args["features"], allow_pickle=False)
    given = np.load(args["labels"], allow_pickle=False)
    moved = np.load(args["moved"], allow_pickle=False)
    rss_before = rss_mb()
    t0, c0 = time.perf_counter(), time.process_time()
    oof = li.out_of_fold_probabilities(X, given, alpha=args["alpha"], folds=args["folds"],
                                       max_iter=1000, seed=0, max_train=args["max_train"])
    t1, c1 = time.perf_counter(), time.process_time()
    issues = li.find_issues(given, oof.probabilities)
    t2, c2 = time.perf_counter(), time.process_time()
    truth = np.zeros(len(given), dtype=bool)
    truth[moved] = True
    tp = int((issues.is_issue & truth).sum())
    return {"oof_seconds": t1 - t0, "oof_cpu_seconds": c1 - c0,
            "cleanlab_seconds": t2 - t1, "cleanlab_cpu_seconds": c2 - c1,
            "rss_before_mb": rss_before, "iterations": oof.iterations,
            "converged": oof.converged, "issues": int(issues.is_issue.sum()),
            "precision": tp / max(1, int(issues.is_issue.sum())), "recall": tp / len(moved),
            "noise_rate": issues.noise_rate,
            "oof_accuracy": float(np.mean(oof.probabilities.argmax(1) == given))}
"""


def make_inputs(folder: Path, n: int, dim: int, classes: int, noise: float, raw: bool,
                seed: int = 0) -> dict:
    """Write labels.npy, moved.npy, pca.npy (and raw.npy when ``raw``) for ``n`` images;
    returns their paths and the seconds it took."""
    from clusterlens.clustering.reduction import fit_pca

    t0 = time.perf_counter()
    X, y = u.cnn_like_features(n, dim, classes, seed=seed)
    rng = np.random.default_rng(seed + 1)
    moved = rng.choice(n, int(round(noise * n)), replace=False)
    given = y.copy()
    given[moved] = (y[moved] + rng.integers(1, classes, len(moved))) % classes
    paths = {"labels": folder / "labels.npy", "moved": folder / "moved.npy",
             "pca": folder / "pca.npy"}
    np.save(paths["labels"], given)
    np.save(paths["moved"], moved)
    if raw:
        paths["raw"] = folder / "raw.npy"
        np.save(paths["raw"], X)
    np.save(paths["pca"], fit_pca(X, 50, standardize=True, seed=seed).scores.astype(np.float32))
    del X
    return {k: str(v) for k, v in paths.items()} | {"seconds": time.perf_counter() - t0}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--raw-max", type=int, default=10_000,
                    help="run the raw (1280-D) view only up to this many images")
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--noise", type=float, default=0.05)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--alpha", type=float, default=0.3,
                    help="penalty per image on raw; pca gets alpha x 50 / dim (bounded route)")
    ap.add_argument("--max-train", type=int, default=None,
                    help="pca view: each fold fitted on a stratified sample of this many")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per point")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--out", default=str(u.PROJECT / "benchmarks" / "results"
                                         / "label_issues.json"))
    args = ap.parse_args(argv)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_label_issues_"))
    info = u.machine()
    rows, results = [], []
    try:
        for n in args.sizes:
            folder = work / f"n{n}"
            folder.mkdir(parents=True, exist_ok=True)
            inputs = make_inputs(folder, n, args.dim, args.classes, args.noise,
                                 raw=n <= args.raw_max)
            print(f"n={n}: data generated in {inputs['seconds']:.1f} s", flush=True)
            for view in ("raw", "pca"):
                if view not in inputs:
                    continue
                bounded = view == "pca" and args.max_train is not None
                res = u.run_child(CHILD, {"features": inputs[view], "labels": inputs["labels"],
                                          "moved": inputs["moved"], "folds": args.folds,
                                          "alpha": args.alpha * (50 / args.dim if view == "pca"
                                                                 else 1.0),
                                          "max_train": args.max_train if bounded else None},
                                  timeout=args.timeout, env=u.thread_env(1), cwd=u.PROJECT)
                res.update({"n": n, "view": view,
                            "dim": args.dim if view == "raw" else 50})
                results.append(res)
                if not res["ok"]:
                    print(f"n={n} {view}: failed ({res['rc']}): {res.get('error', '')[-500:]}")
                    continue
                rows.append([n, view, res["dim"], f"{res['oof_seconds']:.1f}",
                             f"{res['oof_cpu_seconds']:.1f}", f"{res['cleanlab_seconds']:.2f}",
                             f"{res['peak_rss_mb']:.0f}", f"{res['rss_before_mb']:.0f}",
                             max(res["iterations"]), res["issues"],
                             f"{res['precision']:.2f}", f"{res['recall']:.2f}",
                             f"{res['oof_accuracy']:.3f}"])
                print(f"n={n} {view}: {res['oof_seconds']:.1f} s, peak "
                      f"{res['peak_rss_mb']:.0f} MB", flush=True)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(fmt_table(rows, ["N", "view", "dim", "oof s", "oof cpu s", "cleanlab s", "peak MB",
                           "MB before", "max iter", "issues", "precision", "recall",
                           "oof acc"]))
    print(f"\n{u.machine_line(info)}; {args.classes} classes, {args.folds} folds, "
          f"{args.noise:.0%} labels moved")
    u.write_result(args.out, {"machine": info, "args": vars(args), "results": results}, indent=2)


if __name__ == "__main__":
    main()
