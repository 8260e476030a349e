"""Sharded extraction with torch.distributed (torchrun, gloo on CPU) writes byte-for-byte the
features file of a single-process run, sharing the feature store safely."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from clusterlens.config.base import parse_section
from clusterlens.config.extract import ExtractParams
from clusterlens.core.errors import ParamError
from clusterlens.core.io import write_table
from clusterlens.data.index import build_index
from clusterlens.features import sharding
from clusterlens.features.store import FeatureStore
from tests.conftest import make_tree
from tests.test_feature_store import _params


def _write_params(root, store, **over) -> dict:
    params = _params(root, store, **over)
    with open("params.yaml", "w") as fh:
        yaml.safe_dump(params, fh)
    return params


def _extract(env_extra=None) -> bytes:
    env = {k: v for k, v in __import__("os").environ.items()
           if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    res = subprocess.run([sys.executable, "-m", "stages.extract", "--params", "params.yaml"],
                         capture_output=True, text=True, env={**env, **(env_extra or {})})
    assert res.returncode == 0, res.stdout + res.stderr
    return open("data/features.npy", "rb").read(), res.stdout + res.stderr


@pytest.mark.slow
def test_two_gloo_processes_equal_one_process_byte_for_byte(tmp_path, in_tmp_cwd):
    root = make_tree(tmp_path / "img", {"a": 9, "b": 8, "c": 7})
    index, _, _ = build_index(root)
    write_table("data/index.parquet", index)
    # one process (its own store)
    _write_params(root, tmp_path / "store1", threads=1)
    single, _ = _extract()
    metrics_single = open("metrics/extract.json").read()
    # two processes with gloo, sharing a fresh store
    _write_params(root, tmp_path / "store2", threads=1, processes=2)
    sharded, log = _extract()
    assert "rank 0 of 2" in log and "rank 1 of 2" in log and "backend gloo" in log
    assert sharded == single
    assert open("metrics/extract.json").read() == metrics_single
    timing = json.loads(open("logs/extract_timing.json").read())
    assert timing["extracted"] == 24 and timing["world_size"] == 2
    # each rank appended its own shard; nothing torn: every image is in the store once
    store_dir = next((tmp_path / "store2").iterdir())
    assert len(list(store_dir.glob("*.sha.npy"))) == 2
    assert not list(store_dir.glob(".*.tmp"))
    spec = json.loads((store_dir / "fingerprint.json").read_text())
    spec.pop("fingerprint")
    store = FeatureStore(tmp_path / "store2", spec, 1280)
    assert len(store) == 24
    # a second sharded run finds everything in the store and still writes the same bytes
    again, _ = _extract()
    assert again == single
    assert json.loads(open("logs/extract_timing.json").read())["from_store"] == 24


def test_sharded_run_needs_a_store_and_valid_counts(tmp_path):
    def parse(params):
        return parse_section(params, "extract", ExtractParams)

    with pytest.raises(ParamError, match="extract.store.*sharded run"):
        parse(_params(tmp_path, "none", processes=2))
    with pytest.raises(ParamError, match="extract.store.*sharded run"):
        parse(_params(tmp_path, "none", nodes=3))
    with pytest.raises(ParamError, match="extract.processes"):
        parse(_params(tmp_path, tmp_path, processes=0))
    with pytest.raises(ParamError, match="extract.threads"):
        parse(_params(tmp_path, tmp_path, threads=0))
    assert parse(_params(tmp_path, tmp_path, processes=2)).distributed


def test_torchrun_command_standalone_and_multi_node():
    one = sharding.torchrun_command("stages.extract", 2, 1, "h:1", ["--params", "p.yaml"])
    assert one[1:4] == ["-m", "torch.distributed.run", "--nproc_per_node=2"]
    assert "--standalone" in one and one[-4:] == ["-m", "stages.extract", "--params", "p.yaml"]
    many = sharding.torchrun_command("stages.extract", 4, 3, "node0:29500", [])
    assert "--nnodes=3" in many and "--rdzv_endpoint=node0:29500" in many
    assert "--standalone" not in many and "--rdzv_backend=c10d" in many


def test_threads_auto_is_this_process_default(monkeypatch):
    import torch

    monkeypatch.delenv(sharding.THREADS_ENV, raising=False)
    assert sharding.resolve_threads("auto") == torch.get_num_threads()
    monkeypatch.setenv(sharding.THREADS_ENV, "3")
    assert sharding.resolve_threads("auto") == 3  # a rank inherits the launcher's count
    assert sharding.resolve_threads(2) == 2
