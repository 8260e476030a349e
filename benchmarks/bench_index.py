"""`index` on a generated folder of N small image files: files/s, peak memory, and resume.

    python -m benchmarks.bench_index --n 100000 --classes 100                 # 10^5
    python -m benchmarks.bench_index --n 1000000 --classes 1000 \\
        --folder /work/scale/files_1e6 --workers 2 --no-resume                 # 10^6, once
    python -m benchmarks.bench_index --n 100000 --generate-only               # the folder only

The folder (``--folder``, default ``/tmp/clusterlens_bench_index/files_<n>``) holds ``n``
seeded 32x32 images in ``classes`` class folders (``c0000/000000123.png``; one file in 10 a
quality-90 JPEG), each a class colour plus seeded noise. It is generated in parallel (one
process per core) and reused when its ``.complete.json`` records the same spec; an interrupted
generation continues where it stopped.

Each timed case runs :func:`clusterlens.data.index.build_index` in a fresh interpreter
(:func:`benchmarks._util.run_child`, which reports the process's own peak RSS; the worker
processes' memory is not in it, each holds one chunk of files):

- ``workers`` 1 and 2 (``--workers``), without the per-file store: files/s, files per
  CPU-second (this process and its workers: the measure a busy machine does not distort), peak
  MB;
- ``store_cold``: 2 workers with an empty store (the cost of writing it);
- ``resume``: the stage run is killed (SIGKILL) once half of the files are in the store (its
  shards counted from the outside), then run again: the second run's seconds and how many
  files it took from the store; its index equals the uninterrupted run's (checked);
- ``store_warm``: a third run over the complete store (every later ``dvc repro`` of an
  unchanged folder).

Results go to ``benchmarks/results/index.json`` (``index_1e6.json`` for 10^6; ``--out``
elsewhere: ``index_2e4.json`` holds a 20,000-file run at 1 and 2 workers).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from benchmarks import _util as u

SIDE = 32
JPEG_EVERY = 10
SPEC_FILE = ".complete.json"


# --------------------------------------------------------------------------- the folder
def _write_files(args: tuple) -> int:
    """Write files ``start .. stop`` of the folder (one worker's share)."""
    from PIL import Image

    folder, start, stop, classes, seed = args
    if _written(Path(folder), stop - 1, classes):  # done by an earlier, interrupted generation
        return stop - start
    for i in range(start, stop):
        cls = i % classes
        rng = np.random.default_rng([seed, i])
        colour = np.array([(cls * 37) % 256, (cls * 91) % 256, (cls * 53) % 256], np.int16)
        noise = rng.integers(-60, 61, size=(SIDE, SIDE, 3), dtype=np.int16)
        arr = np.clip(colour + noise, 0, 255).astype(np.uint8)
        out = Path(folder) / f"c{cls:04d}" / f"{i:09d}"
        img = Image.fromarray(arr, "RGB")
        if i % JPEG_EVERY == 0:
            img.save(out.with_suffix(".jpg"), quality=90)
        else:
            img.save(out.with_suffix(".png"))
    return stop - start


def _written(folder: Path, i: int, classes: int) -> bool:
    """Whether file ``i`` exists whole (a job writes its files in order: its last one tells)."""
    from PIL import Image

    for suffix in (".jpg", ".png"):
        path = folder / f"c{i % classes:04d}" / f"{i:09d}{suffix}"
        if path.is_file():
            try:
                with Image.open(path) as img:
                    img.load()
                return True
            except OSError:
                return False
    return False


def make_folder(folder: Path, n: int, classes: int, seed: int = 0) -> dict:
    """Generate (or reuse) the folder; returns its spec and the generation seconds."""
    spec = {"n": n, "classes": classes, "side": SIDE, "seed": seed, "jpeg_every": JPEG_EVERY}
    marker = folder / SPEC_FILE
    if marker.is_file() and json.loads(marker.read_text()).get("spec") == spec:
        return {**spec, "generated_seconds": None, "reused": True}
    old = folder / ".spec.json"  # what a generation in progress writes
    if folder.exists() and (not old.is_file() or json.loads(old.read_text()) != spec):
        shutil.rmtree(folder)
    for c in range(classes):
        (folder / f"c{c:04d}").mkdir(parents=True, exist_ok=True)
    old.write_text(json.dumps(spec))
    t0 = time.perf_counter()
    step = 5000
    jobs = [(str(folder), s, min(n, s + step), classes, seed) for s in range(0, n, step)]
    with ProcessPoolExecutor(max_workers=len(os.sched_getaffinity(0))) as pool:
        done = sum(pool.map(_write_files, jobs))
    assert done == n
    seconds = time.perf_counter() - t0
    marker.write_text(json.dumps({"spec": spec, "seconds": seconds}) + "\n")
    return {**spec, "generated_seconds": seconds, "reused": False}


# --------------------------------------------------------------------------- timing
BUILD = """
import resource, time
def cpu():
    r = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(x.ru_utime + x.ru_stime for x in r)
def main(args):
    from clusterlens.data.index import build_index
    t0, c0 = time.perf_counter(), cpu()
    index, rejected, info = build_index(args["root"], 8, False, args["workers"],
                                        store=args["store"])
    seconds, cpu_seconds = time.perf_counter() - t0, cpu() - c0  # workers joined: counted
    n = len(index) + len(rejected)
    out = {"seconds": seconds, "files": n, "files_per_s": n / seconds,
           "cpu_seconds": cpu_seconds, "files_per_cpu_s": n / cpu_seconds,
           "inspection": info["inspection"]}
    if args.get("save"):
        index.to_parquet(args["save"])
    return out
"""


def timed_build(root: Path, workers: int, store: str | None, save: str | None = None) -> dict:
    res = u.run_child(BUILD, {"root": str(root), "workers": workers, "store": store,
                              "save": save})
    if not res.get("ok"):
        raise RuntimeError(f"build_index failed: {res.get('error')}")
    return res


KILL_RUN = """
def main(args):
    from clusterlens.data.index import build_index
    build_index(args["root"], 8, False, args["workers"], store=args["store"])
"""


def stored_files(store: Path) -> int:
    """Files in the store's complete shards (their row counts, from the parquet footers)."""
    import pyarrow.parquet as pq

    total = 0
    for p in store.rglob("*.parquet"):
        if not p.name.startswith("."):
            try:
                total += pq.ParquetFile(p).metadata.num_rows
            except OSError:  # being renamed into place
                pass
    return total


def killed_at_half(root: Path, n: int, workers: int, store: Path) -> dict:
    """Run build_index with the store, SIGKILL it once half the files are stored."""
    launcher = u.LAUNCHER.format()
    proc = subprocess.Popen([sys.executable, "-c", launcher,
                             json.dumps({"root": str(root), "workers": workers,
                                         "store": str(store)}), KILL_RUN],
                            env=u.bench_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    t0 = time.perf_counter()
    stored = 0
    while proc.poll() is None:
        time.sleep(0.5)
        stored = stored_files(store)
        if stored >= n // 2:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            break
    return {"killed_after_seconds": time.perf_counter() - t0, "stored_at_kill": stored,
            "rc": proc.returncode}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--folder", type=Path)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--no-resume", action="store_true", help="skip the store and resume cases")
    ap.add_argument("--generate-only", action="store_true")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    folder = args.folder or Path(tempfile.gettempdir()) / "clusterlens_bench_index" / \
        f"files_{args.n}"
    print(f"folder {folder}: generating or reusing {args.n} files", flush=True)
    spec = make_folder(folder, args.n, args.classes)
    print(json.dumps(spec), flush=True)
    if args.generate_only:
        return
    result = {"machine": u.machine(), "folder": str(folder), "spec": spec, "runs": {}}
    print(u.machine_line(result["machine"]), flush=True)
    scratch = Path(tempfile.mkdtemp(prefix="bench_index_"))
    try:
        for w in args.workers:
            r = timed_build(folder, w, None)
            result["runs"][f"workers_{w}"] = r
            print(f"workers {w}: {r['seconds']:.1f} s, {r['files_per_s']:.0f} files/s "
                  f"({r['files_per_cpu_s']:.0f} per CPU-second), peak {r['peak_rss_mb']:.0f} MB",
                  flush=True)
        if not args.no_resume:
            w = max(args.workers)
            ref = scratch / "reference.parquet"
            cold = timed_build(folder, w, str(scratch / "store_cold"), save=str(ref))
            result["runs"]["store_cold"] = cold
            print(f"store, cold: {cold['seconds']:.1f} s, {cold['files_per_s']:.0f} files/s",
                  flush=True)
            store = scratch / "store_resume"
            kill = killed_at_half(folder, args.n, w, store)
            resumed = timed_build(folder, w, str(store), save=str(scratch / "resumed.parquet"))
            import pandas as pd

            same = pd.read_parquet(ref).equals(pd.read_parquet(scratch / "resumed.parquet"))
            result["runs"]["resume"] = {**kill, **resumed, "equal_to_uninterrupted": same}
            print(f"resume: killed after {kill['killed_after_seconds']:.1f} s with "
                  f"{kill['stored_at_kill']} files stored; re-run {resumed['seconds']:.1f} s "
                  f"({resumed['inspection']}); equal to the uninterrupted run: {same}", flush=True)
            warm = timed_build(folder, w, str(store))
            result["runs"]["store_warm"] = warm
            print(f"store, warm: {warm['seconds']:.1f} s, {warm['files_per_s']:.0f} files/s",
                  flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    out = args.out or u.PROJECT / "benchmarks" / "results" / (
        "index_1e6.json" if args.n >= 1_000_000 else "index.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
