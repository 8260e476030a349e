"""The whole-file params check (``python -m clusterlens.check``, and the first thing `index`
does): every section through its own model, every problem at once, each naming its dotted key,
including what DVC itself stops on before any stage runs (a grid key that is no list)."""
from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from clusterlens import check
from clusterlens.config.base import load_params
from clusterlens.config.whole import SECTIONS, declared_params, params_problems, pipeline_files
from clusterlens.core.cli import run_cli
from clusterlens.core.errors import ParamError
from tests.conftest import e2e_copy, ran_all, set_params

PROJECT = Path(__file__).resolve().parents[1]
BASE = load_params(PROJECT / "params.yaml")


def _grid_keys() -> list[str]:
    """Every params key a pipeline ``matrix`` expands (``kmeans.k`` for ``k: ${kmeans.k}``)."""
    stages = [spec for f in pipeline_files(PROJECT)
              for spec in yaml.safe_load(f.read_text())["stages"].values()]
    keys = []
    for spec in stages:
        for ref in (spec.get("matrix") or {}).values():
            m = re.fullmatch(r"\$\{([\w.]+)\}", str(ref))
            assert m, f"matrix value {ref!r} is no params reference"
            keys.append(m.group(1))
    return sorted(set(keys))


def _with(key: str, value, params: dict = BASE) -> dict:
    p = copy.deepcopy(params)
    node = p
    *parents, leaf = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return p


def _messages(params: dict) -> list[str]:
    return [str(e) for e in params_problems(params, declared_params(pipeline_files(PROJECT)))]


def test_the_projects_params_pass(capsys):
    assert _messages(BASE) == []
    assert check.main([str(PROJECT / "params.yaml")]) == 0
    assert capsys.readouterr().out.strip().endswith("params.yaml: ok")


def test_every_matrix_key_is_covered():
    assert {"kmeans.k", "gmm.k", "nmf.k", "dbscan.eps_percentile", "hdbscan.min_cluster_size",
            "agglomerative.linkage"} <= set(_grid_keys())


# DVC's own failures on these: 5, "abc", null -> "unexpected error - 'Value' object is not
# iterable" (no key named); a nested list or mapping -> "Cannot interpolate data of type ..."
@pytest.mark.parametrize("bad", [5, "abc", None, ["a"], [[1, 2]], [{"a": 1}]],
                         ids=["scalar", "string", "null", "word", "nested", "mapping"])
@pytest.mark.parametrize("key", _grid_keys())
def test_a_bad_grid_value_names_its_key(key, bad):
    msgs = _messages(_with(key, bad))
    assert len(msgs) == 1, msgs
    assert msgs[0].startswith(f"params.yaml: `{key}` "), msgs[0]
    assert msgs[0].endswith(f"got {bad!r}"), msgs[0]


def test_the_issue_example_reads_as_wanted():
    assert _messages(_with("kmeans.k", 5))[0].startswith(
        "params.yaml: `kmeans.k` must be a list of integers >= 2")


# One wrong value per section (each section's model has many more rules, tested beside it).
BAD_VALUE = {
    "seed": "zero", "data.root": 5, "index.min_side": "x", "extract.batch_size": 0,
    "captions.batch_size": 0, "fusion.weight": 2, "cnn.epochs": 0, "reduce.n_components": "many",
    "kmeans.n_init": 0, "agglomerative.route": "fast", "large_n.mmap_threshold_mb": "x",
    "gmm.covariance_type": "round", "dbscan.min_samples": 0, "hdbscan.min_samples": "x",
    "nmf.max_iter": 0, "metrics.silhouette_sample": "x", "tsne.perplexity": "x", "umap.min_dist": 2,
    "composition.montage_clusters": "x", "macro.linkage": "fast", "upper_bound.test_size": 2,
    "select.metric": "best", "label_issues.folds": 1, "images.show": "x", "neighbours.k": 0,
    "report.thumbnails": -1,
}


def test_every_section_has_a_bad_value_case():
    assert {k.split(".")[0] for k in BAD_VALUE} == set(SECTIONS) | {"seed"}
    assert set(BASE) <= set(SECTIONS) | {"seed"}  # the project's file holds no unknown section


@pytest.mark.parametrize("key", sorted(BAD_VALUE))
def test_a_bad_value_in_any_section_names_its_key(key):
    msgs = _messages(_with(key, BAD_VALUE[key]))
    assert len(msgs) == 1 and msgs[0].startswith(f"params.yaml: `{key}` "), msgs
    assert repr(BAD_VALUE[key]) in msgs[0] or str(BAD_VALUE[key]) in msgs[0]


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_an_unknown_key_in_any_section_is_named(section):
    p = copy.deepcopy(BASE)
    p.setdefault(section, {})["zz_unknown"] = 1
    assert _messages(p) == [f"params.yaml: `{section}.zz_unknown` is not a known key"
                            + _messages(p)[0].split("is not a known key", 1)[1]]


