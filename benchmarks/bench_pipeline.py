"""The whole pipeline at scale: every stage's time and peak memory on a generated folder.

    python -m benchmarks.bench_pipeline --n 10000 --classes 10 --workdir /work/scale/p1e4
    python -m benchmarks.bench_pipeline --n 100000 --classes 100 --workdir /work/scale/p1e5 \\
        --timeout 600 --resume

1. A generated image folder (``<workdir>/images``, kept and reused): ``--n`` files in
   ``--classes`` class folders, with planted copies (exact, resized, mirrored; a third under
   another class) and odd images (dark, light, blurry, grayscale, wide; tiny and corrupt ones,
   which ``index`` rejects); see ``benchmarks._util.folder_plan``.
2. A clone of the project at ``--rev`` (``<workdir>/repo``; committed code only), every stage
   output that git holds removed, ``data.root`` set to the folder in its params.yaml (nothing
   else, unless ``--set key=value``).
3. Every stage of ``dvc repro --dry --force``, in that order, run as its own command (not
   through DVC: DVC's hashing and caching are not counted), each timed with its peak memory:
   ``index`` on the folder; ``backbone``; then, in place of ``extract``, generated features
   (``--dim``-D, the class structure of the index's labels, the planted copies as near-equal
   rows, outliers as far rows; ``benchmarks._util.planted_features``) written to
   data/features.npy with a metrics/extract.json; then every later stage.
4. Peak memory: the largest sum of the resident sets of the stage's process tree, or the
   largest single process's own peak (``VmHWM``) when that is larger, sampled every 0.2 s
   (``wait4``'s ``ru_maxrss`` is not used: it keeps this process's peak, inherited at fork).
   CPU seconds: user + system of the whole tree. A stage is stopped at ``--timeout``
   seconds or above ``--max-gib`` and recorded so; the next stages still run when their inputs
   exist (else ``skipped``).

Results: ``<workdir>/pipeline.json`` (the resume state) and ``--out-dir``/pipeline_<n>.json and
.csv, rewritten after every stage; each stage's output in ``<workdir>/logs/``. ``--resume``
keeps the clone and its outputs and skips the stages already measured (ok, timeout, memory),
but those named by ``--again`` (with another ``--rev``, the clone is moved to it first: only the
stages run again measure it; each record names the commit it ran at); ``--set`` applies on a
resume too (e.g. ``--resume --set captions.enabled=false --again captions`` after captions
timed out: the earlier record is kept under ``earlier``); ``--only`` runs just the stages named
(glob patterns on the short names, e.g. ``kmeans@*``).
"""
from __future__ import annotations

import argparse
import csv
import fnmatch
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import _util as u

PHASES = {"index": "data", "backbone": "before extraction", "extract": "features injected"}
SKIP = {"digits"}  # the demo data set: not part of a user's folder
DONE = ("ok", "timeout", "memory")  # statuses --resume does not run again (not: failed,
# skipped for a missing input, not run for the --budget)
POLL_S = 0.2

DUMP = r"""
import json, os, re, subprocess, sys
from dvc.repo import Repo
dry = subprocess.run(["dvc", "repro", "--dry", "--force"], capture_output=True, text=True)
if dry.returncode:
    sys.exit(dry.stdout + dry.stderr)
order = re.findall(r"Running stage '([^']+)'", dry.stdout)
repo = Repo(".")
root = repo.root_dir
stages = {s.addressing: s for s in repo.index.stages}
rel = lambda p: os.path.relpath(p, root)
print(json.dumps([{"name": a, "cmd": stages[a].cmd, "wdir": rel(stages[a].wdir),
                   "deps": [rel(d.fs_path) for d in stages[a].deps],
                   "outs": [rel(o.fs_path) for o in stages[a].outs]} for a in order]))
"""


def short(name: str) -> str:
    return name.rsplit(":", 1)[-1]


