"""Helpers shared by the benchmark scripts: generated CNN-like features, a matching index table,
temporary git + DVC repositories, timing of subprocesses with their peak RSS, machine facts.

Nothing here is imported by the pipeline; the scripts import it as ``benchmarks._util``.
"""
from __future__ import annotations

import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

PROJECT = Path(__file__).resolve().parents[1]
SHARED = PROJECT.parent / "shared"
CIFAR = SHARED / "datasets" / "cifar10-test"


# --------------------------------------------------------------------------- generated data
def cnn_like_features(n: int, dim: int = 1280, k: int = 10, seed: int = 0,
                      separation: tuple[float, float] = (0.10, 0.35), rank: int = 32,
                      chunk: int = 20_000) -> tuple[np.ndarray, np.ndarray]:
    """(features (n, dim) float32, labels (n,) int64): a ReLU'd Gaussian mixture shaped like
    pooled CNN features. Each class has its own mean on top of a shared offset; every point adds
    a low-rank shared factor (``rank`` latent dims, the correlated part of real features) and
    isotropic noise; ReLU makes it non-negative and about half sparse. Class means are
    ``separation[0]`` .. ``separation[1]`` (evenly spaced over the classes) times a standard
    normal vector, so some classes stand apart and others overlap: at 10,000 x 1280, K-Means
    (K=10) on the pipeline's PCA-50 gets NMI about 0.5 (CIFAR-10 Lite0 features at 64 px: 0.23),
    50 components keep about half the variance (CIFAR-10: 0.48), and 45% of the values are exact
    zeros (CIFAR-10: 59%). Labels are balanced (row i has class i mod k, then a seeded shuffle).
    Deterministic for a given seed; built in chunks so 10^5 x 1280 stays at the size of its
    float32 output."""
    rng = np.random.default_rng(seed)
    offset = rng.uniform(-0.3, 0.5, dim).astype(np.float32)
    sep = np.linspace(separation[0], separation[1], k)[:, None]
    centers = (sep * rng.standard_normal((k, dim))).astype(np.float32)
    mixing = (rng.standard_normal((rank, dim)) / np.sqrt(rank) * 0.6).astype(np.float32)
    scale = rng.uniform(0.3, 1.2, dim).astype(np.float32)  # features differ in spread
    labels = rng.permutation(np.arange(n) % k).astype(np.int64)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        m = stop - start
        z = rng.standard_normal((m, rank), dtype=np.float32)
        x = offset + centers[labels[start:stop]] + z @ mixing
        x += 0.5 * rng.standard_normal((m, dim), dtype=np.float32)
        np.maximum(x * scale, 0.0, out=x)
        out[start:stop] = x
    return out, labels


def index_table(labels: np.ndarray):
    """A data/index.parquet that matches generated features row for row (stage schema)."""
    import pandas as pd

    labels = np.asarray(labels, dtype=np.int64)
    cls = np.array([f"class{c:03d}" for c in range(int(labels.max()) + 1)])[labels]
    paths = [f"{c}/{i:07d}.png" for i, c in enumerate(cls)]
    return pd.DataFrame({
        "path": paths, "class": cls, "label": labels, "width": 32, "height": 32,
        "mode": "RGB", "format": "PNG", "n_frames": 1, "bytes": 0,
        "sha256": [f"{i:064x}" for i in range(len(labels))], "duplicate_of": "",
    })


def write_features(folder: Path, features: np.ndarray, labels: np.ndarray) -> None:
    """data/features.npy + data/index.parquet, as `extract` and `index` would leave them, and
    data/fused.npy as `fusion` leaves it for `fusion.set: visual` (an N x 0 placeholder; `reduce`
    depends on it)."""
    data = Path(folder) / "data"
    data.mkdir(parents=True, exist_ok=True)
    np.save(data / "features.npy", np.ascontiguousarray(features, dtype=np.float32),
            allow_pickle=False)
    np.save(data / "fused.npy", np.zeros((len(features), 0), np.float32), allow_pickle=False)
    index_table(labels).to_parquet(data / "index.parquet", index=False)


