"""The pull-request comment: what changed in metrics, params and plots between two revisions.

    python scripts/pr_comment.py --base main                 # main vs the workspace
    python scripts/pr_comment.py --base HEAD~1 --head HEAD   # two commits
    python scripts/pr_comment.py --base origin/main --out comment.md

It wraps ``dvc metrics diff``, ``dvc params diff`` (both ``--md``) and lists the plot files whose
content differs (by the hashes DVC records in ``dvc.lock``, and by git for plot data that lives
in git), so the same markdown is produced locally and by the CI workflow
(``.github/workflows/pr-metrics.yml``). Run it from the project root.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import yaml

WORKSPACE = "workspace"


def _run(*cmd: str) -> str:
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"error: `{' '.join(cmd)}` failed:\n{res.stderr.strip()}")
    return res.stdout


def _revs(base: str, head: str) -> list[str]:
    return [base] if head == WORKSPACE else [base, head]


def _table_or_empty(md: str) -> str:
    """dvc prints a header with no rows when nothing changed: treat that as empty."""
    md = md.strip()
    return md if len(md.splitlines()) > 2 else ""


def metrics_diff(base: str, head: str, precision: int = 4) -> str:
    return _table_or_empty(_run("dvc", "metrics", "diff", *_revs(base, head), "--md",
                "--precision", str(precision)))


def params_diff(base: str, head: str) -> str:
    return _table_or_empty(_run("dvc", "params", "diff", *_revs(base, head), "--md"))


def _lock(rev: str) -> dict:
    if rev == WORKSPACE:
        path = Path("dvc.lock")
        text = path.read_text(encoding="utf-8") if path.is_file() else ""
    else:
        res = subprocess.run(["git", "show", f"{rev}:dvc.lock"], capture_output=True, text=True)
        text = res.stdout if res.returncode == 0 else ""
    return yaml.safe_load(text) or {}


def plot_hashes(rev: str) -> dict[str, str]:
    """path -> content hash of every stage output under plots/ recorded in dvc.lock at rev."""
    out = {}
    for stage in (_lock(rev).get("stages") or {}).values():
        for entry in stage.get("outs", []) or []:
            path = entry.get("path", "")
            if path.startswith("plots/"):
                out[path] = entry.get("md5") or entry.get("hash") or ""
    return out


def changed_plots(base: str, head: str) -> list[tuple[str, str]]:
    """(path, status) for plot outputs added, removed or modified between the revisions."""
    a, b = plot_hashes(base), plot_hashes(head)
    changes = []
    for path in sorted(set(a) | set(b)):
        if path not in a:
            changes.append((path, "added"))
        elif path not in b:
            changes.append((path, "removed"))
        elif a[path] != b[path]:
            changes.append((path, "modified"))
    return changes


def render(base: str, head: str, precision: int = 4, artifact_url: str | None = None) -> str:
    head_name = "the workspace" if head == WORKSPACE else f"`{head}`"
    lines = [f"## clusterlens: `{base}` → {head_name}", ""]
    m = metrics_diff(base, head, precision)
    lines += ["### Metrics that changed", "", m or "No metric changed.", ""]
    p = params_diff(base, head)
    lines += ["### Params that changed", "", p or "No param changed.", ""]
    plots = changed_plots(base, head)
    lines += ["### Plots that changed", ""]
    if plots:
        lines += ["| plot | change |", "| --- | --- |"]
        lines += [f"| `{path}` | {status} |" for path, status in plots]
        if artifact_url:
            lines += ["", f"Rendered side by side (`dvc plots diff`): {artifact_url}"]
    else:
        lines.append("No plot changed.")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", required=True, help="git revision to compare against (e.g. main)")
    ap.add_argument("--head", default=WORKSPACE,
                    help="git revision, or `workspace` (default): the files on disk")
    ap.add_argument("--precision", type=int, default=4)
    ap.add_argument("--artifact-url", help="link to the rendered plots (CI)")
    ap.add_argument("--out", help="write the markdown here (default: stdout)")
    args = ap.parse_args(argv)
    text = render(args.base, args.head, args.precision, args.artifact_url)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
