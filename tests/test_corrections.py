"""The user's corrections (relabel / exclude / keep, ``data.corrections``) and folders laid out
as splits (``root/<split>/<class>/<image>``, ``data.splits``): reading and checking the
corrections file, applying it in the index, the index stage's outputs, split detection and
order, the upper bound's folder split, and the audits' silencing of kept images."""
from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import clusterlens.data.index as index_mod
from clusterlens.analysis import upper_bound as ub
from clusterlens.audit.duplicates import NearDuplicates
from clusterlens.audit.label_issues import LabelIssues, OutOfFold, Scored, silence_kept
from clusterlens.config.base import parse_section, parse_stage
from clusterlens.config.data import DataParams
from clusterlens.core.errors import DataError, ParamError
from clusterlens.data import corrections as corr
from clusterlens.data.index import FLAG_COLUMNS, build_index, index_metrics, scan_tree
from clusterlens.data.quality import SCORE_COLUMNS
from clusterlens.data.splits import detect_splits, image_splits, split_order, train_and_test
from stages.index import Params, run
from tests.conftest import make_image, make_tree

RNG = np.random.default_rng(7)
HEADER = "path,action,class,note\n"


# --------------------------------------------------------------------------- helpers
def _write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, str):
        text = text.encode("utf-8")
    path.write_bytes(text)
    return path


def _digest(root: Path) -> dict[str, str]:
    """sha256 of every file under root (and so its listing)."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _truncated_jpeg() -> bytes:
    buf = io.BytesIO()
    make_image(0, RNG, size=(64, 64)).save(buf, format="JPEG")
    data = buf.getvalue()
    return data[: len(data) // 2]


def _dark_image() -> Image.Image:
    arr = np.clip(RNG.normal(8, 3, (32, 40, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(arr, mode="RGB")


@pytest.fixture
def tree(tmp_path) -> Path:
    """ant/000-003, bee/000-003, cat/000-001, a dark ant image and a corrupt bee file."""
    root = make_tree(tmp_path / "root", {"ant": 4, "bee": 4, "cat": 2})
    _dark_image().save(root / "ant" / "dark.png")
    (root / "bee" / "broken.jpg").write_bytes(_truncated_jpeg())
    return root


def _table(rows: list[tuple], lines: list[int] | None = None) -> pd.DataFrame:
    """A corrections table as read_corrections returns it (line numbers from 2)."""
    df = pd.DataFrame(rows, columns=["path", "action", "class", "note"]).astype(object)
    df["line"] = np.asarray(lines or range(2, 2 + len(rows)), dtype=np.int64)
    return df


def _params(root, **over):
    p = {"seed": 0, "data": {"root": str(root)},
         "index": {"min_side": 8, "drop_duplicates": False, "workers": 2,
                   "sample_per_class": 2, "sample_classes": 3}}
    for key, value in over.items():
        section, name = key.split("__")
        p[section][name] = value
    return p


# --------------------------------------------------------------------------- 1. reading
def test_read_corrections_handles_bom_quotes_and_blank_lines(tmp_path):
    text = ('\ufeffpath,action,class,note\r\n'          # 1 (BOM, CRLF)
            '\r\n'                                     # 2 blank
            'ant/000.png,relabel, bee ,"looks, like\n'  # 3
            'a bee"\r\n'                               # 4 (quoted newline)
            'bee/001.png,keep,,\n'                     # 5
            '\n'                                       # 6 blank
            '   \n'                                    # 7 blanks only
            'cat/000.png, exclude ,,"say ""no"""\n')   # 8
    got = corr.read_corrections(_write(tmp_path / "fix.csv", text))
    assert list(got.columns) == corr.COLUMNS + ["line"]
    assert got[corr.COLUMNS].values.tolist() == [
        ["ant/000.png", "relabel", "bee", "looks, like\na bee"],
        ["bee/001.png", "keep", "", ""],
        ["cat/000.png", "exclude", "", 'say "no"'],
    ]
    # the rows after a multi-line note keep their true line; the BOM is not part of `path`
    assert got["line"].tolist()[1:] == [5, 8]
    assert got["line"].dtype == np.int64
    assert "fix.csv" in got.attrs["source"]


