"""The import graph of the project, and each DVC stage's code deps computed from it.

``python -m tests.code_deps`` prints every stage whose code deps in the pipeline files
(dvc.yaml, grid/dvc.yaml) differ from its imports; ``python -m tests.code_deps --write`` rewrites
those deps in place (comments and the other deps are kept). tests/test_structure.py fails on
any difference.
"""
from __future__ import annotations

import argparse
import ast
import re
from functools import cache
from pathlib import Path

import yaml

from clusterlens.config.whole import pipeline_files

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


@cache
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


# Modules that cannot change any output: they format log lines and turn a stage's exceptions
# into one-line messages and exit codes. They are left out of every stage's code deps (and
# what only they import is not followed), so that editing them never invalidates a cached
# output. Nothing that computes, chooses or writes a value belongs here.
NO_OUTPUT_EFFECT = frozenset({"clusterlens/core/logs.py", "clusterlens/core/cli.py"})


def closure(path: Path) -> set[Path]:
    seen: set[Path] = set()
    todo = [path]
    while todo:
        f = todo.pop()
        for g in imported_files(f):
            if g not in seen and rel(g) not in NO_OUTPUT_EFFECT:
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
    """Stage name -> its definition, over every pipeline file (the names are unique)."""
    stages: dict = {}
    for path in pipeline_files(PROJECT):
        found = yaml.safe_load(path.read_text(encoding="utf-8"))["stages"]
        assert not set(found) & set(stages), f"{rel(path)} repeats a stage name"
        stages.update(found)
    return stages


def stage_module_of(cmd: str) -> Path:
    words = cmd.split()
    assert words[:3] == ["python", "-m", words[2]] and words[2].startswith("stages."), cmd
    return STAGES / (words[2].split(".", 1)[1] + ".py")


def is_code(dep: str) -> bool:
    return dep.endswith(".py") and dep.split("/")[0] in ("stages", "clusterlens")


# `python -m stages.x` runs the package's __init__ first (it pins the CPU kernels): it and what
# it imports are code deps of every stage. Library __init__ files hold only a docstring.
STAGES_INIT = STAGES / "__init__.py"


def expected_code_deps(stage: dict) -> set[str]:
    module = stage_module_of(stage["cmd"])
    files = {module, STAGES_INIT} | closure(module) | closure(STAGES_INIT)
    return {rel(f) for f in files}


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
    ap.add_argument("--write", action="store_true", help="rewrite the pipeline files in place")
    args = ap.parse_args()
    stages = dvc_stages()
    if args.write:
        for path in pipeline_files(PROJECT):
            path.write_text(rewrite(path.read_text(encoding="utf-8"), stages), encoding="utf-8")
        stages = dvc_stages()
    for name, stage in stages.items():
        exp, dec = expected_code_deps(stage), declared_code_deps(stage)
        if exp != dec:
            print(f"{name}: add {sorted(exp - dec)}, remove {sorted(dec - exp)}")


if __name__ == "__main__":
    main()


# --------------------------------------------------------------------------- params keys


def _imported_model(name: str, tree: ast.Module):
    """The section model a name is imported as in a module (``from m import TSNEParams``)."""
    import importlib

    from clusterlens.config.base import Section

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and any(
                a.name == name for a in node.names):
            obj = getattr(importlib.import_module(node.module), name, None)
            return obj if isinstance(obj, type) and issubclass(obj, Section) else None
    return None


def stage_specs(tree: ast.Module) -> dict[str, dict]:
    """The module's params dataclasses (:func:`clusterlens.config.base.parse_stage`): class
    name -> {field: section model, or "seed"}."""
    specs = {}
    for node in tree.body:
        if not (isinstance(node, ast.ClassDef) and any(
                "dataclass" in ast.unparse(d) for d in node.decorator_list)):
            continue
        fields = {}
        for item in node.body:
            if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                name = item.target.id
                ann = ast.unparse(item.annotation).removesuffix(" | None")  # optional section
                fields[name] = "seed" if name == "seed" else _imported_model(ann, tree)
        if fields and all(fields.values()):
            specs[node.name] = fields
    return specs


def params_read(module: Path) -> set[str]:
    """Dotted params keys a stage module reads.

    A stage parses its params once (``parse_stage(params, Params)``) into a dataclass of
    section models; ``cfg.<section>.<field>`` reads that key, ``cfg.seed`` the seed, and a
    section used whole (``cfg.<section>`` passed on) every field of it. A name bound to a
    section (``p = cfg.tsne``) reads the fields taken from it (``p.sample``). Each function is
    its own scope: a function whose parameter is annotated with the dataclass reads through it.
    The whole-file check (``check_params(params, ...)`` of clusterlens.config.whole, which
    `index` runs first) validates every key but reads none for the stage's work, so it adds
    nothing: a stage declares only what it uses, and DVC re-runs it only when that changes."""
    tree = ast.parse(module.read_text(encoding="utf-8"))
    specs = stage_specs(tree)
    keys: set[str] = set()

    def use(sec: str, model, attr: str | None) -> None:
        if attr in model.model_fields:
            keys.add(f"{sec}.{attr}")
        else:
            keys.update(f"{sec}.{f}" for f in model.model_fields)

    for fn in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]:
        cfgs = {a.arg: a.annotation.id for a in fn.args.args + fn.args.kwonlyargs
                if isinstance(a.annotation, ast.Name) and a.annotation.id in specs}
        parents = {id(c): n for n in ast.walk(fn) for c in ast.iter_child_nodes(n)}
        for node in ast.walk(fn):  # cfg = parse_stage(params, Params)
            if (isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
                    and isinstance(node.value, ast.Call)
                    and getattr(node.value.func, "id", None) == "parse_stage"
                    and isinstance(node.value.args[1], ast.Name)):
                cfgs[node.targets[0].id] = node.value.args[1].id
        bound: dict[str, tuple] = {}  # p = cfg.<section>
        taken = set()
        for node in ast.walk(fn):
            if (isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
                    and isinstance(node.value, ast.Attribute)
                    and isinstance(node.value.value, ast.Name) and node.value.value.id in cfgs):
                model = specs[cfgs[node.value.value.id]].get(node.value.attr)
                if model not in (None, "seed"):
                    bound[node.targets[0].id] = (node.value.attr, model)
                    taken.add(id(node.value))
        for node in ast.walk(fn):
            if not isinstance(node, ast.Attribute) or id(node) in taken:
                continue
            base = node.value
            if isinstance(base, ast.Name) and base.id in cfgs:
                model = specs[cfgs[base.id]].get(node.attr)
                parent = parents.get(id(node))
                if model == "seed":
                    keys.add("seed")
                elif model is not None:
                    field = parent.attr if isinstance(parent, ast.Attribute) else None
                    use(node.attr, model, field)
            elif isinstance(base, ast.Name) and base.id in bound:
                use(*bound[base.id], node.attr)
        for node in ast.walk(fn):  # a bound section used whole (a test of it, `p and p.x`, is not)
            if (isinstance(node, ast.Name) and node.id in bound and isinstance(node.ctx, ast.Load)
                    and not isinstance(parents.get(id(node)), (ast.Attribute, ast.BoolOp,
                                                               ast.Compare))):
                use(*bound[node.id], None)
    return keys


def declared_params(stage: dict) -> set[str]:
    out: set[str] = set()
    for p in stage.get("params", []):
        if isinstance(p, str):
            out.add(p)
    return out