def load_features(path: str | os.PathLike, index: str | os.PathLike | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Real features (a .npy) and labels: from ``index`` (a parquet with a ``label`` column),
    else from ``<path stem>_labels.npy`` or ``data/index.parquet`` beside a features.npy."""
    import pandas as pd

    feats = np.load(path, allow_pickle=False).astype(np.float32, copy=False)
    path = Path(path)
    candidates = [Path(index)] if index else [path.with_name(path.stem + "_labels.npy"),
                                              path.with_name("index.parquet"),
                                              path.parent / "data" / "index.parquet"]
    for c in candidates:
        if c.is_file():
            labels = (np.load(c, allow_pickle=False) if c.suffix == ".npy"
                      else pd.read_parquet(c)["label"].to_numpy())
            if len(labels) != len(feats):
                raise SystemExit(f"{c} has {len(labels)} rows, {path} has {len(feats)}")
            return feats, np.asarray(labels, dtype=np.int64)
    raise SystemExit(f"no labels for {path}: pass --index an index.parquet with a label column")


# --------------------------------------------------------------------------- repositories
def bench_env() -> dict:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["DVC_NO_ANALYTICS"] = "1"
    env["GIT_AUTHOR_NAME"] = env["GIT_COMMITTER_NAME"] = "clusterlens-bench"
    env["GIT_AUTHOR_EMAIL"] = env["GIT_COMMITTER_EMAIL"] = "bench@example.invalid"
    env.setdefault("MPLBACKEND", "Agg")
    return env


def thread_env(threads: int) -> dict | None:
    """A child's environment with OpenMP and BLAS limited to ``threads`` (0: library defaults,
    i.e. None: the parent's environment)."""
    if not threads:
        return None
    env = bench_env()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    return env


def sh(cwd, *cmd, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, cwd=cwd, env=bench_env(), capture_output=True, text=True)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed in {cwd}:\n{res.stdout[-3000:]}\n"
                           f"{res.stderr[-3000:]}")
    return res


def make_repo(repo: Path, stages_dir: Path | None = None) -> Path:
    """A fresh git + DVC repository holding copies of dvc.yaml, grid/dvc.yaml, params.yaml,
    .dvcignore and .gitignore, with ``stages/`` and ``clusterlens/`` as symlinks to the project's code
    (``stages_dir``: another stages/ folder, e.g. a patched one, instead)."""
    repo = Path(repo)
    if repo.exists():
        shutil.rmtree(repo)
    (repo / "grid").mkdir(parents=True)
    for name in ["dvc.yaml", "grid/dvc.yaml", "params.yaml", "corrections.csv", ".dvcignore",
                 ".gitignore"]:
        if (PROJECT / name).exists():
            shutil.copy(PROJECT / name, repo / name)
    (repo / "stages").symlink_to(Path(stages_dir or PROJECT / "stages").resolve(),
                                 target_is_directory=True)
    (repo / "clusterlens").symlink_to(PROJECT / "clusterlens", target_is_directory=True)
    sh(repo, "git", "init", "-q")
    sh(repo, "dvc", "init", "-q")
    sh(repo, "dvc", "config", "core.analytics", "false")
    return repo


def set_params(repo: Path, updates: dict) -> None:
    """Dotted keys, e.g. {"gmm.k": []}."""
    import yaml

    path = Path(repo) / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for key, value in updates.items():
        node = params
        *parents, last = key.split(".")
        for p in parents:
            node = node[p]
        node[last] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


# --------------------------------------------------------------------------- measuring
def run_measured(cmd: list[str], cwd=None, env=None, timeout: float | None = None
                 ) -> dict:
    """Run ``cmd`` in a fresh process: wall seconds, exit code, output. (Peak memory: see
    run_child, which has the process report its own.)"""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env or bench_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        return {"seconds": time.perf_counter() - t0, "rc": "timeout", "stdout": out,
                "stderr": err}
    return {"seconds": time.perf_counter() - t0, "rc": proc.returncode, "stdout": out,
            "stderr": err}


