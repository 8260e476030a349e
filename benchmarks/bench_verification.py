"""The near-duplicate verification of the `neighbours` stage at scale, on a generated image
folder, against Lite0 feature extraction of the same images (cost per image).

    python -m benchmarks.bench_verification --n 100000                 # generated under /work/scale
    python -m benchmarks.bench_verification --n 5000 --folder DIR      # anywhere else

- **Folder** (seeded, ``--seed``; generated once, reused when ``--folder`` holds it): ``--n``
  images in 100 classes, 32-64 px a side (JPEG quality 90): a smooth colour field, 3-6 shapes
  (ellipses, rectangles, lines) and pixel noise. Planted among them, ``--copies`` (1%) each of
  ``resized`` (70-90% a side), ``reencoded`` (JPEG quality 60), ``crop`` (4-8% off each side),
  ``mirror`` and ``exact`` (the same bytes), each of a different original, and ``--blank``
  (500) flat images of one grey level (their hashes are all equal: the case
  :func:`clusterlens.audit.duplicates.cap_pairs` bounds). sha256 of every file as the index.
- **Feature neighbours** stand in for the backbone's: each image's 16 x 16 grayscale working
  thumbnail, centred, searched as the stage searches (``find_neighbours``: exact up to 50,000
  images, approximate above). These are look-alikes on the pixels, so more of them pass the
  coarse alignment than with a backbone's neighbours: the verification's work is not
  underestimated. Not timed as part of the verification (the search is the stage's other step).
- **Verification**, timed part by part as the stage runs it (``--workers`` (2) threads):
  ``stored_working_images`` into an empty pixel store (every file decoded once), again into the
  filled store (what a re-run costs), ``candidate_pairs`` (10 feature neighbours, hashes within
  10 bits, searched exactly up to ``--exact-max-n`` (50,000) images, in an inverted file
  above, as the stage does), ``cap_pairs`` (100), ``verify`` (with ``--verify-pairs M``: on a seeded sample of
  M candidate pairs, its time scaled to all of them; the recall of the planted copies is then
  not measured). Peak memory: the process's VmHWM, reset before the
  step, beside its RSS before the step.
- **Kept views** (``--baseline-pairs M``): ``verify`` on the first M compared pairs, in the
  stage's order, without and then with each image's coarse views kept across its pairs
  (``duplicates.CACHED_IMAGES``), in this process: the ratio, and whether the verdicts agree.
- **Extraction** (the target): ``extract_features`` with the `extract` stage's defaults
  (EfficientNet-Lite0, ``build_for_input(..., "auto", "auto")`` at the folder's sides, CPU, fp32,
  ``--threads`` (2) torch threads) on ``--extract-n`` (320) images, after one warm-up batch.
- Output: stdout and benchmarks/results/verification.json (one entry per ``--n``).
"""
from __future__ import annotations

import argparse
import gc
import hashlib
import io
import json
import shutil
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from benchmarks import _util as u

RESULTS = u.PROJECT / "benchmarks" / "results" / "verification.json"
KINDS = ("resized", "reencoded", "crop", "mirror", "exact")


