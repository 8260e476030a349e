"""The pull-request comment: what changed in metrics, plots and params between two revisions.

    python scripts/pr_comment.py --base main                 # main vs the workspace
    python scripts/pr_comment.py --base HEAD~1 --head HEAD   # two commits (or branches)
    python scripts/pr_comment.py --base main --head my-exp   # a `dvc exp run` experiment
    python scripts/pr_comment.py --base main --max-chars 0 --out full.md   # nothing left out

A revision is a commit, a branch, a tag, ``workspace`` (the files on disk) or the name of a DVC
experiment (``dvc exp show``), resolved to its commit through ``refs/exps``. The markdown holds,
in this order, as much as fits in ``--max-chars`` (default 65,000: the forge's comment limit is
65,536):

1. the headline metrics that changed (the files declared as ``metrics:`` in dvc.yaml, i.e.
   ``metrics/headline.json``), with the old value, the new value and the change;
2. the plots added, removed or modified (by the hashes DVC records in ``dvc.lock`` and
   ``grid/dvc.lock``), and the link to them rendered side by side (``dvc plots diff``) when
   ``--artifact-url`` is given;
3. ``dvc params diff --md``;
4. every other metrics file under ``metrics/`` that changed (JSON, per key), and the tables
   (``metrics/*.csv``) that changed;
5. when something did not fit: how many rows of which part were left out, and where the full
   diff is (the artifact, and the command that prints it).

The same markdown is produced locally and by the CI workflow (``.github/workflows/
pr-metrics.yml``). Run it from the project root.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import yaml

WORKSPACE = "workspace"
MAX_CHARS = 65_000          # the forge's limit is 65,536 characters
METRICS_DIR = "metrics/"
NOTE_RESERVE = 1_500        # room kept for the note on what was left out


class RevisionError(SystemExit):
    pass


def _run(*cmd: str) -> str:
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"error: `{' '.join(cmd)}` failed:\n{res.stderr.strip()}")
    return res.stdout


# --------------------------------------------------------------------------- revisions
@dataclass(frozen=True)
class Rev:
    """A revision as given (``name``) and the commit it resolves to (None: the workspace)."""
    name: str
    sha: str | None
    experiment: bool = False

    @property
    def label(self) -> str:
        if self.sha is None:
            return "the workspace"
        if self.experiment:
            return f"experiment `{self.name}` ({self.sha[:7]})"
        return f"`{self.name}`" if self.name.startswith(self.sha[:7]) else \
            f"`{self.name}` ({self.sha[:7]})"


def experiment_commits(name: str) -> list[str]:
    """Commits of the DVC experiments called ``name`` (refs/exps/<baseline>/<name>), newest
    first."""
    out = subprocess.run(["git", "for-each-ref", "--sort=-committerdate",
                          "--format=%(objectname) %(refname)", "refs/exps"],
                         capture_output=True, text=True).stdout
    return [sha for sha, ref in (line.split(" ", 1) for line in out.splitlines() if " " in line)
            if ref.rsplit("/", 1)[-1] == name]


def resolve(name: str) -> Rev:
    """A commit, branch, tag or ``workspace``; else the name of a DVC experiment."""
    if name == WORKSPACE:
        return Rev(name, None)
    res = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{name}^{{commit}}"],
                         capture_output=True, text=True)
    if res.returncode == 0:
        return Rev(name, res.stdout.strip())
    exps = experiment_commits(name)
    if exps:
        return Rev(name, exps[0], experiment=True)
    raise RevisionError(f"error: `{name}` is neither a git revision nor a DVC experiment "
                        "(`git log`, `dvc exp show`)")


_DVC_FS: dict = {}
# The pipeline and its locks: the grid points have a file of their own (paths from the top).
PIPELINE_FILES = ("dvc.yaml", "grid/dvc.yaml")
LOCK_FILES = ("dvc.lock", "grid/dvc.lock")


def _dvc_read(sha: str, path: str) -> str | None:
    """A DVC-cached output at a commit, from the local DVC cache (None when not there)."""
    try:
        if sha not in _DVC_FS:
            from dvc.api import DVCFileSystem

            _DVC_FS[sha] = DVCFileSystem(".", rev=sha)
        return _DVC_FS[sha].read_text(path, encoding="utf-8")
    except Exception:  # not in the local cache (or no DVC): reported as unavailable
        return None


def read_at(rev: Rev, path: str) -> str | None:
    """The text of ``path`` at ``rev``: from git, or from the DVC cache for a DVC-cached output
    (None when it does not exist there or is not in the local cache)."""
    if rev.sha is None:
        p = Path(path)
        return p.read_text(encoding="utf-8") if p.is_file() else None
    res = subprocess.run(["git", "show", f"{rev.sha}:{path}"], capture_output=True, text=True)
    if res.returncode == 0:
        return res.stdout
    if path in LOCK_FILES or path in PIPELINE_FILES:  # git-only (an older commit may lack one)
        return None
    return _dvc_read(rev.sha, path) if path in lock_outs(rev) else None


def _yaml_at(rev: Rev, path: str) -> dict:
    text = read_at(rev, path)
    try:
        return (yaml.safe_load(text) or {}) if text else {}
    except yaml.YAMLError:
        return {}


@cache
def lock_outs(rev: Rev) -> dict[str, str]:
    """path -> content hash of every stage output recorded at rev in the lock files
    (dvc.lock, and grid/dvc.lock for the grid points)."""
    out = {}
    for lock in LOCK_FILES:
        for stage in (_yaml_at(rev, lock).get("stages") or {}).values():
            for entry in stage.get("outs", []) or []:
                out[entry.get("path", "")] = entry.get("md5") or entry.get("hash") or ""
    return out


def declared_metrics(rev: Rev) -> set[str]:
    """The files the pipeline at rev declares as ``metrics:`` (plain paths, no templated
    ones)."""
    found = set()
    stages = [st for f in PIPELINE_FILES for st in (_yaml_at(rev, f).get("stages") or {}).values()]
    for stage in stages:
        for entry in stage.get("metrics", []) or []:
            path = entry if isinstance(entry, str) else next(iter(entry), "")
            if "${" not in path:
                found.add(path)
    return found


# --------------------------------------------------------------------------- metrics
def flatten(obj, prefix: str = "") -> dict:
    """Nested JSON as ``{"a.b.0": value}`` (dotted keys, list items by index)."""
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, list):
        items = ((str(i), v) for i, v in enumerate(obj))
    else:
        return {prefix: obj}
    out = {}
    for key, value in items:
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _fmt(v, precision: int) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return str(v) if math.isnan(v) or math.isinf(v) else str(round(v, precision))
    return str(v).replace("|", "\\|").replace("\n", " ")


def _flat_json(rev: Rev, path: str) -> dict | None:
    text = read_at(rev, path)
    if text is None:
        return None
    try:
        return flatten(json.loads(text))
    except ValueError:
        return {"(unreadable JSON)": text[:40]}


def metric_rows(base: Rev, head: Rev, path: str, precision: int) -> list[str]:
    """Markdown rows ``| key | base | head | change |`` of the keys of ``path`` that differ."""
    a, b = _flat_json(base, path) or {}, _flat_json(head, path) or {}
    rows = []
    for key in list(a) + [k for k in b if k not in a]:
        old, new = a.get(key), b.get(key)
        if old == new:
            continue
        change = _fmt(new - old, precision) if _number(old) and _number(new) else "-"
        rows.append(f"| `{path}` | {_fmt(key, precision)} | {_fmt(old, precision)} | "
                    f"{_fmt(new, precision)} | {change} |")
    return rows


def metrics_files(base: Rev, head: Rev) -> tuple[list[str], list[str]]:
    """(headline files, other metrics JSON files) known at either revision."""
    headline = sorted(declared_metrics(head) or declared_metrics(base))  # the head's decides
    outs = set(lock_outs(base)) | set(lock_outs(head)) | declared_metrics(base)
    others = sorted(p for p in outs if p.startswith(METRICS_DIR) and p.endswith(".json")
                    and p not in headline)
    return headline, others


def changed_outs(base: Rev, head: Rev, keep) -> list[tuple[str, str]]:
    """(path, status) for outputs (``keep(path)``) added, removed or modified."""
    a = {p: h for p, h in lock_outs(base).items() if keep(p)}
    b = {p: h for p, h in lock_outs(head).items() if keep(p)}
    changes = []
    for path in sorted(set(a) | set(b)):
        if path not in a:
            changes.append((path, "added"))
        elif path not in b:
            changes.append((path, "removed"))
        elif a[path] != b[path]:
            changes.append((path, "modified"))
    return changes


def is_plot(path: str) -> bool:
    return path.startswith("plots/") or "/plots/" in path


def changed_plots(base: Rev, head: Rev) -> list[tuple[str, str]]:
    return changed_outs(base, head, is_plot)


def params_rows(base: Rev, head: Rev) -> list[str]:
    """``dvc params diff --md`` as lines (header first), empty when nothing changed."""
    revs = [base.sha] if head.sha is None else [base.sha, head.sha]
    md = _run("dvc", "params", "diff", *revs, "--md").strip()
    lines = md.splitlines()
    return lines if len(lines) > 2 else []


# --------------------------------------------------------------------------- the markdown
@dataclass
class Section:
    """A heading, lines always shown with it, table rows that may be cut, and what to say when
    it is empty."""
    title: str
    head: list[str] = field(default_factory=list)
    rows: list[str] = field(default_factory=list)
    empty: str = ""
    tail: list[str] = field(default_factory=list)


METRIC_HEADER = ["| file | metric | {a} | {b} | change |", "| --- | --- | ---: | ---: | ---: |"]


def build_sections(base: Rev, head: Rev, precision: int, artifact_url: str | None
                   ) -> list[Section]:
    a, b = base.name, "workspace" if head.sha is None else head.name
    header = [h.format(a=a, b=b) for h in METRIC_HEADER]
    headline_files, other_files = metrics_files(base, head)
    headline = [r for p in headline_files for r in metric_rows(base, head, p, precision)]
    plots = changed_plots(base, head)
    sections = [
        Section("Headline metrics that changed", header if headline else [], headline,
                "No headline metric changed."),
        Section("Plots that changed", ["| plot | change |", "| --- | --- |"] if plots else [],
                [f"| `{p}` | {s} |" for p, s in plots], "No plot changed.",
                [f"Rendered side by side (`dvc plots diff`): {artifact_url}"]
                if plots and artifact_url else [])]
    params = params_rows(base, head)
    sections.append(Section("Params that changed", params[:2], params[2:], "No param changed."))
    others = [r for p in other_files for r in metric_rows(base, head, p, precision)]
    sections.append(Section("Other metrics that changed", header if others else [], others,
                            "No other metric changed."))
    tables = changed_outs(base, head, lambda p: p.startswith(METRICS_DIR)
                          and not p.endswith(".json"))
    if tables:
        sections.append(Section("Tables that changed", ["| table | change |", "| --- | --- |"],
                                [f"| `{p}` | {s} |" for p, s in tables]))
    return sections


def render(base: str, head: str, precision: int = 4, artifact_url: str | None = None,
           max_chars: int = MAX_CHARS, full_command: str | None = None) -> str:
    """The comment's markdown, at most ``max_chars`` characters (0: no limit)."""
    b, h = resolve(base), resolve(head)
    if b.sha is None:
        raise RevisionError("error: --base must be a revision or an experiment, not the workspace")
    lines = [f"## clusterlens: {b.label} → {h.label}", ""]
    sections = build_sections(b, h, precision, artifact_url)
    limit = max_chars - NOTE_RESERVE if max_chars else math.inf
    used = sum(len(x) + 1 for x in lines)
    left_out: list[tuple[str, int]] = []
    for sec in sections:
        block = [f"### {sec.title}", ""] + (sec.head if sec.rows else [sec.empty] if sec.empty
                                            else [])
        cost = sum(len(x) + 1 for x in block + sec.tail) + 1
        if used + cost > limit:
            left_out.append((sec.title, len(sec.rows) or 1))
            continue
        used += cost
        kept = 0
        for row in sec.rows:
            if used + len(row) + 1 > limit:
                break
            block.append(row)
            used += len(row) + 1
            kept += 1
        if kept < len(sec.rows):
            left_out.append((sec.title, len(sec.rows) - kept))
        lines += block + ([""] + sec.tail if sec.tail else []) + [""]
    if left_out:
        cmd = full_command or (f"python scripts/pr_comment.py --base {base} --head {head} "
                               "--max-chars 0")
        lines += ["### Left out", "",
                  f"This comment is cut at {max_chars:,} characters. Not shown: " + "; ".join(
                      f"{n:,} row{'s' if n != 1 else ''} of “{t}”" for t, n in left_out) + ".",
                  "", f"The full diff: `{cmd}`"
                  + (f", or `pr_diff_full.md` in the artifact: {artifact_url}" if artifact_url
                     else "") + ".", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", required=True,
                    help="git revision or DVC experiment to compare against (e.g. main)")
    ap.add_argument("--head", default=WORKSPACE,
                    help="git revision, DVC experiment, or `workspace` (default): the files "
                         "on disk")
    ap.add_argument("--precision", type=int, default=4, help="decimals shown")
    ap.add_argument("--max-chars", type=int, default=MAX_CHARS,
                    help=f"cut the comment at this many characters (default {MAX_CHARS:,}; "
                         "0: no limit)")
    ap.add_argument("--artifact-url", help="link to the rendered plots and the full diff (CI)")
    ap.add_argument("--out", help="write the markdown here (default: stdout)")
    args = ap.parse_args(argv)
    if 0 < args.max_chars < 2 * NOTE_RESERVE:
        ap.error(f"--max-chars must be 0 or at least {2 * NOTE_RESERVE}")
    text = render(args.base, args.head, args.precision, args.artifact_url, args.max_chars)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
