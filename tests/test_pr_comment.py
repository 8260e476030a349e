"""scripts/pr_comment.py (and compare_exps.py --show) on a tiny git + DVC repository of its own
(one trivial stage, two commits and one real `dvc exp run`): cheaper than the pipeline's, and
the changes are chosen here. The stage's detailed metrics file is large enough that the full
diff does not fit in one comment."""
import re
import shlex
import subprocess
import sys

import pytest

from tests.conftest import PROJECT, dvc_env, sh

LIMIT = 65_536  # the forge's comment limit
ROWS = 3_000    # keys of metrics/detail.json, every one changes with kmeans.n_init

MAKE = """
import json, yaml, pathlib
p = yaml.safe_load(open("params.yaml"))
k = p["kmeans"]["n_init"]
pathlib.Path("metrics").mkdir(exist_ok=True)
pathlib.Path("plots").mkdir(exist_ok=True)
json.dump({"nmi": round(0.5 + k / 100, 4), "images": 100}, open("metrics/headline.json", "w"))
json.dump({"points": {f"p{i:04d}": {"score": round(k * i / 7919, 6)} for i in range(%d)}},
          open("metrics/detail.json", "w"))
json.dump({"inertia": 100 - k}, open("metrics/cached.json", "w"))
open("plots/curve.csv", "w").write("k,v\\n1,%%d\\n" %% k)
open("plots/fixed.csv", "w").write("k,v\\n1,1\\n")
""" % ROWS

DVC_YAML = """
stages:
  make:
    cmd: python src/make.py
    deps: [src/make.py]
    params: [kmeans.n_init]
    outs:
      - metrics/detail.json:
          cache: false
      - metrics/cached.json     # in the DVC cache, not in git
    metrics:
      - metrics/headline.json:
          cache: false
    plots:
      - plots/curve.csv:
          cache: false
      - plots/fixed.csv:
          cache: false
"""


# A grid pipeline file of its own, as the project's grid/dvc.yaml (added by the `head` commit)
POINT = """
import sys, yaml, pathlib
k = yaml.safe_load(open("params.yaml"))["kmeans"]["n_init"]
pathlib.Path(f"plots/point_{sys.argv[1]}.png").write_bytes(b"fake png %d" % k)
"""
GRID_YAML = """
vars:
  - ../params.yaml
stages:
  point:
    wdir: ..
    matrix:
      k: ${kmeans.k}
    cmd: python src/point.py ${item.k}
    deps: [src/point.py]
    params: [kmeans.n_init]
    outs:
      - plots/point_${item.k}.png
"""
# ...read by a stage of dvc.yaml, as `clustering` reads data/clusters: `dvc repro` (whose
# default target is the top dvc.yaml) runs the grid points as its upstream
COLLECT = """
  collect:
    cmd: python -c "pass"
    deps: [plots/point_2.png, plots/point_3.png]
"""


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """Commits `base` (n_init 10) and `head` (n_init 20, and a grid/dvc.yaml); experiment
    `wider` (n_init 30) from `head`, run in a temporary copy so that the workspace stays at
    HEAD."""
    repo = tmp_path_factory.mktemp("pr")
    (repo / "src").mkdir()
    (repo / "src/make.py").write_text(MAKE)
    (repo / "dvc.yaml").write_text(DVC_YAML)
    (repo / "params.yaml").write_text("kmeans:\n  n_init: 10\n  k: [2, 3]\n")
    sh(repo, "git", "init", "-q", "-b", "main")
    sh(repo, "dvc", "init", "-q")
    sh(repo, "dvc", "repro")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "base")
    (repo / "params.yaml").write_text("kmeans:\n  n_init: 20\n  k: [2, 3]\n")
    (repo / "src/point.py").write_text(POINT)
    (repo / "grid").mkdir()
    (repo / "grid/dvc.yaml").write_text(GRID_YAML)
    (repo / "dvc.yaml").write_text(DVC_YAML + COLLECT)
    sh(repo, "dvc", "repro")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "more inits")
    sh(repo, "dvc", "exp", "run", "--temp", "-n", "wider", "-S", "kmeans.n_init=30")
    return repo


