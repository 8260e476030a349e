"""End to end: `dvc repro` in a temporary git + DVC repository on a generated image tree."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.conftest import PROJECT, make_tree

pytestmark = pytest.mark.slow
import re

STAGES = ["digits", "index", "backbone", "extract", "captions", "fusion", "reduce"]
CLUSTER_STAGES = ["kmeans@2", "kmeans@3", "gmm@3", "dbscan@50", "hdbscan@5", "nmf",
                  "nmf_kmeans@3",
                  "agglomerative@ward", "agglomerative@single", "clustering", "tsne",
                  "composition", "macro", "macro_purity", "upper_bound", "summary", "report"]


AGGREGATES = {"clustering", "composition", "macro_purity", "summary", "report"}


def _env():
    env = dict(os.environ)
    # `python` in dvc.yaml must be this interpreter (the project's venv).
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["DVC_NO_ANALYTICS"] = "1"
    env["GIT_AUTHOR_NAME"] = env["GIT_COMMITTER_NAME"] = "clusterlens-tests"
    env["GIT_AUTHOR_EMAIL"] = env["GIT_COMMITTER_EMAIL"] = "tests@example.invalid"
    return env


def sh(cwd, *cmd):
    res = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True)
    assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{res.stdout}\n{res.stderr}"
    return res.stdout + res.stderr


def ran_all(output: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", output)


def up_to_date(status: str) -> bool:
    """`dvc status` lists nothing but the always-run `index` stage."""
    return status.strip() in ("index:\n\talways changed", "Data and pipelines are up to date.")


def ran_stages(output: str) -> list[str]:
    """The data-half stages that ran (in pipeline order), but `index`, which always runs."""
    return [s for s in STAGES[2:] if s in ran_all(output)]


def set_params(repo: Path, **updates):
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for key, value in updates.items():
        section, name = key.split("__")
        params[section][name] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    base = tmp_path_factory.mktemp("e2e")
    images = make_tree(base / "photos", {"apple": 8, "berry": 7, "cherry": 6}, fmt="jpg",
                       size=(48, 36))
    (images / "berry" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    repo = base / "repo"
    repo.mkdir()
    for name in ["dvc.yaml", "params.yaml", ".dvcignore", ".gitignore"]:
        shutil.copy(PROJECT / name, repo / name)
    shutil.copytree(PROJECT / "stages", repo / "stages",
                    ignore=shutil.ignore_patterns("__pycache__"))
    sh(repo, "git", "init", "-q")
    sh(repo, "dvc", "init", "-q")
    sh(repo, "dvc", "config", "core.analytics", "false")
    # data.root outside the repository, as a user's own folder would be
    set_params(repo, data__root=str(images), extract__image_size=32, reduce__n_components=5,
               kmeans__k=[2, 3], agglomerative__linkage=["ward", "single"],
               agglomerative__k=[2, 3], gmm__k=[3], dbscan__eps_percentile=[50],
               dbscan__min_samples=3, hdbscan__min_cluster_size=[5], nmf__k=[3])
    out = sh(repo, "dvc", "repro")
    return {"repo": repo, "images": images, "first": out}


def test_repro_runs_every_stage_and_writes_outputs(repo):
    r = repo["repo"]
    assert [s for s in STAGES if s in ran_all(repo["first"])] == STAGES
    assert sorted(ran_all(repo["first"])) == sorted(STAGES + CLUSTER_STAGES)
    index = pd.read_parquet(r / "data/index.parquet")
    assert len(index) == 21 and index["class"].nunique() == 3
    rejected = pd.read_csv(r / "data/rejected.csv")
    assert rejected.to_dict("records")[0]["path"] == "berry/broken.jpg"
    feats = np.load(r / "data/features.npy")
    assert feats.shape == (21, 1280) and feats.dtype == np.float32
    assert np.load(r / "data/pca.npy").shape == (21, 5)
    assert np.load(r / "data/pca_2d.npy").shape == (21, 2)
    m = {n: json.loads((r / f"metrics/{n}.json").read_text()) for n in ["index", "extract",
                                                                          "reduce"]}
    assert m["index"]["images"] == 21 and m["index"]["rejected_by_reason"] == {"corrupt": 1}
    assert m["extract"]["dim"] == 1280 and m["extract"]["device"] == "cpu"
    assert m["reduce"]["n_components"] == 5
    for png in ["plots/index/class_distribution.png", "plots/index/image_sizes.png",
                "plots/index/samples.png", "plots/reduce/pca_2d.png",
                "plots/reduce/explained_variance.png"]:
        assert (r / png).stat().st_size > 1000, png
    assert len(list((r / "data/digits").glob("*/*.png"))) == 1797
    clus = json.loads((r / "metrics/clustering.json").read_text())
    assert set(clus["kmeans"]) == {"k2", "k3"} and clus["selected"]["metric"] == "nmi"
    assert np.load(r / "data/clusters/kmeans/k3.npy").shape == (21,)
    comp = pd.read_csv(r / "metrics/composition.csv")
    assert comp["size"].sum() == 21
    for png in ["heatmap", "montage", "tsne", "pca_2d"]:
        assert (r / f"plots/composition/{png}.png").stat().st_size > 1000, png
    assert (r / "plots/clustering/dendrogram_ward.png").stat().st_size > 1000
    md = (r / "report/report.md").read_text()
    assert "## 7. Supervised upper bound and the gap" in md and "is missing" not in md
    page = (r / "report/report.html").read_text()
    assert page.count("data:image/png;base64,") == md.count("![") >= 15
    sh(r, "dvc", "plots", "show")  # every DVC-native plot renders into one page
    assert (r / "dvc_plots/index.html").stat().st_size > 1000
    shown = sh(r, "dvc", "metrics", "show")
    assert "variance_at_10" in shown and "image_size" in shown and "images_per_s" not in shown
    assert json.loads((r / "logs/extract_timing.json").read_text())["images"] == 21


def test_second_repro_runs_nothing(repo):
    out = sh(repo["repo"], "dvc", "repro")
    assert ran_all(out) == ["index"]  # always re-scans the folder; its outputs are unchanged
    assert up_to_date(sh(repo["repo"], "dvc", "status"))


def test_pca_param_change_reruns_only_reduce(repo):
    r = repo["repo"]
    set_params(r, reduce__n_components=3)
    assert ran_stages(sh(r, "dvc", "repro")) == ["reduce"]
    assert np.load(r / "data/pca.npy").shape == (21, 3)


def test_adding_a_k_runs_only_that_point_and_the_aggregate(repo):
    r = repo["repo"]
    set_params(r, kmeans__k=[2, 3, 4])
    ran = set(ran_all(sh(r, "dvc", "repro")))
    # only the new point and the aggregates downstream of the grid (those whose inputs changed)
    assert {"kmeans@4", "clustering", "macro_purity"} <= ran <= {"kmeans@4", "index", *AGGREGATES}
    set_params(r, kmeans__k=[2, 3])
    ran = set(ran_all(sh(r, "dvc", "repro")))
    assert {"clustering", "macro_purity"} <= ran <= {"index", *AGGREGATES}
    clus = json.loads((r / "metrics/clustering.json").read_text())
    assert set(clus["kmeans"]) == {"k2", "k3"}  # the removed point left every aggregate
    assert not list((r / "data/clusters/kmeans").glob("k4.*"))  # and its files were pruned


def test_backbone_change_reruns_extract_and_what_follows(repo):
    r = repo["repo"]
    set_params(r, extract__backbone="resnet18", extract__weights="none")
    assert ran_stages(sh(r, "dvc", "repro")) == STAGES[2:]
    assert np.load(r / "data/features.npy").shape == (21, 512)


def test_new_image_reruns_index_onwards(repo):
    r, images = repo["repo"], repo["images"]
    shutil.copy(images / "apple" / "000.jpg", images / "cherry" / "extra.jpg")
    assert ran_stages(sh(r, "dvc", "repro")) == STAGES[2:]
    assert len(pd.read_parquet(r / "data/index.parquet")) == 22


def test_bad_param_fails_with_the_key_and_writes_nothing(repo):
    r = repo["repo"]
    set_params(r, reduce__n_components=10_000)
    res = subprocess.run(["dvc", "repro"], cwd=r, env=_env(), capture_output=True, text=True)
    assert res.returncode != 0
    assert "reduce.n_components" in res.stderr + res.stdout
    assert not list((r / "data").glob(".*.tmp"))  # no half-written output left behind
    set_params(r, reduce__n_components=3)
    sh(r, "dvc", "repro")  # back to the last good params: restored from DVC's run cache
    assert np.load(r / "data/pca.npy").shape == (22, 3)
    assert up_to_date(sh(r, "dvc", "status"))


def _output_hashes(repo: Path) -> dict[str, str]:
    """sha256 of every file DVC caches (under data/ and the PNG plots), by relative path."""
    import hashlib

    in_git = set()  # `cache: false` outputs are committed to git, not pushed to a DVC remote
    for stage in yaml.safe_load((repo / "dvc.yaml").read_text())["stages"].values():
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
    r = repo["repo"]
    sh(r, "dvc", "remote", "add", "-d", "backup", str(tmp_path / "remote"))
    before = _output_hashes(r)
    assert "data/features.npy" in before and "plots/composition/montage.png" in before
    sh(r, "dvc", "push")
    for rel in before:
        (r / rel).unlink()
    shutil.rmtree(r / ".dvc" / "cache")
    assert "deleted" in sh(r, "dvc", "status")
    sh(r, "dvc", "pull")
    assert _output_hashes(r) == before
    assert up_to_date(sh(r, "dvc", "status"))
    assert ran_all(sh(r, "dvc", "repro")) == ["index"]
