"""Every representation runs through `dvc repro` (the `backbone` stage trains the CNN from
scratch only when it is the backbone; raw pixels; captions fall back to Lite0)."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from clusterlens.config.base import parse_stage
from clusterlens.core.errors import ParamError
from clusterlens.core.io import write_table
from clusterlens.data.index import build_index
from clusterlens.features.backbones import SCRATCH_CNN, build_backbone
from stages import backbone
from tests.conftest import make_tree

# the extract keys that have no default (the stage reads only `backbone`, but parses the section)
EXTRACT = {"weights": "DEFAULT", "batch_size": 8, "device": "cpu", "workers": 0,
           "precision": "auto", "jit": "auto", "store": "none"}


def _params(name: str, **sections) -> dict:
    """Every section the stage parses, with ``extract.backbone: name``."""
    return {"extract": {**EXTRACT, "backbone": name}, "cnn": {}, "seed": 0,
            "data": {"root": "absent"}, **sections}


def test_untrained_outputs_are_constant_and_scratch_cnn_needs_training(in_tmp_cwd):
    backbone.run(parse_stage(_params("efficientnet_lite0"), backbone.Params))
    first = {p.as_posix(): p.read_bytes() for p in in_tmp_cwd.rglob("*") if p.is_file()}
    assert json.loads((in_tmp_cwd / "models/backbone/config.json").read_text()) == {
        "trained": False}
    assert (in_tmp_cwd / "dvclive/cnn/plots/metrics/val/loss.tsv").read_text() == "step\tloss\n"
    backbone.run(parse_stage(_params("raw_pixels"), backbone.Params))
    again = {p.as_posix(): p.read_bytes() for p in in_tmp_cwd.rglob("*") if p.is_file()}
    assert again == first  # nothing after it re-runs when only cnn.* params change
    with pytest.raises(ParamError, match="extract.backbone.*no trained CNN.*backbone"):
        build_backbone(SCRATCH_CNN)
    with pytest.raises(ParamError, match="extract.backbone.*no trained CNN.*backbone"):
        build_backbone(SCRATCH_CNN, model_dir=in_tmp_cwd / "models/backbone")


def test_params_are_checked_before_any_work(in_tmp_cwd):
    with pytest.raises(ParamError, match="extract.backbone.*missing"):
        backbone.run(parse_stage({"extract": {}}, backbone.Params))
    with pytest.raises(ParamError, match="extract.backbone"):
        backbone.run(parse_stage(_params("no_such_net"), backbone.Params))
    with pytest.raises(ParamError, match="did you mean `cnn.epochs`"):
        backbone.run(parse_stage(_params(SCRATCH_CNN, cnn={"epoch": 1}), backbone.Params))
    with pytest.raises(ParamError, match="cnn.device"):
        backbone.run(parse_stage(_params(SCRATCH_CNN, cnn={"device": "cuda:99"}), backbone.Params))
    assert not list(in_tmp_cwd.rglob("*.*"))


def test_scratch_cnn_trains_in_process(tmp_path, in_tmp_cwd):
    root = make_tree(tmp_path / "photos", {"apple": 10, "berry": 10}, fmt="png", size=(20, 20))
    write_table("data/index.parquet", build_index(root, workers=1)[0])
    params = _params(SCRATCH_CNN, data={"root": str(root)},
                     cnn={"epochs": 2, "image_size": 8, "filters": [4, 8], "embedding_dim": 16,
                          "device": "cpu"})
    result = backbone.run(parse_stage(params, backbone.Params))
    assert result["epochs_run"] == 2 and result["device"] == "cpu"
    summary = json.loads((in_tmp_cwd / "metrics/cnn.json").read_text())
    assert summary["n_classes"] == 2 and "seconds" not in summary
    assert len(pd.read_csv(in_tmp_cwd / "metrics/cnn_history.csv")) == 2
    config = json.loads((in_tmp_cwd / "models/backbone/config.json").read_text())
    assert config["class_names"] == ["apple", "berry"] and config["embedding_dim"] == 16
    assert build_backbone(SCRATCH_CNN, model_dir="models/backbone").dim == 16
    loss = pd.read_csv(in_tmp_cwd / "dvclive/cnn/plots/metrics/val/loss.tsv", sep="\t")
    assert list(loss["step"]) == [0, 1]

