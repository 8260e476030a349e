"""End to end: switching the backbone (the scratch CNN, raw pixels, back to Lite0) through
`dvc repro`, in a copy of the shared repository (tests/conftest.py). A file of its own so that
pytest-xdist can run it beside the other end-to-end files."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from clusterlens.features.backbones import SCRATCH_CNN
from tests.conftest import E2E_IMAGES, e2e_copy, grid, params_set, ran_all, set_params, sh
from tests.test_pipeline import DATA_HALF, data_half, would_change

pytestmark = pytest.mark.slow


CNN = dict(extract__backbone=SCRATCH_CNN, cnn__epochs=3, cnn__image_size=16, cnn__patience=5,
           captions__enabled=True)


def test_each_backbone_runs_through_dvc_repro_and_back_from_the_run_cache(e2e_base, tmp_path):
    """The `backbone` stage trains the scratch CNN only when it is the backbone (DVCLive logs
    per epoch; captions fall back to Lite0); raw pixels; switching back restores every stage
    from DVC's run cache, nothing retrained or re-extracted."""
    repo = e2e_copy(e2e_base, tmp_path / "copy").repo
    set_params(repo, **CNN)
    ran = ran_all(sh(repo, "dvc", "repro", "reduce"))
    assert data_half(ran) == DATA_HALF
    feats = np.load(repo / "data/features.npy")
    assert feats.shape == (E2E_IMAGES, 256) and (feats >= 0).all()  # the Dense-256 ReLU output
    summary = json.loads((repo / "metrics/cnn.json").read_text())
    assert summary["epochs_run"] == 3 and 1 <= summary["best_epoch"] <= 3
    loss = pd.read_csv(repo / "dvclive/cnn/plots/metrics/val/loss.tsv", sep="\t")
    assert list(loss["step"]) == [0, 1, 2]
    assert len(pd.read_csv(repo / "metrics/cnn_history.csv")) == 3
    cap = json.loads((repo / "metrics/captions.json").read_text())
    assert "fallback" in cap["captioner"]  # the CNN has no ImageNet head
    sh(repo, "dvc", "plots", "show")
    assert "CNN loss (train vs validation)" in (repo / "dvc_plots/index.html").read_text()
    # a clustering param never retrains the CNN
    with params_set(repo, kmeans__k=[2, 3, 4]):
        todo = would_change(repo)
        assert grid("kmeans@4") in todo and "backbone" not in todo and "extract" not in todo
    # raw pixels: 3 x 32 x 32 features; the backbone stage writes its placeholder
    with params_set(repo, extract__backbone="raw_pixels", extract__image_size="auto",
                    captions__enabled=False):
        ran = ran_all(sh(repo, "dvc", "repro", "reduce"))
        assert {"backbone", "extract", "reduce"} <= set(ran)
        assert np.load(repo / "data/features.npy").shape == (E2E_IMAGES, 3 * 32 * 32)
        assert json.loads((repo / "metrics/cnn.json").read_text()) == {"trained": False}
    # and back: restored from the run cache
    out = sh(repo, "dvc", "repro", "reduce")
    assert data_half(ran_all(out)) == [], ran_all(out)
    assert "Stage 'backbone' is cached - skipping run" in out
    assert "Stage 'extract' is cached - skipping run" in out
    assert "Stage 'captions' is cached - skipping run" in out
    assert np.load(repo / "data/features.npy").shape == (E2E_IMAGES, 256)
    assert json.loads((repo / "metrics/cnn.json").read_text()) == summary


