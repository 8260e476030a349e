"""The `neighbours` stage's near-duplicate step (clusterlens/audit/duplicates.py) on a real photo
folder with planted copies, against Lite0 feature extraction of the same folder.

    python -m benchmarks.bench_duplicates --root /work/photos/tf_flowers      # 3,670 photos: about 9 min here
    python -m benchmarks.bench_duplicates --root /work/photos/caltech101      # 9,145 photos: about 18 min here
    python -m benchmarks.bench_duplicates --root FOLDER --workdir W           # keep the planted folder, features
    python -m benchmarks.bench_duplicates --root FOLDER --workdir W --features W/features.npy \\
        --index W/index.parquet                                               # reuse them (same --per-kind, --seed)

- **Planting** (seeded, ``--seed``): the folder (``root/<class>/<image>``) is copied into a
  temporary folder (hard links where possible: the originals keep their bytes), then
  ``--per-kind`` (50) copies of each kind are added, each of a different original (picked at
  random among all the images): ``resized`` to 30-50% of each side (LANCZOS), ``reencoded`` at
  JPEG quality 60, ``crop`` (2-10% off each side, each side drawn independently), ``mirror``
  (left-right). Every copy is saved as a JPEG (quality 75, 85 or 95 at random, 60 for
  ``reencoded``) of the picture as displayed (EXIF orientation applied, as the library reads
  it); half of each kind's copies are filed under the original's class, half under another class
  drawn at random.
- **Extraction** (the baseline): the planted folder is indexed (``build_index``, as the `index`
  stage), then its features extracted as the `extract` stage does with the default params:
  ``build_for_input("efficientnet_lite0", "DEFAULT", "auto", "auto", ...)`` (224 px centre crop
  for photos), ``extract_features`` on the CPU with ``--threads`` (2) torch threads. Timed: the
  ``extract_features`` call. ``--features``/``--index`` take features saved by an earlier run
  (``--workdir``) instead; there is then no baseline. ``--no-extract`` uses random features:
  for testing the script only (the k-NN candidates are then random pairs; no figure of such a
  run describes the step).
- **Near-duplicate step**, in the same process, each part timed as the stage runs it:
  ``normalise`` + ``nearest_neighbours`` (k = max(``--k``, ``--candidates``): 10), reading the
  working images and perceptual hashes (``working_images``, ``--workers`` (2) processes),
  ``candidate_pairs`` (``--candidates`` nearest neighbours, hash pairs within
  ``--hash-distance`` (10) bits, equal bytes), ``verify`` (``--workers`` processes), then
  ``copy_groups`` and ``pairs_table``. Reported: seconds per part and in all, the ratio of that
  total to the extraction seconds, candidate pairs per image, milliseconds per verified pair
  (``verify`` seconds over the pairs compared on the pixels), the process's peak RSS during the
  step (VmHWM, reset before the step through /proc/self/clear_refs; it includes the interpreter,
  torch and the features already loaded, shown beside it as the RSS before the step), and the
  reported pairs per kind.
- **Scoring**: a planted (original, copy) pair counts as found when it is reported as a copy
  (``exact``, ``resized``, ``crop`` or ``mirror``); it has the right kind when reported as
  ``resized`` (planted ``resized`` and ``reencoded``), ``crop`` or ``mirror``. Copy pairs that
  were not planted are either duplicates already in the data set (Caltech-101's ``Faces_easy``
  holds tight crops of the ``Faces`` photos) or false pairs: they are counted per 1,000 images
  and written to ``--pairs-out`` (benchmarks/results/duplicates_unplanted_<folder name>.csv,
  with the pair table's columns and whether the pair holds a planted copy) for a person to
  look at.
- Output: the tables on stdout; benchmarks/results/duplicates.json holds one entry per folder
  name (``runs``), replaced by each run on that folder.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageOps

from benchmarks import _util as u
from benchmarks.bench_grid import fmt_table

RESULTS = u.PROJECT / "benchmarks" / "results" / "duplicates.json"
PLANTED_KINDS = ("resized", "reencoded", "crop", "mirror")
RIGHT_KIND = {"resized": "resized", "reencoded": "resized", "crop": "crop", "mirror": "mirror"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
COPY_QUALITIES = (75, 85, 95)


# --------------------------------------------------------------------------- planting
def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def planted_copy(img: Image.Image, kind: str, rng: random.Random) -> tuple[Image.Image, int]:
    """A copy of ``img`` (RGB) of a planted kind and the JPEG quality to save it at."""
    w, h = img.size
    if kind == "resized":
        s = rng.uniform(0.3, 0.5)
        out = img.resize((max(8, round(w * s)), max(8, round(h * s))), Image.Resampling.LANCZOS)
    elif kind == "reencoded":
        return img, 60
    elif kind == "crop":
        left, top, right, bottom = (rng.uniform(0.02, 0.10) for _ in range(4))
        out = img.crop((round(w * left), round(h * top), round(w * (1 - right)),
                        round(h * (1 - bottom))))
    elif kind == "mirror":
        out = ImageOps.mirror(img)
    else:
        raise ValueError(f"unknown kind {kind!r}")
    return out, rng.choice(COPY_QUALITIES)


def plant(src: str | Path, dst: str | Path, per_kind: int, seed: int = 0) -> pd.DataFrame:
    """Copy the folder ``src`` to ``dst`` (which must not exist) and add ``per_kind`` copies of
    each of :data:`PLANTED_KINDS`; returns the truth table (``original``, ``copy``: paths
    relative to ``dst``; ``kind``; ``same_class``; ``quality``)."""
    src, dst = Path(src), Path(dst)
    rng = random.Random(seed)
    classes = sorted(p.name for p in src.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise SystemExit(f"{src}: needs at least two class folders, found {len(classes)}")
    files = []
    for c in classes:
        (dst / c).mkdir(parents=True)
        for f in sorted((src / c).iterdir()):
            if f.is_file() and not f.name.startswith("."):
                _link_or_copy(f, dst / c / f.name)
                if f.suffix.lower() in IMAGE_SUFFIXES:
                    files.append((c, f.name))
    n_copies = len(PLANTED_KINDS) * per_kind
    if n_copies > len(files):
        raise SystemExit(f"{src}: {len(files)} images, fewer than the {n_copies} to copy")
    picks = rng.sample(files, n_copies)
    same = [j % 2 == 0 for j in range(per_kind)]  # half of each kind in the original's class
    rows = []
    for i, (c, name) in enumerate(picks):
        kind = PLANTED_KINDS[i // per_kind]
        if i % per_kind == 0:
            rng.shuffle(same)
        with Image.open(src / c / name) as im:
            img = (ImageOps.exif_transpose(im) or im).convert("RGB")
        out, quality = planted_copy(img, kind, rng)
        same_class = same[i % per_kind]
        cls = c if same_class else rng.choice([x for x in classes if x != c])
        rel = f"{cls}/copy_{i:04d}_{kind}.jpg"
        out.save(dst / rel, "JPEG", quality=quality)
        rows.append({"original": f"{c}/{name}", "copy": rel, "kind": kind,
                     "same_class": same_class, "quality": quality})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- measuring
def extract(root: Path, index: pd.DataFrame, threads: int) -> tuple[np.ndarray, dict]:
    """Lite0 features of the indexed images, as the `extract` stage with the default params."""
    import torch

    from clusterlens.features.extraction import extract_features
    from clusterlens.features.preprocessing import build_for_input, index_sides

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    backbone, recipe = build_for_input("efficientnet_lite0", "DEFAULT", "auto", "auto",
                                       *index_sides(index))
    t1 = time.perf_counter()
    feats, _ = extract_features(backbone, root, index["path"].tolist(), recipe.image_size,
                                recipe.resize, device="cpu", progress=True)
    t2 = time.perf_counter()
    return feats, {"seconds": t2 - t1, "build_seconds": t1 - t0, "recipe": recipe.describe(),
                   "image_size": int(recipe.image_size), "threads": threads,
                   "images_per_second": len(index) / (t2 - t1)}


def near_duplicate_step(root: Path, index: pd.DataFrame, X: np.ndarray, args) -> dict:
    """The stage's near-duplicate step, each part timed; returns the timings, the candidates'
    counts and the pair table."""
    from clusterlens.audit import duplicates as dup
    from clusterlens.audit import neighbours as nb

    gc.collect()
    rss_before = u.proc_status_mb("VmRSS")
    was_reset = u.reset_peak_rss()
    paths, classes = index["path"].to_numpy(), index["class"].to_numpy()
    t = {}
    t0 = time.perf_counter()
    Z = nb.normalise(X)
    nn = nb.nearest_neighbours(Z, max(args.k, args.candidates), block_mb=args.block_mb)
    del Z
    t["knn"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    images, hashes = dup.working_images(root, paths, workers=args.workers)
    t["read"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    cands = dup.candidate_pairs(hashes, nn.indices[:, :args.candidates], index["sha256"],
                                hash_k=dup.HASH_K, hash_distance=args.hash_distance)
    t["candidates"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    found = dup.verify(images, cands, workers=args.workers)
    t["verify"] = time.perf_counter() - t0
    del images
    t0 = time.perf_counter()
    groups = dup.copy_groups(len(index), found)
    pairs_df = dup.pairs_table(found, paths, classes, groups)
    t["groups"] = time.perf_counter() - t0
    compared = int((~cands.by_bytes).sum())
    return {
        "seconds": t, "total_seconds": sum(t.values()),
        "candidates": {"pairs": len(cands), "per_image": len(cands) / len(index),
                       "by_hash": int(cands.by_hash.sum()),
                       "by_features": int(cands.by_features.sum()),
                       "by_bytes": int(cands.by_bytes.sum()), "compared": compared},
        "ms_per_pair": 1000 * t["verify"] / max(compared, 1),
        "rss_before_mb": rss_before,
        "peak_rss_mb": u.proc_status_mb("VmHWM"), "peak_rss_reset": was_reset,
        "pairs": dup.summary(pairs_df, groups), "pairs_df": pairs_df}


def score(pairs_df: pd.DataFrame, truth: pd.DataFrame, n_images: int) -> tuple[dict, pd.DataFrame]:
    """Recall per planted kind and the copy pairs that were not planted."""
    from clusterlens.audit import duplicates as dup

    def key(a, b):
        return (a, b) if a < b else (b, a)

    reported = {key(a, b): k for a, b, k in zip(pairs_df["path_a"], pairs_df["path_b"],
                                                 pairs_df["kind"])}
    truth = truth.copy()
    truth["reported_as"] = [reported.get(key(o, c), "") for o, c in zip(truth["original"],
                                                                        truth["copy"])]
    truth["found"] = truth["reported_as"].isin(dup.COPY_KINDS)
    truth["right_kind"] = truth["reported_as"] == truth["kind"].map(RIGHT_KIND)
    recall = {}
    for kind, g in truth.groupby("kind", sort=False):
        recall[kind] = {"planted": len(g), "found": int(g["found"].sum()),
                        "recall": float(g["found"].mean()),
                        "right_kind": float(g["right_kind"].mean()),
                        "recall_same_class": float(g.loc[g["same_class"], "found"].mean()),
                        "recall_other_class": float(g.loc[~g["same_class"], "found"].mean()),
                        "reported_as": {k or "not reported": int(v) for k, v in
                                        g["reported_as"].value_counts().items()}}
    recall["all"] = {"planted": len(truth), "found": int(truth["found"].sum()),
                     "recall": float(truth["found"].mean()),
                     "right_kind": float(truth["right_kind"].mean())}
    planted = {key(o, c) for o, c in zip(truth["original"], truth["copy"])}
    copies_made = set(truth["copy"])
    copies = pairs_df[pairs_df["kind"].isin(dup.COPY_KINDS)]
    keep = [key(a, b) not in planted for a, b in zip(copies["path_a"], copies["path_b"])]
    unplanted = copies[keep].copy()
    unplanted["planted_copy_in_pair"] = (unplanted["path_a"].isin(copies_made)
                                         | unplanted["path_b"].isin(copies_made))
    return {"recall": recall, "unplanted_copy_pairs": len(unplanted),
            "unplanted_per_1000_images": 1000 * len(unplanted) / n_images,
            "unplanted_with_planted_copy": int(unplanted["planted_copy_in_pair"].sum()),
            "unplanted_by_kind": {k: int(v) for k, v in unplanted["kind"].value_counts().items()},
            "unplanted_label_conflicts": int(unplanted["label_conflict"].sum())}, unplanted


# --------------------------------------------------------------------------- main
def run(args, folder: Path) -> dict:
    from clusterlens.data.index import build_index

    planted_root = folder / "planted"
    if planted_root.exists():
        shutil.rmtree(planted_root)
    t0 = time.perf_counter()
    truth = plant(args.root, planted_root, args.per_kind, args.seed)
    plant_s = time.perf_counter() - t0
    truth.to_csv(folder / "truth.csv", index=False)
    t0 = time.perf_counter()
    index, rejected, _ = build_index(planted_root, 8, False, args.workers)
    index_s = time.perf_counter() - t0
    missing = sorted((set(truth["original"]) | set(truth["copy"])) - set(index["path"]))
    if missing:
        print(f"warning: {len(missing)} planted paths not in the index (rejected), e.g. {missing[:3]}")
    print(f"{len(index)} images ({len(truth)} planted copies, {len(rejected)} rejected) in "
          f"{planted_root}; planted in {plant_s:.1f} s, indexed in {index_s:.1f} s", flush=True)

    extraction = None
    if args.features:
        X = np.load(args.features, allow_pickle=False)
        saved = pd.read_parquet(args.index)
        if saved["path"].tolist() != index["path"].tolist() or len(X) != len(index):
            raise SystemExit(f"{args.features} / {args.index} do not list this planted folder's "
                             f"{len(index)} images in index order (same --root, --per-kind, --seed?)")
    elif args.no_extract:
        X = np.random.default_rng(args.seed).standard_normal((len(index), 64)).astype(np.float32)
    else:
        X, extraction = extract(planted_root, index, args.threads)
        extraction["peak_rss_mb"] = u.proc_status_mb("VmHWM")
        print(f"extraction: {extraction['seconds']:.1f} s, {extraction['recipe']}", flush=True)
        if args.workdir:
            np.save(folder / "features.npy", X, allow_pickle=False)
            index.to_parquet(folder / "index.parquet", index=False)

    step = near_duplicate_step(planted_root, index, X, args)
    pairs_df = step.pop("pairs_df")
    scores, unplanted = score(pairs_df, truth, len(index))
    pairs_out = Path(args.pairs_out or RESULTS.parent / f"duplicates_unplanted_{Path(args.root).name}.csv")
    pairs_out.parent.mkdir(parents=True, exist_ok=True)
    unplanted.to_csv(pairs_out, index=False)
    ratio = step["total_seconds"] / extraction["seconds"] if extraction else None
    return {"root": str(args.root), "images": len(index), "planted": len(truth),
            "plant_seconds": plant_s, "index_seconds": index_s,
            "features": ("random (--no-extract)" if args.no_extract and not args.features
                         else args.features or "extracted"),
            "extraction": extraction, "step": step, "ratio_step_to_extraction": ratio,
            **scores, "unplanted_csv": str(pairs_out)}


def print_tables(res: dict) -> None:
    st, ex = res["step"], res["extraction"]
    s = st["seconds"]
    rows = [["extraction (baseline)", f"{ex['seconds']:.1f}" if ex else "-",
             f"{ex['recipe']}, {ex['threads']} torch threads" if ex else res["features"]],
            ["k-NN search", f"{s['knn']:.1f}", ""],
            ["read working images + hashes", f"{s['read']:.1f}", ""],
            ["candidate pairs", f"{s['candidates']:.2f}",
             f"{st['candidates']['pairs']} ({st['candidates']['per_image']:.1f} per image)"],
            ["verify", f"{s['verify']:.1f}", f"{st['ms_per_pair']:.2f} ms per compared pair"],
            ["groups + pair table", f"{s['groups']:.2f}", ""],
            ["near-duplicate step", f"{st['total_seconds']:.1f}",
             f"{res['ratio_step_to_extraction']:.2f} x extraction"
             if res["ratio_step_to_extraction"] else ""]]
    print(fmt_table(rows, ["part", "seconds", "notes"]))
    print(f"peak RSS during the step {st['peak_rss_mb']:.0f} MB (RSS before it "
          f"{st['rss_before_mb']:.0f} MB); pairs: "
          + ", ".join(f"{k.removeprefix('pairs_')} {v}" for k, v in st["pairs"].items()
                      if k.startswith("pairs_")))
    print()
    rows = [[k, r["planted"], r["found"], f"{r['recall']:.3f}", f"{r['right_kind']:.3f}",
             ", ".join(f"{a} {b}" for a, b in r.get("reported_as", {}).items())]
            for k, r in res["recall"].items()]
    print(fmt_table(rows, ["planted kind", "planted", "found", "recall", "right kind",
                           "reported as"]))
    print(f"copy pairs not planted: {res['unplanted_copy_pairs']} "
          f"({res['unplanted_per_1000_images']:.2f} per 1,000 images; "
          f"{res['unplanted_with_planted_copy']} hold a planted copy) -> {res['unplanted_csv']}: "
          "duplicates already in the data set or false pairs, to look at")


def add_step_arguments(ap: argparse.ArgumentParser, folder: str) -> None:
    """The options this script and bench_leaks share: reusing features, ``--no-extract``,
    ``--workdir`` (which keeps ``folder``), the extraction threads and the `neighbours` params."""
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--features", help=f"features of the {folder} from an earlier run")
    ap.add_argument("--index", help="the index.parquet saved with --features")
    ap.add_argument("--no-extract", action="store_true",
                    help="random features instead of extraction: for testing the script only")
    ap.add_argument("--workdir", help=f"keep the {folder}, truth.csv, features.npy and "
                                      "index.parquet here (default: a temporary folder)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for the extraction")
    ap.add_argument("--workers", type=int, default=2, help="neighbours.workers (and index workers)")
    ap.add_argument("--k", type=int, default=10, help="neighbours.k")
    ap.add_argument("--candidates", type=int, default=10, help="neighbours.candidates")
    ap.add_argument("--hash-distance", type=int, default=10, help="neighbours.hash_distance")
    ap.add_argument("--block-mb", type=float, default=256, help="neighbours.block_mb")


def run_and_save(ap: argparse.ArgumentParser, args, run, print_tables, prefix: str) -> dict:
    """Run ``run(args, workdir)`` (in ``--workdir`` or a temporary folder), print its tables
    and save it as ``runs[<folder name>]`` of ``--out``; returns that entry."""
    if bool(args.features) != bool(args.index):
        ap.error("--features and --index go together")
    info = u.machine()
    print(u.machine_line(info))
    if args.workdir:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
        res = run(args, Path(args.workdir))
    else:
        with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
            res = run(args, Path(tmp))
    print()
    print_tables(res)
    out_path = Path(args.out)
    out = json.loads(out_path.read_text()) if out_path.is_file() else {"runs": {}}
    out["runs"][Path(args.root).name] = {"machine": info, "args": vars(args), **res}
    u.write_result(out_path, out)
    return out["runs"][Path(args.root).name]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", required=True, help="image folder, root/<class>/<image>")
    ap.add_argument("--per-kind", type=int, default=50, help="copies planted per kind")
    add_step_arguments(ap, "planted folder")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--pairs-out", help="CSV of the copy pairs not planted (default: "
                                        "benchmarks/results/duplicates_unplanted_<folder name>.csv)")
    return run_and_save(ap, ap.parse_args(argv), run, print_tables, "bench_duplicates_")


if __name__ == "__main__":
    main()
