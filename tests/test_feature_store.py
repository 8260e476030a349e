"""The per-image feature store and incremental extraction."""
import json
import shutil

import numpy as np
import pytest

from clusterlens.config.base import parse_stage
from clusterlens.core.io import write_table
from clusterlens.data.index import build_index
from clusterlens.features import extraction as ex
from clusterlens.features.backbones import LITE0, build_backbone
from clusterlens.features.store import FeatureStore, digests
from stages import extract as stage
from tests.conftest import make_tree

SHA = [f"{i:064x}" for i in range(6)]


def test_store_round_trip_key_spaces_and_two_writers(tmp_path):
    spec = {"backbone": "b", "image_size": 32}
    rng = np.random.default_rng(0)
    f = rng.normal(size=(6, 4)).astype(np.float32)
    a, b = FeatureStore(tmp_path, spec, 4), FeatureStore(tmp_path, spec, 4)
    a.put(SHA[:3], f[:3])
    b.put(SHA[3:5], f[3:5])  # a second writer: its own shard, nothing overwritten
    fresh = FeatureStore(tmp_path, spec, 4)
    found, got = fresh.get([SHA[4], SHA[5], SHA[0]])
    assert found.tolist() == [True, False, True]
    np.testing.assert_array_equal(got, f[[4, 0]])
    assert len(fresh) == 5
    other = FeatureStore(tmp_path, {**spec, "image_size": 64}, 4)
    assert other.dir != fresh.dir and not other.get(SHA)[0].any()
    meta = json.loads((fresh.dir / "fingerprint.json").read_text())
    assert meta["image_size"] == 32 and meta["fingerprint"] == fresh.key
    assert digests(SHA[:1]).shape == (1, 32)
    # an interrupted write (features without their key file, a temp file) is invisible
    (fresh.dir / "dead.feat.npy").write_bytes(b"partial")
    (fresh.dir / ".x.sha.npy.123.tmp").write_bytes(b"partial")
    assert len(FeatureStore(tmp_path, spec, 4)) == 5
    with pytest.raises(ValueError):
        a.put(SHA[:2], f[:3])


def test_padded_batches_make_features_independent_of_batch_mates(tmp_path):
    root = make_tree(tmp_path / "img", {"a": 5, "b": 4})
    paths = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))
    bb = build_backbone(LITE0, "DEFAULT", 32)
    full, _ = ex.extract_features(bb, root, paths, 32, batch_size=4, device="cpu",
                                  progress=False)
    some, _ = ex.extract_features(bb, root, paths[5:0:-2], 32, batch_size=4, device="cpu",
                                  progress=False)
    np.testing.assert_array_equal(some, full[5:0:-2])  # bitwise, in any company


def _params(root, store, **over):
    p = {"seed": 0, "data": {"root": str(root)},
         "extract": {"backbone": LITE0, "weights": "DEFAULT", "image_size": 32,
                     "resize": "squash", "batch_size": 4, "device": "cpu", "workers": 0,
                     "precision": "fp32", "jit": "auto", "store": str(store)}}
    p["extract"].update(over)
    return p


def _run(root, store, **over):
    index, _, _ = build_index(root)
    write_table("data/index.parquet", index)
    stage.run(parse_stage(_params(root, store, **over), stage.Params))
    timing = json.loads(open("logs/extract_timing.json").read())
    return open("data/features.npy", "rb").read(), timing


def test_incremental_extraction_equals_a_run_from_scratch(tmp_path, in_tmp_cwd):
    root = make_tree(tmp_path / "img", {"a": 6, "b": 5, "c": 4})
    store = tmp_path / "store"
    _, t = _run(root, store)
    assert (t["extracted"], t["from_store"]) == (15, 0)
    # one new image: only it goes through the network; the output is the scratch run's bytes
    shutil.copy(tmp_path / "img" / "a" / "000.png", tmp_path / "new.png")
    img = __import__("PIL.Image", fromlist=["Image"]).open(tmp_path / "new.png")
    img.rotate(90).save(root / "b" / "extra.png")
    got, t = _run(root, store)
    assert (t["extracted"], t["from_store"]) == (1, 15)
    scratch, _ = _run(root, "none")
    assert got == scratch
    # renaming and moving files extracts nothing
    (root / "a" / "000.png").rename(root / "a" / "renamed.png")
    (root / "c" / "001.png").rename(root / "b" / "moved.png")
    got, t = _run(root, store)
    assert (t["extracted"], t["from_store"]) == (0, 16)
    assert got == _run(root, "none")[0]
    # another preprocessing is another key space
    _, t = _run(root, store, image_size=48)
    assert (t["extracted"], t["from_store"]) == (16, 0)
    assert len(list(store.iterdir())) == 2


