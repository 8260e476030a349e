"""A markdown table comparing experiments (representations) from `dvc exp show`.

    dvc exp show --all-commits --csv > exps.csv
    python scripts/compare_exps.py exps.csv --where data.root=/path/to/images

One row per experiment (successful ones): backbone, feature set, the best NMI of each clustering
method's grid, the selected model, and the supervised upper bound (test accuracy).
"""
from __future__ import annotations

import argparse

import pandas as pd

METHODS = ["kmeans", "agglomerative", "gmm", "nmf", "dbscan", "hdbscan"]


def table(df: pd.DataFrame, where: dict[str, str]) -> pd.DataFrame:
    for key, value in where.items():
        df = df[df[key].astype(str) == value]
    if "State" in df.columns:
        df = df[df["State"].isin(["Success"]) | df["State"].isna()]
    out = pd.DataFrame({"experiment": df["Experiment"], "backbone": df["extract.backbone"],
                        "feature set": df["fusion.set"]})
    for m in METHODS:
        col = f"best.{m}.nmi"
        if col in df.columns:
            out[f"{m} NMI"] = pd.to_numeric(df[col], errors="coerce").round(3)
    out["selected"] = df["selected.method"] + "/" + df["selected.point"]
    out["LR test acc"] = pd.to_numeric(df["best.test_accuracy"], errors="coerce").round(3)
    return out.sort_values("kmeans NMI", ascending=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv")
    ap.add_argument("--where", action="append", default=[], help="param=value filter")
    args = ap.parse_args()
    where = dict(w.split("=", 1) for w in args.where)
    t = table(pd.read_csv(args.csv), where)
    print(t.to_markdown(index=False) if hasattr(t, "to_markdown") else t.to_string(index=False))


if __name__ == "__main__":
    main()