# --------------------------------------------------------------------------- measuring
def high_water_mark(pid: int) -> int:
    """A live process's own peak resident bytes (``VmHWM``; exec starts it afresh, unlike
    ``ru_maxrss``, which keeps the forking parent's peak), 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_usage(pid: int) -> tuple[int, float]:
    """(resident bytes, CPU seconds) of the live process tree under ``pid``: the larger of the
    tree's summed resident memory and its largest process's own peak (``VmHWM``)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0, 0.0
    rss, cpu, hwm = 0, 0.0, 0
    for p in procs:
        try:
            rss += p.memory_info().rss
            t = p.cpu_times()
            cpu += t.user + t.system + t.children_user + t.children_system
            hwm = max(hwm, high_water_mark(p.pid))
        except psutil.Error:
            pass
    return max(rss, hwm), cpu


def run_stage(cmd: str, cwd: Path, log: Path, timeout: float, max_gib: float) -> dict:
    """Run ``cmd`` (a shell command) in its own session: wall and CPU seconds, peak GiB, status
    (ok, failed, timeout, memory), the last lines of its output when it did not end ok."""
    env = dict(u.bench_env(), PYTHONUNBUFFERED="1")
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, shell=True, cwd=cwd, env=env, stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True)
        peak, cpu, status = 0, 0.0, None
        try:
            while True:
                pid, code, ru = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                rss, now = tree_usage(proc.pid)
                peak, cpu = max(peak, rss), max(cpu, now)
                if time.perf_counter() - t0 > timeout:
                    status = "timeout"
                elif peak > max_gib * 2**30:
                    status = "memory"
                if status:
                    os.killpg(proc.pid, signal.SIGKILL)  # the stage's own process group
                    pid, code, ru = os.wait4(proc.pid, 0)
                    break
                time.sleep(POLL_S)
        except BaseException:  # interrupted (Ctrl-C, SIGTERM): the stage goes with us
            os.killpg(proc.pid, signal.SIGKILL)
            os.wait4(proc.pid, 0)
            raise
    proc.returncode = os.waitstatus_to_exitcode(code)
    seconds = time.perf_counter() - t0
    rec = {"status": status or ("ok" if proc.returncode == 0 else "failed"),
           "seconds": round(seconds, 2),
           # a stopped stage's children are not reaped into wait4's figure: the last sample
           "cpu_seconds": round(max(ru.ru_utime + ru.ru_stime, cpu), 2),
           "peak_gib": round(peak / 2**30, 3), "load1_at_start": round(load, 2),
           "rc": proc.returncode, "log": str(log)}
    if rec["status"] != "ok":
        rec["tail"] = log.read_text(errors="replace").splitlines()[-15:]
    return rec


# --------------------------------------------------------------------------- the clone
def set_param(params: Path, key: str, value: str) -> None:
    """Replace one ``key: value`` line (dotted key, two levels at most) of params.yaml in place,
    keeping every other line and comment."""
    lines = params.read_text().splitlines(keepends=True)
    *parent, last = key.split(".")
    inside = not parent
    for i, line in enumerate(lines):
        if parent and re.match(rf"^{re.escape(parent[0])}:", line):
            inside = True
            continue
        if inside and parent and re.match(r"^\S", line):
            break
        indent = "  " if parent else ""
        m = re.match(rf"^{indent}{re.escape(last)}:(\s*)(\S.*?)?(\s+#.*)?$", line.rstrip("\n"))
        if inside and m:
            lines[i] = f"{indent}{last}: {value}{m.group(3) or ''}\n"
            params.write_text("".join(lines))
            return
    raise SystemExit(f"--set: no {key} in {params}")