def test_missing_sections_keys_and_unknown_sections():
    p = copy.deepcopy(BASE)
    del p["large_n"]  # every key has a default: the models accept it, DVC (dvc.yaml) does not
    assert params_problems(p) == []
    assert [e.key for e in params_problems(p, {"kmeans": ["large_n.mmap_threshold_mb"]})] == [
        "large_n.mmap_threshold_mb"]
    p = copy.deepcopy(BASE)
    del p["tsne"]
    p["kmean"] = {"k": [2]}
    del p["kmeans"]["engine"]  # has a default, but dvc.yaml declares it: DVC would stop
    msgs = _messages(p)
    assert msgs == [
        "params.yaml: `kmean` is not a known section; did you mean `kmeans`?",
        "params.yaml: `tsne` is missing",
        "params.yaml: `kmeans.engine` is missing (the stage `grid/dvc.yaml:kmeans` declares it, "
        "and DVC needs it in params.yaml)"]


def test_all_problems_at_once_one_line_each_exit_2(tmp_path, capsys):
    bad = _with("kmeans.k", 5, _with("tsne.perplexity", "x", _with("hdbscan.min_cluster_size",
                                                                   ["a"])))
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(bad, sort_keys=False))
    assert check.main([str(path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert [line.split("`")[1] for line in err[:-1]] == [
        "kmeans.k", "hdbscan.min_cluster_size", "tsne.perplexity"]  # file order
    assert err[-1] == f"{path}: 3 problems; fix them and run again"
    path.write_text("kmeans:\n  k: [2, 3\n")
    assert check.main([str(path)]) == 2
    assert re.match(r"params.yaml: not valid YAML \(line \d\): ", capsys.readouterr().err)


def test_the_command_runs_on_its_own():
    out = subprocess.run([sys.executable, "-m", "clusterlens.check", "params.yaml"],
                         cwd=PROJECT, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "params.yaml: ok", out


def test_index_checks_the_whole_file_before_reading_any_image(tmp_path, monkeypatch, capsys):
    from stages import index as index_stage

    monkeypatch.chdir(tmp_path)
    bad = _with("data.root", str(tmp_path / "absent"), _with("gmm.k", [1]))
    Path("params.yaml").write_text(yaml.safe_dump(_with("tsne.max_iter", "x", bad)))
    assert run_cli(index_stage.main, []) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["error: params.yaml: `gmm.k` must be a list of " + err[0].split(
        "must be a list of ", 1)[1], "error: params.yaml: `tsne.max_iter` must be " + err[1].split(
        "must be ", 1)[1]]
    assert not Path("data").exists()


@pytest.mark.parametrize("argv, key", [
    (["kmeans", "--k", "a"], "kmeans.k"),
    (["hdbscan", "--min-cluster-size", "a"], "hdbscan.min_cluster_size"),
    (["dbscan", "--eps-percentile", "a"], "dbscan.eps_percentile"),
])
def test_a_grid_stage_names_the_key_not_its_command_line_option(argv, key, tmp_path,
                                                                monkeypatch, capsys):
    import numpy as np
    import pandas as pd

    from clusterlens.core.io import save_npy, write_table
    from stages import grid_point

    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text(yaml.safe_dump(_with(key, ["a"])))
    save_npy("data/pca.npy", np.random.default_rng(0).normal(size=(12, 3)).astype(np.float32))
    write_table("data/index.parquet", pd.DataFrame({"label": np.arange(12) % 3}))
    assert run_cli(grid_point.main, argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: params.yaml: `{key}` "), err
    assert "invalid" not in err and "argument --" not in err
    with pytest.raises(ParamError, match=key):
        grid_point.main(argv)


@pytest.mark.slow
def test_dvc_repro_stops_at_index_naming_the_key(e2e_base, tmp_path):
    repo = e2e_copy(e2e_base, tmp_path / "copy").repo
    set_params(repo, kmeans__k=["a"], tsne__perplexity="x")
    out = subprocess.run(["dvc", "repro"], cwd=repo, capture_output=True, text=True)
    text = out.stdout + out.stderr
    assert out.returncode != 0 and ran_all(text) == ["index"], text
    assert "`kmeans.k`" in text and "`tsne.perplexity`" in text
    # a grid key that is no list: DVC stops while reading dvc.yaml, before any stage...
    set_params(repo, kmeans__k=5, tsne__perplexity=30)
    out = subprocess.run(["dvc", "repro"], cwd=repo, capture_output=True, text=True)
    assert out.returncode != 0 and ran_all(out.stdout + out.stderr) == []
    assert "is not iterable" in out.stdout + out.stderr
    # ...so the check runs before it (.ci/run, the workflow, docs/troubleshooting.md)
    out = subprocess.run([sys.executable, "-m", "clusterlens.check"], cwd=repo,
                         capture_output=True, text=True)
    assert out.returncode == 2 and "params.yaml: `kmeans.k` must be a list of" in out.stderr
