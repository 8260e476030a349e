"""The demo's `dvc repro` from a fresh clone, stage by stage: where the time and the start-up go.

    python -m benchmarks.bench_demo                        # HEAD, in a fresh clone
    python -m benchmarks.bench_demo --baseline REF         # and REF, in the same run
    python -m benchmarks.bench_demo --no-replay            # only the timed `dvc repro`

For each revision (the baseline first when given):

1. `git clone` of the project at that revision into a temporary folder, then one timed
   `dvc repro` there with this interpreter's environment: the whole run, and each stage's
   seconds from its "Running stage" line (printed unbuffered) to the next one, so a stage's
   figure includes DVC's own work for it (hashing, caching, rewriting `dvc.lock`).
2. Unless `--no-replay`: each stage's command (from the clone's `dvc.lock`) run again directly
   with `python -X importtime`, in the finished clone (it rewrites the same outputs): its wall
   seconds without DVC, the seconds spent importing (the sum of every module's own import time)
   and which heavy libraries it imports (torch, scikit-learn, scipy, pandas, matplotlib, ...).

`--baseline-pure-yaml` runs the baseline's DVC without ruamel.yaml's C loader (a shim on
`PYTHONPATH` hides `_ruamel_yaml`), i.e. as it ran before `requirements.txt` installed
`ruamel.yaml.clib`. The table prints both revisions side by side, and the ratio of the totals
(baseline seconds / current seconds). Results go to `benchmarks/results/demo.json`.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import _util as u

HEAVY = ["torch", "torchvision", "sklearn", "scipy", "pandas", "pyarrow", "matplotlib",
         "plotly", "faiss", "cleanlab", "PIL", "sentence_transformers", "transformers",
         "fastcluster", "dvclive"]
LOCKS = {"dvc.lock": "", "grid/dvc.lock": "grid/dvc.yaml:"}  # lock file -> its stages' prefix
IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)")


def clone(ref: str, dest: Path) -> Path:
    """A fresh clone of the project at ``ref`` (the committed tree: no uncommitted change)."""
    u.sh(u.PROJECT.parent, "git", "clone", "-q", "--no-hardlinks", str(u.PROJECT), str(dest))
    u.sh(dest, "git", "checkout", "-q", ref)
    return dest


def import_profile(stderr: str) -> dict:
    """Seconds spent importing, and the heavy libraries imported with their cumulative
    seconds (where each is first imported; one may include another, e.g. sklearn -> scipy)."""
    total, heavy = 0, {}
    for line in stderr.splitlines():
        m = IMPORT_LINE.match(line)
        if not m:
            continue
        total += int(m.group(1))
        name = m.group(4)
        if name in HEAVY and name not in heavy:
            heavy[name] = int(m.group(2)) / 1e6
    return {"import_seconds": total / 1e6, "heavy": heavy}


def replay(repo: Path, env: dict) -> dict:
    """Each locked stage's command, run directly with ``-X importtime``, in pipeline order."""
    import yaml

    lock = {}
    for path, prefix in LOCKS.items():  # names as DVC prints them from the top
        if (repo / path).is_file():
            stages = yaml.safe_load((repo / path).read_text())["stages"]
            lock.update({prefix + name: spec for name, spec in stages.items()})
    order = [s for s in repro_order(repo) if s in lock]
    out = {}
    for name in order:
        cmd = lock[name]["cmd"]
        if not cmd.startswith("python "):
            continue
        argv = [sys.executable, "-X", "importtime", *cmd.split()[1:]]
        t0 = time.perf_counter()
        res = subprocess.run(argv, cwd=repo, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        if res.returncode != 0:
            raise RuntimeError(f"{cmd} failed in {repo}:\n{res.stderr[-3000:]}")
        out[name] = {"seconds": seconds, **import_profile(res.stderr)}
    return out


def repro_order(repo: Path) -> list[str]:
    """The stages in the order `dvc repro` runs them (from `dvc repro --dry -f`)."""
    res = u.sh(repo, "dvc", "repro", "--dry", "-f")
    return re.findall(r"Running stage '([^']+)'", res.stdout)


def pure_yaml_env(env: dict, folder: Path) -> dict:
    """``env`` with a shim that makes ``import _ruamel_yaml`` fail (ruamel.yaml then parses
    in pure Python, as without ruamel.yaml.clib)."""
    shim = folder / "pure_yaml"
    shim.mkdir(parents=True, exist_ok=True)
    (shim / "_ruamel_yaml.py").write_text("raise ImportError('pure-Python YAML (benchmark)')\n")
    return dict(env, PYTHONPATH=os.pathsep.join(filter(None, [str(shim),
                                                              env.get("PYTHONPATH")])))


def measure(ref: str, workdir: Path, tag: str, env: dict, do_replay: bool) -> dict:
    repo = clone(ref, workdir / tag)
    commit = u.sh(repo, "git", "rev-parse", "--short", "HEAD").stdout.strip()
    print(f"[{tag}] {ref} ({commit}): dvc repro in {repo} ...", flush=True)
    load = os.getloadavg()[0]
    res = u.repro_timed(repo, [], env)
    res.update({"ref": ref, "commit": commit, "load_before": load})
    print(f"[{tag}] dvc repro: {res['seconds']:.1f} s, {len(res['stages'])} stages", flush=True)
    status = u.sh(repo, "git", "status", "--porcelain").stdout.splitlines()
    res["git_status_after"] = status
    if do_replay:
        res["replay"] = replay(repo, env)
        print(f"[{tag}] replay: {sum(r['seconds'] for r in res['replay'].values()):.1f} s",
              flush=True)
    return res


def fmt_heavy(heavy: dict) -> str:
    return " ".join(f"{k} {v:.2f}" for k, v in heavy.items()) or "-"


def short(stage: str) -> str:
    """``grid/dvc.yaml:kmeans@10`` -> ``kmeans@10`` (a grid stage under either layout)."""
    return stage.rsplit(":", 1)[-1]


def table(runs: dict) -> str:
    names = list(runs)
    runs = {n: {**r, "stages": {short(k): v for k, v in r["stages"].items()},
                "replay": {short(k): v for k, v in r.get("replay", {}).items()}}
            for n, r in runs.items()}
    stages = list(runs[names[-1]]["stages"])
    stages += [s for n in names for s in runs[n]["stages"] if s not in stages]
    header = ["stage"]
    for n in names:
        header += [f"{n}: dvc s", f"{n}: direct s", f"{n}: import s"]
    header.append(f"{names[-1]}: heavy imports (cumulative s)")
    rows = []
    for s in stages:
        row = [s]
        for n in names:
            rep = runs[n].get("replay", {}).get(s, {})
            dvc_s = runs[n]["stages"].get(s)
            row += [f"{dvc_s:.1f}" if dvc_s is not None else "-",
                    f"{rep['seconds']:.1f}" if rep else "-",
                    f"{rep['import_seconds']:.2f}" if rep else "-"]
        row.append(fmt_heavy(runs[names[-1]].get("replay", {}).get(s, {}).get("heavy", {})))
        rows.append(row)
    total = ["total"]
    for n in names:
        rep = runs[n].get("replay", {})
        total += [f"{runs[n]['seconds']:.1f}",
                  f"{sum(r['seconds'] for r in rep.values()):.1f}" if rep else "-",
                  f"{sum(r['import_seconds'] for r in rep.values()):.1f}" if rep else "-"]
    rows.append(total + [""])
    return fmt_table(rows, header)


def fmt_table(rows: list[list], header: list[str]) -> str:
    cells = [header] + rows
    widths = [max(len(str(r[i])) for r in cells) for i in range(len(header))]
    lines = []
    for j, r in enumerate(cells):
        lines.append("  ".join(str(c).rjust(w) if 0 < i < len(r) - 1 else str(c).ljust(w)
                               for i, (c, w) in enumerate(zip(r, widths))))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ref", default="HEAD", help="the revision to measure (default HEAD)")
    ap.add_argument("--baseline", help="a revision to measure first, in the same run")
    ap.add_argument("--baseline-pure-yaml", action="store_true",
                    help="run the baseline without ruamel.yaml's C loader")
    ap.add_argument("--no-replay", action="store_true",
                    help="skip the direct, import-timed replay of each stage")
    ap.add_argument("--workdir", type=Path, help="where the clones go (default: a new folder "
                    "under /tmp)")
    ap.add_argument("--out", type=Path, default=u.PROJECT / "benchmarks/results/demo.json")
    args = ap.parse_args(argv)

    info = u.machine()
    print(f"machine: {u.machine_line(info)}", flush=True)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="clusterlens-bench-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    env = u.bench_env()
    runs = {}
    if args.baseline:
        base_env = pure_yaml_env(env, workdir) if args.baseline_pure_yaml else env
        runs["baseline"] = measure(args.baseline, workdir, "baseline", base_env,
                                   not args.no_replay)
        runs["baseline"]["pure_yaml"] = args.baseline_pure_yaml
    runs["current"] = measure(args.ref, workdir, "current", env, not args.no_replay)

    print("\n== The demo's dvc repro from a fresh clone, per stage (seconds; 'dvc': inside "
          "dvc repro, 'direct': the command alone, 'import': its imports)")
    print(table(runs))
    ratio = None
    if "baseline" in runs:
        ratio = runs["baseline"]["seconds"] / runs["current"]["seconds"]
        print(f"\nratio baseline / current (whole dvc repro): {ratio:.2f}")
    for name, r in runs.items():
        print(f"{name}: git status after the run: "
              + ("clean" if not r["git_status_after"] else
                 f"{len(r['git_status_after'])} changed: {' '.join(r['git_status_after'][:8])}"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": info, "runs": runs, "ratio": ratio},
                                   indent=2) + "\n")
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
