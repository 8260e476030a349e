"""Incremental extraction by content hash: the `extract` stage's wall time
when 1% new images join a processed folder, against a full run, on the CIFAR-10 test set.

    python -m benchmarks.bench_incremental                  # 10,000 images, params.yaml's
                                                            # extract.* (Lite0, 64 px)
    python -m benchmarks.bench_incremental --size 224       # at 224 px

Every timing is the wall time of the stage's own command (`python -m stages.extract`, the
process DVC runs: interpreter and torch start-up, model build and trace, index lookup, network,
writing data/features.npy) in a temporary project whose params.yaml is the project's with
`data.root` pointing at a folder of copies of the CIFAR-10 JPEGs and `extract.store` at a fresh
folder. Steps:

1. full: all 10,000 images, empty store (what a run from scratch costs);
2. the same folder minus 300 images with another empty store (a processed folder), then three
   times: add 100 images (1%), run `index` and `extract`; each time the stage must extract
   exactly those 100 and write features byte-identical to the full run's rows;
3. rename 100 files and move 100 others to another class folder: nothing is extracted.

The ratio column is the step's time over the full run's (target <= 10%).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from benchmarks import _util as u


def copy_tree(dst: Path, files: list[Path]) -> None:
    """Copies (the index refuses symlinks that leave the data root; the shared data set itself
    is never touched)."""
    for f in files:
        target = dst / f.parent.name / f.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            shutil.copyfile(f, target)


def run_stage(project: Path, module: str) -> float:
    env = u.bench_env()
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", module], cwd=project, env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{module} failed in {project}:\n{proc.stderr[-3000:]}")
    return seconds


def make_project(path: Path, images: Path, store: Path, size: int | None) -> Path:
    """A working folder for the stage commands: params.yaml, and stages/ linked to the
    project's."""
    path.mkdir(parents=True)
    (path / "stages").symlink_to(u.PROJECT / "stages", target_is_directory=True)
    params = yaml.safe_load((u.PROJECT / "params.yaml").read_text())
    params["data"]["root"] = str(images)
    params["extract"]["store"] = str(store)
    if size:
        params["extract"]["image_size"] = size
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def step(project: Path) -> dict:
    t_index = run_stage(project, "stages.index")
    t_extract = run_stage(project, "stages.extract")
    timing = json.loads((project / "logs/extract_timing.json").read_text())
    return {"index_s": t_index, "extract_s": t_extract, "extracted": timing["extracted"],
            "from_store": timing["from_store"], "images": timing["images"]}


def rows_by_path(project: Path) -> dict[str, bytes]:
    import pandas as pd

    index = pd.read_parquet(project / "data/index.parquet")
    feats = np.load(project / "data/features.npy", allow_pickle=False)
    return {f"{lab}/{Path(p).name}": feats[i].tobytes()
            for i, (p, lab) in enumerate(zip(index["path"], index["label"]))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, help="extract.image_size (default: params.yaml's)")
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--keep", action="store_true", help="keep the temporary projects")
    args = ap.parse_args(argv)
    if not u.CIFAR.is_dir():
        print(f"{u.CIFAR} not found: this benchmark needs the shared CIFAR-10 folder")
        return 2
    files = sorted(u.CIFAR.glob("*/*.jpg"))
    rng = np.random.default_rng(0)
    files = [files[i] for i in sorted(rng.choice(len(files), min(args.images, len(files)),
                                                 replace=False))]
    n = len(files)
    work = Path(tempfile.mkdtemp(prefix="clusterlens-bench-incremental-"))
    print(f"# {u.machine_line(u.machine())}")
    print(f"# {n} CIFAR-10 images; temporary projects in {work}; load average "
          f"{os.getloadavg()[0]:.2f}", flush=True)
    rows, ok = [], True

    # 1. full run from scratch
    full_images = work / "full_images"
    copy_tree(full_images, files)
    full = make_project(work / "full", full_images, work / "store_full", args.size)
    s = step(full)
    t_full = s["extract_s"]
    rows.append(["full run (empty store)", n, s["extracted"], s["index_s"], t_full, 1.0])
    ok &= s["extracted"] == n
    reference = rows_by_path(full)

    # 2. a processed folder, then 1% more, three times
    order = rng.permutation(n)
    held = [files[i] for i in order[:300]]
    base = [files[i] for i in sorted(order[300:])]
    images = work / "images"
    copy_tree(images, base)
    proj = make_project(work / "inc", images, work / "store_inc", args.size)
    s = step(proj)
    rows.append([f"processed folder ({len(base)} images, empty store)", len(base),
                 s["extracted"], s["index_s"], s["extract_s"], s["extract_s"] / t_full])
    inc_times = []
    for r in range(3):
        new = held[100 * r:100 * (r + 1)]
        copy_tree(images, new)
        s = step(proj)
        inc_times.append(s["extract_s"])
        same = all(reference[k] == v for k, v in rows_by_path(proj).items())
        ok &= s["extracted"] == len(new) and same
        rows.append([f"add {len(new)} images (1%), run {r + 1}", s["images"], s["extracted"],
                     s["index_s"], s["extract_s"], s["extract_s"] / t_full])
        print(f"  add 100: extracted {s['extracted']}, rows byte-identical to the full run: "
              f"{same}", flush=True)

    # 3. rename and move
    links = sorted(images.glob("*/*.jpg"))
    for p in links[:100]:
        p.rename(p.with_name("renamed_" + p.name))
    classes = sorted(d.name for d in images.iterdir() if d.is_dir())
    for p in links[-100:]:
        other = images / (classes[0] if p.parent.name != classes[0] else classes[1])
        p.rename(other / ("moved_" + p.name))
    s = step(proj)
    ok &= s["extracted"] == 0
    rows.append(["rename 100 + move 100 to another class", s["images"], s["extracted"],
                 s["index_s"], s["extract_s"], s["extract_s"] / t_full])

    print(f"\n{'step':<46}{'images':>8}{'extracted':>11}{'index s':>9}{'extract s':>11}"
          f"{'vs full':>9}")
    for what, imgs, ext, ti, te, ratio in rows:
        print(f"{what:<46}{imgs:>8}{ext:>11}{ti:>9.2f}{te:>11.2f}{ratio:>8.1%}")
    med = statistics.median(inc_times)
    print(f"\nadding 1%: median extract stage {med:.2f} s = {med / t_full:.1%} of the full run "
          f"({t_full:.2f} s); target <= 10%: {'MET' if med / t_full <= 0.10 else 'NOT met'}")
    print(f"checks (only new images extracted, rows byte-identical, rename/move extracts "
          f"nothing): {'all passed' if ok else 'FAILED'}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
