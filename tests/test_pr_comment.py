"""scripts/pr_comment.py on a tiny git + DVC repository of its own (one trivial stage, two
commits): cheaper than the pipeline's, and the metric and param changes are chosen here."""
import subprocess
import sys

import pytest

from tests.conftest import PROJECT, dvc_env, sh

MAKE = """
import json, yaml, pathlib
p = yaml.safe_load(open("params.yaml"))
k = p["kmeans"]["n_init"]
pathlib.Path("metrics").mkdir(exist_ok=True)
pathlib.Path("plots").mkdir(exist_ok=True)
json.dump({"selected": {"nmi": round(0.5 + k / 100, 4)}, "images": 100},
          open("metrics/clustering.json", "w"))
open("plots/curve.csv", "w").write("k,v\\n1,%d\\n" % k)
"""

DVC_YAML = """
stages:
  make:
    cmd: python make.py
    deps: [make.py]
    params: [kmeans.n_init]
    metrics:
      - metrics/clustering.json:
          cache: false
    plots:
      - plots/curve.csv:
          cache: false
"""


@pytest.fixture(scope="module")
def two_commits(tmp_path_factory):
    repo = tmp_path_factory.mktemp("pr")
    (repo / "make.py").write_text(MAKE)
    (repo / "dvc.yaml").write_text(DVC_YAML)
    (repo / "params.yaml").write_text("kmeans:\n  n_init: 10\n  k: [2, 3]\n")
    sh(repo, "git", "init", "-q", "-b", "main")
    sh(repo, "dvc", "init", "-q")
    sh(repo, "dvc", "repro")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "base")
    (repo / "params.yaml").write_text("kmeans:\n  n_init: 20\n  k: [2, 3]\n")
    sh(repo, "dvc", "repro")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "more inits")
    return repo


def comment(repo, *args) -> str:
    res = subprocess.run([sys.executable, str(PROJECT / "scripts/pr_comment.py"), *args],
                         cwd=repo, env=dvc_env(), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_changed_metric_param_and_plot_appear_with_both_values(two_commits):
    md = comment(two_commits, "--base", "HEAD~1", "--head", "HEAD")
    metric = next(line for line in md.splitlines() if "selected.nmi" in line)
    assert "0.6" in metric and "0.7" in metric and "0.1" in metric  # old, new, change
    assert "images" not in md  # unchanged metrics are left out
    param = next(line for line in md.splitlines() if "kmeans.n_init" in line)
    assert "10" in param and "20" in param
    assert "kmeans.k" not in md
    assert "| `plots/curve.csv` | modified |" in md


def test_workspace_is_the_default_head_and_no_change_says_so(two_commits, tmp_path):
    md = comment(two_commits, "--base", "HEAD", "--out", str(tmp_path / "c.md"))
    assert md == ""
    text = (tmp_path / "c.md").read_text()
    assert "No metric changed." in text and "No param changed." in text
    assert "No plot changed." in text


def test_unknown_revision_is_a_clear_error(two_commits):
    res = subprocess.run([sys.executable, str(PROJECT / "scripts/pr_comment.py"), "--base",
                          "no-such-rev"], cwd=two_commits, env=dvc_env(), capture_output=True,
                         text=True)
    assert res.returncode != 0 and "no-such-rev" in res.stderr + res.stdout
