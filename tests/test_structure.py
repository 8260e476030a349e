"""The code's shape: stage modules are thin entry points, the library has no cycles, and every
stage's code deps in dvc.yaml are exactly the modules its code imports."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from tests.code_deps import (
    LIB,
    NO_OUTPUT_EFFECT,
    PROJECT,
    STAGES,
    declared_code_deps,
    declared_params,
    dvc_stages,
    expected_code_deps,
    imported_files,
    lib_modules,
    params_read,
    rel,
    rewrite,
    stage_module_of,
    stage_modules,
)

MAX_STAGE_LINES = 150


def test_package_init_files_hold_no_code():
    # They are left out of every stage's deps, which is only right while they do nothing.
    for init in LIB.rglob("__init__.py"):
        body = ast.parse(init.read_text(encoding="utf-8")).body
        code = [n for n in body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
        assert not code, f"{rel(init)} must hold only a docstring"


def test_stages_init_only_pins_the_cpu_kernels_and_is_every_stages_dep():
    # `python -m stages.x` runs it before the stage module: it pins the kernels before numpy
    # loads (clusterlens.core.numerics), and nothing else; it and its imports are every stage's deps.
    init = STAGES / "__init__.py"
    body = ast.parse(init.read_text(encoding="utf-8")).body
    code = [ast.unparse(n) for n in body
            if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
    assert code == ["from clusterlens.core.numerics import pin_cpu_kernels", "pin_cpu_kernels()"]
    for name, stage in dvc_stages().items():
        assert {"stages/__init__.py", "clusterlens/core/numerics.py"} <= expected_code_deps(stage), name


def test_library_never_imports_a_stage():
    for f in lib_modules():
        bad = [rel(g) for g in imported_files(f) if g.parent == STAGES]
        assert not bad, f"{rel(f)} imports stage modules {bad}"


def test_no_stage_imports_another_stage():
    for f in stage_modules():
        bad = [rel(g) for g in imported_files(f) if g.parent == STAGES]
        assert not bad, f"{rel(f)} imports stage modules {bad}"


def test_the_library_has_no_import_cycle():
    graph = {f: {g for g in imported_files(f) if g.is_relative_to(LIB)} for f in lib_modules()}
    state: dict[Path, int] = {}

    def visit(f: Path, stack: list[Path]) -> None:
        state[f] = 1
        for g in sorted(graph.get(f, ())):
            if state.get(g) == 1:
                cycle = stack[stack.index(g):] + [g] if g in stack else [f, g]
                pytest.fail("import cycle: " + " -> ".join(rel(c) for c in cycle))
            if g not in state:
                visit(g, stack + [g])
        state[f] = 2

    for f in sorted(graph):
        if f not in state:
            visit(f, [f])


def test_stage_modules_are_thin():
    for f in stage_modules():
        n = len(f.read_text(encoding="utf-8").splitlines())
        assert n <= MAX_STAGE_LINES, f"{rel(f)} has {n} lines; move logic into clusterlens/"


def test_every_stage_module_is_a_dvc_stage():
    used = {stage_module_of(s["cmd"]) for s in dvc_stages().values()}
    assert set(stage_modules()) == used


@pytest.mark.parametrize("name", sorted(dvc_stages()))
def test_code_deps_are_exactly_the_imports(name):
    stage = dvc_stages()[name]
    declared, expected = declared_code_deps(stage), expected_code_deps(stage)
    missing, extra = sorted(expected - declared), sorted(declared - expected)
    assert not missing and not extra, (
        f"dvc.yaml stage `{name}`: add {missing}, remove {extra}" if missing or extra else "")


def test_a_drifted_dep_is_caught(tmp_path):
    # The check above must fail when dvc.yaml loses a module that a stage imports.
    stage = dict(dvc_stages()["kmeans"])
    imports = sorted(expected_code_deps(stage) - {"stages/grid_point.py"})
    assert imports, "stages/grid_point.py imports no library module?"
    stage["deps"] = [d for d in stage["deps"] if d != imports[0]]
    assert expected_code_deps(stage) - declared_code_deps(stage) == {imports[0]}


def test_the_grid_pipeline_runs_at_the_top_with_the_top_params():
    # grid/dvc.yaml holds the grid-point stages (a lock file of their own keeps both locks
    # small); each runs where the others do, templated from the same params.yaml.
    grid = yaml.safe_load((PROJECT / "grid" / "dvc.yaml").read_text(encoding="utf-8"))
    assert grid["vars"] == ["../params.yaml"]
    assert set(grid["stages"]) == {"kmeans", "gmm", "dbscan", "hdbscan", "agglomerative",
                                   "nmf_kmeans"}
    assert all(spec["wdir"] == ".." and "matrix" in spec for spec in grid["stages"].values())
    top = yaml.safe_load((PROJECT / "dvc.yaml").read_text(encoding="utf-8"))
    assert "vars" not in top and not set(top["stages"]) & set(grid["stages"])


def test_rewrite_restores_a_drifted_dvc_yaml():
    text = (PROJECT / "dvc.yaml").read_text(encoding="utf-8")
    stages = dvc_stages()
    fixed = rewrite(text, stages)
    drifted = fixed.replace("      - stages/tsne.py\n", "", 1)
    assert drifted != fixed
    assert rewrite(drifted, stages) == fixed


def test_logging_and_plotting_helpers_do_not_invalidate_extraction_or_training():
    for name in ("extract", "backbone"):
        deps = expected_code_deps(dvc_stages()[name])
        for helper in ("clusterlens/report/figures/style.py", *NO_OUTPUT_EFFECT):
            assert helper not in deps, f"{name} depends on {helper}"
        assert PROJECT / "clusterlens/core/logs.py" in imported_files(PROJECT / f"stages/{name}.py")
    # extraction needs the scratch CNN's architecture and loader, not its training code
    assert "clusterlens/features/scratch_cnn_training.py" not in expected_code_deps(
        dvc_stages()["extract"])


def test_the_modules_left_out_of_code_deps_only_log_and_wrap():
    """The allow-list stays short, and each of its modules imports nothing that computes."""
    assert NO_OUTPUT_EFFECT == {"clusterlens/core/logs.py", "clusterlens/core/cli.py"}
    allowed = {"clusterlens/core/errors.py", *NO_OUTPUT_EFFECT}
    for module in NO_OUTPUT_EFFECT:
        assert {rel(f) for f in imported_files(PROJECT / module)} <= allowed, module


def _stages_by_module() -> dict[Path, list[str]]:
    out: dict[Path, list[str]] = {}
    for name, stage in dvc_stages().items():
        out.setdefault(stage_module_of(stage["cmd"]), []).append(name)
    return out


@pytest.mark.parametrize("module", sorted(_stages_by_module()), ids=rel)
def test_declared_params_are_exactly_the_params_read(module):
    # A stage module shared by several DVC stages (the grid methods of stages/grid_point.py) is
    # checked as a whole, and each of its stages may declare only keys the module reads.
    names = _stages_by_module()[module]
    read = params_read(module)
    declared = set().union(*(declared_params(dvc_stages()[n]) for n in names))
    assert read == declared, (
        f"{rel(module)} ({', '.join(names)}): declare {sorted(read - declared)} in dvc.yaml, "
        f"drop {sorted(declared - read)}")


def test_params_read_sees_the_fields_a_stage_takes_from_its_params(tmp_path):
    src = tmp_path / "s.py"
    src.write_text(
        "from dataclasses import dataclass\n"
        "from clusterlens.config.reduce import ReduceParams\n"
        "from clusterlens.config.tsne import TSNEParams\n"
        "from clusterlens.config.gmm import GMMParams\n"
        "@dataclass(frozen=True)\n"
        "class Params:\n"
        "    seed: int\n"
        "    tsne: TSNEParams\n"
        "    reduce: ReduceParams\n"
        "    gmm: GMMParams | None = None\n"
        "def run(cfg: Params):\n"
        "    p = cfg.tsne\n"
        "    g = cfg.gmm\n"
        "    return p.sample, cfg.seed, f(cfg.reduce), g and g.max_iter\n"
        "def unrelated(cfg):\n"
        "    return cfg.tsne.perplexity\n")
    assert params_read(src) == {"tsne.sample", "seed", "reduce.standardize",
                                "reduce.n_components", "reduce.max_exact_n", "gmm.max_iter"}


def test_params_read_leaves_out_the_whole_file_check():
    index = STAGES / "index.py"
    assert "check_params(" in index.read_text()  # `index` validates the whole file first
    assert not any(k.startswith(("kmeans.", "tsne.")) for k in params_read(index))


@pytest.mark.parametrize("module", stage_modules(), ids=rel)
def test_a_stage_reads_params_only_through_its_params_dataclass(module):
    """Params are parsed once, at the door (``parse_stage``): a section parsed anywhere else,
    or a raw ``params[...]`` lookup, would be a read that params_read does not see."""
    tree = ast.parse(module.read_text(encoding="utf-8"))
    calls = {getattr(n.func, "id", getattr(n.func, "attr", None)) for n in ast.walk(tree)
             if isinstance(n, ast.Call)}
    assert not calls & {"parse_section", "parse_fusion", "require_seed", "section_errors"}
    raw = [ast.unparse(n) for n in ast.walk(tree) if isinstance(n, ast.Subscript)
           and isinstance(n.value, ast.Name) and n.value.id == "params"]
    assert raw == []


def _tracked_text_files() -> list[Path]:
    import subprocess

    out = subprocess.run(["git", "ls-files"], cwd=PROJECT, capture_output=True, text=True,
                         check=True).stdout.split()
    keep = (".py", ".md", ".yaml", ".yml", ".ini", ".toml", ".txt", ".json", ".csv")
    return [PROJECT / f for f in out if f.endswith(keep) and not f.endswith("dvc.lock")
            and (PROJECT / f).is_file()]


def test_readme_is_short():
    n = len((PROJECT / "README.md").read_text(encoding="utf-8").splitlines())
    assert n <= 250, f"README.md has {n} lines; move detail into docs/"


def test_code_and_docs_do_not_narrate_the_projects_history():
    # Git keeps the history; code, comments and docs describe the code as it is.
    import re

    pattern = re.compile(r"\b(issue|session|work round|round) #?\d+\b|\.\./shared/SPEC",
                         re.IGNORECASE)
    hits = []
    for f in _tracked_text_files():
        if f == Path(__file__):
            continue
        for i, line in enumerate(f.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if pattern.search(line):
                hits.append(f"{rel(f)}:{i}: {line.strip()[:100]}")
    assert not hits, "\n".join(hits)


def test_every_file_using_the_end_to_end_repository_is_scheduled_around_its_build():
    """The file that builds the shared end-to-end repository runs first and every other file
    that uses it last (tests/conftest.py), so no worker waits for the build."""
    from tests.conftest import E2E_FIRST, E2E_LAST

    takes = re.compile(r"def \w+\([^)]*\be2e_(base|module)\b")  # as a fixture
    users = {p.name for p in (PROJECT / "tests").glob("test_*.py") if takes.search(p.read_text())}
    assert users == set(E2E_FIRST) | set(E2E_LAST)
