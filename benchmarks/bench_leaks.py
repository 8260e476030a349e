"""Train/test leaks (clusterlens/audit/leaks.py) on a real photo folder split into train and test,
with copies of training images planted in the test split.

    python -m benchmarks.bench_leaks --root /work/photos/tf_flowers      # 3,670 photos: about 10 min here
    python -m benchmarks.bench_leaks --root FOLDER --workdir W           # keep the split folder, features
    python -m benchmarks.bench_leaks --root FOLDER --workdir W --features W/features.npy \\
        --index W/index.parquet                                          # reuse them (same --per-kind, --seed)

- **Splitting** (seeded, ``--seed``): the folder (``root/<class>/<image>``) is split per class,
  ``--test-share`` (20%) of each class's images (shuffled) into ``test/<class>/``, the rest into
  ``train/<class>/`` (hard links where possible: the originals keep their bytes).
- **Planting**: ``--per-kind`` (40) copies of each kind, each of a different training image
  (picked at random among all of them), are added to the test split: ``exact`` (the same bytes),
  ``reencoded`` (JPEG quality 60), ``resized`` to 30-50% a side, ``crop`` (2-10% off each side),
  ``mirror``; made as :mod:`benchmarks.bench_duplicates` makes them (``planted_copy``: EXIF
  orientation applied, JPEG quality 75, 85 or 95). A third of each kind's copies (rounded) are
  filed under another class drawn at random, the others under the original's class.
- **Index**: ``build_index`` with ``splits=("train", "test")``, as the `index` stage reads a
  split folder (the split and class columns are checked against the paths).
- **Features and the near-duplicate step**: as ``bench_duplicates`` (Lite0 extraction with the
  `extract` stage's defaults, ``--threads`` torch threads; then ``near_duplicate_step`` with the
  `neighbours` stage's defaults). ``--no-extract`` (random features) is for testing the script.
- **Leaks**: ``leak_pairs``, ``leak_image_columns`` and ``leak_rates`` on the pair table, timed.
- **Scoring**: a planted copy is found when its (original, copy) pair is a leak of a copy kind;
  right kind: ``exact`` for ``exact``, ``resized`` for ``reencoded`` and ``resized``, ``crop``,
  ``mirror``. Label-conflict recall: the share of the copies filed under another class that are
  found with ``label_conflict``. The leaks that were not planted are pairs already in the data
  set that the random split put on both sides (or false pairs): written to ``--pairs-out``
  (benchmarks/results/leaks_unplanted_<folder name>.csv) for a person to look at.
- Output: the tables on stdout; benchmarks/results/leaks.json holds one entry per folder name
  (``runs``), replaced by each run on that folder.
"""
from __future__ import annotations

import argparse
import random
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageOps

from benchmarks import _util as u
from benchmarks import bench_duplicates as bd
from benchmarks.bench_duplicates import (
    IMAGE_SUFFIXES,
    _link_or_copy,
    extract,
    near_duplicate_step,
    planted_copy,
)
from benchmarks.bench_grid import fmt_table

RESULTS = u.PROJECT / "benchmarks" / "results" / "leaks.json"
SPLITS = ("train", "test")
LEAK_KINDS = ("exact", "reencoded", "resized", "crop", "mirror")
RIGHT_KIND = {"exact": "exact", "reencoded": "resized", "resized": "resized", "crop": "crop",
              "mirror": "mirror"}


