import io
import json
import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from clusterlens.config.base import parse_section, parse_stage
from clusterlens.config.index import IndexParams
from clusterlens.core.errors import DataError, ParamError
from clusterlens.data import index as ix
from clusterlens.data.index import build_index, index_metrics, scan_tree
from stages.index import Params, run
from tests.conftest import ctrl_c_when, make_image, make_tree

RNG = np.random.default_rng(1)


def _jpeg_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", **kw)
    return buf.getvalue()


@pytest.fixture
def messy_tree(tmp_path):
    """Good images of several modes and formats plus the usual broken files."""
    root = make_tree(tmp_path / "root", {"ant": 3, "bee": 3})
    ant, bee = root / "ant", root / "bee"
    make_image(0, RNG).save(ant / "photo.jpg", quality=90)
    make_image(0, RNG).convert("L").save(ant / "gray.png")
    make_image(0, RNG).convert("RGBA").save(ant / "alpha.png")
    make_image(0, RNG).convert("P").save(ant / "palette.gif")
    make_image(0, RNG).convert("CMYK").save(ant / "cmyk.jpg")
    (ant / "nested" / "deeper").mkdir(parents=True)
    make_image(0, RNG).save(ant / "nested" / "deeper" / "inner.png")
    full = _jpeg_bytes(make_image(0, RNG, size=(64, 64)))
    (ant / "truncated.jpg").write_bytes(full[: len(full) // 2])
    (ant / "notes.jpg").write_text("this is not an image")
    (ant / "empty.png").write_bytes(b"")
    (ant / ".hidden.png").write_bytes((ant / "000.png").read_bytes())
    make_image(0, RNG, size=(4, 4)).save(ant / "tiny.png")
    (bee / "copy of ant.png").write_bytes((ant / "000.png").read_bytes())  # cross-class dup
    (root / "stray.png").write_bytes((ant / "001.png").read_bytes())
    (root / "empty_class").mkdir()
    return root


def test_index_lists_good_images_and_rejects_bad_ones(messy_tree):
    index, rejected, info = build_index(messy_tree, min_side=8, drop_duplicates=False, workers=2)
    assert list(index["class"].unique()) == ["ant", "bee"]
    assert index["path"].tolist() == sorted(index["path"])
    assert set(index["label"]) == {0, 1}
    assert (index.loc[index["class"] == "bee", "label"] == 1).all()
    expected_ant = {"ant/000.png", "ant/001.png", "ant/002.png", "ant/photo.jpg", "ant/gray.png",
                    "ant/alpha.png", "ant/palette.gif", "ant/cmyk.jpg",
                    "ant/nested/deeper/inner.png"}
    assert set(index.loc[index["class"] == "ant", "path"]) == expected_ant
    reasons = dict(zip(rejected["path"], rejected["reason"]))
    assert reasons == {
        "ant/truncated.jpg": "corrupt",
        "ant/notes.jpg": "not_an_image",
        "ant/empty.png": "empty_file",
        "ant/.hidden.png": "hidden",
        "ant/tiny.png": "too_small",
        "stray.png": "not_in_class_folder",
    }
    assert info["empty_classes"] == ["empty_class"]
    modes = dict(zip(index["path"], index["mode"]))
    assert modes["ant/gray.png"] == "L" and modes["ant/cmyk.jpg"] == "CMYK"
    assert modes["ant/alpha.png"] == "RGBA" and modes["ant/palette.gif"] == "P"
    row = index.set_index("path").loc["ant/000.png"]
    assert (row["width"], row["height"]) == (40, 32)
    import hashlib
    assert row["sha256"] == hashlib.sha256((messy_tree / "ant/000.png").read_bytes()).hexdigest()
    dup = index.set_index("path").loc["bee/copy of ant.png"]
    assert dup["duplicate_of"] == "ant/000.png"


def test_index_metrics_count_everything(messy_tree):
    index, rejected, info = build_index(messy_tree)
    m = index_metrics(index, rejected, info)
    assert m["images"] == 13 and m["classes"] == 2 and m["empty_classes"] == 1
    assert (m["per_class_min"], m["per_class_max"]) == (4, 9)
    assert m["imbalance_ratio"] == pytest.approx(9 / 4)
    assert m["per_class_median"] == 6.5
    assert m["per_class_std"] == pytest.approx(np.std([9, 4], ddof=1))
    assert m["rejected"] == 6
    assert m["rejected_by_reason"] == {"corrupt": 1, "empty_file": 1, "hidden": 1,
                                       "not_an_image": 1, "not_in_class_folder": 1,
                                       "too_small": 1}
    assert m["duplicates"] == 1 and m["cross_class_duplicate_groups"] == 1
    assert m["grayscale_images"] == 1 and m["cmyk_images"] == 1 and m["alpha_images"] == 1


def test_drop_duplicates_moves_copies_to_rejected(messy_tree):
    index, rejected, _ = build_index(messy_tree, drop_duplicates=True)
    assert "bee/copy of ant.png" not in set(index["path"])
    row = rejected.set_index("path").loc["bee/copy of ant.png"]
    assert row["reason"] == "duplicate" and "ant/000.png" in row["detail"]


def test_index_is_deterministic(messy_tree):
    a = build_index(messy_tree, workers=1)
    b = build_index(messy_tree, workers=3)
    pd.testing.assert_frame_equal(a[0], b[0])
    pd.testing.assert_frame_equal(a[1], b[1])


def test_exif_orientation_swaps_reported_size(tmp_path):
    root = make_tree(tmp_path / "r", {"a": 1, "b": 1})
    img = make_image(0, RNG, size=(40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    img.save(root / "a" / "rotated.jpg", exif=exif.tobytes())
    index, _, _ = build_index(root)
    row = index.set_index("path").loc["a/rotated.jpg"]
    assert (row["width"], row["height"]) == (20, 40)


@pytest.mark.skipif(os.name != "posix", reason="symlinks")
def test_symlinks_inside_followed_outside_rejected(tmp_path):
    root = make_tree(tmp_path / "r", {"a": 2, "b": 2})
    outside = tmp_path / "outside.png"
    make_image(1, RNG).save(outside)
    os.symlink(outside, root / "a" / "escape.png")
    os.symlink(root / "b" / "000.png", root / "a" / "inside.png")
    os.symlink(root / "a" / "loop1.png", root / "a" / "loop2.png")
    os.symlink(root / "a" / "loop2.png", root / "a" / "loop1.png")
    os.symlink(tmp_path, root / "linkdir")
    index, rejected, _ = build_index(root)
    reasons = dict(zip(rejected["path"], rejected["reason"]))
    assert reasons["a/escape.png"] == "symlink_outside_root"
    assert reasons["a/loop1.png"] == reasons["a/loop2.png"] == "broken_symlink"
    assert reasons["linkdir"] == "symlinked_folder"
    assert "a/inside.png" in set(index["path"])


def test_hard_errors_name_the_problem(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        scan_tree(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        scan_tree(tmp_path / "file")
    one = make_tree(tmp_path / "one", {"only": 3})
    with pytest.raises(DataError, match="at least 2"):
        build_index(one)
    empty = tmp_path / "empty"
    (empty / "a").mkdir(parents=True)
    (empty / "b").mkdir()
    (empty / "a" / "x.jpg").write_text("no")
    with pytest.raises(DataError, match="no usable image"):
        build_index(empty)


def _params(root, **over):
    p = {"seed": 0, "data": {"root": str(root)},
         "index": {"min_side": 8, "drop_duplicates": False, "workers": 2,
                   "sample_per_class": 4, "sample_classes": 10}}
    for key, value in over.items():
        section, name = key.split("__")
        p[section][name] = value
    return p


def test_params_are_validated_with_their_key(tmp_path):
    p = parse_section(_params(tmp_path), "index", IndexParams)
    assert (p.min_side, p.drop_duplicates, p.workers, p.store) == (8, False, 2, None)
    p = parse_section(_params(tmp_path, index__workers="auto", index__store="none"), "index",
                      IndexParams)
    assert (p.workers, p.store) == ("auto", None)
    assert ix.resolve_workers("auto") == len(os.sched_getaffinity(0))
    with pytest.raises(ParamError, match="index.workers"):
        parse_section(_params(tmp_path, index__workers="all"), "index", IndexParams)
    with pytest.raises(ParamError, match="index.min_side"):
        parse_section(_params(tmp_path, index__min_side=0), "index", IndexParams)
    with pytest.raises(ParamError, match="index.drop_duplicates"):
        parse_section(_params(tmp_path, index__drop_duplicates="yes"), "index", IndexParams)
    with pytest.raises(ParamError, match="did you mean `index.min_side`"):
        parse_section({"index": {**_params(tmp_path)["index"], "min_sides": 8}}, "index",
                      IndexParams)
    # the stage checks its params before it looks at the folder
    with pytest.raises(ParamError, match="index.workers"):
        run(parse_stage(_params(tmp_path / "absent", index__workers=0), Params))
    with pytest.raises(ParamError, match="data.root"):
        run(parse_stage(_params(tmp_path, data__root=""), Params))


def test_run_writes_every_output(messy_tree, in_tmp_cwd):
    metrics = run(parse_stage(_params(messy_tree), Params))
    for out in ["data/index.parquet", "data/rejected.csv", "data/quality_by_class.csv",
                "metrics/index.json", "plots/index/class_counts.csv", "plots/index/class_distribution.png",
                "plots/index/image_sizes.png", "plots/index/samples.png"]:
        assert (in_tmp_cwd / out).stat().st_size > 0, out
    assert json.loads((in_tmp_cwd / "metrics/index.json").read_text()) == metrics
    counts = pd.read_csv(in_tmp_cwd / "plots/index/class_counts.csv")
    assert counts.to_dict("list") == {"class": ["ant", "bee"], "count": [9, 4]}
    rejected = pd.read_csv(in_tmp_cwd / "data/rejected.csv")
    assert list(rejected.columns) == ["path", "class", "reason", "detail"]
    assert len(rejected) == 6
    index = pd.read_parquet(in_tmp_cwd / "data/index.parquet")
    assert len(index) == 13
    quality = pd.read_csv(in_tmp_cwd / "data/quality_by_class.csv", keep_default_na=False)
    assert quality["class"].tolist() == ["ant", "bee"] and quality["images"].tolist() == [9, 4]
    assert set(metrics["quality_flags"]) >= {"blurry", "dark", "grayscale", "odd_size"}
    png = Image.open(in_tmp_cwd / "plots/index/samples.png")
    assert png.size[0] > 200 and png.size[1] > 100


# --------------------------------------------------------------------------- processes, store
def _same(a, b):
    pd.testing.assert_frame_equal(a[0], b[0])
    pd.testing.assert_frame_equal(a[1], b[1])


def test_worker_processes_give_the_same_index(messy_tree, monkeypatch):
    monkeypatch.setattr(ix, "PROCESS_MIN_FILES", 0)  # processes even for 20 files
    monkeypatch.setattr(ix, "CHUNK", 3)  # several chunks per worker, back in order
    one = build_index(messy_tree, workers=1)
    two = build_index(messy_tree, workers=2)
    assert (one[2]["inspection"]["workers"], two[2]["inspection"]["workers"]) == (1, 2)
    _same(one, two)


def test_a_killed_run_resumes_from_the_store(messy_tree, tmp_path, monkeypatch):
    reference = build_index(messy_tree)  # no store
    store = tmp_path / "store"
    real = ix._inspect_bytes
    calls = []

    def dies_at_the_8th(data, digest, min_side):
        calls.append(digest)
        if len(calls) == 8:
            raise KeyboardInterrupt  # Ctrl-C (or a kill) mid-run
        return real(data, digest, min_side)

    monkeypatch.setattr(ix, "CHUNK", 1)
    monkeypatch.setattr(ix, "FLUSH_FILES", 3)
    monkeypatch.setattr(ix, "_inspect_bytes", dies_at_the_8th)
    with pytest.raises(KeyboardInterrupt):
        build_index(messy_tree, store=store)
    stored = sum(len(pd.read_parquet(p)) for p in store.rglob("*.parquet"))
    assert stored == 7  # flushed every 3 files, and the rest when it stopped
    calls.clear()
    monkeypatch.setattr(ix, "_inspect_bytes", lambda *a: (calls.append(a[1]), real(*a))[1])
    resumed = build_index(messy_tree, store=store)
    inspection = resumed[2]["inspection"]
    # every file is read and hashed again; the 7 stored records are not decoded again (one of
    # them also serves 'bee/copy of ant.png': same bytes); the empty file has no record
    assert (inspection["from_store"], inspection["inspected"]) == (8, len(calls))
    assert 8 + len(calls) + 1 == 17  # the files inspected (not hidden, in a class folder)
    _same(reference, resumed)
    calls.clear()
    again = build_index(messy_tree, store=store)
    assert again[2]["inspection"]["inspected"] == 0 and not calls
    _same(reference, again)


def test_the_store_follows_the_bytes_and_min_side(tmp_path):
    root = make_tree(tmp_path / "r", {"a": 3, "b": 3})
    store = tmp_path / "store"
    build_index(root, store=store)
    make_image(1, RNG, size=(24, 12)).save(root / "a" / "001.png")  # new bytes, same path
    (root / "b" / "002.png").write_bytes(b"now broken")
    fresh, cached = build_index(root), build_index(root, store=store)
    assert cached[2]["inspection"]["inspected"] == 2
    _same(fresh, cached)
    row = cached[0].set_index("path").loc["a/001.png"]
    assert (row["width"], row["height"]) == (24, 12)
    assert cached[1].set_index("path").loc["b/002.png", "reason"] == "not_an_image"
    # another min_side is another key space: nothing is served from the first one
    small = build_index(root, min_side=16, store=store)
    assert small[2]["inspection"]["from_store"] == 0
    assert small[1].set_index("path").loc["a/001.png", "reason"] == "too_small"


INTERRUPTED = """
import sys, time
import clusterlens.data.index as ix
from clusterlens.core.cli import run_cli
real = ix._inspect_bytes
ix._inspect_bytes = lambda *a: (time.sleep(60), real(*a))[1]  # a folder that never ends
ix.PROCESS_MIN_FILES = 0
root, store = sys.argv[1:3]
raise SystemExit(run_cli(lambda argv: ix.build_index(root, workers=2, store=store), []))
"""


@pytest.mark.skipif(os.name != "posix", reason="process groups")
def test_ctrl_c_ends_the_workers_at_once_with_one_line(tmp_path):
    root = make_tree(tmp_path / "r", {"a": 60, "b": 60}, size=(16, 16))
    # Ctrl-C to the whole process group once the progress bar shows the workers decoding
    proc, seconds, err = ctrl_c_when(INTERRUPTED, [str(root), str(tmp_path / "s")], b"index:", 20)
    assert seconds < 5, err
    assert proc.returncode == 130, err
    assert "interrupted (Ctrl-C)" in err and "Traceback" not in err, err
    with pytest.raises(ProcessLookupError):  # no worker left behind
        os.killpg(proc.pid, 0)