def prepare_clone(args, repo: Path, folder: Path, state: dict) -> list[dict]:
    """The clone at --rev (fresh unless resuming), data.root and --set applied (recorded in
    ``state["set"]``: a later --set of a key replaces it); the stage list."""
    source = str(Path(args.source).resolve())
    commit = u.sh(source, "git", "rev-parse", args.rev).stdout.strip()
    if args.resume and (repo / ".git").is_dir():
        have = u.sh(repo, "git", "rev-parse", "HEAD").stdout.strip()
        if have != commit and not args.again:
            raise SystemExit(f"{repo} is at {have[:10]}, --rev {args.rev} is {commit[:10]}: "
                             "run without --resume, or name the stages to run again at "
                             "--rev (--again)")
        if have != commit:  # the params are set again below; the outputs stay
            for rec in state.get("stages", {}).values():
                rec.setdefault("commit", have)  # measured at the clone's earlier commit
            u.sh(repo, "git", "fetch", "-q", source, commit)
            u.sh(repo, "git", "checkout", "-q", "-f", commit)
            set_param(repo / "params.yaml", "data.root", str(folder))
            for item in state.get("set", []):
                set_param(repo / "params.yaml", *item.partition("=")[::2])
            state.update(rev=args.rev, commit=commit)
        fresh = False
    else:
        if repo.exists():
            shutil.rmtree(repo)
        u.sh(repo.parent, "git", "clone", "-q", source, str(repo))
        u.sh(repo, "git", "checkout", "-q", commit)
        set_param(repo / "params.yaml", "data.root", str(folder))
        state.update(rev=args.rev, commit=commit, stages={}, set=[])
        fresh = True
    for item in args.set:  # also on --resume: the stages run from now on read them
        key, _, value = item.partition("=")
        set_param(repo / "params.yaml", key, value)
        state["set"] = [*(x for x in state.get("set", []) if x.partition("=")[0] != key), item]
    res = subprocess.run([sys.executable, "-c", DUMP], cwd=repo, env=u.bench_env(),
                         capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(f"listing the stages failed:\n{res.stderr[-3000:]}")
    stages = json.loads(res.stdout)
    for s in stages if fresh else []:  # committed outputs (the demo's): not this folder's
        for out in s["outs"]:
            p = repo / out
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    (repo.parent / "stages.json").write_text(json.dumps(stages, indent=1))
    return stages


# --------------------------------------------------------------------------- the features
def inject_features(args, repo: Path, plan) -> dict:
    """data/features.npy and metrics/extract.json, as `extract` would leave them."""
    import pandas as pd

    index = pd.read_parquet(repo / "data/index.parquet")
    info = u.planted_features(index, plan, repo / "data/features.npy", dim=args.dim,
                              seed=args.seed, outliers=args.outliers)
    extract = {"backbone": "efficientnet_lite0", "weights": "generated features",
               "weights_sha256": "", "dim": args.dim, "images": info["rows"], "image_size": 224,
               "resize": "center_crop", "device": "cpu", "precision": "fp32", "jit": True,
               "batch_size": 64, "threads": 2,
               "preprocessing": "generated features (benchmarks/bench_pipeline.py)"}
    (repo / "metrics").mkdir(exist_ok=True)
    (repo / "metrics/extract.json").write_text(json.dumps(extract, indent=2) + "\n")
    pd.DataFrame({"path": info.pop("outlier_paths")}).to_csv(
        repo.parent / "planted_outliers.csv", index=False)
    return info


# --------------------------------------------------------------------------- results
def totals(records: dict, order: list[str] | None = None) -> dict:
    """Sums over the stages after extraction; ``complete`` when every one of ``order`` (the
    stage list) after ``extract`` ran ok."""
    names = order[order.index("extract") + 1:] if order and "extract" in order else [
        k for k, r in records.items() if r.get("phase") == "after extraction"]
    after = [records[k] for k in names if k in records]
    measured = [r for r in after if r["status"] in ("ok", "timeout", "memory", "failed")]
    return {"after_extraction_seconds": round(sum(r["seconds"] for r in measured), 1),
            "after_extraction_cpu_seconds": round(sum(r["cpu_seconds"] for r in measured), 1),
            "after_extraction_peak_gib": max((r["peak_gib"] for r in measured), default=None),
            "stages_after_extraction": len(after),
            "not_ok": [k for k in names if records.get(k, {}).get("status") != "ok"],
            "complete": bool(names) and all(records.get(k, {}).get("status") == "ok"
                                            for k in names)}


def table(state: dict) -> str:
    head = f"{'stage':34} {'phase':18} {'status':8} {'wall s':>8} {'CPU s':>8} {'peak GiB':>8} {'load1':>6}"
    lines = [head, "-" * len(head)]
    for name, r in state["stages"].items():
        lines.append(f"{name:34} {r.get('phase', ''):18} {r['status']:8} "
                     f"{r.get('seconds', 0):8.1f} {r.get('cpu_seconds', 0):8.1f} "
                     f"{r.get('peak_gib', 0):8.2f} {r.get('load1_at_start', 0):6.2f}")
    t = state.get("totals", {})
    if t:
        flag = "" if t["complete"] else f" (not complete: {', '.join(t['not_ok']) or 'not run'})"
        lines.append(f"after extraction: {t['after_extraction_seconds']:.1f} s wall, "
                     f"{t['after_extraction_cpu_seconds']:.1f} CPU s, peak "
                     f"{t['after_extraction_peak_gib']} GiB{flag}")
    return "\n".join(lines)


def save(state: dict, workdir: Path, out_dir: Path) -> None:
    state["totals"] = totals(state["stages"], state.get("stage_order"))
    state["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    text = json.dumps(state, indent=1) + "\n"
    for path in (workdir / "pipeline.json", out_dir / f"pipeline_{state['n']}.json"):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    path = out_dir / f"pipeline_{state['n']}.csv"
    with open(path.with_name(path.name + ".tmp"), "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["n", "classes", "stage", "phase", "status", "seconds", "cpu_seconds",
                    "peak_gib", "load1_at_start", "commit"])
        for name, r in state["stages"].items():
            w.writerow([state["n"], state["classes"], name, r.get("phase", ""), r["status"],
                        r.get("seconds", ""), r.get("cpu_seconds", ""), r.get("peak_gib", ""),
                        r.get("load1_at_start", ""), r.get("commit", state.get("commit", ""))[:10]])
    os.replace(path.with_name(path.name + ".tmp"), path)


# --------------------------------------------------------------------------- main
def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, required=True, help="files in the generated folder")
    ap.add_argument("--classes", type=int, required=True)
    ap.add_argument("--workdir", type=Path, required=True,
                    help="the folder, the clone, logs and the resume state (outside the repo)")
    ap.add_argument("--dim", type=int, default=1280, help="feature dimension (default 1280)")
    ap.add_argument("--side", type=int, default=64, help="image side in px (default 64)")
    ap.add_argument("--copies", type=float, default=0.01, help="planted copies, share of N")
    ap.add_argument("--odd", type=float, default=0.005, help="odd images, share of N")
    ap.add_argument("--outliers", type=float, default=0.005, help="far feature rows, share of N")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=None, help="folder writers (default: cores)")
    ap.add_argument("--source", default=str(u.PROJECT), help="git repository to clone")
    ap.add_argument("--rev", default="HEAD", help="revision to measure (committed code)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="another params.yaml value in the clone (repeatable; recorded)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per stage (1800)")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds for all stages together: the stages left when it is spent "
                         "are recorded as not run (run again with --resume)")
    ap.add_argument("--max-gib", type=float, default=16, help="stop a stage above this (16)")
    ap.add_argument("--only", nargs="+", default=None, metavar="GLOB",
                    help="run only these stages (short names, globs), e.g. index 'kmeans@*'")
    ap.add_argument("--resume", action="store_true",
                    help="keep the clone; skip stages already measured (ok, timeout, memory)")
    ap.add_argument("--again", nargs="+", default=[], metavar="GLOB",
                    help="with --resume: run these stages again all the same (the earlier "
                         "records are kept under `earlier`)")
    ap.add_argument("--out-dir", type=Path, default=u.PROJECT / "benchmarks" / "results")
    return ap.parse_args(argv)


