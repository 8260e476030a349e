"""End to end: the shared `dvc repro` repository (tests/conftest.py) and what re-runs when.

The full pipeline ran once when the repository was built; the tests here read its outputs,
ask `dvc status` / `dvc repro --dry` what a change would re-run, and run DVC for real only
where the result of running is what they check (a failing stage, pruning, the run cache, a
remote). They share one copy of the repository (``e2e_module``) and restore every param they
change. Switching backbones and a one-image class run in files of their own
(test_pipeline_backbones.py, test_pipeline_single_image_class.py).
"""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.conftest import (
    E2E_IMAGES,
    changed,
    dvc_env,
    e2e_copy,
    grid,
    params_set,
    ran_all,
    sh,
    up_to_date,
)

pytestmark = pytest.mark.slow

STAGES = ["digits", "index", "backbone", "extract", "captions", "fusion", "reduce"]
DATA_HALF = STAGES[2:]  # what follows `index`, up to the PCA
CLUSTER_STAGES = [*map(grid, ["kmeans@2", "kmeans@3", "gmm@3", "dbscan@50", "hdbscan@5"]),
                  "nmf", grid("nmf_kmeans@3"), grid("agglomerative@ward"),
                  grid("agglomerative@single"), "clustering",
                  "tsne", "umap", "composition", "macro", "macro_purity", "upper_bound", "summary",
                  "label_issues", "neighbours", "images", "report"]
AGGREGATES = {"clustering", "images", "composition", "macro_purity", "summary", "report"}


def data_half(stages: list[str]) -> list[str]:
    """The data-half stages among ``stages``, in pipeline order (`index` always runs)."""
    return [s for s in DATA_HALF if s in stages]


def would_change(repo: Path) -> list[str]:
    """Stages `dvc status` finds changed (their own deps, params or outputs)."""
    return changed(sh(repo, "dvc", "status"))


@pytest.fixture(scope="module")
def repo(e2e_module):
    return e2e_module.repo


# --------------------------------------------------------------------------- the first run
def test_repro_runs_every_stage_and_writes_outputs(e2e_base, repo):
    first, r = e2e_base.first_repro, e2e_base.repo
    assert [s for s in STAGES if s in ran_all(first)] == STAGES
    assert sorted(ran_all(first)) == sorted(STAGES + CLUSTER_STAGES)
    index = pd.read_parquet(r / "data/index.parquet")
    assert len(index) == E2E_IMAGES and index["class"].nunique() == 3
    rejected = pd.read_csv(r / "data/rejected.csv")
    assert rejected.to_dict("records")[0]["path"] == "berry/broken.jpg"
    feats = np.load(r / "data/features.npy")
    assert feats.shape == (E2E_IMAGES, 1280) and feats.dtype == np.float32
    assert np.load(r / "data/pca.npy").shape == (E2E_IMAGES, 5)
    assert np.load(r / "data/pca_2d.npy").shape == (E2E_IMAGES, 2)
    m = {n: json.loads((r / f"metrics/{n}.json").read_text())
         for n in ["index", "extract", "reduce"]}
    assert m["index"]["images"] == E2E_IMAGES
    assert m["index"]["rejected_by_reason"] == {"corrupt": 1}
    assert m["extract"]["dim"] == 1280 and m["extract"]["device"] == "cpu"
    assert m["reduce"]["n_components"] == 5
    for png in ["plots/index/class_distribution.png", "plots/index/image_sizes.png",
                "plots/index/samples.png", "plots/reduce/pca_2d.png",
                "plots/reduce/explained_variance.png"]:
        assert (r / png).stat().st_size > 1000, png
    assert len(list((r / "data/digits").glob("*/*.png"))) == 1797
    clus = json.loads((r / "metrics/clustering.json").read_text())
    assert set(clus["kmeans"]) == {"k2", "k3"} and clus["selected"]["metric"] == "nmi"
    assert np.load(r / "data/clusters/kmeans/k3.npy").shape == (E2E_IMAGES,)
    comp = pd.read_csv(r / "metrics/composition.csv")
    assert comp["size"].sum() == E2E_IMAGES
    for png in ["heatmap", "montage", "tsne", "pca_2d"]:
        assert (r / f"plots/composition/{png}.png").stat().st_size > 1000, png
    assert (r / "plots/clustering/dendrogram_ward.png").stat().st_size > 1000
    md = (r / "report/report.md").read_text()
    assert "## 7. Supervised upper bound and the gap" in md and "is missing" not in md
    page = (r / "report/report.html").read_text()
    assert page.count('<figure><img alt="') == md.count("![") >= 15
    assert json.loads((r / "logs/extract_timing.json").read_text())["images"] == E2E_IMAGES
    # DVC's own views, in this module's copy
    sh(repo, "dvc", "plots", "show")  # every DVC-native plot renders into one page
    assert (repo / "dvc_plots/index.html").stat().st_size > 1000
    shown = sh(repo, "dvc", "metrics", "show")  # the headline only: one short row
    assert "variance_kept" in shown and "upper_bound" in shown and "kmeans_nmi" in shown
    assert "variance_at_10" not in shown and "images_per_s" not in shown
    head = json.loads((r / "metrics/headline.json").read_text())
    assert len(head) <= 28 and head["images"] == E2E_IMAGES and head["rejected"] == 1
    assert all(isinstance(head[k], int) for k in ("duplicate_pairs", "same_scene_pairs", "blurry"))
    assert head["model"].split("/")[0] == clus["selected"]["method"]
    res = subprocess.run(["dvc", "plots", "show", "--json"], cwd=repo, env=dvc_env(),
                         capture_output=True, text=True, check=True)
    plots = json.loads(res.stdout)["data"]  # the key figures are DVC image plots
    for png in ["heatmap", "montage", "tsne", "pca_2d"]:
        assert plots[f"plots/composition/{png}.png"][0]["type"] == "image", png


