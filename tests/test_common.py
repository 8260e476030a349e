import json

import numpy as np
import pytest

from clusterlens.common import ParamError, atomic_path, param, save_npy, write_json


def test_param_names_missing_key():
    params = {"extract": {"backbone": "resnet18"}}
    assert param(params, "extract.backbone") == "resnet18"
    with pytest.raises(ParamError, match="`extract.weights` is missing"):
        param(params, "extract.weights")
    assert param(params, "reduce.n_components", 7) == 7


def test_atomic_path_keeps_old_file_when_writer_fails(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half written")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temp file left behind


def test_atomic_path_replaces_directories(tmp_path):
    target = tmp_path / "tree"
    (target / "stale").mkdir(parents=True)
    with atomic_path(target, suffix=".tmp") as tmp:
        (tmp / "fresh").mkdir(parents=True)
    assert [p.name for p in target.iterdir()] == ["fresh"]


def test_write_json_rounds_and_nulls_non_finite(tmp_path):
    path = tmp_path / "m.json"
    write_json(path, {"a": 1 / 3, "b": float("nan"), "c": np.float32(2.5), "d": [np.int64(3)]})
    assert json.loads(path.read_text()) == {"a": 0.333333, "b": None, "c": 2.5, "d": [3]}


def test_save_npy_refuses_objects(tmp_path):
    with pytest.raises(ValueError):
        save_npy(tmp_path / "x.npy", np.array([{"a": 1}], dtype=object))
    assert not (tmp_path / "x.npy").exists()
