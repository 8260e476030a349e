"""Issue 6, item 3: killing `dvc repro` mid-stage (SIGINT, as Ctrl-C sends it to the whole
process group, and SIGKILL) leaves no partial output that DVC could record, and running
`dvc repro` again gives byte-identical outputs to an uninterrupted run.

Each case runs in its own temporary git + DVC repository (as tests/test_pipeline.py does) on the
same generated image tree, outside the repositories. The kill lands while `extract` is in its
feature loop: shortly after the stage's progress bar appears (a test hook,
CLUSTERLENS_TEST_BATCH_DELAY, keeps the loop a few seconds long).
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import PROJECT, make_tree
from tests.test_pipeline import _env, set_params, sh
from tests.test_pipeline import ran_all as ran

pytestmark = pytest.mark.slow

TIMING = "logs/extract_timing.json"
DATA_HALF = ["index", "backbone", "extract", "captions", "fusion", "reduce"]


# --------------------------------------------------------------------------- temp repositories
def make_repo(path: Path, images: Path, **params) -> Path:
    """A git + DVC repository with the project's pipeline, stages and params; data.root outside."""
    path.mkdir(parents=True)
    for name in ["dvc.yaml", "params.yaml", ".dvcignore", ".gitignore"]:
        shutil.copy(PROJECT / name, path / name)
    shutil.copytree(PROJECT / "stages", path / "stages",
                    ignore=shutil.ignore_patterns("__pycache__"))
    sh(path, "git", "init", "-q")
    sh(path, "dvc", "init", "-q")
    sh(path, "dvc", "config", "core.analytics", "false")
    set_params(path, data__root=str(images), **params)
    return path


# Files that state the throughput of the run, so differ between runs by design.
CAPTIONS_TIMING = "logs/captions_timing.json"
VOLATILE = (TIMING, CAPTIONS_TIMING, "report/report.md", "report/report.html")


def lock_outs(repo: Path, skip=VOLATILE) -> dict:
    """dvc.lock as {stage: {deps, params, outs}} with the timing file (and the report that
    quotes it) left out."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    for stage in lock.values():
        for key in ("outs", "deps"):
            stage[key] = [o for o in stage.get(key, []) if o["path"] not in skip]
    return lock


def output_files(repo: Path, stages: list[str],
                 skip=(TIMING, CAPTIONS_TIMING)) -> dict[str, bytes]:
    """Every file the given stages declare as outputs (folders expanded), by relative path."""
    pipeline = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    files = {}
    for name in stages:
        st = pipeline[name]
        declared = []
        for key in ("outs", "metrics", "plots"):
            declared += [next(iter(o)) if isinstance(o, dict) else o for o in st.get(key, [])]
        for rel in declared:
            if rel in skip:
                continue
            p = repo / rel
            assert p.exists(), f"{rel} missing"
            for f in ([p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())):
                files[f.relative_to(repo).as_posix()] = f.read_bytes()
    return files


def leftover_temp_files(repo: Path) -> list[str]:
    """Temporary files of atomic writes (`.<name>.<random>.tmp`) anywhere outside .dvc/.git."""
    return sorted(p.relative_to(repo).as_posix() for p in repo.rglob(".*.tmp")
                  if ".dvc" not in p.relative_to(repo).parts[:1])


# --------------------------------------------------------------------------- fixtures
PARAMS = dict(extract__image_size=64, extract__batch_size=2, reduce__n_components=5,
              captions__enabled=False)  # the text model is not what this test is about
# The traced model finishes the 85 images in 0.3 s at 64 px, faster than a kill can land, so the
# stage's test hook sleeps this long after each of its 43 batches (the loop takes >= 4 s): the
# signal always lands mid-loop. The uninterrupted reference run does not sleep.
BATCH_DELAY = "0.1"


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    base = tmp_path_factory.mktemp("interrupt")
    root = make_tree(base / "photos", {"apple": 30, "berry": 30, "cherry": 25}, fmt="jpg",
                     size=(48, 36))
    (root / "berry" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return root


@pytest.fixture(scope="module")
def reference(images, tmp_path_factory):
    """An uninterrupted `dvc repro reduce` (the data half of the pipeline)."""
    repo = make_repo(tmp_path_factory.mktemp("ref") / "repo", images, **PARAMS)
    out = sh(repo, "dvc", "repro", "reduce")
    assert ran(out) == ["digits", *DATA_HALF]  # `index` is ordered after the demo data
    return {"files": output_files(repo, DATA_HALF), "lock": lock_outs(repo)}


# --------------------------------------------------------------------------- killing
PROGRESS = re.compile(r"extract efficientnet_lite0:\s+(\d+)%")


def start_and_kill_mid_extract(repo: Path, sig: int, delay: float = 0.4,
                               timeout: float = 150) -> str:
    """Start `dvc repro reduce` in its own process group; ``delay`` seconds after `extract`'s
    feature loop starts (its progress bar appears), send ``sig`` to the whole group (what Ctrl-C
    does with SIGINT). Returns the output; the caller checks the stage had not finished."""
    env = {**_env(), "CLUSTERLENS_TEST_BATCH_DELAY": BATCH_DELAY}
    proc = subprocess.Popen(["dvc", "repro", "reduce"], cwd=repo, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    chunks: list[bytes] = []

    def pump():
        while data := os.read(proc.stdout.fileno(), 4096):
            chunks.append(data)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    killed = False
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            text = b"".join(chunks).decode(errors="replace")
            if any(int(p) < 100 for p in PROGRESS.findall(text)):  # the loop has started
                time.sleep(delay)
                os.killpg(proc.pid, sig)
                killed = True
                break
            time.sleep(0.05)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        reader.join(timeout=10)
    output = b"".join(chunks).decode(errors="replace")
    assert killed, f"extract's feature loop never started:\n{output}"
    return output


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_killed_mid_extract_then_rerun_equals_an_uninterrupted_run(sig, images, reference,
                                                                   tmp_path):
    repo = make_repo(tmp_path / "repo", images, **PARAMS)
    output = start_and_kill_mid_extract(repo, sig)
    assert "Running stage 'extract'" in output and "extract done" not in output

    # nothing DVC could record: no extract output, no half-written file, no lock entry
    for rel in ["data/features.npy", "metrics/extract.json", TIMING]:
        assert not (repo / rel).exists(), rel
    assert leftover_temp_files(repo) == []
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert "index" in lock and "extract" not in lock and "reduce" not in lock
    status = sh(repo, "dvc", "status", "--with-deps", "reduce")
    assert "extract:" in status and "up to date" not in status

    out = sh(repo, "dvc", "repro", "reduce")
    # recomputed (not restored from a run cache); `index` always re-scans, with the same output
    assert [s for s in ran(out) if s != "index"] == ["extract", "captions", "fusion", "reduce"]
    assert sh(repo, "dvc", "status", "--with-deps", "reduce").strip() == "index:\n\talways changed"
    assert leftover_temp_files(repo) == []
    files = output_files(repo, DATA_HALF)
    assert files.keys() == reference["files"].keys()
    differ = [rel for rel in files if files[rel] != reference["files"][rel]]
    assert differ == [], f"outputs differ from an uninterrupted run: {differ}"
    assert lock_outs(repo) == reference["lock"]
    assert (repo / TIMING).is_file()  # the timing log exists, it just is not compared
