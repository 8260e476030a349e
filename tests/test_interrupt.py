"""Issue 6, item 3: killing `dvc repro` mid-stage (SIGINT, as Ctrl-C sends it to the whole
process group, and SIGKILL) leaves no partial output that DVC could record, and running
`dvc repro` again gives byte-identical outputs to an uninterrupted run.

Each case runs in its own temporary git + DVC repository (as tests/test_pipeline.py does) on the
same generated image tree, outside the repositories. The kill lands while `extract` is in its
feature loop: shortly after the stage's progress bar appears (the loop takes a few seconds).
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import PROJECT, make_tree

pytestmark = pytest.mark.slow

TIMING = "logs/extract_timing.json"
DATA_HALF = ["index", "extract", "reduce"]


# --------------------------------------------------------------------------- temp repositories
def _env():
    env = dict(os.environ)
    # `python` in dvc.yaml must be this interpreter (the project's venv).
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["DVC_NO_ANALYTICS"] = "1"
    env["GIT_AUTHOR_NAME"] = env["GIT_COMMITTER_NAME"] = "clusterlens-tests"
    env["GIT_AUTHOR_EMAIL"] = env["GIT_COMMITTER_EMAIL"] = "tests@example.invalid"
    return env


def sh(cwd, *cmd) -> str:
    res = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True)
    assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{res.stdout}\n{res.stderr}"
    return res.stdout + res.stderr


def ran(output: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", output)


def set_params(repo: Path, **updates) -> None:
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for key, value in updates.items():
        section, name = key.split("__")
        params[section][name] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def declare_timing_output(repo: Path) -> None:
    """Until dvc.yaml declares it, add logs/extract_timing.json to `extract`'s outs (uncached,
    as the metrics are) in the temporary copy."""
    path = repo / "dvc.yaml"
    pipeline = yaml.safe_load(path.read_text())
    outs = pipeline["stages"]["extract"]["outs"]
    names = [next(iter(o)) if isinstance(o, dict) else o for o in outs]
    if TIMING not in names:
        outs.append({TIMING: {"cache": False}})
        path.write_text(yaml.safe_dump(pipeline, sort_keys=False))


def make_repo(path: Path, images: Path, **params) -> Path:
    """A git + DVC repository with the project's pipeline, stages and params; data.root outside."""
    path.mkdir(parents=True)
    for name in ["dvc.yaml", "params.yaml", ".dvcignore", ".gitignore"]:
        shutil.copy(PROJECT / name, path / name)
    shutil.copytree(PROJECT / "stages", path / "stages",
                    ignore=shutil.ignore_patterns("__pycache__"))
    declare_timing_output(path)
    sh(path, "git", "init", "-q")
    sh(path, "dvc", "init", "-q")
    sh(path, "dvc", "config", "core.analytics", "false")
    set_params(path, data__root=str(images), **params)
    return path


# Files that state the throughput of the run, so differ between runs by design.
VOLATILE = (TIMING, "report/report.md", "report/report.html")


def lock_outs(repo: Path, skip=VOLATILE) -> dict:
    """dvc.lock as {stage: {deps, params, outs}} with the timing file (and the report that
    quotes it) left out."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    for stage in lock.values():
        for key in ("outs", "deps"):
            stage[key] = [o for o in stage.get(key, []) if o["path"] not in skip]
    return lock


def output_files(repo: Path, stages: list[str], skip=(TIMING,)) -> dict[str, bytes]:
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
PARAMS = dict(extract__image_size=64, extract__batch_size=2, reduce__n_components=5)


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
    proc = subprocess.Popen(["dvc", "repro", "reduce"], cwd=repo, env=_env(),
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
    assert [s for s in ran(out) if s != "index"] == ["extract", "reduce"]
    assert sh(repo, "dvc", "status", "--with-deps", "reduce").strip() == "index:\n\talways changed"
    assert leftover_temp_files(repo) == []
    files = output_files(repo, DATA_HALF)
    assert files.keys() == reference["files"].keys()
    differ = [rel for rel in files if files[rel] != reference["files"][rel]]
    assert differ == [], f"outputs differ from an uninterrupted run: {differ}"
    assert lock_outs(repo) == reference["lock"]
    assert (repo / TIMING).is_file()  # the timing log exists, it just is not compared
