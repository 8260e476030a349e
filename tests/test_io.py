"""clusterlens.core.io (atomic writes, JSON, arrays, tables) and clusterlens.config.base (strict
params sections whose errors name the dotted key and the value)."""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from pydantic import Field, ValidationError

from clusterlens.config.base import Section, check_value, load_params, parse_section, parse_stage, require_seed
from clusterlens.config.cnn import CNNParams
from clusterlens.config.data import DataParams
from clusterlens.config.gmm import GMMParams
from clusterlens.config.tsne import TSNEParams
from clusterlens.core.errors import ParamError
from clusterlens.core.io import (
    atomic_path,
    load_npy,
    read_json,
    read_table,
    remove_stale_tmp,
    save_npy,
    save_npz,
    write_json,
    write_table,
)


# --------------------------------------------------------------------------- io
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
    assert read_json(path) == {"a": 0.333333, "b": None, "c": 2.5, "d": [3]}


def test_save_npy_refuses_objects(tmp_path):
    with pytest.raises(ValueError):
        save_npy(tmp_path / "x.npy", np.array([{"a": 1}], dtype=object))
    assert not (tmp_path / "x.npy").exists()


def test_arrays_and_tables_round_trip(tmp_path):
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    save_npy(tmp_path / "a.npy", a)
    np.testing.assert_array_equal(load_npy(tmp_path / "a.npy"), a)
    save_npz(tmp_path / "b.npz", x=a, y=np.arange(2))
    with np.load(tmp_path / "b.npz", allow_pickle=False) as z:
        assert sorted(z.files) == ["x", "y"]
    df = pd.DataFrame({"path": ["a/1.png", "b/2.png"], "label": [0, 1]})
    for name in ("t.parquet", "t.csv"):
        write_table(tmp_path / name, df)
        pd.testing.assert_frame_equal(read_table(tmp_path / name), df)
    with pytest.raises(ValueError, match="unsupported table format"):
        write_table(tmp_path / "t.xlsx", df)
    assert not list(tmp_path.glob(".*.tmp"))


def test_class_names_read_back_as_the_folders_spell_them(tmp_path):
    """Every class-name column of a csv reads back as the strings the folders spell, digit
    names and an empty cell (a cluster of fewer classes) included, never as floats (``2.0``)."""
    from clusterlens.analysis.composition import composition_table

    table = composition_table(np.array([0, 0, 0, 1, 1]),
                              np.array(["2", "2", "10", "3", "3"], dtype=object), top=2)
    write_table(tmp_path / "c.csv", table)
    back = read_table(tmp_path / "c.csv")
    assert back["top1_class"].tolist() == ["2", "3"]
    assert back["top2_class"].tolist() == ["10", ""]
    assert back["classes"].tolist() == [2, 1] and back["size"].dtype.kind == "i"
    pairs = pd.DataFrame({"class_a": ["07", "1"], "given_class": ["1.0", "x"], "n": [1, 2]})
    write_table(tmp_path / "p.csv", pairs)
    back = read_table(tmp_path / "p.csv")
    assert back["class_a"].tolist() == ["07", "1"] and back["given_class"].tolist() == ["1.0", "x"]
    assert back["n"].tolist() == [1, 2]


def test_remove_stale_tmp_removes_only_leftovers_of_the_given_outputs(tmp_path):
    (tmp_path / ".out.npy.ab12.npy.tmp").write_bytes(b"half")
    (tmp_path / ".other.npy.cd34.npy.tmp").write_bytes(b"someone else's")
    (tmp_path / "out.npy").write_bytes(b"keep")
    removed = remove_stale_tmp(tmp_path / "out.npy")
    assert [p.name for p in removed] == [".out.npy.ab12.npy.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.npy.cd34.npy.tmp", "out.npy"]


# --------------------------------------------------------------------------- config.base
class Inner(Section):
    depth: int = 2


class Demo(Section):
    n_init: int = Field(10, ge=1)
    engine: str = "sklearn"
    inner: Inner = Inner()


def test_parse_section_gives_a_frozen_typed_section():
    demo = parse_section({"demo": {"n_init": 3}}, "demo", Demo)
    assert demo.n_init == 3 and demo.engine == "sklearn" and demo.inner.depth == 2
    with pytest.raises(ValidationError):
        demo.n_init = 4  # frozen


def test_unknown_key_is_an_error_with_did_you_mean():
    with pytest.raises(ParamError, match=r"`demo.n_inti` is not a known key; did you mean "
                                         r"`demo.n_init`\?") as err:
        parse_section({"demo": {"n_inti": 3}}, "demo", Demo)
    assert err.value.key == "demo.n_inti"
    with pytest.raises(ParamError, match=r"`demo.inner.dept` .*did you mean `demo.inner.depth`"):
        parse_section({"demo": {"inner": {"dept": 1}}}, "demo", Demo)
    with pytest.raises(ParamError, match=r"`demo.zzz` is not a known key \(known: engine, "
                                         r"inner, n_init\)"):
        parse_section({"demo": {"zzz": 1}}, "demo", Demo)


