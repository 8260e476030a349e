"""The import graph of the project, and each DVC stage's code deps computed from it.

``python -m tests.code_deps`` prints every stage whose code deps in dvc.yaml differ from its
imports; ``python -m tests.code_deps --write`` rewrites those deps in place (comments and the
other deps are kept). tests/test_structure.py fails on any difference.
"""
from __future__ import annotations

import argparse
import ast
import re
from functools import lru_cache
from pathlib import Path

import yaml

PROJECT = Path(__file__).resolve().parents[1]
LIB = PROJECT / "clusterlens"
STAGES = PROJECT / "stages"


def module_file(name: str) -> Path | None:
    """``clusterlens.x.y`` -> its file (a module or a package's __init__), None outside."""
    parts = name.split(".")
    if parts[0] not in ("clusterlens", "stages"):
        return None
    base = PROJECT.joinpath(*parts)
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


@lru_cache(maxsize=None)
def imported_files(path: Path) -> frozenset[Path]:
    """Project files that ``path`` imports anywhere in its code (function bodies included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[Path] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            f = module_file(name)
            if f is not None and f.name != "__init__.py":
                found.add(f)
    return frozenset(found)


def closure(path: Path) -> set[Path]:
    seen: set[Path] = set()
    todo = [path]
    while todo:
        f = todo.pop()
        for g in imported_files(f):
            if g not in seen:
                seen.add(g)
                todo.append(g)
    return seen - {path}


def rel(p: Path) -> str:
    return p.relative_to(PROJECT).as_posix()


def lib_modules() -> list[Path]:
    return sorted(p for p in LIB.rglob("*.py") if p.name != "__init__.py")


def stage_modules() -> list[Path]:
    return sorted(p for p in STAGES.glob("*.py") if p.name != "__init__.py")


def dvc_stages() -> dict:
    return yaml.safe_load((PROJECT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]


def stage_module_of(cmd: str) -> Path:
    words = cmd.split()
    assert words[:3] == ["python", "-m", words[2]] and words[2].startswith("stages."), cmd
    return STAGES / (words[2].split(".", 1)[1] + ".py")


def is_code(dep: str) -> bool:
    return dep.endswith(".py") and dep.split("/")[0] in ("stages", "clusterlens")


def expected_code_deps(stage: dict) -> set[str]:
    module = stage_module_of(stage["cmd"])
    return {rel(module)} | {rel(f) for f in closure(module)}


def declared_code_deps(stage: dict) -> set[str]:
    return {d for d in stage.get("deps", []) if isinstance(d, str) and is_code(d)}


def rewrite(text: str, stages: dict) -> str:
    """dvc.yaml text with each stage's code deps replaced by the computed ones (sorted, after
    its data deps); a shared ``&anchor`` list is rewritten once, from its first stage."""
    out: list[str] = []
    stage = None
    in_deps = False
    pending: list[str] = []
    for line in text.splitlines(keepends=True):
        m = re.match(r"^  ([A-Za-z_][\w-]*):\s*$", line)
        if m:
            stage = m.group(1)
        if in_deps:
            item = re.match(r"^      - ([^\s#]+)", line)
            if item:
                if not is_code(item.group(1)):
                    out.append(line)
                continue
            out.extend(pending)
            in_deps = False
        if stage in stages and re.match(r"^    deps:(\s*&\w+)?\s*$", line):
            in_deps = True
            pending = [f"      - {d}\n" for d in sorted(expected_code_deps(stages[stage]))]
        out.append(line)
    if in_deps:
        out.extend(pending)
    return "".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="rewrite dvc.yaml in place")
    args = ap.parse_args()
    stages = dvc_stages()
    path = PROJECT / "dvc.yaml"
    if args.write:
        path.write_text(rewrite(path.read_text(encoding="utf-8"), stages), encoding="utf-8")
        stages = dvc_stages()
    for name, stage in stages.items():
        exp, dec = expected_code_deps(stage), declared_code_deps(stage)
        if exp != dec:
            print(f"{name}: add {sorted(exp - dec)}, remove {sorted(dec - exp)}")


if __name__ == "__main__":
    main()