def repro_timed(repo: Path, args: list[str], env: dict | None = None,
                short_names: bool = False) -> dict:
    """One ``dvc repro <args>``: total seconds and each stage's seconds, from when its "Running
    stage" line is printed (unbuffered) to the next one (or to the end of the process); so
    DVC's own work for a stage counts. ``short_names``: ``grid/dvc.yaml:kmeans@3`` ->
    ``kmeans@3``. Returns ``seconds``, ``stages`` and ``before_first_stage`` (DVC's start-up)."""
    env = dict(env or bench_env(), PYTHONUNBUFFERED="1")
    cmd = ["dvc", "repro", *args]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)
    marks, tail = [], []
    for line in proc.stdout:
        tail = (tail + [line])[-80:]
        m = re.match(r"Running stage '([^']+)'", line)
        if m:
            name = m.group(1).rsplit(":", 1)[-1] if short_names else m.group(1)
            marks.append((name, time.perf_counter() - t0))
    rc = proc.wait()
    total = time.perf_counter() - t0
    if rc != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed in {repo}:\n{''.join(tail)}")
    stages = {name: (marks[i + 1][1] if i + 1 < len(marks) else total) - start
              for i, (name, start) in enumerate(marks)}
    return {"seconds": total, "stages": stages,
            "before_first_stage": marks[0][1] if marks else None}


def proc_status_mb(field: str) -> float:
    """VmHWM (peak RSS) or VmRSS (current RSS) of this process, in MB, from /proc/self/status.
    VmHWM belongs to the process's own address space, which exec creates afresh; getrusage's
    ru_maxrss does not do for this: Linux carries the forking parent's RSS over into it."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def reset_peak_rss() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux: ``5`` to /proc/self/clear_refs);
    False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def write_result(path: str | os.PathLike, obj, *, indent: int = 1) -> Path:
    """Write a benchmark's results as JSON (folders made), say so, and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=indent, default=str) + "\n", encoding="utf-8")
    print(f"wrote {path}")
    return path


LAUNCHER = """import json, sys, time
from pathlib import Path
def _status(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
args = json.loads(sys.argv[1])
t_start = time.perf_counter()
ns = {{"peak_mb": lambda: _status("VmHWM"), "rss_mb": lambda: _status("VmRSS")}}
exec(compile(sys.argv[2], "<bench>", "exec"), ns)
res = ns["main"](args) or {{}}
res["process_seconds"] = time.perf_counter() - t_start
res["peak_rss_mb"] = _status("VmHWM")
print("@@RESULT@@" + json.dumps(res))
"""


def run_child(code: str, args: dict, timeout: float | None = None, cwd=None,
              env: dict | None = None) -> dict:
    """Run ``code`` (a python snippet defining ``main(args) -> dict``; it may call
    ``peak_mb()`` and ``rss_mb()``) in a fresh interpreter, which reports its own peak RSS
    (VmHWM: that process alone) and main's result as JSON on stdout."""
    launcher = LAUNCHER.format()  # (the doubled braces are literal ones)
    r = run_measured([sys.executable, "-c", launcher, json.dumps(args), code], cwd=cwd,
                     timeout=timeout, env=env)
    if r["rc"] != 0:
        return {"ok": False, "rc": r["rc"], "wall_seconds": r["seconds"],
                "error": (r["stderr"] or "")[-2000:]}
    line = [ln for ln in r["stdout"].splitlines() if ln.startswith("@@RESULT@@")][-1]
    res = json.loads(line[len("@@RESULT@@"):])
    res.update({"ok": True, "wall_seconds": r["seconds"]})
    return res


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