@pytest.mark.parametrize("value", ["5", 2.5, True])
def test_wrong_type_names_the_key_and_the_value(value):
    with pytest.raises(ParamError, match=r"`demo.n_init` must be .*got " + repr(value)):
        parse_section({"demo": {"n_init": value}}, "demo", Demo)


def test_out_of_range_names_the_key_and_the_value():
    with pytest.raises(ParamError, match=r"`demo.n_init` must be greater than or equal to 1, "
                                         r"got 0"):
        parse_section({"demo": {"n_init": 0}}, "demo", Demo)


def test_missing_section_or_key_or_not_a_mapping():
    with pytest.raises(ParamError, match="`demo` is missing"):
        parse_section({"other": {}}, "demo", Demo)
    with pytest.raises(ParamError, match=r"`demo` must be a mapping of keys, got \[1, 2\]"):
        parse_section({"demo": [1, 2]}, "demo", Demo)
    with pytest.raises(ParamError, match="`data.root` is missing"):
        parse_section({"data": {}}, "data", DataParams)
    with pytest.raises(ParamError, match="`data.root` must be a folder path"):
        parse_section({"data": {"root": " "}}, "data", DataParams)


def test_seed_check_value_and_load_params(tmp_path):
    assert require_seed({"seed": 0}) == 0
    for bad in (-1, True, "0", 1.0):
        with pytest.raises(ParamError, match=r"`seed` must be an integer >= 0"):
            require_seed({"seed": bad})
    with pytest.raises(ParamError, match="`seed` is missing"):
        require_seed({})

    def positive(v):
        if v <= 0:
            raise ValueError(f"must be > 0, got {v!r}")
        return v

    assert check_value("tsne.perplexity", 5, positive) == 5
    with pytest.raises(ParamError, match=r"`tsne.perplexity` must be > 0, got -1"):
        check_value("tsne.perplexity", -1, positive)
    path = tmp_path / "params.yaml"
    path.write_text("seed: 3\ndata:\n  root: photos\n")
    assert load_params(path) == {"seed": 3, "data": {"root": "photos"}}
    path.write_text("")
    assert load_params(path) == {}
    path.write_text("- a\n- b\n")
    with pytest.raises(ParamError, match="must be a mapping of sections"):
        load_params(path)
    with pytest.raises(FileNotFoundError, match="params file not found"):
        load_params(tmp_path / "absent.yaml")


# --------------------------------------------------------------------------- cli
def test_ctrl_c_in_a_stage_is_one_line_and_exit_130(capsys):
    from clusterlens.core.cli import run_cli

    def interrupted(argv):
        raise KeyboardInterrupt

    def bad_param(argv):
        raise ParamError("kmeans.k", "must be a list of integers >= 2, got 5")

    assert run_cli(interrupted, ["kmeans", "--k", "5"]) == 130
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("clusterlens: "), err
    assert "kmeans --k 5 interrupted (Ctrl-C)" in err and "dvc repro" in err
    assert "Traceback" not in err
    assert run_cli(bad_param, []) == 2
    assert capsys.readouterr().err == ("error: params.yaml: `kmeans.k` must be a list of "
                                       "integers >= 2, got 5\n")


def test_parse_stage_parses_each_section_once_and_names_the_bad_key():
    @dataclass(frozen=True)
    class Params:
        seed: int
        tsne: TSNEParams
        cnn: CNNParams  # every key has a default: absent reads as the defaults
        gmm: GMMParams | None = None  # optional by its default

    tsne = {"sample": 100, "perplexity": 30.0, "max_iter": 500}
    cfg = parse_stage({"seed": 3, "tsne": tsne}, Params)
    assert cfg.seed == 3 and cfg.tsne.sample == 100 and cfg.gmm is None
    assert cfg.cnn == CNNParams()
    with pytest.raises(ParamError, match="`tsne` is missing"):
        parse_stage({"seed": 3}, Params)
    with pytest.raises(ParamError, match=r"`tsne.perplexity`"):
        parse_stage({"seed": 3, "tsne": {**tsne, "perplexity": "x"}}, Params)
    with pytest.raises(ParamError, match="`seed`"):
        parse_stage({"tsne": tsne}, Params)
    with pytest.raises(ParamError, match="`gmm.k`"):
        parse_stage({"seed": 0, "tsne": tsne, "gmm": {"k": [1]}}, Params)
