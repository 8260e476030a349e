"""Shared fixtures: small generated image trees, paths to the shared real data, and the one
end-to-end DVC repository that every `dvc repro` test works from.

The end-to-end repository is built once per pytest run (``e2e_base``): a git + DVC repository
holding the project's dvc.yaml and params.yaml (small grids, a 21-image generated tree beside
it as ``data.root``), with ``stages/`` and ``clusterlens/`` as symlinks to the project's own
code, after one full `dvc repro`. Under pytest-xdist the first worker that needs it builds it
(a file lock in the run's shared temporary folder) and the others wait and reuse it. Tests never
run DVC in it: ``e2e_copy`` gives each test module its own copy (workspace, DVC cache, run
cache), so tests may change params, delete outputs or kill runs without affecting each other.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

PROJECT = Path(__file__).resolve().parents[1]
SHARED = PROJECT.parent / "shared"
CIFAR = SHARED / "datasets" / "cifar10-test"
MOBILENET_WEIGHTS = SHARED / "weights" / "mobilenet_v2_imagenet.pth"

os.environ.setdefault("MPLBACKEND", "Agg")

# A colour per class: generated images of a class share a hue and a stripe direction.
CLASS_STYLES = [((220, 40, 40), 0), ((40, 200, 60), 1), ((40, 60, 220), 2),
                ((230, 200, 30), 3), ((180, 40, 200), 0), ((30, 200, 200), 1)]


def make_image(cls_i: int, rng: np.random.Generator, size=(40, 32)) -> Image.Image:
    color, stripe = CLASS_STYLES[cls_i % len(CLASS_STYLES)]
    w, h = size
    arr = np.empty((h, w, 3), dtype=np.float32)
    arr[:] = color
    yy, xx = np.mgrid[0:h, 0:w]
    pattern = [(xx // 4) % 2, (yy // 4) % 2, ((xx + yy) // 4) % 2, ((xx - yy) // 4) % 2][stripe]
    arr *= (0.6 + 0.4 * pattern)[..., None]
    arr += rng.normal(0, 12, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), mode="RGB")


def make_tree(root: Path, counts: dict[str, int], seed: int = 0, fmt: str = "png",
              size=(40, 32)) -> Path:
    """root/<class>/<i>.<fmt> with class-specific colour and stripes (+ noise)."""
    rng = np.random.default_rng(seed)
    for ci, (cls, n) in enumerate(counts.items()):
        d = root / cls
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            make_image(ci, rng, size).save(d / f"{i:03d}.{fmt}")
    return root


@pytest.fixture
def image_tree(tmp_path) -> Path:
    return make_tree(tmp_path / "images", {"apple": 6, "berry": 5, "cherry": 4})


@pytest.fixture
def in_tmp_cwd(tmp_path, monkeypatch):
    """Run a stage's run() in an empty working directory (outputs land under tmp_path/work)."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def write_umap(path: str = "data/umap.npz", rows=(), reduced=None) -> None:
    """The `umap` stage's output: the embedded ``rows`` and their ``reduced`` coordinates (none:
    UMAP off, as ``umap.enabled: false`` writes it)."""
    from clusterlens.core.io import save_npz

    rows = np.asarray(rows, dtype=np.int64)
    reduced = np.zeros((len(rows), 10), np.float32) if reduced is None else reduced
    save_npz(path, rows=rows, embedding=np.zeros((len(rows), 2), np.float32),
             reduced=np.asarray(reduced, dtype=np.float32))


def run_point(method: str, value, params: dict, **paths):
    """One clustering grid point in-process, as its stage runs it: the params and the value
    parsed at the stage's door (``stages.grid_point.parse_point``), then its ``run``."""
    from stages import grid_point

    cfg, value = grid_point.parse_point(params, method, value)
    return grid_point.run(method, value, cfg, **paths)


def cuda_visible() -> bool:
    import torch

    return torch.cuda.is_available()


