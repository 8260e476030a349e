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