def test_read_corrections_optional_columns_and_empty_files(tmp_path):
    # only the required columns, in another order: class and note read as empty
    got = corr.read_corrections(_write(tmp_path / "a.csv", "action,path\nkeep,ant/000.png\n"))
    assert got[corr.COLUMNS].values.tolist() == [["ant/000.png", "keep", "", ""]]
    assert got["line"].tolist() == [2]
    for text in ["", "\n\n", HEADER]:
        empty = corr.read_corrections(_write(tmp_path / "e.csv", text))
        assert len(empty) == 0 and {"path", "action", "line"} <= set(empty.columns)


def test_a_multi_line_row_is_numbered_by_its_first_line(tmp_path):
    text = HEADER + 'ant/000.png,keep,,"one\ntwo\nthree"\nbee/000.png,keep,,\n'
    got = corr.read_corrections(_write(tmp_path / "fix.csv", text))
    assert got["line"].tolist() == [2, 5]


# --------------------------------------------------------------------------- 2. bad files and rows
def test_an_absent_corrections_file_applies_none(tmp_path):
    got = corr.read_corrections(tmp_path / "nope.csv")
    assert len(got) == 0 and got.attrs["absent"] is True
    assert "nope.csv" in got.attrs["source"]
    assert not corr.read_corrections(_write(tmp_path / "h.csv", HEADER)).attrs.get("absent")


@pytest.mark.parametrize("content, pattern", [
    (b"path,action,class,note\nant/caf\xe9.png,keep,,\n", r"is not UTF-8"),
    ("path,action,klass,note\n", r"line 1 has unknown column\(s\) 'klass'"),
    ("path,class,note\n", r"line 1 has no column 'action'"),
    ("path,action,action\n", r"line 1 has a column named twice"),
    (HEADER + "ant/000.png,keep,,\nant/001.png,relabel,bee,a, b\n",
     r"line 3 has 5 fields, the header 4: quote fields that hold commas"),
    (HEADER + 'ant/000.png,keep,,"never closed\n', r"is not valid CSV"),
])
def test_bad_corrections_files_are_refused(tmp_path, content, pattern):
    path = _write(tmp_path / "fix.csv", content)
    with pytest.raises(DataError, match=pattern) as err:
        corr.read_corrections(path)
    assert "data.corrections" in str(err.value) and "fix.csv" in str(err.value)


def test_every_bad_row_is_listed_by_its_line_in_one_error(tree, tmp_path, monkeypatch):
    (tree / "bee" / "sub").mkdir()
    make_image(1, RNG).save(tree / "bee" / "sub" / "unique_name.png")
    text = HEADER + "\n".join([
        "ant/000.png,keep,,fine",               # 2 good
        "ant/nope.png,keep,,",                  # 3 unknown path, no hint
        "cat/unique_name.png,keep,,",           # 4 unknown path; that name is elsewhere
        "ant/0000.png,keep,,",                  # 5 unknown path; a close one exists
        "ant/001.png,relabel,bea,",             # 6 unknown class (did you mean bee)
        "ant/002.png,relabell,bee,",            # 7 unknown action (did you mean relabel)
        "ant/003.png,relabel,,",                # 8 relabel without class
        "bee/000.png,relabel,bee,",             # 9 good: to its own class (not applied)
        "bee/001.png,exclude,ant,",             # 10 class on exclude
        "bee/002.png,keep,cat,",                # 11 class on keep
        "ant/000.png,exclude,,again",           # 12 listed twice
        ",keep,,",                              # 13 empty path
        "cat/000.png,relabel,zebra,",           # 14 unknown class, no close one
        "cat/001.png,relabel,ant,ok",           # 15 good
    ]) + "\n"
    table = corr.read_corrections(_write(tmp_path / "fix.csv", text))

    def must_not_decode(*args, **kwargs):
        raise AssertionError("an image was decoded before the corrections were checked")

    monkeypatch.setattr(index_mod, "inspect_image", must_not_decode)
    monkeypatch.setattr(index_mod, "inspect_file", must_not_decode)
    with pytest.raises(DataError) as err:
        build_index(tree, corrections=table)
    msg = str(err.value)
    assert msg.startswith(f"data.corrections: {str(tmp_path / 'fix.csv')!r}: 11 bad row(s)")
    bad_lines = [int(n) for n in re.findall(r"^  line (\d+)", msg, flags=re.M)]
    assert bad_lines == [3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14]
    expected = {
        3: "line 3 ('ant/nope.png'): unknown path: no image file there under data.root",
        4: "(a file of that name: 'bee/sub/unique_name.png')",
        5: "(did you mean 'ant/000.png'?)",
        6: "line 6 ('ant/001.png'): unknown class 'bea': not a class folder under data.root "
           "(did you mean 'bee'?)",
        7: "line 7 ('ant/002.png'): unknown action 'relabell'; use relabel, exclude, keep "
           "(did you mean 'relabel'?)",
        8: "line 8 ('ant/003.png'): relabel needs the new class in the `class` column",
        10: "line 10 ('bee/001.png'): `class` is 'ant' but only relabel takes a class; leave "
            "it empty for exclude",
        11: "line 11 ('bee/002.png'): `class` is 'cat' but only relabel takes a class; leave "
            "it empty for keep",
        12: "line 12 ('ant/000.png'): path listed twice (first on line 2)",
        13: "line 13: empty path",
        14: "unknown class 'zebra': not a class folder under data.root (classes: ant, bee, cat)",
    }
    lines = {int(m.group(1)): m.group(0) for m in re.finditer(r"^  line (\d+).*$", msg, re.M)}
    for n, text in expected.items():
        assert text in lines[n], (n, lines[n])
    assert "did you mean" not in lines[3] and "a file of that name" not in lines[3]
    for good in (2, 9, 15):  # the good rows are not listed
        assert f"line {good} " not in msg