# --------------------------------------------------------------------------- running DVC
def dvc_env() -> dict:
    """The environment `dvc` and git run in: `python` in dvc.yaml is this interpreter."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["DVC_NO_ANALYTICS"] = "1"
    env["GIT_AUTHOR_NAME"] = env["GIT_COMMITTER_NAME"] = "clusterlens-tests"
    env["GIT_AUTHOR_EMAIL"] = env["GIT_COMMITTER_EMAIL"] = "tests@example.invalid"
    env.pop("CLUSTERLENS_HOLD_AFTER_BATCH", None)
    return env


# Ctrl-C as a terminal delivers it, whatever disposition the test's own parent passes down
# (a CI script's `trap '' INT` would leave SIGINT ignored in every child)
TERMINAL_SIGINT = "import signal\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n"


def ctrl_c_when(script: str, args: list[str], marker: bytes, timeout: float
                ) -> tuple[subprocess.Popen, float, str]:
    """Run ``python -c script args`` in a process group of its own, wait until ``marker``
    appears on its stderr (e.g. a progress bar: its workers are busy), wait 1 s more, send
    SIGINT to the whole group (Ctrl-C) and wait for the end (at most ``timeout`` s).

    Returns
    -------
    tuple
        The finished process, the seconds it took to end after the SIGINT, its whole stderr.
    """
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-c", TERMINAL_SIGINT + script, *args],
                            stderr=subprocess.PIPE, start_new_session=True)
    seen = b""
    while marker not in seen:
        chunk = proc.stderr.read1(256)
        assert chunk, seen.decode()
        seen += chunk
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGINT)
    t0 = time.monotonic()
    err = (seen + proc.communicate(timeout=timeout)[1]).decode()
    return proc, time.monotonic() - t0, err


def sh(cwd, *cmd) -> str:
    """Run a command; its stdout + stderr. Fails the test when it exits non-zero."""
    res = subprocess.run(cmd, cwd=cwd, env=dvc_env(), capture_output=True, text=True)
    assert res.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{res.stdout}\n{res.stderr}"
    return res.stdout + res.stderr


def ran_all(output: str) -> list[str]:
    """The stages `dvc repro` ran (or, with --dry, would run), in order."""
    return re.findall(r"Running stage '([^']+)'", output)


def changed(status: str) -> list[str]:
    """The stages `dvc status` lists as changed, in its order."""
    return re.findall(r"^(\S[^\n]*?):[ \t]*$", status, flags=re.M)  # grid/dvc.yaml:kmeans@2


def up_to_date(status: str) -> bool:
    """`dvc status` lists nothing but the always-run `index` stage."""
    return status.strip() in ("index:\n\talways changed", "Data and pipelines are up to date.")


def set_params(repo: Path, **updates) -> dict:
    """Set ``section__key=value`` in repo/params.yaml; returns the previous values (same form)."""
    path = Path(repo) / "params.yaml"
    params = yaml.safe_load(path.read_text())
    before = {}
    for key, value in updates.items():
        section, name = key.split("__")
        before[key] = params[section][name]
        params[section][name] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return before


@contextlib.contextmanager
def params_set(repo: Path, **updates):
    """Params changed for the block, restored afterwards (even when it fails)."""
    before = set_params(repo, **updates)
    try:
        yield
    finally:
        set_params(repo, **before)


# What a repository with the project's pipeline holds besides the code.
PIPELINE_FILES = ["dvc.yaml", "grid/dvc.yaml", "params.yaml", "corrections.csv", ".dvcignore",
                  ".gitignore"]


def grid(stage: str) -> str:
    """A grid stage as DVC names it from the top of the repository: ``kmeans@2`` ->
    ``grid/dvc.yaml:kmeans@2`` (the grid points live in grid/dvc.yaml)."""
    return f"grid/dvc.yaml:{stage}"


def make_repo(path: Path, images: str | Path, **params) -> Path:
    """A git + DVC repository with the project's pipeline (:data:`PIPELINE_FILES`) whose
    ``stages/`` and ``clusterlens/`` are symlinks to the project's code; ``data.root`` =
    ``images`` (outside the repository, as a user's own folder would be)."""
    path.mkdir(parents=True)
    (path / "grid").mkdir()
    for name in PIPELINE_FILES:
        shutil.copy(PROJECT / name, path / name)
    for code in ["stages", "clusterlens"]:
        (path / code).symlink_to(PROJECT / code, target_is_directory=True)
    sh(path, "git", "init", "-q")
    sh(path, "dvc", "init", "-q")
    sh(path, "dvc", "config", "core.analytics", "false")
    set_params(path, data__root=str(images), **params)
    return path


# --------------------------------------------------------------------------- the e2e repository
# Small grids: every method runs, at one or two points each. Captions are off here (the stage
# then writes empty text features; tests/test_pipeline_backbones.py turns them on where it checks them).
E2E_PARAMS = dict(extract__image_size=32, extract__batch_size=8, captions__enabled=False,
                  reduce__n_components=5,
                  kmeans__k=[2, 3], agglomerative__linkage=["ward", "single"],
                  agglomerative__k=[2, 3], gmm__k=[3], dbscan__eps_percentile=[50],
                  dbscan__min_samples=3, hdbscan__min_cluster_size=[5], nmf__k=[3])
E2E_CLASSES = {"apple": 8, "berry": 7, "cherry": 6}  # 21 images, + one broken file
E2E_IMAGES = 21


@dataclass(frozen=True)
class E2E:
    """A built end-to-end folder: ``repo`` (the repository) beside ``photos`` (its data.root,
    given to DVC as the relative path ``../photos``)."""
    folder: Path
    first_repro: str  # output of the full `dvc repro` that built it

    @property
    def repo(self) -> Path:
        return self.folder / "repo"

    @property
    def photos(self) -> Path:
        return self.folder / "photos"


def _build_e2e(folder: Path) -> str:
    images = make_tree(folder / "photos", E2E_CLASSES, fmt="jpg", size=(48, 36))
    (images / "berry" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    repo = make_repo(folder / "repo", "../photos", **E2E_PARAMS)
    return sh(repo, "dvc", "repro")


@contextlib.contextmanager
def _file_lock(path: Path):
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def e2e_base(tmp_path_factory) -> E2E:
    """The end-to-end folder, built once per pytest run (shared by the xdist workers). Read its
    files; run DVC only in an ``e2e_copy``."""
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):  # popen-gwN/: its parent is this run's, shared
        shared = shared.parent
    folder = shared / "e2e-shared"
    log, failed = shared / "e2e-shared.log", shared / "e2e-shared.failed"
    with _file_lock(shared / "e2e-shared.lock"):
        if failed.exists():
            pytest.fail(f"building the end-to-end repository failed:\n{failed.read_text()}")
        if not log.exists():
            try:
                out = _build_e2e(folder)
            except BaseException as exc:
                failed.write_text(str(exc))
                raise
            log.write_text(out)
    return E2E(folder, log.read_text())


def e2e_copy(base: E2E, dest: Path, *, feature_store: bool = True) -> E2E:
    """A private copy of the end-to-end folder (repository with its DVC cache, and photos).

    ``feature_store=False`` leaves out the per-image feature store (``extract`` then computes
    every feature).
    """
    def ignore(folder, names):
        rel = Path(folder).relative_to(base.folder).as_posix()
        skip = {"__pycache__"}
        if rel == "repo/.dvc":
            skip.add("tmp")  # locks and DVC's own state of the original
        if rel == "repo" and not feature_store:
            skip.add(".cache")
        return [n for n in names if n in skip]

    shutil.copytree(base.folder, dest, symlinks=True, ignore=ignore)
    return E2E(dest, base.first_repro)


@pytest.fixture(scope="module")
def e2e_module(e2e_base, tmp_path_factory) -> E2E:
    """A copy of the end-to-end folder for one test module (its tests run in file order)."""
    return e2e_copy(e2e_base, tmp_path_factory.mktemp("e2e") / "copy")


# --------------------------------------------------------------------------- scheduling
# The file that builds the end-to-end repository runs first; every other file that uses it
# runs last, so that under `-n auto --dist loadfile` (with --no-loadscope-reorder) the other
# worker runs in-process tests meanwhile instead of waiting for the build. The last ones go
# longest first (about 70 s each for the first three, 60 for the next two, then 30, 25 and
# 12 s), so that the two workers end close together.
E2E_FIRST = ("test_pipeline.py",)
E2E_LAST = ("test_pipeline_backbones.py", "test_robustness.py",
            "test_pipeline_single_image_class.py", "test_grids.py", "test_interrupt.py",
            "test_report_browser.py", "test_check.py", "test_parallel_grid.py")


def pytest_collection_modifyitems(session, config, items):
    def rank(item):
        name = item.path.name
        if name in E2E_LAST:
            return (2, E2E_LAST.index(name))
        return (0 if name in E2E_FIRST else 1, 0)

    items.sort(key=rank)  # stable: the order inside each file is kept
