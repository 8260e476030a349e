"""Killing `dvc repro` mid-stage (SIGINT, as Ctrl-C sends it to the whole process group;
SIGTERM; SIGKILL) leaves no partial output that DVC could record, and running `dvc repro`
again gives outputs byte-identical to an uninterrupted run.

Each case works on its own copy of the shared end-to-end repository (tests/conftest.py),
without its feature store, and with `extract`'s outputs taken out of its DVC cache, so that
`extract` computes every feature again instead of being restored. The kill
lands at a point the code signals: with CLUSTERLENS_HOLD_AFTER_BATCH=1 the extraction loop
writes ``clusterlens: holding after batch 1`` to stderr after its first batch and blocks; the
test reads the output until that line appears, then sends the signal. The uninterrupted
reference is the shared repository itself.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from pathlib import Path

import pytest
import yaml

from tests.conftest import dvc_env, e2e_copy, ran_all, sh

pytestmark = pytest.mark.slow

TIMING = "logs/extract_timing.json"
CAPTIONS_TIMING = "logs/captions_timing.json"
DATA_HALF = ["index", "backbone", "extract", "captions", "fusion", "reduce"]
HOLD_ENV = "CLUSTERLENS_HOLD_AFTER_BATCH"
HOLDING = "clusterlens: holding after batch 1"


def lock_outs(repo: Path) -> dict:
    """dvc.lock as {stage: {deps, params, outs}}. The run logs that state the throughput
    (TIMING, CAPTIONS_TIMING) are no DVC outputs, so every hash in it is the same on every run."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert not {TIMING, CAPTIONS_TIMING} & {o["path"] for st in lock.values()
                                            for o in st.get("outs", [])}
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
                  if p.relative_to(repo).parts[0] not in (".dvc", ".git"))


def default_signals() -> None:
    """In the child, before it execs: SIGINT and SIGTERM at their defaults. A suite started
    with SIGINT ignored (``nohup``, a background job of a non-interactive shell, some CI
    runners) passes that on to every child, and Python then installs no Ctrl-C handler: the
    stage would never see the SIGINT this test sends."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)


def kill_when_holding(repo: Path, cmd: list[str], sig: int, start_timeout: float = 240,
                      exit_timeout: float = 30) -> str:
    """Run ``cmd`` in its own process group, with default signal dispositions and the hold hook
    set; when the hold line appears in its output, send ``sig`` to the whole group (what Ctrl-C
    does with SIGINT). Returns the output.

    A hang fails the test in seconds: the group must exit within ``exit_timeout`` seconds of the
    signal (``start_timeout`` bounds the wait for the hold line, which includes DVC's start and
    the stage's imports). On a hang every Python process of the group first dumps its threads'
    stacks (``PYTHONFAULTHANDLER`` and SIGABRT), and the failure shows where each was stuck.
    The signal itself is only sent once the code says it holds: no race."""
    proc = subprocess.Popen(cmd, cwd=repo, env={**dvc_env(), HOLD_ENV: "1",
                                                 "PYTHONFAULTHANDLER": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, preexec_fn=default_signals)
    lines: list[str] = []
    held = threading.Event()
    hung: list[str] = []

    def read():
        for line in proc.stdout:
            lines.append(line)
            if HOLDING in line and not held.is_set():
                held.set()
                os.killpg(proc.pid, sig)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        if not held.wait(start_timeout):
            hung.append(f"no hold line within {start_timeout:.0f} s")
        elif _wait(proc, exit_timeout) is None:
            hung.append(f"still running {exit_timeout:.0f} s after {signal.Signals(sig).name}")
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGABRT)  # faulthandler: every thread's stack
            _wait(proc, 5)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        reader.join(10)
    output = "".join(lines)
    assert not hung, f"hang: {hung[0]}; the stacks at the kill are below:\n{output}"
    assert held.is_set(), f"the extraction loop never signalled that it holds:\n{output}"
    assert proc.returncode != 0, output
    return output


def _wait(proc: subprocess.Popen, timeout: float) -> int | None:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


def uncache_outputs(repo: Path, stage: str) -> None:
    """Remove ``stage``'s outputs from the DVC cache (DVC can then restore them from neither
    dvc.lock nor its run cache: a re-run recomputes them)."""
    outs = yaml.safe_load((repo / "dvc.lock").read_text())["stages"][stage]["outs"]
    for out in outs:
        obj = repo / ".dvc/cache/files/md5" / out["md5"][:2] / out["md5"][2:]
        if obj.exists():
            obj.chmod(0o644)
            obj.unlink()


@pytest.fixture(scope="module")
def reference(e2e_base):
    """The shared repository's data half, from its uninterrupted `dvc repro`."""
    return {"files": output_files(e2e_base.repo, DATA_HALF), "lock": lock_outs(e2e_base.repo)}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL],
                         ids=["SIGINT", "SIGTERM", "SIGKILL"])
def test_killed_mid_extract_then_rerun_equals_an_uninterrupted_run(sig, e2e_base, reference,
                                                                   tmp_path):
    repo = e2e_copy(e2e_base, tmp_path / "copy", feature_store=False).repo
    uncache_outputs(repo, "extract")
    lock_before = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    timing_before = (repo / TIMING).read_bytes()  # the run log of the last completed run
    output = kill_when_holding(repo, ["dvc", "repro", "--force", "--single-item", "extract"],
                               sig)
    assert "Running stage 'extract'" in output and "extract done" not in output
    if sig == signal.SIGINT:  # Ctrl-C: one line saying what stopped and that a rerun continues
        assert ("clusterlens: extract interrupted (Ctrl-C); nothing half-written was kept; "
                "run `dvc repro` again to continue") in output, output
        assert "Traceback" not in output and "KeyboardInterrupt" not in output, output

    # nothing DVC could record: no extract output, no half-written file, the lock untouched;
    # the run log (no output) still describes the last completed run
    for rel in ["data/features.npy", "metrics/extract.json"]:
        assert not (repo / rel).exists(), rel
    assert (repo / TIMING).read_bytes() == timing_before
    assert leftover_temp_files(repo) == []
    assert yaml.safe_load((repo / "dvc.lock").read_text())["stages"] == lock_before
    status = sh(repo, "dvc", "status", "--with-deps", "reduce")
    assert "extract:" in status and "up to date" not in status

    out = sh(repo, "dvc", "repro", "reduce")
    # recomputed (nothing cached to restore from); its features are the uninterrupted
    # run's, so nothing after it re-runs; `index` always re-scans, with the same output
    assert [s for s in ran_all(out) if s != "index"] == ["extract"]
    assert sh(repo, "dvc", "status", "--with-deps", "reduce").strip() == "index:\n\talways changed"
    assert leftover_temp_files(repo) == []
    files = output_files(repo, DATA_HALF)
    assert files.keys() == reference["files"].keys()
    differ = [rel for rel in files if files[rel] != reference["files"][rel]]
    assert differ == [], f"outputs differ from an uninterrupted run: {differ}"
    assert lock_outs(repo) == reference["lock"]
    assert (repo / TIMING).is_file()  # the timing log exists, it just is not compared