def test_check_corrections_caps_the_listing_and_numbers_rows_without_lines():
    class_of = {f"a/{i}.png": "a" for i in range(30)} | {"b/0.png": "b"}
    many = pd.DataFrame({"path": [f"a/{i}.png" for i in range(25)], "action": "drop",
                         "class": "", "note": ""})
    with pytest.raises(DataError) as err:
        corr.check_corrections(many, class_of=class_of, classes={"a", "b"}, source="fix.csv")
    msg = str(err.value)
    assert msg.startswith("fix.csv: 25 bad row(s)")
    assert msg.count("unknown action 'drop'") == corr.MAX_SHOWN
    assert msg.rstrip().endswith(f"... and {25 - corr.MAX_SHOWN} more")
    assert "line 2 ('a/0.png')" in msg  # no line column: rows numbered from 2
    # a good table passes
    corr.check_corrections(_table([("a/0.png", "relabel", "b", ""), ("b/0.png", "keep", "", "")]),
                           class_of=class_of, classes={"a", "b"})


# --------------------------------------------------------------------------- 3. build_index
def test_relabel_exclude_keep_in_the_index(tree, monkeypatch):
    before = _digest(tree)
    plain, plain_rejected, _ = build_index(tree)
    dark = plain.set_index("path").loc["ant/dark.png"]
    assert dark["is_dark"]  # flagged without keep
    assert (plain["correction"] == "").all() and (plain["class"] == plain["given_class"]).all()

    decoded: list[str] = []
    real = index_mod.inspect_file

    def spy(path, min_side):
        decoded.append(Path(path).relative_to(tree).as_posix())
        return real(path, min_side)

    monkeypatch.setattr(index_mod, "inspect_file", spy)
    table = _table([
        ("ant/000.png", "relabel", "bee", "a bee, really"),
        ("ant/001.png", "exclude", "", "not an ant\nnor anything"),
        ("ant/002.png", "exclude", "", ""),
        ("ant/dark.png", "keep", "", "night shot"),
        ("cat/000.png", "relabel", "ant", ""),
        ("cat/001.png", "relabel", "bee", ""),
        ("bee/broken.jpg", "relabel", "ant", "will not apply"),
        ("bee/000.png", "relabel", "bee", "already a bee"),
    ])
    index, rejected, info = build_index(tree, corrections=table)
    assert "ant/001.png" not in decoded and "ant/002.png" not in decoded
    assert "ant/000.png" in decoded and "bee/broken.jpg" in decoded
    assert _digest(tree) == before  # the folder is never modified

    rows = index.set_index("path")
    # relabel: class and label change, given_class keeps the folder's class
    assert rows.loc["ant/000.png", ["class", "given_class", "correction", "correction_note"]
                    ].tolist() == ["bee", "ant", "relabel", "a bee, really"]
    assert rows.loc["cat/000.png", ["class", "given_class"]].tolist() == ["ant", "cat"]
    assert rows.loc["cat/001.png", ["class", "given_class"]].tolist() == ["bee", "cat"]
    # every cat image relabelled: cat is an empty class, labels numbered over ant, bee
    assert sorted(index["class"].unique()) == ["ant", "bee"]
    assert info["classes_found"] == ["ant", "bee", "cat"] and info["empty_classes"] == ["cat"]
    assert dict(zip(index["class"], index["label"])) == {"ant": 0, "bee": 1}
    assert index["label"].dtype == np.int64
    assert (rows.loc["ant/003.png", "correction"], rows.loc["ant/003.png", "correction_note"]) \
        == ("", "")
    # exclude: out of the index, into the rejected table with the note (or a default)
    assert not {"ant/001.png", "ant/002.png"} & set(index["path"])
    rej = rejected.set_index("path")
    assert rej.loc["ant/001.png", ["class", "reason", "detail"]].tolist() == \
        ["ant", "excluded", "not an ant\nnor anything"]
    assert rej.loc["ant/002.png", "reason"] == "excluded"
    assert rej.loc["ant/002.png", "detail"] == "excluded in data.corrections"
    assert rej.loc["bee/broken.jpg", "reason"] == "corrupt"
    assert len(rejected) == len(plain_rejected) + 2
    # keep: flags off, scores unchanged
    kept_row = rows.loc["ant/dark.png"]
    assert kept_row["correction"] == "keep" and kept_row["correction_note"] == "night shot"
    assert not kept_row[FLAG_COLUMNS].any()
    for col in ["blurry_score", "dark_score", "light_score", "low_information_score",
                "grayscale_score"]:
        assert kept_row[col] == pytest.approx(dark[col])
    assert kept_row["dark_score"] >= 0.6
    # the other images' flags are as without corrections
    for p in ["ant/003.png", "bee/000.png"]:
        assert rows.loc[p, "is_dark"] == plain.set_index("path").loc[p, "is_dark"]
    np.testing.assert_array_equal(corr.kept(index), (index["path"] == "ant/dark.png").to_numpy())
    # what happened to each row
    applied = info["corrections"]
    assert list(applied.columns) == corr.APPLIED_COLUMNS
    assert applied["path"].tolist() == sorted(table["path"])
    status = dict(zip(applied["path"], applied["status"]))
    assert status.pop("bee/broken.jpg") == "not applied: the image is rejected (corrupt)"
    assert status.pop("bee/000.png") == "not applied: already filed under 'bee'"
    assert set(status.values()) == {"applied"}
    assert rows.loc["bee/000.png", ["class", "given_class", "correction", "correction_note"]
                    ].tolist() == ["bee", "bee", "", ""]
    row = applied.set_index("path").loc["ant/000.png"]
    assert row[["split", "action", "given_class", "class", "note"]].tolist() == \
        ["", "relabel", "ant", "bee", "a bee, really"]
    assert applied.set_index("path").loc["ant/001.png", "class"] == ""
    assert corr.counts(applied) == {"relabel": 3, "exclude": 2, "keep": 1, "not_applied": 2}


