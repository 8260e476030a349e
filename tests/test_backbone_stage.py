"""Every representation runs through `dvc repro` (the `backbone` stage trains the CNN from
scratch only when it is the backbone; raw pixels; captions fall back to Lite0)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from clusterlens.backbones import SCRATCH_CNN, build_backbone
from clusterlens.errors import ParamError
from clusterlens.index import build_index
from clusterlens.io import write_table
from stages import backbone
from tests.conftest import make_tree


def test_untrained_outputs_are_constant_and_scratch_cnn_needs_training(in_tmp_cwd):
    backbone.run({"extract": {"backbone": "efficientnet_lite0"}})
    first = {p.as_posix(): p.read_bytes() for p in in_tmp_cwd.rglob("*") if p.is_file()}
    assert json.loads((in_tmp_cwd / "models/backbone/config.json").read_text()) == {
        "trained": False}
    assert (in_tmp_cwd / "dvclive/cnn/plots/metrics/val/loss.tsv").read_text() == "step\tloss\n"
    backbone.run({"extract": {"backbone": "raw_pixels"}})
    again = {p.as_posix(): p.read_bytes() for p in in_tmp_cwd.rglob("*") if p.is_file()}
    assert again == first  # nothing after it re-runs when only cnn.* params change
    with pytest.raises(ParamError, match="extract.backbone.*no trained CNN.*backbone"):
        build_backbone(SCRATCH_CNN)
    with pytest.raises(ParamError, match="extract.backbone.*no trained CNN.*backbone"):
        build_backbone(SCRATCH_CNN, model_dir=in_tmp_cwd / "models/backbone")


def test_params_are_checked_before_any_work(in_tmp_cwd):
    with pytest.raises(ParamError, match="extract.backbone.*missing"):
        backbone.run({"extract": {}})
    with pytest.raises(ParamError, match="extract.backbone"):
        backbone.run({"extract": {"backbone": "no_such_net"}})
    with pytest.raises(ParamError, match="did you mean `cnn.epochs`"):
        backbone.run({"extract": {"backbone": SCRATCH_CNN}, "cnn": {"epoch": 1}, "seed": 0,
                      "data": {"root": "absent"}})
    with pytest.raises(ParamError, match="cnn.device"):
        backbone.run({"extract": {"backbone": SCRATCH_CNN}, "cnn": {"device": "cuda:99"},
                      "seed": 0, "data": {"root": "absent"}})
    assert not list(in_tmp_cwd.rglob("*.*"))


def test_scratch_cnn_trains_in_process(tmp_path, in_tmp_cwd):
    root = make_tree(tmp_path / "photos", {"apple": 10, "berry": 10}, fmt="png", size=(20, 20))
    write_table("data/index.parquet", build_index(root, workers=1)[0])
    params = {"extract": {"backbone": SCRATCH_CNN}, "seed": 0, "data": {"root": str(root)},
              "cnn": {"epochs": 2, "image_size": 8, "filters": [4, 8], "embedding_dim": 16,
                      "device": "cpu"}}
    result = backbone.run(params)
    assert result["epochs_run"] == 2 and result["device"] == "cpu"
    summary = json.loads((in_tmp_cwd / "metrics/cnn.json").read_text())
    assert summary["n_classes"] == 2 and "seconds" not in summary
    assert len(pd.read_csv(in_tmp_cwd / "metrics/cnn_history.csv")) == 2
    config = json.loads((in_tmp_cwd / "models/backbone/config.json").read_text())
    assert config["class_names"] == ["apple", "berry"] and config["embedding_dim"] == 16
    assert build_backbone(SCRATCH_CNN, model_dir="models/backbone").dim == 16
    loss = pd.read_csv(in_tmp_cwd / "dvclive/cnn/plots/metrics/val/loss.tsv", sep="\t")
    assert list(loss["step"]) == [0, 1]


@pytest.mark.slow
def test_each_backbone_runs_through_dvc_repro(tmp_path):
    from tests.test_interrupt import make_repo
    from tests.test_pipeline import ran_all, set_params, sh

    images = make_tree(tmp_path / "photos", {"apple": 10, "berry": 10, "cherry": 10}, fmt="png",
                       size=(40, 32))
    repo = make_repo(tmp_path / "repo", images, extract__backbone=SCRATCH_CNN,
                     cnn__epochs=3, cnn__image_size=16, cnn__patience=5, reduce__n_components=5,
                     kmeans__k=[3], agglomerative__linkage=["ward"], agglomerative__k=[3],
                     gmm__k=[3], dbscan__eps_percentile=[50], dbscan__min_samples=3,
                     hdbscan__min_cluster_size=[5], nmf__k=[3], nmf__n_components=3,
                     macro__groups=[2], tsne__sample=30, tsne__perplexity=5,
                     composition__montage_clusters=2, composition__montage_images=3)
    out = sh(repo, "dvc", "repro")
    assert {"backbone", "extract", "captions", "fusion", "reduce", "report"} <= set(ran_all(out))
    feats = np.load(repo / "data/features.npy")
    assert feats.shape == (30, 256) and (feats >= 0).all()  # the Dense-256 ReLU embedding
    summary = json.loads((repo / "metrics/cnn.json").read_text())
    assert summary["epochs_run"] == 3 and 1 <= summary["best_epoch"] <= 3
    loss = pd.read_csv(repo / "dvclive/cnn/plots/metrics/val/loss.tsv", sep="\t")
    assert list(loss["step"]) == [0, 1, 2]
    assert len(pd.read_csv(repo / "metrics/cnn_history.csv")) == 3
    cap = json.loads((repo / "metrics/captions.json").read_text())
    assert "fallback" in cap["captioner"]  # the CNN has no ImageNet head
    sh(repo, "dvc", "plots", "show")
    page = (repo / "dvc_plots/index.html").read_text()
    assert "CNN loss (train vs validation)" in page
    # a clustering param never retrains the CNN
    set_params(repo, kmeans__k=[2, 3])
    ran = ran_all(sh(repo, "dvc", "repro"))
    assert "backbone" not in ran and "extract" not in ran and "kmeans@2" in ran
    # raw pixels: 3 x 32 x 32 features; the backbone stage writes its placeholder
    set_params(repo, extract__backbone="raw_pixels", extract__image_size="auto")
    ran = ran_all(sh(repo, "dvc", "repro"))
    assert {"backbone", "extract", "reduce"} <= set(ran)
    assert np.load(repo / "data/features.npy").shape == (30, 3 * 32 * 32)
    assert json.loads((repo / "metrics/cnn.json").read_text()) == {"trained": False}
    # and back: every expensive stage is restored from DVC's run cache, nothing retrained or
    # re-extracted; only the cheap stages whose tables are kept in git (so without a run-cache
    # entry) run again
    set_params(repo, extract__backbone=SCRATCH_CNN, extract__image_size=64)
    out = sh(repo, "dvc", "repro")
    assert set(ran_all(out)) <= {"index", "clustering", "macro", "macro_purity", "report"}, \
        ran_all(out)
    assert "Stage 'backbone' is cached - skipping run" in out
    assert np.load(repo / "data/features.npy").shape == (30, 256)
    assert json.loads((repo / "metrics/cnn.json").read_text()) == summary
