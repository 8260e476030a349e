"""Compare DVC experiments: a readable `dvc exp show`, or a markdown table of representations.

    python scripts/compare_exps.py --show              # dvc exp show, changed params + headline
    python scripts/compare_exps.py                     # one row per experiment (markdown)
    python scripts/compare_exps.py --all-commits --where data.root=/data/cifar1k

``--show`` runs ``dvc exp show`` with the columns that fit a terminal: the params that differ
between the rows and the headline metrics (``metrics/headline.json``), without the hash column of
every dependency (``--only-changed --drop``, see :data:`SHOW_ARGS`).

Without it: one row per successful experiment (and its baseline), with the backbone, the feature
set, the best NMI of each clustering method's grid (from that experiment's own
``metrics/clustering.json``, read from its commit), the selected model and the supervised upper
bound (test accuracy).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

METHODS = ["kmeans", "agglomerative", "gmm", "nmf", "dbscan", "hdbscan"]
HEADLINE = "metrics/headline.json"
CLUSTERING = "metrics/clustering.json"
#: Dependencies (every column name holding a `/`: data/..., clusterlens/..., stages/...) and the
#: creation time go; the params and headline metrics that differ between rows stay.
SHOW_ARGS = ["--only-changed", "--drop", ".*/|Created"]


def _run(*cmd: str) -> str:
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"error: `{' '.join(cmd)}` failed:\n{res.stderr.strip()}")
    return res.stdout


def flatten(obj, prefix: str = "") -> dict:
    if not isinstance(obj, dict):
        return {prefix: obj}
    out = {}
    for key, value in obj.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def experiments(exp_show: list) -> list[dict]:
    """Baselines and their experiments from ``dvc exp show --json``: rev, name, params (flat),
    headline metrics. Failed and queued experiments are left out."""
    rows = []

    def add(entry, baseline):
        data = entry.get("data") or {}
        if entry.get("error") or not data or not data.get("params"):
            return
        params = {}
        for source in data["params"].values():
            params.update(flatten(source.get("data") or {}))
        metrics = ((data.get("metrics") or {}).get(HEADLINE) or {}).get("data") or {}
        rev = entry.get("rev")
        rows.append({"rev": None if rev == "workspace" else rev,
                     "name": entry.get("name") or ("workspace" if rev == "workspace"
                                                   else (rev or "")[:7]), "baseline": baseline,
                     "params": params, "headline": metrics})

    for base in exp_show:
        add(base, True)
        for exp in base.get("experiments") or []:
            for rev in exp.get("revs") or []:
                add(rev, False)
    return rows


def read_json_at(rev: str | None, path: str) -> dict:
    """A JSON file at a commit (None: the workspace); {} when it is not there."""
    if rev is None:
        p = Path(path)
        text = p.read_text(encoding="utf-8") if p.is_file() else ""
    else:
        res = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True)
        text = res.stdout if res.returncode == 0 else ""
    try:
        return json.loads(text) if text else {}
    except ValueError:
        return {}


def table(rows: list[dict], where: dict[str, str]) -> pd.DataFrame:
    """One line per experiment; ``where`` keeps those whose params equal the given values."""
    out = []
    for row in rows:
        p = row["params"]
        if any(str(p.get(k)) != v for k, v in where.items()):
            continue
        best = read_json_at(row["rev"], CLUSTERING).get("best") or {}
        head = row["headline"]
        line = {"experiment": row["name"], "backbone": p.get("extract.backbone"),
                "feature set": p.get("fusion.set")}
        for m in METHODS:
            nmi = (best.get(m) or {}).get("nmi")
            line[f"{m} NMI"] = None if nmi is None else round(float(nmi), 3)
        line["selected"] = head.get("model")
        ub = head.get("upper_bound")
        line["LR test acc"] = None if ub is None else round(float(ub), 3)
        out.append(line)
    df = pd.DataFrame(out)
    return df.sort_values("kmeans NMI", ascending=False) if len(df) else df


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--show", action="store_true",
                    help="run the readable `dvc exp show` (changed params, headline metrics)")
    ap.add_argument("--all-commits", "-A", action="store_true",
                    help="experiments of every commit, not only the current one")
    ap.add_argument("--where", action="append", default=[], help="param=value filter")
    args = ap.parse_args(argv)
    scope = ["--all-commits"] if args.all_commits else []
    if args.show:
        return subprocess.run(["dvc", "exp", "show", "--no-pager", *scope, *SHOW_ARGS]).returncode
    where = dict(w.split("=", 1) for w in args.where)
    rows = experiments(json.loads(_run("dvc", "exp", "show", "--json", *scope)))
    t = table(rows, where)
    try:
        text = t.to_markdown(index=False)
    except ImportError:  # tabulate (a DVC dependency) missing
        text = t.to_string(index=False)
    sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