def test_keep_silences_a_blurry_image(tmp_path):
    from PIL import ImageFilter

    root = make_tree(tmp_path / "r", {"a": 4, "b": 4}, size=(96, 96))
    sharp = Image.open(root / "a" / "000.png")
    sharp.filter(ImageFilter.GaussianBlur(2)).save(root / "a" / "blurry.png")
    plain, _, _ = build_index(root)
    kept, _, _ = build_index(root, corrections=_table([("a/blurry.png", "keep", "", "")]))
    p, k = plain.set_index("path"), kept.set_index("path")
    assert p.loc["a/blurry.png", "is_blurry"] and not k.loc["a/blurry.png", "is_blurry"]
    assert k.loc["a/blurry.png", "blurry_score"] == p.loc["a/blurry.png", "blurry_score"]
    pd.testing.assert_frame_equal(p[SCORE_COLUMNS], k[SCORE_COLUMNS])


def test_apply_corrections_and_silence_directly():
    index = pd.DataFrame({"path": ["a/0", "a/1", "b/0"], "class": ["a", "a", "b"]})
    table = _table([("a/0", "relabel", "b", "n0"), ("a/1", "keep", "", "n1"),
                    ("b/9", "exclude", "", "n2")])
    out = corr.apply_corrections(index, table)
    assert out["class"].tolist() == ["b", "a", "b"]
    assert out["given_class"].tolist() == ["a", "a", "b"]
    assert out["correction"].tolist() == ["relabel", "keep", ""]
    assert out["correction_note"].tolist() == ["n0", "n1", ""]
    assert index["class"].tolist() == ["a", "a", "b"]  # a copy
    flags = pd.DataFrame({"is_x": [True, True, False], "is_y": [True, False, True]})
    quiet = corr.silence(flags, np.array([True, False, True]))
    assert quiet.to_dict("list") == {"is_x": [False, True, False], "is_y": [False, False, False]}
    assert flags["is_x"].tolist() == [True, True, False]  # unchanged
    assert not corr.kept(index).any() and corr.kept(out).tolist() == [False, True, False]
    assert corr.excluded_paths(table) == {"b/9"}