# --------------------------------------------------------------------------- machine
def machine() -> dict:
    info = {"python": platform.python_version(), "platform": platform.platform(),
            "cpus": os.cpu_count()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        flags = next(ln for ln in Path("/proc/cpuinfo").read_text().splitlines()
                     if ln.startswith("flags")).split()
        info["avx512"] = "avx512f" in flags
        mem = next(ln for ln in Path("/proc/meminfo").read_text().splitlines()
                   if ln.startswith("MemTotal"))
        info["ram_gib"] = round(int(mem.split()[1]) / 2**20, 1)
        info["load_avg_at_start"] = os.getloadavg()
    except (OSError, StopIteration):
        pass
    import numpy
    import sklearn

    info["numpy"] = numpy.__version__
    info["sklearn"] = sklearn.__version__
    try:
        from threadpoolctl import threadpool_info

        info["blas"] = sorted({f"{p.get('internal_api')} {p.get('version')} "
                               f"threads={p.get('num_threads')}" for p in threadpool_info()})
    except Exception:  # noqa: BLE001
        pass
    return info


def machine_line(info: dict) -> str:
    return (f"{info.get('cpu', '?')}, {info.get('cpus')} cores, {info.get('ram_gib', '?')} GiB "
            f"RAM, Python {info['python']}, numpy {info['numpy']}, scikit-learn "
            f"{info['sklearn']}; load average at start "
            + "/".join(f"{x:.2f}" for x in info.get("load_avg_at_start", ())))


# --------------------------------------------------------------------------- generated folders
COPY_KINDS = ("exact", "resized", "mirror")          # planted copies of a base image
ODD_KINDS = ("dark", "light", "blurry", "gray", "wide", "tiny", "corrupt")  # tiny, corrupt: rejected


def class_names(classes: int) -> list[str]:
    width = max(2, len(str(classes - 1)))
    return [f"class{c:0{width}d}" for c in range(classes)]


def folder_plan(n: int, classes: int, seed: int = 0, copies: float = 0.01,
                odd: float = 0.005):
    """What a generated folder of ``n`` files holds, one row per file (a DataFrame): ``id``,
    ``path`` (``<class>/<id>[_<kind>].<ext>``), ``cls`` (class number), ``role`` (``image``, a
    kind of :data:`COPY_KINDS` or of :data:`ODD_KINDS`) and ``source`` (the copied image's id,
    else -1). ``round(n * copies)`` planted copies of distinct base images (half ``exact``, a
    quarter each ``resized`` and ``mirror``; a third filed under another class: label
    conflicts), ``round(n * odd)`` odd images (the kinds in turn), the rest base images spread
    evenly over the classes. Deterministic for a given seed."""
    import pandas as pd

    n_copy, n_odd = round(n * copies), round(n * odd)
    n_base = n - n_copy - n_odd
    if n_base < max(classes, n_copy):
        raise ValueError(f"{n} files are too few for {classes} classes and {n_copy} copies")
    rng = np.random.default_rng([seed, 1])
    ids = np.arange(n)
    cls = ids % classes
    role = np.full(n, "image", dtype=object)
    source = np.full(n, -1, dtype=np.int64)
    cp = np.arange(n_base, n_base + n_copy)
    src = rng.choice(n_base, n_copy, replace=False)
    source[cp] = src
    kinds = np.array(COPY_KINDS, dtype=object)[np.array([0, 1, 0, 2])[np.arange(n_copy) % 4]]
    role[cp] = kinds
    other = (np.arange(n_copy) % 3 == 2) & (classes > 1)
    shift = rng.integers(1, max(classes, 2), n_copy)
    cls[cp] = np.where(other, (cls[src] + shift) % classes, cls[src])
    od = np.arange(n_base + n_copy, n)
    role[od] = np.array(ODD_KINDS, dtype=object)[np.arange(n_odd) % len(ODD_KINDS)]
    cls[od] = rng.integers(0, classes, n_odd)
    names = np.array(class_names(classes), dtype=object)
    ext = np.where(np.isin(role, ["gray", "tiny"]), ".png", ".jpg")
    suffix = np.where(role == "image", "", "_" + role.astype(str))
    path = [f"{names[c]}/{i:07d}{s}{e}" for i, c, s, e in zip(ids, cls, suffix, ext)]
    return pd.DataFrame({"id": ids, "path": path, "cls": cls, "role": role.astype(str),
                         "source": source})


def _base_pixels(seed: int, i: int, side: int) -> np.ndarray:
    """A photo-like side x side RGB array: a smooth random 3x3 colour field, two shapes, noise
    (each image its own layout, so perceptual hashes differ as between photos)."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng([seed, 2, i])
    img = Image.fromarray(rng.uniform(30, 225, (3, 3, 3)).astype(np.uint8), "RGB").resize(
        (side, side), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(2):
        x, y = rng.uniform(0, side, 2)
        r = rng.uniform(side / 10, side / 4)
        draw.ellipse((x - r, y - r, x + r, y + r),
                     fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    arr = np.asarray(img).astype(np.int16) + rng.integers(-10, 11, (side, side, 3), np.int16)
    return np.clip(arr, 0, 255).astype(np.uint8)


def render_file(row: tuple, seed: int, side: int) -> bytes:
    """The bytes of one planned file (``row``: id, role, source)."""
    import io

    from PIL import Image, ImageFilter, ImageOps

    i, role, source = row
    base = Image.fromarray(_base_pixels(seed, source if source >= 0 else i, side), "RGB")
    fmt, img = "JPEG", base
    if role == "resized":
        s = np.random.default_rng([seed, 3, i]).uniform(0.5, 0.8)
        img = base.resize((round(side * s), round(side * s)), Image.Resampling.LANCZOS)
    elif role == "mirror":
        img = ImageOps.mirror(base)
    elif role == "dark":
        img = Image.fromarray((np.asarray(base) * 0.08).astype(np.uint8))
    elif role == "light":
        img = Image.fromarray((255 - (255 - np.asarray(base, np.float32)) * 0.08).astype(np.uint8))
    elif role == "blurry":
        img = base.filter(ImageFilter.GaussianBlur(side / 16))
    elif role == "gray":
        fmt, img = "PNG", base.convert("L")
    elif role == "wide":
        img = base.resize((side * 3, max(8, side // 3)), Image.Resampling.BILINEAR)
    elif role == "tiny":
        fmt, img = "PNG", base.resize((6, 6))
    buf = io.BytesIO()
    img.save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {"compress_level": 1}))
    data = buf.getvalue()
    return data[:len(data) // 3] if role == "corrupt" else data


def _write_files(job: tuple) -> int:
    root, rows, seed, side = job
    written = 0
    for path, i, role, source in rows:
        target = Path(root) / path
        if target.exists():  # written whole by an earlier, interrupted run (tmp + rename)
            continue
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_bytes(render_file((i, role, source), seed, side))
        os.replace(tmp, target)
        written += 1
    return written


def make_image_folder(root: Path, n: int, classes: int, *, seed: int = 0, side: int = 64,
                      copies: float = 0.01, odd: float = 0.005, workers: int | None = None,
                      chunk: int = 2000):
    """Write (or finish, or reuse) the generated folder ``root`` planned by :func:`folder_plan`:
    ``side`` x ``side`` JPEGs (PNG for the grayscale and tiny ones) in class folders, written by
    ``workers`` processes (default: every core), each file through a temporary name, so a killed
    run resumes where it stopped. Beside the folder: ``<root>.plan.parquet`` (the plan) and
    ``<root>.json`` (its spec, written last: the folder is complete). A folder with another
    spec is refused. Returns (plan, spec, seconds spent writing: 0 when reused)."""
    import multiprocessing as mp

    import pandas as pd

    root = Path(root)
    spec = {"n": n, "classes": classes, "seed": seed, "side": side, "copies": copies,
            "odd": odd, "generator": "benchmarks._util.make_image_folder v1"}
    done, plan_file = root.with_name(root.name + ".json"), root.with_name(root.name + ".plan.parquet")
    if done.is_file():
        old = json.loads(done.read_text())
        if old != spec:
            raise SystemExit(f"{root} was generated with {old}, not {spec}: use another workdir")
        return pd.read_parquet(plan_file), spec, 0.0
    t0 = time.perf_counter()
    plan = folder_plan(n, classes, seed, copies, odd)
    for name in class_names(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
    rows = list(zip(plan["path"], plan["id"].tolist(), plan["role"], plan["source"].tolist()))
    jobs = [(str(root), rows[s:s + chunk], seed, side) for s in range(0, len(rows), chunk)]
    with mp.get_context("fork").Pool(workers or os.cpu_count()) as pool:
        for _ in pool.imap_unordered(_write_files, jobs):
            pass
    plan.to_parquet(plan_file, index=False)
    done.write_text(json.dumps(spec))
    return plan, spec, time.perf_counter() - t0


def planted_features(index, plan, out: Path, *, dim: int = 1280, seed: int = 0,
                     outliers: float = 0.005, chunk: int = 20_000) -> dict:
    """Write ``out`` (.npy, float32, one row per ``index`` row, in its order), features with the
    class structure of :func:`cnn_like_features` (class means on a shared offset, a low-rank
    shared factor, noise, ReLU) for the index's ``label``; each planted copy (``plan`` role
    ``exact``: the same row as its source, as the same bytes give; ``resized``, ``mirror``: the
    source's row plus 1% noise) and ``round(N * outliers)`` far rows (seeded base images: each
    a sparse non-negative pattern of its own, 10% of the dimensions, far in cosine distance
    from every class and from each other). Written in chunks through a
    memory map, so memory stays at a few chunks. Returns the counts and the outlier paths."""
    rows = index[["path", "label"]].merge(plan[["path", "role", "source", "id"]], on="path",
                                          how="left", validate="one_to_one")
    if rows["role"].isna().any():
        raise ValueError(f"{int(rows['role'].isna().sum())} index rows are not in the plan")
    n, labels = len(rows), rows["label"].to_numpy(np.int64)
    k = int(labels.max()) + 1
    rng = np.random.default_rng([seed, 4])
    offset = rng.uniform(-0.3, 0.5, dim).astype(np.float32)
    sep = np.linspace(0.10, 0.35, k)[:, None]
    centers = (sep * rng.standard_normal((k, dim))).astype(np.float32)
    rank = 32
    mixing = (rng.standard_normal((rank, dim)) / np.sqrt(rank) * 0.6).astype(np.float32)
    scale = rng.uniform(0.3, 1.2, dim).astype(np.float32)
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp.npy")
    X = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, dim))
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        m = stop - start
        x = offset + centers[labels[start:stop]] + rng.standard_normal((m, rank), np.float32) @ mixing
        x += 0.5 * rng.standard_normal((m, dim), dtype=np.float32)
        np.maximum(x * scale, 0.0, out=x)
        X[start:stop] = x
    row_of_id = dict(zip(rows["id"].to_numpy().tolist(), range(n)))
    is_copy = rows["role"].isin(COPY_KINDS).to_numpy()
    copy_rows = np.flatnonzero(is_copy)
    src_rows = np.array([row_of_id[s] for s in rows["source"].to_numpy()[copy_rows]], np.int64)
    for s in range(0, len(copy_rows), chunk):
        c, src = copy_rows[s:s + chunk], src_rows[s:s + chunk]
        x = np.asarray(X[src])
        near = (rows["role"].to_numpy()[c] != "exact")[:, None]
        x = np.where(near, np.maximum(x + 0.01 * scale * rng.standard_normal(x.shape, np.float32),
                                      0), x)
        X[c] = x
    base = np.flatnonzero((rows["role"] == "image").to_numpy() & ~np.isin(
        np.arange(n), src_rows))
    far = np.sort(rng.choice(base, min(len(base), round(n * outliers)), replace=False))
    for s in range(0, len(far), chunk):
        f = far[s:s + chunk]
        x = np.abs(rng.standard_normal((len(f), dim), np.float32)) * 3
        x *= rng.random((len(f), dim)) < 0.1  # a sparse pattern of its own
        X[f] = x * scale
    X.flush()
    del X
    os.replace(tmp, out)
    return {"rows": n, "dim": dim, "classes": k, "copies": int(len(copy_rows)),
            "copies_by_kind": {kd: int((rows["role"] == kd).sum()) for kd in COPY_KINDS},
            "outliers": int(len(far)), "outlier_paths": rows["path"].to_numpy()[far].tolist()}
