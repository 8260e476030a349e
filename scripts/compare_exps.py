"""Compare DVC experiments: a readable `dvc exp show`, or a markdown table of representations.

    python scripts/compare_exps.py --show              # changed params + headline, fitted
    python scripts/compare_exps.py                     # one row per experiment (markdown)
    python scripts/compare_exps.py --all-commits --where data.root=/data/cifar1k

``--show`` prints what ``dvc exp show --only-changed`` holds, in an order and a width that fit a
terminal: one row per experiment (and its baseline), the params that differ between the rows
first, then the headline metrics (``metrics/headline.json``) that differ, the most telling first
(:data:`SHOW_ORDER`). Metric columns that do not fit the terminal's width (``COLUMNS``, or
``--width``) are left out and named below the table. ``dvc exp show`` itself puts every param
after every metric and cuts the table at the right edge, where the changed params are.

Without it: one row per successful experiment (and its baseline), with the backbone, the feature
set, the best NMI of each clustering method's grid (from that experiment's own
``metrics/clustering.json``, read from its commit), the selected model and the supervised upper
bound (test accuracy).
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd

METHODS = ["kmeans", "agglomerative", "gmm", "nmf", "dbscan", "hdbscan"]
HEADLINE = "metrics/headline.json"
CLUSTERING = "metrics/clustering.json"
#: --show: the headline metrics in the order they are kept when the width runs out
SHOW_ORDER = ["model", "nmi", "accuracy", "gap", "upper_bound", "ari", "purity", "kmeans_nmi",
              "kmeans_k", "clusters", "noise", "label_issues", "near_duplicates",
              "variance_kept", "images", "classes", "rejected"]


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


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}".rstrip("0").rstrip(".") if value == value else "nan"
    return "-" if value is None else str(value)


def show_table(rows: list[dict], width: int) -> str:
    """The ``--show`` table: experiment, changed params, changed headline metrics, at most
    ``width`` characters wide (0: no limit), and a line naming the metrics left out."""
    def changed(kind: str) -> list[str]:
        keys = list(dict.fromkeys(k for r in rows for k in r[kind]))
        return [k for k in keys if len({_cell(r[kind].get(k)) for r in rows}) > 1]

    names = [r["name"] if r["baseline"] else f"└ {r['name']}" for r in rows]
    params = changed("params")
    metrics = changed("headline")
    metrics = [m for m in SHOW_ORDER if m in metrics] + [m for m in metrics
                                                        if m not in SHOW_ORDER]
    columns = [("Experiment", names)]
    columns += [(k, [_cell(r["params"].get(k)) for r in rows]) for k in params]
    used = sum(max(len(h), *map(len, c)) + 2 for h, c in columns)
    left_out = []
    for key in metrics:
        cells = [_cell(r["headline"].get(key)) for r in rows]
        need = max(len(key), *map(len, cells)) + 2
        if width and used + need > width:
            left_out.append(key)
            continue
        columns.append((key, cells))
        used += need
    widths = [max(len(h), *map(len, c)) for h, c in columns]
    lines = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w)
                       for i, ((h, _), w) in enumerate(zip(columns, widths))).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for j in range(len(rows)):
        lines.append("  ".join(c[j].ljust(w) if i == 0 else c[j].rjust(w)
                               for i, ((_, c), w) in enumerate(zip(columns, widths))).rstrip())
    if not params and not metrics:
        lines.append("(no param or headline metric differs between these rows)")
    if left_out:
        lines.append(f"left out to fit {width} columns: {', '.join(left_out)} "
                     "(--width 0 shows every changed metric)")
    return "\n".join(lines)


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
                    help="the changed params, then the changed headline metrics, one row per "
                         "experiment, fitted to the terminal")
    ap.add_argument("--width", type=int, default=None,
                    help="--show: at most this many characters wide (default: the terminal's "
                         "width; 0: no limit)")
    ap.add_argument("--all-commits", "-A", action="store_true",
                    help="experiments of every commit, not only the current one")
    ap.add_argument("--where", action="append", default=[], help="param=value filter")
    args = ap.parse_args(argv)
    scope = ["--all-commits"] if args.all_commits else []
    if args.show:
        rows = experiments(json.loads(_run("dvc", "exp", "show", "--json", *scope)))
        width = shutil.get_terminal_size().columns if args.width is None else args.width
        sys.stdout.write(show_table(rows, width) + "\n")
        return 0
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