# --------------------------------------------------------------------------- 4. the stage
def test_index_stage_writes_the_corrections_applied(tree, in_tmp_cwd):
    fix = _write(in_tmp_cwd / "my_fixes.csv", HEADER
                 + 'ant/000.png,relabel,bee,"moved, see\nticket"\n'
                 + "bee/000.png,exclude,,\nant/dark.png,keep,,\nbee/broken.jpg,keep,,\n")
    metrics = run(parse_stage(_params(tree, data__corrections=str(fix)), Params))
    assert metrics["corrections"] == {"relabel": 1, "exclude": 1, "keep": 1, "not_applied": 1}
    assert json.loads((in_tmp_cwd / "metrics/index.json").read_text())["corrections"] == \
        metrics["corrections"]
    assert metrics["splits"] == {}
    applied = pd.read_csv(in_tmp_cwd / "data/corrections_applied.csv", keep_default_na=False)
    assert list(applied.columns) == corr.APPLIED_COLUMNS
    assert applied[["path", "action", "given_class", "class", "status"]].values.tolist() == [
        ["ant/000.png", "relabel", "ant", "bee", "applied"],
        ["ant/dark.png", "keep", "ant", "", "applied"],
        ["bee/000.png", "exclude", "bee", "", "applied"],
        ["bee/broken.jpg", "keep", "bee", "", "not applied: the image is rejected (corrupt)"],
    ]
    assert applied.loc[0, "note"] == "moved, see\nticket"
    index = pd.read_parquet(in_tmp_cwd / "data/index.parquet")
    assert index.set_index("path").loc["ant/000.png", ["class", "given_class"]].tolist() == \
        ["bee", "ant"]
    rejected = pd.read_csv(in_tmp_cwd / "data/rejected.csv", keep_default_na=False)
    assert rejected.set_index("path").loc["bee/000.png", "reason"] == "excluded"

    # a bad row stops the stage before any output is written
    shutil.rmtree(in_tmp_cwd / "data")
    _write(fix, HEADER + "ant/000.png,relabel,bees,\n")
    with pytest.raises(DataError, match=r"line 2 \('ant/000.png'\): unknown class 'bees'"):
        run(parse_stage(_params(tree, data__corrections=str(fix)), Params))
    assert not (in_tmp_cwd / "data").exists()
    # no corrections file at the default path (corrections.csv): none applied
    assert not (in_tmp_cwd / "corrections.csv").exists()
    metrics = run(parse_stage(_params(tree), Params))
    assert metrics["corrections"] == {"relabel": 0, "exclude": 0, "keep": 0, "not_applied": 0}
    assert len(pd.read_csv(in_tmp_cwd / "data/corrections_applied.csv")) == 0


# --------------------------------------------------------------------------- 5. splits
@pytest.fixture
def split_tree(tmp_path) -> Path:
    """train/{cat: 3, dog: 3}, test/{cat: 2, dog: 2, eel: 2}."""
    root = tmp_path / "splits"
    make_tree(root / "train", {"cat": 3, "dog": 3}, seed=1)
    make_tree(root / "test", {"cat": 2, "dog": 2, "eel": 2}, seed=2)
    return root