def test_second_repro_runs_nothing(repo):
    assert up_to_date(sh(repo, "dvc", "status"))
    assert ran_all(sh(repo, "dvc", "repro", "--dry")) == ["index"]  # it always re-scans


# --------------------------------------------------------------------------- what re-runs
def test_pca_param_change_reruns_only_reduce(repo):
    with params_set(repo, reduce__n_components=3):
        assert data_half(would_change(repo)) == ["reduce"]
        assert data_half(ran_all(sh(repo, "dvc", "repro", "--dry"))) == ["reduce"]
    assert up_to_date(sh(repo, "dvc", "status"))


def test_backbone_change_reruns_extract_and_what_follows(repo):
    with params_set(repo, extract__backbone="resnet18", extract__weights="none"):
        # the stages that read extract.backbone; fusion and reduce follow from their inputs
        assert data_half(would_change(repo)) == ["backbone", "extract", "captions"]
    assert up_to_date(sh(repo, "dvc", "status"))


def test_new_image_reruns_index_onwards(e2e_module, repo):
    extra = e2e_module.photos / "cherry" / "extra.jpg"
    shutil.copy(e2e_module.photos / "apple" / "000.jpg", extra)
    try:
        assert ran_all(sh(repo, "dvc", "repro", "index")) == ["index"]
        assert len(pd.read_parquet(repo / "data/index.parquet")) == E2E_IMAGES + 1
        assert data_half(would_change(repo)) == DATA_HALF  # all of them read the index
    finally:
        extra.unlink()
    sh(repo, "dvc", "repro", "index")
    assert up_to_date(sh(repo, "dvc", "status"))  # the same index again: nothing to re-run


def test_adding_a_k_runs_only_that_point_and_the_aggregate(e2e_base, tmp_path):
    repo = e2e_copy(e2e_base, tmp_path / "copy").repo  # its own: the aggregates change
    with params_set(repo, kmeans__k=[2, 3, 4]):
        todo = set(would_change(repo))
        # only the new point and the aggregates that read the grid's params
        k4 = grid("kmeans@4")
        assert {k4, "clustering", "macro_purity"} <= todo
        assert todo <= {k4, "index", *AGGREGATES}
        assert ran_all(sh(repo, "dvc", "repro", "--single-item", k4)) == [k4]
        assert (repo / "data/clusters/kmeans/k4.npy").is_file()
    ran = set(ran_all(sh(repo, "dvc", "repro", "--single-item", "clustering", "macro_purity")))
    assert {"clustering", "macro_purity"} <= ran <= {"index", *AGGREGATES}
    clus = json.loads((repo / "metrics/clustering.json").read_text())
    assert set(clus["kmeans"]) == {"k2", "k3"}  # the removed point left every aggregate
    assert not list((repo / "data/clusters/kmeans").glob("k4.*"))  # and its files were pruned
    assert set(would_change(repo)) <= {"index", *AGGREGATES}  # nothing but the aggregates


def test_bad_param_fails_with_the_key_and_writes_nothing(repo):
    with params_set(repo, reduce__n_components=10_000):
        res = subprocess.run(["dvc", "repro", "--single-item", "reduce"], cwd=repo, env=dvc_env(),
                             capture_output=True, text=True)
        assert res.returncode != 0
        assert "reduce.n_components" in res.stderr + res.stdout
        assert not list((repo / "data").glob(".*.tmp"))  # no half-written output left behind
        assert not (repo / "data/pca.npy").exists()  # DVC removed it; the stage wrote none
    out = sh(repo, "dvc", "repro", "--single-item", "reduce")  # the last good params: restored
    assert "Stage 'reduce' is cached - skipping run" in out
    assert np.load(repo / "data/pca.npy").shape == (E2E_IMAGES, 5)
    assert up_to_date(sh(repo, "dvc", "status"))


# --------------------------------------------------------------------------- remote
def _output_hashes(repo: Path) -> dict[str, str]:
    """sha256 of every file DVC caches (under data/ and the PNG plots), by relative path."""
    in_git = set()  # `cache: false` outputs are committed to git, not pushed to a DVC remote
    stages = [spec for f in ("dvc.yaml", "grid/dvc.yaml")
              for spec in yaml.safe_load((repo / f).read_text())["stages"].values()]
    for stage in stages:
        for out in stage.get("outs", []):
            if isinstance(out, dict) and not next(iter(out.values())).get("cache", True):
                in_git.add(next(iter(out)))
    files = [p for p in (repo / "data").rglob("*") if p.is_file() and p.name != ".gitignore"
             and p.relative_to(repo).as_posix() not in in_git]
    files += list((repo / "plots").rglob("*.png"))
    return {p.relative_to(repo).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in files}


def test_remote_round_trip_restores_outputs_without_rerunning(repo, tmp_path):
    """dvc push to a local-directory remote, delete outputs and cache, dvc pull: same bytes."""
    sh(repo, "dvc", "remote", "add", "-d", "backup", str(tmp_path / "remote"))
    before = _output_hashes(repo)
    assert "data/features.npy" in before and "plots/composition/montage.png" in before
    sh(repo, "dvc", "push")
    for rel in before:
        (repo / rel).unlink()
    shutil.rmtree(repo / ".dvc" / "cache")
    assert "deleted" in sh(repo, "dvc", "status")
    sh(repo, "dvc", "pull")
    assert _output_hashes(repo) == before
    assert up_to_date(sh(repo, "dvc", "status"))
    assert ran_all(sh(repo, "dvc", "repro")) == ["index"]