def test_duplicates_are_extracted_once(tmp_path, in_tmp_cwd):
    root = make_tree(tmp_path / "img", {"a": 3, "b": 3})
    shutil.copy(root / "a" / "000.png", root / "b" / "copy.png")
    feats_bytes, t = _run(root, tmp_path / "store")
    assert (t["extracted"], t["from_store"]) == (6, 0)
    index, _, _ = build_index(root)
    feats = np.load("data/features.npy")
    rows = index.index[index["sha256"] == index.loc[index["path"] == "b/copy.png", "sha256"]
                       .item()].tolist()
    assert len(rows) == 2 and np.array_equal(feats[rows[0]], feats[rows[1]])


def test_jit_and_bf16_features_agree_with_eager_float32(tmp_path):
    root = make_tree(tmp_path / "img", {"a": 3, "b": 3})
    paths = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))
    bb = build_backbone(LITE0, "DEFAULT", 32)
    kw = dict(batch_size=4, device="cpu", progress=False)
    eager, t0 = ex.extract_features(bb, root, paths, 32, precision="fp32", jit=False, **kw)
    jit, t1 = ex.extract_features(bb, root, paths, 32, precision="fp32", jit=True, **kw)
    bf16, t2 = ex.extract_features(bb, root, paths, 32, precision="bf16", jit=True, **kw)
    assert (t0["engine"], t1["engine"], t2["precision"]) == ("eager", "jit", "bf16")
    def cos(a, b):
        return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)

    assert cos(eager, jit).min() > 0.9999
    assert cos(eager, bf16).min() > 0.95  # bfloat16 keeps ~3 significant digits


# --------------------------------------------------------------------------- progress kept
def test_flushes_hand_out_every_row_once_by_batches_or_seconds(tmp_path):
    from clusterlens.features.backbones import RAW

    root = make_tree(tmp_path / "img", {"a": 6, "b": 5})
    paths = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))
    bb = build_backbone(RAW, "none", 8)
    kw = dict(batch_size=2, device="cpu", progress=False, jit=False)
    for flush_kw, ranges in [
            (dict(flush_batches=3, flush_seconds=1e9), [(0, 6), (6, 11)]),
            (dict(flush_batches=4, flush_seconds=1e9), [(0, 8), (8, 11)]),  # + the rest
            (dict(flush_batches=100, flush_seconds=0.0), [(i, min(i + 2, 11))
                                                          for i in range(0, 11, 2)])]:
        calls = []
        full, _ = ex.extract_features(bb, root, paths, 8, **kw, **flush_kw,
                                      on_flush=lambda a, b, f, calls=calls: calls.append((a, b, f.copy())))
        assert [(a, b) for a, b, _ in calls] == ranges, flush_kw
        np.testing.assert_array_equal(np.concatenate([f for _, _, f in calls]), full)


class _Killed(Exception):
    pass


def test_an_interrupted_extraction_keeps_its_flushes_and_the_rerun_extracts_the_rest(
        tmp_path, monkeypatch):
    """Stopped right after batch 5 of 6 with a flush every 2 batches: the store keeps the 8
    images of batches 1-4; the rerun reads those 8 back, extracts the other 3, and gives the
    bytes of an uninterrupted run (Lite0: features independent of their batch mates)."""
    import torch

    root = make_tree(tmp_path / "img", {"a": 6, "b": 5})
    index, _, _ = build_index(root)
    bb = build_backbone(LITE0, "DEFAULT", 32)
    cpu = torch.device("cpu")
    kw = dict(batch_size=2, precision="fp32", progress=False)
    whole, _ = ex.features_for_index(bb, index, root, 32, cpu, **kw)  # no store
    store = tmp_path / "store"

    def killed(n):
        raise _Killed(n)

    monkeypatch.setattr(ex, "FLUSH_BATCHES", 2)
    monkeypatch.setattr(ex, "FLUSH_SECONDS", float("inf"))
    monkeypatch.setattr(ex, "_hold", killed)
    monkeypatch.setenv(ex.HOLD_ENV, "5")
    with pytest.raises(_Killed):
        ex.features_for_index(bb, index, root, 32, cpu, **kw, store=store)
    spec = ex.store_spec(bb, 32, cpu, resize="squash", precision="fp32", jit="auto",
                         batch_size=2, seed=0)
    assert len(FeatureStore(store, spec, bb.dim)) == 8
    assert len(list(FeatureStore(store, spec, bb.dim).dir.glob("*.sha.npy"))) == 2  # 2 shards
    monkeypatch.delenv(ex.HOLD_ENV)
    again, info = ex.features_for_index(bb, index, root, 32, cpu, **kw, store=store)
    assert (info["from_store"], info["extracted"]) == (8, 3)
    assert again.tobytes() == whole.tobytes()
    assert len(FeatureStore(store, spec, bb.dim)) == 11