def test_auto_reads_train_test_folders_as_splits(split_tree):
    index, rejected, info = build_index(split_tree)
    assert info["splits"] == ["train", "test"]  # training split first, though "test" sorts first
    assert info["split_lookalikes"] == []
    assert info["classes_found"] == ["cat", "dog", "eel"]  # the union
    assert len(index) == 12 and len(rejected) == 0
    assert index["path"].tolist() == sorted(index["path"])
    rows = index.set_index("path")
    assert rows.loc["train/cat/000.png", ["split", "class", "given_class"]].tolist() == \
        ["train", "cat", "cat"]
    assert rows.loc["test/eel/001.png", ["split", "class"]].tolist() == ["test", "eel"]
    assert dict(zip(index["class"], index["label"])) == {"cat": 0, "dog": 1, "eel": 2}
    assert index_metrics(index, rejected, info)["splits"] == {"train": 6, "test": 6}
    assert list(index_metrics(index, rejected, info)["splits"]) == ["train", "test"]
    assert image_splits(index).tolist() == index["split"].tolist()
    # a correction names the path with its split; the applied table reports the split
    _, _, fixed = build_index(split_tree, corrections=_table(
        [("test/eel/000.png", "relabel", "cat", "")]))
    assert fixed["corrections"][["split", "given_class", "class", "status"]].values.tolist() == \
        [["test", "eel", "cat", "applied"]]
    with pytest.raises(DataError, match=r"unknown path.*a file of that name: 'test/cat/000.png'"):
        build_index(split_tree, corrections=_table([("eel/000.png", "keep", "", "")]))
    with pytest.raises(DataError, match=r"unknown path.*did you mean 'test/eel/001.png'"):
        build_index(split_tree, corrections=_table([("test/eel/001.jpg", "keep", "", "")]))


def test_none_and_list_settings(split_tree):
    index, _, info = build_index(split_tree, splits="none")
    assert info["splits"] == [] and info["classes_found"] == ["test", "train"]
    assert (index["split"] == "").all()
    assert index.set_index("path").loc["train/cat/000.png", "class"] == "train"
    assert image_splits(index.drop(columns="split")).tolist() == [""] * len(index)

    listed, _, info = build_index(split_tree, splits=["test", "train"])
    assert info["splits"] == ["test", "train"]  # the list's order
    assert set(listed["split"]) == {"train", "test"} and len(listed) == 12
    with pytest.raises(DataError, match=r"data\.splits lists 'val', not a folder directly "
                                        r"under data.root \(found: 'test', 'train'\)"):
        scan_tree(split_tree, ["train", "val"])

    # a stray top-level folder with a list setting; files directly under a split or the root
    make_tree(split_tree / "extra", {"x": 1})
    make_image(0, RNG).save(split_tree / "train" / "loose.png")
    make_image(0, RNG).save(split_tree / "loose.png")
    index, rejected, info = build_index(split_tree, splits=["train", "test"])
    reasons = dict(zip(rejected["path"], rejected["reason"]))
    assert reasons == {"extra": "not_a_split", "train/loose.png": "not_in_class_folder",
                       "loose.png": "not_in_class_folder"}
    assert "root/<split>/<class>/<image>" in rejected.set_index("path").loc[
        "train/loose.png", "detail"]
    assert len(index) == 12 and not index["path"].str.startswith("extra").any()


def test_auto_reads_a_mix_as_classes_and_names_the_lookalikes(split_tree):
    make_tree(split_tree / "cat", {"x": 2})
    index, _, info = build_index(split_tree)
    assert info["splits"] == []
    assert info["classes_found"] == ["cat", "test", "train"]
    assert sorted(info["split_lookalikes"]) == ["test", "train"]
    assert (index["split"] == "").all()
    # a list setting has no lookalikes (the user said what the splits are)
    assert scan_tree(split_tree, "none").lookalikes == ()


def test_auto_split_names_are_case_insensitive(tmp_path):
    root = tmp_path / "r"
    make_tree(root / "Test", {"a": 2, "b": 2})
    make_tree(root / "TRAIN", {"a": 2, "b": 2}, seed=3)
    make_tree(root / "Validation", {"a": 2, "b": 2}, seed=4)
    scan = scan_tree(root)
    assert scan.splits == ("TRAIN", "Validation", "Test")
    assert scan.candidates[0] == ("TRAIN/a/000.png", "a", "TRAIN")


def test_drop_duplicates_within_a_split_only(split_tree):
    src = split_tree / "train" / "cat" / "000.png"
    shutil.copy(src, split_tree / "train" / "dog" / "copy.png")   # within train: dropped
    shutil.copy(src, split_tree / "test" / "cat" / "leak.png")    # across splits: a leak, kept
    index, rejected, info = build_index(split_tree, drop_duplicates=True)
    paths = set(index["path"])
    assert "train/dog/copy.png" not in paths
    assert {"train/cat/000.png", "test/cat/leak.png"} <= paths
    rej = rejected.set_index("path").loc["train/dog/copy.png"]
    assert rej["reason"] == "duplicate" and rej["detail"] == "same bytes as train/cat/000.png"
    assert rej["class"] == "dog"
    rows = index.set_index("path")
    # duplicate_of points to the first copy in path order ("test/..." sorts first)
    assert rows.loc["train/cat/000.png", "duplicate_of"] == "test/cat/leak.png"
    assert rows.loc["test/cat/leak.png", "duplicate_of"] == ""
    # without drop_duplicates all three stay
    kept, _, _ = build_index(split_tree)
    assert kept.set_index("path").loc["train/dog/copy.png", "duplicate_of"] == "test/cat/leak.png"