# --------------------------------------------------------------------------- the folder
def split_and_plant(src: str | Path, dst: str | Path, per_kind: int, seed: int = 0,
                    test_share: float = 0.2) -> pd.DataFrame:
    """Split ``src`` into ``dst/train`` and ``dst/test`` (``dst`` must not exist), then plant
    ``per_kind`` copies of each of :data:`LEAK_KINDS` of distinct training images into the test
    split; returns the truth table (``original``, ``copy``: paths relative to ``dst``; ``kind``;
    ``same_class``; ``quality``: 0 for ``exact``)."""
    src, dst = Path(src), Path(dst)
    rng = random.Random(seed)
    classes = sorted(p.name for p in src.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise SystemExit(f"{src}: needs at least two class folders, found {len(classes)}")
    train = []
    for c in classes:
        files = sorted(f.name for f in (src / c).iterdir() if f.is_file()
                       and not f.name.startswith(".") and f.suffix.lower() in IMAGE_SUFFIXES)
        rng.shuffle(files)
        n_test = round(test_share * len(files))
        for split, names in (("test", files[:n_test]), ("train", files[n_test:])):
            (dst / split / c).mkdir(parents=True, exist_ok=True)
            for name in names:
                _link_or_copy(src / c / name, dst / split / c / name)
        train += [(c, name) for name in sorted(files[n_test:])]
    n_copies = len(LEAK_KINDS) * per_kind
    if n_copies > len(train):
        raise SystemExit(f"{src}: {len(train)} training images, fewer than the {n_copies} to copy")
    picks = rng.sample(train, n_copies)
    n_other = round(per_kind / 3)
    rows = []
    for i, (c, name) in enumerate(picks):
        kind, j = LEAK_KINDS[i // per_kind], i % per_kind
        if j == 0:
            other = [k < n_other for k in range(per_kind)]
            rng.shuffle(other)
        cls = rng.choice([x for x in classes if x != c]) if other[j] else c
        original = f"train/{c}/{name}"
        if kind == "exact":
            rel, quality = f"test/{cls}/leak_{i:04d}_{kind}{Path(name).suffix}", 0
            shutil.copyfile(src / c / name, dst / rel)
        else:
            with Image.open(src / c / name) as im:
                img = (ImageOps.exif_transpose(im) or im).convert("RGB")
            out, quality = planted_copy(img, kind, rng)
            rel = f"test/{cls}/leak_{i:04d}_{kind}.jpg"
            out.save(dst / rel, "JPEG", quality=quality)
        rows.append({"original": original, "copy": rel, "kind": kind,
                     "same_class": not other[j], "quality": quality})
    return pd.DataFrame(rows)


def index_splits(root: Path, workers: int) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """(index with ``split`` and ``class``, rejected, how the split column was made)."""
    from clusterlens.data.index import build_index

    index, rejected, _ = build_index(root, 8, False, workers, splits=SPLITS)
    parts = index["path"].str.split("/")
    bad = (index["split"] != parts.str[0]) | (index["class"] != parts.str[1])
    if bad.any():
        raise SystemExit(f"the index's split/class disagree with the paths, e.g. "
                         f"{index.loc[bad, ['path', 'split', 'class']].head(3).to_dict('records')}")
    return index, rejected, "build_index(splits=...)"


# --------------------------------------------------------------------------- scoring
def score(leak_df: pd.DataFrame, image_cols: pd.DataFrame, index: pd.DataFrame,
          truth: pd.DataFrame) -> tuple[dict, pd.DataFrame]:
    """Recall per planted kind, label-conflict recall, and the leaks that were not planted."""
    from clusterlens.audit import duplicates as dup

    reported = {(a, b): (k, bool(c)) for a, b, k, c in zip(
        leak_df["path_a"], leak_df["path_b"], leak_df["kind"], leak_df["label_conflict"])}
    truth = truth.copy()
    got = [reported.get((o, c), ("", False)) for o, c in zip(truth["original"], truth["copy"])]
    truth["reported_as"] = [k for k, _ in got]
    truth["conflict"] = [c for _, c in got]
    truth["found"] = truth["reported_as"].isin(dup.COPY_KINDS)
    truth["right_kind"] = truth["reported_as"] == truth["kind"].map(RIGHT_KIND)
    row_of = {p: i for i, p in enumerate(index["path"])}
    flags = image_cols["is_leak"].to_numpy()
    truth["flagged"] = [bool(flags[row_of[o]] and flags[row_of[c]]) if o in row_of and c in row_of
                        else False for o, c in zip(truth["original"], truth["copy"])]

    def figures(g: pd.DataFrame) -> dict:
        other = g[~g["same_class"]]
        same = g[g["same_class"] & g["found"]]
        return {"planted": len(g), "found": int(g["found"].sum()),
                "recall": float(g["found"].mean()), "right_kind": float(g["right_kind"].mean()),
                "both_images_flagged": float(g["flagged"].mean()),
                "other_class": len(other), "conflicts_found": int((other["found"]
                                                                   & other["conflict"]).sum()),
                "conflict_recall": float((other["found"] & other["conflict"]).mean())
                if len(other) else None,
                "same_class_reported_as_conflict": int(same["conflict"].sum())}

    recall = {kind: {**figures(g), "reported_as": {k or "not reported": int(v) for k, v in
                                                   g["reported_as"].value_counts().items()}}
              for kind, g in truth.groupby("kind", sort=False)}
    recall["all"] = figures(truth)
    planted = set(zip(truth["original"], truth["copy"]))
    copies_made = set(truth["copy"])
    keep = [(a, b) not in planted for a, b in zip(leak_df["path_a"], leak_df["path_b"])]
    unplanted = leak_df[keep].copy()
    unplanted["planted_copy_in_pair"] = (unplanted["path_a"].isin(copies_made)
                                         | unplanted["path_b"].isin(copies_made))
    copies = unplanted[unplanted["kind"].isin(dup.COPY_KINDS)]
    return {"recall": recall, "unplanted_leaks": len(unplanted),
            "unplanted_copy_leaks": len(copies),
            "unplanted_same_scene_leaks": int((unplanted["kind"] == "same_scene").sum()),
            "unplanted_with_planted_copy": int(unplanted["planted_copy_in_pair"].sum()),
            "unplanted_by_kind": {k: int(v) for k, v in unplanted["kind"].value_counts().items()},
            "unplanted_label_conflicts": int(copies["label_conflict"].sum())}, unplanted


# --------------------------------------------------------------------------- main
def run(args, folder: Path) -> dict:
    from clusterlens.audit import leaks

    root = folder / "splits"
    if root.exists():
        shutil.rmtree(root)
    t0 = time.perf_counter()
    truth = split_and_plant(args.root, root, args.per_kind, args.seed, args.test_share)
    plant_s = time.perf_counter() - t0
    truth.to_csv(folder / "truth.csv", index=False)
    t0 = time.perf_counter()
    index, rejected, how = index_splits(root, args.workers)
    index_s = time.perf_counter() - t0
    missing = sorted((set(truth["original"]) | set(truth["copy"])) - set(index["path"]))
    if missing:
        print(f"warning: {len(missing)} planted paths not in the index (rejected), e.g. {missing[:3]}")
    split_counts = {s: int((index["split"] == s).sum()) for s in SPLITS}
    print(f"{len(index)} images ({split_counts}; {len(truth)} planted copies, {len(rejected)} "
          f"rejected) in {root}; split and planted in {plant_s:.1f} s, indexed in {index_s:.1f} s "
          f"(split column: {how})", flush=True)

    extraction = None
    if args.features:
        X = np.load(args.features, allow_pickle=False)
        saved = pd.read_parquet(args.index)
        if saved["path"].tolist() != index["path"].tolist() or len(X) != len(index):
            raise SystemExit(f"{args.features} / {args.index} do not list this folder's "
                             f"{len(index)} images in index order (same --root, --per-kind, --seed?)")
    elif args.no_extract:
        X = np.random.default_rng(args.seed).standard_normal((len(index), 64)).astype(np.float32)
    else:
        X, extraction = extract(root, index, args.threads)
        print(f"extraction: {extraction['seconds']:.1f} s, {extraction['recipe']}", flush=True)
        if args.workdir:
            np.save(folder / "features.npy", X, allow_pickle=False)
            index.to_parquet(folder / "index.parquet", index=False)

    step = near_duplicate_step(root, index, X, args)
    pairs_df = step.pop("pairs_df")
    t0 = time.perf_counter()
    leak_df = leaks.leak_pairs(pairs_df, index["split"], order=SPLITS)
    image_cols = leaks.leak_image_columns(len(index), pairs_df, index["split"])
    rates = leaks.leak_rates(pairs_df, index["split"], order=SPLITS)
    leaks_s = time.perf_counter() - t0
    scores, unplanted = score(leak_df, image_cols, index, truth)
    pairs_out = Path(args.pairs_out or RESULTS.parent / f"leaks_unplanted_{Path(args.root).name}.csv")
    pairs_out.parent.mkdir(parents=True, exist_ok=True)
    unplanted.to_csv(pairs_out, index=False)
    return {"root": str(args.root), "images": len(index), "splits": split_counts,
            "planted": len(truth), "split_column": how,
            "plant_seconds": plant_s, "index_seconds": index_s,
            "features": ("random (--no-extract)" if args.no_extract and not args.features
                         else args.features or "extracted"),
            "extraction": extraction, "step": step, "leaks_seconds": leaks_s,
            "leak_pairs": len(leak_df), "leaked_images": int(image_cols["is_leak"].sum()),
            "rates": rates, **scores, "unplanted_csv": str(pairs_out)}


def print_tables(res: dict) -> None:
    rows = [[k, r["planted"], r["found"], f"{r['recall']:.3f}", f"{r['right_kind']:.3f}",
             f"{r['conflicts_found']}/{r['other_class']}",
             "-" if r["conflict_recall"] is None else f"{r['conflict_recall']:.3f}",
             ", ".join(f"{a} {b}" for a, b in r.get("reported_as", {}).items())]
            for k, r in res["recall"].items()]
    print(fmt_table(rows, ["planted kind", "planted", "found", "recall", "right kind",
                           "conflicts (other class)", "conflict recall", "reported as"]))
    print(f"leaks not planted: {res['unplanted_leaks']} ({res['unplanted_copy_leaks']} copies, "
          f"{res['unplanted_same_scene_leaks']} same_scene; {res['unplanted_with_planted_copy']} "
          f"hold a planted copy; {res['unplanted_label_conflicts']} copy label conflicts) -> "
          f"{res['unplanted_csv']}")
    print()
    rows = [[k, r["images"], r["images_with_copy"], f"{r['rate']:.4f}", r["copy_pairs"],
             r["label_conflicts"], r["same_scene_pairs"]]
            for k, r in res["rates"]["by_split_pair"].items()]
    o = res["rates"]["overall"]
    rows.append(["overall", o["images"], o["images_with_copy"], f"{o['rate']:.4f}", "", "", ""])
    print(fmt_table(rows, ["splits", "images (later)", "with a copy", "rate", "copy pairs",
                           "label conflicts", "same_scene pairs"]))
    print()
    st, ex = res["step"], res["extraction"]
    s = st["seconds"]
    rows = [["split + plant", f"{res['plant_seconds']:.1f}", ""],
            ["index", f"{res['index_seconds']:.1f}", res["split_column"]],
            ["extraction", f"{ex['seconds']:.1f}" if ex else "-",
             f"{ex['recipe']}, {ex['threads']} torch threads" if ex else res["features"]],
            ["near-duplicate step", f"{st['total_seconds']:.1f}",
             f"k-NN {s['knn']:.1f}, read {s['read']:.1f}, candidates {s['candidates']:.2f}, "
             f"verify {s['verify']:.1f}, groups {s['groups']:.2f}; "
             f"{st['candidates']['pairs']} candidates"],
            ["leak functions", f"{res['leaks_seconds']:.3f}",
             f"{res['leak_pairs']} leak pairs, {res['leaked_images']} images flagged"]]
    print(fmt_table(rows, ["part", "seconds", "notes"]))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", required=True, help="image folder, root/<class>/<image>")
    ap.add_argument("--per-kind", type=int, default=40, help="copies planted per kind")
    ap.add_argument("--test-share", type=float, default=0.2, help="share of each class in test")
    bd.add_step_arguments(ap, "split folder")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--pairs-out", help="CSV of the leaks not planted (default: "
                                        "benchmarks/results/leaks_unplanted_<folder name>.csv)")
    return bd.run_and_save(ap, ap.parse_args(argv), run, print_tables, "bench_leaks_")


if __name__ == "__main__":
    main()