def main(argv=None) -> dict:
    args = parse(argv)
    workdir = args.workdir.resolve()
    if workdir == u.PROJECT or u.PROJECT in workdir.parents:
        raise SystemExit("--workdir must be outside the project")
    workdir.mkdir(parents=True, exist_ok=True)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (workdir / "logs").mkdir(exist_ok=True)
    state_file = workdir / "pipeline.json"
    state = json.loads(state_file.read_text()) if args.resume and state_file.is_file() else {}
    if state and (state["n"], state["classes"], state["dim"]) != (args.n, args.classes, args.dim):
        raise SystemExit(f"{state_file} is for n={state['n']} classes={state['classes']} "
                         f"dim={state['dim']}: use another workdir")
    state.update(n=args.n, classes=args.classes, dim=args.dim, machine=u.machine(),
                 command=" ".join(["python -m benchmarks.bench_pipeline", *(argv or sys.argv[1:])]),
                 note="stage commands run directly, not through DVC; the machine may be shared "
                      "(see load1_at_start)")
    print(u.machine_line(state["machine"]), flush=True)

    folder = workdir / "images"
    t0 = time.perf_counter()
    plan, spec, secs = u.make_image_folder(folder, args.n, args.classes, seed=args.seed,
                                           side=args.side, copies=args.copies, odd=args.odd,
                                           workers=args.workers)
    state["folder"] = {**spec, "path": str(folder), "write_seconds": round(secs, 1)}
    if secs:
        state["folder"]["files_per_s"] = round(args.n / secs)
    print(f"folder {folder}: {args.n} files, {'written in %.1f s' % secs if secs else 'reused'} "
          f"({time.perf_counter() - t0:.1f} s)", flush=True)

    repo = workdir / "repo"
    stages = prepare_clone(args, repo, folder, state)
    records = state.setdefault("stages", {})
    state["stage_order"] = [short(st["name"]) for st in stages if short(st["name"]) not in SKIP]
    budget_end = None if args.budget is None else time.perf_counter() + args.budget
    signal.signal(signal.SIGTERM, _interrupt)
    ran_index = False  # index ran in this invocation: the features are written again
    save(state, workdir, args.out_dir)
    for st in stages:
        name = short(st["name"])
        if name in SKIP:
            continue
        phase = PHASES.get(name, "after extraction")
        if args.only and not any(fnmatch.fnmatch(name, g) for g in args.only):
            continue
        old = records.get(name)
        stale = name == "extract" and (ran_index or not (repo / "data/features.npy").is_file())
        again = any(fnmatch.fnmatch(name, g) for g in args.again)
        if (args.resume and old and old["status"] in DONE and not args.only and not stale
                and not again):
            print(f"{name}: {old['status']} (measured before)", flush=True)
            continue
        missing = [d for d in st["deps"] if name != "extract" and not (repo / d).exists()
                   and not d.startswith(("clusterlens", "stages", "data/digits"))]
        if missing:
            records[name] = {"phase": phase, "status": "skipped", "seconds": 0,
                             "cpu_seconds": 0, "peak_gib": 0,
                             "note": "missing input " + ", ".join(missing[:3])}
        elif budget_end is not None and time.perf_counter() > budget_end - 5:
            records[name] = {"phase": phase, "status": "not run", "seconds": 0,
                             "cpu_seconds": 0, "peak_gib": 0, "note": "--budget spent"}
        elif name == "extract":
            t1 = time.perf_counter()
            info = inject_features(args, repo, plan)
            records[name] = {"phase": phase, "status": "ok", "cpu_seconds": 0, "peak_gib": 0,
                             "seconds": round(time.perf_counter() - t1, 2),
                             "note": "generated features written in its place (not timed as "
                                     "a stage)", "features": info}
        else:
            log = workdir / "logs" / f"{name}.log"
            timeout = args.timeout if budget_end is None else min(
                args.timeout, budget_end - time.perf_counter())
            rec = run_stage(st["cmd"], repo / st["wdir"], log, timeout, args.max_gib)
            if rec["status"] == "timeout" and timeout < args.timeout:
                rec["note"] = f"stopped at {timeout:.0f} s: the rest of --budget"
            records[name] = {"phase": phase, **rec, "commit": u.sh(
                repo, "git", "rev-parse", "HEAD").stdout.strip()}
            ran_index = ran_index or name == "index"
        if old and old is not records[name] and old["status"] not in ("skipped", "not run"):
            records[name]["earlier"] = [*old.pop("earlier", []), old]
        r = records[name]
        print(f"{name:34} {r['status']:8} {r['seconds']:8.1f} s {r.get('cpu_seconds', 0):8.1f} "
              f"CPU s {r.get('peak_gib', 0):6.2f} GiB" + (f"  {r['note']}" if 'note' in r else ""),
              flush=True)
        if r["status"] in ("failed",) and r.get("tail"):
            print("    " + "\n    ".join(r["tail"][-5:]), flush=True)
        save(state, workdir, args.out_dir)
    save(state, workdir, args.out_dir)
    print("\n" + table(state))
    print(f"\nwrote {args.out_dir / f'pipeline_{args.n}.json'} and .csv")
    return state


if __name__ == "__main__":
    main()