# --------------------------------------------------------------------------- 6. split order, params
def test_split_order_and_train_and_test():
    assert split_order(["test", "val", "train"], "auto") == ("train", "val", "test")
    assert split_order(["validation", "test", "valid", "train", "val"], "auto") == \
        ("train", "val", "valid", "validation", "test")
    assert split_order(["Test", "TRAIN", "Validation"], "auto") == ("TRAIN", "Validation", "Test")
    assert split_order(["zeta", "train", "alpha", "test"], "auto") == \
        ("train", "test", "alpha", "zeta")
    assert split_order(["test", "", "train", "test"], "none") == ("train", "test")
    assert split_order(["a", "b", "c"], ["c", "x", "a"]) == ("c", "a")  # list order, present only
    assert split_order([], "auto") == ()
    assert train_and_test(("train", "val", "test")) == ("train", "test")
    assert train_and_test(("train", "test")) == ("train", "test")
    assert train_and_test(("train",)) is None and train_and_test(()) is None
    assert detect_splits(["test", "train"], "auto") == ("train", "test")
    assert detect_splits(["test", "train", "cat"], "auto") == ()
    assert detect_splits(["test", "train"], "none") == ()
    assert detect_splits([], "auto") == ()
    assert detect_splits(["b", "a", "c"], ["b", "a"]) == ("b", "a")
    with pytest.raises(ValueError, match="'z'"):
        detect_splits(["a"], ["a", "z"])


def test_data_params_validate_splits_and_corrections():
    def parse(**data):
        return parse_section({"data": {"root": "imgs", **data}}, "data", DataParams)

    p = parse()
    assert (p.root, p.splits, p.corrections) == ("imgs", "auto", "corrections.csv")
    assert parse(splits="none").splits == "none"
    assert parse(splits=["train", "test"]).splits == ["train", "test"]
    for bad, why in [("trian", "must be auto, none or a list"), ([], "at least one"),
                     (["a", "a"], "twice"), (["a/b"], "'a/b'"), ([" "], "not a folder name"),
                     ([".hidden"], "'.hidden'")]:
        with pytest.raises(ParamError, match=r"`data\.splits`.*" + why) as err:
            parse(splits=bad)
        assert err.value.key == "data.splits", bad
    with pytest.raises(ParamError, match=r"`data\.corrections` must be a file path"):
        parse(corrections="  ")
    with pytest.raises(ParamError, match=r"did you mean `data\.splits`"):
        parse(split="auto")


@pytest.mark.parametrize("bad", [3, None, ["train", 3]])
def test_data_splits_of_the_wrong_type_names_the_key(bad):
    with pytest.raises(ParamError) as err:
        parse_section({"data": {"root": "imgs", "splits": bad}}, "data", DataParams)
    assert err.value.key == "data.splits"
    assert "must be auto, none or a list of split folders" in str(err.value)


# --------------------------------------------------------------------------- 7. upper bound
def test_folder_split_and_train_test(caplog):
    splits = np.array(["train", "test", "train", "val", "test", "train"], dtype=object)
    labels = np.array([0, 0, 1, 1, 2, 0])
    tr, te = ub.folder_split(splits, "train", "test")
    assert tr.tolist() == [0, 2, 5] and te.tolist() == [1, 4]
    tr, te = ub.folder_split(splits, "train", "test", rows=np.array([1, 2, 4]))
    assert tr.tolist() == [2] and te.tolist() == [1, 4]
    with pytest.raises(ValueError, match="split 'val' has no image"):
        ub.folder_split(splits, "train", "val", rows=np.array([0, 1]))

    with caplog.at_level("WARNING", logger="clusterlens.upper_bound"):
        tr, te = ub.train_test(labels, np.arange(6), splits=splits, folders=("train", "test"),
                               test_size=0.5, seed=0, names=["ant", "bee", "cat"])
    assert tr.tolist() == [0, 2, 5] and te.tolist() == [1, 4]
    assert "without a training image in split 'train': cat" in caplog.text  # only in test
    caplog.clear()
    with caplog.at_level("WARNING", logger="clusterlens.upper_bound"):
        tr, te = ub.train_test(labels, np.array([0, 1, 2, 5]), splits=splits,
                               folders=("train", "test"), test_size=0.5, seed=0)
    assert te.tolist() == [1] and "without a training image" not in caplog.text
    with pytest.raises(DataError, match=r"split 'test' has no image.*\(train -> test\)"):
        ub.train_test(labels, np.array([0, 2, 3]), splits=splits, folders=("train", "test"),
                      test_size=0.5, seed=0)
    # no folders: the stratified split, whatever the split column says
    lab = np.repeat([0, 1], 5)
    tr, te = ub.train_test(lab, np.arange(10), splits=np.full(10, "", dtype=object),
                           folders=None, test_size=0.4, seed=0)
    assert sorted(tr.tolist() + te.tolist()) == list(range(10)) and len(te) == 4