def comment(repo, *args) -> str:
    res = subprocess.run([sys.executable, str(PROJECT / "scripts/pr_comment.py"), *args],
                         cwd=repo, env=dvc_env(), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return res.stdout


def line_with(md: str, text: str) -> str:
    return next(line for line in md.splitlines() if text in line)


def test_changed_metric_plot_and_param_appear_in_that_order(repo):
    md = comment(repo, "--base", "HEAD~1", "--head", "HEAD")
    metric = line_with(md, "| nmi |")
    assert "| 0.6 | 0.7 | 0.1 |" in metric  # old, new, change
    assert "| images |" not in md  # unchanged metrics are left out
    param = line_with(md, "kmeans.n_init")
    assert "10" in param and "20" in param
    assert "kmeans.k" not in md
    assert "| `plots/curve.csv` | modified |" in md and "fixed.csv" not in md
    assert "| p0001.score" not in md.split("### Other metrics")[0]  # detail: not a headline
    assert "| `metrics/cached.json` | inertia | 90 | 80 | -10 |" in md  # read from DVC's cache
    titles = re.findall(r"^### (.+)$", md, flags=re.M)
    assert titles[:4] == ["Headline metrics that changed", "Plots that changed",
                          "Params that changed", "Other metrics that changed"]


def test_the_grid_lock_file_is_read_too(repo):
    # HEAD~1 has no grid/dvc.lock: its plots are added; the experiment modifies them
    md = comment(repo, "--base", "HEAD~1", "--head", "HEAD")
    assert "| `plots/point_2.png` | added |" in md and "| `plots/point_3.png` | added |" in md
    md = comment(repo, "--base", "HEAD", "--head", "wider")
    assert "| `plots/point_2.png` | modified |" in md


def test_a_large_diff_is_cut_under_the_limit_with_a_note_of_what_is_left_out(repo):
    full = comment(repo, "--base", "HEAD~1", "--head", "HEAD", "--max-chars", "0")
    assert len(full) > 2 * LIMIT and "### Left out" not in full
    assert len(re.findall(r"^\| `metrics/detail.json` \| points\.p\d{4}\.score \|", full,
                          flags=re.M)) == ROWS - 1  # p0000 is 0 in both
    md = comment(repo, "--base", "HEAD~1", "--head", "HEAD")
    assert len(md) < LIMIT
    assert md.index("| nmi |") < md.index("plots/curve.csv") < md.index("kmeans.n_init")
    shown = len(re.findall(r"^\| `metrics/detail.json` \|", md, flags=re.M))
    assert 0 < shown < ROWS - 1
    note = md.split("### Left out")[1]
    assert f"{ROWS - 1 - shown:,} rows of “Other metrics that changed”" in note
    cmd = re.search(r"The full diff: `([^`]+)`", note).group(1)  # what printed `full`
    assert shlex.split(cmd) == ["python", "scripts/pr_comment.py", "--base", "HEAD~1",
                                "--head", "HEAD", "--max-chars", "0"]
    small = comment(repo, "--base", "HEAD~1", "--head", "HEAD", "--max-chars", "4000")
    assert len(small) <= 4000 and "| nmi |" in small and "### Left out" in small


def test_experiment_names_resolve_to_their_commit(repo):
    md = comment(repo, "--base", "HEAD", "--head", "wider")
    assert "experiment `wider`" in md.splitlines()[0]
    assert "| 0.7 | 0.8 | 0.1 |" in line_with(md, "| nmi |")
    assert "20" in line_with(md, "kmeans.n_init") and "30" in line_with(md, "kmeans.n_init")
    assert "| `plots/curve.csv` | modified |" in md  # not "added": dvc.lock is the exp's
    assert "added" not in md and "fixed.csv" not in md
    back = comment(repo, "--base", "wider", "--head", "HEAD~1")
    assert "| 0.8 | 0.6 | -0.2 |" in line_with(back, "| nmi |")


def test_workspace_is_the_default_head_and_no_change_says_so(repo, tmp_path):
    md = comment(repo, "--base", "HEAD", "--out", str(tmp_path / "c.md"))
    assert md == ""
    text = (tmp_path / "c.md").read_text()
    assert "the workspace" in text.splitlines()[0]
    for part in ["headline metric", "plot", "param", "other metric"]:
        assert f"No {part} changed." in text
    assert "Left out" not in text


def test_unknown_revision_is_a_clear_error(repo):
    res = subprocess.run([sys.executable, str(PROJECT / "scripts/pr_comment.py"), "--base",
                          "no-such-rev"], cwd=repo, env=dvc_env(), capture_output=True,
                         text=True)
    assert res.returncode != 0 and "no-such-rev" in res.stderr + res.stdout


def test_compare_exps_show_keeps_the_changed_params_and_metrics_only(repo):
    def show(*args, columns="120"):
        res = subprocess.run([sys.executable, str(PROJECT / "scripts/compare_exps.py"), "--show",
                              *args], cwd=repo, env={**dvc_env(), "COLUMNS": columns},
                             capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        return res.stdout

    out = show()
    header = line_with(out, "Experiment").split()
    assert header == ["Experiment", "kmeans.n_init", "nmi"]  # no dep hash, date or kmeans.k
    assert "[wider]" not in out and "└ wider" in out
    wider = line_with(out, "└ wider").split()
    assert wider[2:] == ["30", "0.8"]   # its param, then its headline
    assert max(map(len, out.splitlines())) <= 120
    # narrower than the table: the params stay, the metrics that do not fit are named
    narrow = show(columns="28")
    assert line_with(narrow, "Experiment").split() == ["Experiment", "kmeans.n_init"]
    assert "left out to fit 28 columns: nmi" in narrow
    assert line_with(show("--width", "0", columns="28"), "Experiment").split()[-1] == "nmi"