# --------------------------------------------------------------------------- the folder
def _picture(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    w, h = (int(v) for v in rng.integers(32, 65, 2))
    field = Image.fromarray(rng.integers(0, 256, (3, 3, 3), dtype=np.uint8)).resize(
        (w, h), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(field)
    for _ in range(int(rng.integers(3, 7))):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        x1, y1 = x0 + int(rng.integers(4, w // 2 + 5)), y0 + int(rng.integers(4, h // 2 + 5))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = int(rng.integers(0, 3))
        if shape == 0:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        elif shape == 1:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        else:
            draw.line((x0, y0, x1, y1), fill=colour, width=int(rng.integers(1, 4)))
    a = np.asarray(field, dtype=np.int16) + rng.integers(-6, 7, (h, w, 3))
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def _jpeg(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _copy(data: bytes, kind: str, seed: int) -> bytes:
    if kind == "exact":
        return data
    rng = np.random.default_rng(seed)
    img = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = img.size
    if kind == "resized":
        s = rng.uniform(0.7, 0.9)
        return _jpeg(img.resize((round(w * s), round(h * s)), Image.Resampling.LANCZOS))
    if kind == "reencoded":
        return _jpeg(img, 60)
    if kind == "crop":
        f = rng.uniform(0.04, 0.08, 4)
        return _jpeg(img.crop((round(f[0] * w), round(f[1] * h), w - round(f[2] * w),
                               h - round(f[3] * h))))
    return _jpeg(img.transpose(Image.Transpose.FLIP_LEFT_RIGHT))


def _write(job) -> str:
    path, data = job
    Path(path).write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def _original(job) -> str:
    path, seed = job
    return _write((path, _jpeg(_picture(seed))))


def generate(folder: Path, n: int, copies: int, blank: int, seed: int) -> pd.DataFrame:
    """Write the folder (see the module docstring); returns the index (path, class, sha256,
    kind, original: the row a copy was made of, -1 for the others)."""
    if (folder / "index.parquet").is_file():
        return pd.read_parquet(folder / "index.parquet")
    root = folder / "images"
    if root.exists():
        shutil.rmtree(root)
    for c in range(100):
        (root / f"c{c:02d}").mkdir(parents=True)
    n_orig = n - len(KINDS) * copies - blank
    rng = np.random.default_rng(seed)
    paths = [f"c{i % 100:02d}/{i:06d}.jpg" for i in range(n)]
    with Pool(2) as pool:
        sha = pool.map(_original, [(root / paths[i], seed * 10_000_000 + i)
                                   for i in range(n_orig)], chunksize=256)
        sources = rng.choice(n_orig, len(KINDS) * copies, replace=False)
        jobs, kind, original = [], [""] * n, [-1] * n
        for j, src in enumerate(sources):
            row = n_orig + j
            kind[row], original[row] = KINDS[j // copies], int(src)
            jobs.append((root / paths[row], _copy((root / paths[src]).read_bytes(), kind[row],
                                                  seed + j)))
        for b in range(blank):
            row = n_orig + len(sources) + b
            kind[row] = "blank"
            jobs.append((root / paths[row], _jpeg(Image.new("RGB", (48, 40), (128,) * 3))))
        sha += pool.map(_write, jobs, chunksize=64)
    index = pd.DataFrame({"path": paths, "class": [p.split("/")[0] for p in paths],
                          "sha256": sha, "kind": kind, "original": original})
    index.to_parquet(folder / "index.parquet", index=False)
    return index


# --------------------------------------------------------------------------- the step
def thumbnail_features(images) -> np.ndarray:
    X = np.empty((len(images), 256), dtype=np.float32)
    for i in range(len(images)):
        g = Image.fromarray(images[i][0]).resize((16, 16), Image.Resampling.BOX)
        X[i] = np.asarray(g, dtype=np.float32).ravel()
    X -= X.mean(axis=1, keepdims=True)
    X[np.abs(X).max(axis=1) == 0, 0] = 1.0   # a flat image: any direction, all the same
    return X


def verification(root: Path, index: pd.DataFrame, workers: int, store: Path,
                 verify_pairs: int | None, exact_max_n: int | None,
                 baseline_pairs: int | None = None) -> dict:
    from clusterlens.audit import duplicates as dup
    from clusterlens.audit import neighbours as nb
    from clusterlens.core.sampling import sample_rows

    paths, sha = index["path"].tolist(), index["sha256"].tolist()
    gc.collect()
    rss_before = u.proc_status_mb("VmRSS")
    reset = u.reset_peak_rss()
    t = {}
    t0 = time.perf_counter()
    images, decoded = dup.stored_working_images(root, paths, sha, store=store, workers=workers)
    t["read_and_store"] = time.perf_counter() - t0
    images.close()
    t0 = time.perf_counter()
    images, again = dup.stored_working_images(root, paths, sha, store=store, workers=workers)
    t["from_store"] = time.perf_counter() - t0
    peak_read = u.proc_status_mb("VmHWM")
    t0 = time.perf_counter()
    nn, how = nb.find_neighbours(nb.normalise(thumbnail_features(images)), 10, seed=0)
    t_features = time.perf_counter() - t0
    gc.collect()
    u.reset_peak_rss()
    rss_verify = u.proc_status_mb("VmRSS")
    t0 = time.perf_counter()
    cands = dup.candidate_pairs(images.hashes, nn.indices, sha, hash_k=dup.HASH_K,
                                hash_distance=10, exact_max_n=exact_max_n, seed=0)
    t["candidates"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    capped, cap = dup.cap_pairs(cands, dup.MAX_PAIRS_PER_IMAGE)
    t["cap"] = time.perf_counter() - t0
    n = len(index)
    compared = int((~capped.by_bytes).sum())
    timed = capped
    if verify_pairs and verify_pairs < len(capped):   # a seeded sample, the time scaled up
        rows = sample_rows(len(capped), verify_pairs, 0)
        timed = dup.Candidates(capped.pairs[rows], capped.by_hash[rows],
                               capped.by_features[rows], capped.by_bytes[rows])
    t0 = time.perf_counter()
    found = dup.verify(images, timed, workers=workers)
    t["verify"] = time.perf_counter() - t0
    timed_compared = int((~timed.by_bytes).sum())
    t["verify"] *= compared / max(timed_compared, 1)
    kept = kept_views_ratio(images, capped, baseline_pairs, workers) if baseline_pairs else None
    images.close()
    step = t["read_and_store"] + t["candidates"] + t["cap"] + t["verify"]
    return {"seconds": t, "decoded": decoded, "decoded_again": again,
            "ms_per_image": 1000 * step / n,
            "ms_per_image_store_filled": 1000 * (step - t["read_and_store"] + t["from_store"]) / n,
            "ms_per_compared_pair": 1000 * t["verify"] / max(compared, 1),
            "verify_timed_on": {"pairs_compared": timed_compared, "of": compared},
            "feature_stand_in": {"seconds": t_features, "search": how},
            "candidates": {"pairs": len(cands), "per_image": len(cands) / n,
                           "by_hash": int(cands.by_hash.sum()),
                           "by_features": int(cands.by_features.sum()),
                           "by_bytes": int(cands.by_bytes.sum()),
                           "max_per_image": int(np.bincount(cands.pairs.ravel(), minlength=n).max()),
                           "compared_after_cap": compared, "per_image_after_cap": len(capped) / n,
                           "cap": cap},
            "memory_mb": {"rss_before": rss_before, "peak_reading": peak_read,
                          "rss_before_verify": rss_verify,
                          "peak_verify": u.proc_status_mb("VmHWM"), "reset": reset},
            "found": found, "store_mb": sum(f.stat().st_size for f in store.rglob("*")) / 2**20,
            "kept_views": kept}


def kept_views_ratio(images, capped, pairs: int, workers: int) -> dict:
    """``verify`` on the first ``pairs`` compared pairs in the stage's order, without and with
    each image's coarse views kept across its pairs (``duplicates.CACHED_IMAGES``), in this
    process: the seconds, their ratio, and whether the verdicts are the same."""
    from clusterlens.audit import duplicates as dup

    rows = np.flatnonzero(~capped.by_bytes)[:pairs]
    part = dup.Candidates(capped.pairs[rows], capped.by_hash[rows], capped.by_features[rows],
                          capped.by_bytes[rows])
    out, found = {"pairs": len(rows)}, {}
    for name, cached in (("without", 0), ("with", dup.CACHED_IMAGES)):
        default, dup.CACHED_IMAGES = dup.CACHED_IMAGES, cached
        try:
            t0 = time.perf_counter()
            found[name] = dup.verify(images, part, workers=workers)
            out[f"seconds_{name}"] = time.perf_counter() - t0
        finally:
            dup.CACHED_IMAGES = default
    out["ratio"] = out["seconds_without"] / out["seconds_with"]
    out["same_verdicts"] = all(np.array_equal(getattr(found["with"], f), getattr(found["without"], f))
                               for f in ("row_a", "row_b", "kind", "score"))
    return out


def recall(found, index: pd.DataFrame) -> dict:
    from clusterlens.audit import duplicates as dup

    copies = found.copies()
    got = {(int(a), int(b)): k for a, b, k in zip(found.row_a[copies], found.row_b[copies],
                                                   found.kind[copies])}
    out = {}
    for kind in KINDS:
        rows = np.flatnonzero(index["kind"].to_numpy() == kind)
        pairs = [tuple(sorted((int(index["original"].iat[r]), int(r)))) for r in rows]
        out[kind] = float(np.mean([p in got for p in pairs])) if pairs else float("nan")
    out["pairs_per_kind"] = {k: int((found.kind == k).sum()) for k in dup.KINDS}
    return out


def extraction(root: Path, index: pd.DataFrame, n: int, threads: int) -> dict:
    import torch

    from clusterlens.features.extraction import extract_features
    from clusterlens.features.preprocessing import build_for_input

    torch.set_num_threads(threads)
    rows = np.flatnonzero(index["kind"].to_numpy() == "")[:n + 64]
    sides = [Image.open(root / index["path"].iat[r]).size for r in rows]
    backbone, recipe = build_for_input("efficientnet_lite0", "DEFAULT", "auto", "auto",
                                       [w for w, _ in sides], [h for _, h in sides])
    paths = index["path"].to_numpy()[rows].tolist()
    extract_features(backbone, root, paths[:64], recipe.image_size, recipe.resize,
                     device="cpu", progress=False)                       # warm-up (jit trace)
    t0 = time.perf_counter()
    extract_features(backbone, root, paths[64:], recipe.image_size, recipe.resize,
                     device="cpu", progress=False)
    s = time.perf_counter() - t0
    return {"images": len(paths) - 64, "seconds": s, "ms_per_image": 1000 * s / (len(paths) - 64),
            "recipe": recipe.describe(), "threads": threads}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--folder", type=Path, default=None)
    ap.add_argument("--copies", type=int, default=None, help="per kind (default: 1%% of n)")
    ap.add_argument("--blank", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--extract-n", type=int, default=320)
    ap.add_argument("--exact-max-n", type=int, default=50_000,
                    help="hash search: exact up to this many images (the stage's default); 0: always")
    ap.add_argument("--verify-pairs", type=int, default=None,
                    help="time verify on this many candidate pairs (seeded sample), scaled up")
    ap.add_argument("--baseline-pairs", type=int, default=None,
                    help="also verify the first M compared pairs without and with the coarse "
                         "views kept across pairs (same process): the ratio")
    args = ap.parse_args(argv)
    copies = args.copies if args.copies is not None else max(1, args.n // 100)
    folder = args.folder or Path(f"/work/scale/verification_n{args.n}_s{args.seed}")
    t0 = time.perf_counter()
    index = generate(folder, args.n, copies, args.blank, args.seed)
    print(f"folder {folder}: {len(index)} images ({time.perf_counter() - t0:.0f} s)", flush=True)
    root = folder / "images"
    with tempfile.TemporaryDirectory(dir=folder, prefix="pixels-") as store:
        res = verification(root, index, args.workers, Path(store), args.verify_pairs,
                           args.exact_max_n or None, args.baseline_pairs)
    found = res.pop("found")
    res["recall"] = recall(found, index) if args.verify_pairs is None else "not measured (sample)"
    res["extraction"] = extraction(root, index, args.extract_n, args.threads)
    res["ratio_to_extraction"] = res["ms_per_image"] / res["extraction"]["ms_per_image"]
    res.update({"n": len(index), "copies_per_kind": copies, "blank": args.blank,
                "exact_max_n": args.exact_max_n,
                "machine": u.machine()})
    print(json.dumps(res, indent=2, default=float))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    runs = json.loads(RESULTS.read_text()).get("runs", {}) if RESULTS.is_file() else {}
    runs[str(len(index))] = res
    RESULTS.write_text(json.dumps({"runs": runs}, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