def test_split_info():
    folder = ub.split_info(10, 3, folders=("train", "test"), test_size=0.2, seed=1)
    assert folder == {"images": 10, "classes": 3, "train": 0, "test": 0, "source": "folder",
                      "train_split": "train", "test_split": "test", "test_size": None, "seed": 1}
    strat = ub.split_info(10, 3, folders=None, test_size=0.2, seed=1)
    assert (strat["source"], strat["train_split"], strat["test_split"], strat["test_size"]) == \
        ("stratified", None, None, 0.2)


# --------------------------------------------------------------------------- 8. audits
def _scored(is_issue, rank) -> Scored:
    n = len(is_issue)
    issues = LabelIssues(quality=np.linspace(0, 1, n), is_issue=np.asarray(is_issue, bool),
                         rank=np.asarray(rank, np.int64), joint=np.eye(2) / 2)
    oof = OutOfFold(probabilities=np.full((n, 2), 0.5), fold=np.zeros(n, np.int64), C=[1.0],
                    iterations=[1], converged=True)
    return Scored(probabilities=np.full((n, 2), 0.5), issues=issues, oof=oof,
                  rows=np.arange(n), excluded=[], folds=2)


def test_silence_kept_reranks_the_other_issues():
    scored = _scored([True, True, False, True, True, False], [3, 1, 0, 4, 2, 0])
    kept = np.array([False, True, True, False, False, False])  # one issue, one non-issue kept
    out = silence_kept(scored, kept)
    assert out.issues.is_issue.tolist() == [True, False, False, True, True, False]
    assert out.issues.rank.tolist() == [2, 0, 0, 3, 1, 0]  # 1..n in the old order
    assert out.silenced == 1
    np.testing.assert_array_equal(out.issues.quality, scored.issues.quality)  # scores stay
    assert scored.issues.rank.tolist() == [3, 1, 0, 4, 2, 0]  # the input is not changed
    again = silence_kept(out, np.array([True, False, False, False, False, False]))
    assert again.issues.rank.tolist() == [0, 0, 0, 2, 1, 0] and again.silenced == 2
    # nothing kept (or no kept issue): the same findings
    assert silence_kept(scored, np.zeros(6, bool)) is scored
    assert silence_kept(scored, np.array([0, 0, 1, 0, 0, 1], bool)).silenced == 0


def test_near_duplicates_without_kept():
    pairs = NearDuplicates(row_a=np.array([0, 0, 1, 2]), row_b=np.array([1, 2, 3, 3]),
                           kind=np.array(["exact", "resized", "cropped", "exact"]),
                           score=np.array([1.0, 0.9, 0.8, 1.0]),
                           similarity=np.array([1.0, 0.95, 0.9, 1.0]),
                           coverage=np.array([1.0, 1.0, 0.7, 1.0]))
    out = pairs.without_kept(np.array([True, True, False, True]))
    # (0, 1) and (1, 3) have both images kept; (0, 2) and (2, 3) only one
    assert list(zip(out.row_a.tolist(), out.row_b.tolist())) == [(0, 2), (2, 3)]
    assert out.kind.tolist() == ["resized", "exact"]
    assert out.score.tolist() == [0.9, 1.0] and out.similarity.tolist() == [0.95, 1.0]
    assert out.coverage.tolist() == [1.0, 1.0]
    assert len(pairs.without_kept(np.zeros(4, bool))) == 4
    assert len(pairs.without_kept(np.ones(4, bool))) == 0
