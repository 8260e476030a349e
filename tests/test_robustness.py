"""Bad inputs, hard errors, safety (README "When things go wrong").

1. A corpus of broken and odd files, generated here (nothing binary is committed), goes through
   ``build_index`` and the extract loading path: every file is either loaded correctly (mode
   converted, EXIF orientation applied, first frame) or listed in the rejected table with its
   documented reason, and the results for the good files equal a run on the good files alone.
2. Every hard error stops before heavy work with one line that names the param key or the path.
3. Safety: no pickle in clusterlens/ or stages/, ``torch.load`` only with ``weights_only=True``,
   paths in outputs relative to the data root, symlinks leaving the root not followed.
4. Determinism (slow): a second full ``dvc repro -f`` of the shared end-to-end repository gives
   byte-identical metrics files.

Interruption (killing ``dvc repro`` mid-stage, slow) is in tests/test_interrupt.py.
"""
from __future__ import annotations

import ast
import io
import json
import os
import re
import shutil
import struct
import tokenize
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from clusterlens.clustering import methods as cluster
from clusterlens.clustering import reduction as rd
from clusterlens.config.base import parse_stage
from clusterlens.core.cli import run_cli
from clusterlens.core.errors import DataError
from clusterlens.core.io import remove_stale_tmp, save_npy, write_table
from clusterlens.data import images
from clusterlens.data import index as ix
from clusterlens.features import extraction as ex
from clusterlens.features.backbones import LITE0, build_backbone
from stages import clustering as clustering_stage
from stages import extract as extract_stage
from stages import index as index_stage
from stages import reduce as reduce_stage
from tests.conftest import PROJECT, e2e_copy, make_image, make_tree, ran_all, run_point, sh
from tests.test_interrupt import TIMING, lock_outs

RNG = np.random.default_rng(6)
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
RED, BLUE = (230, 20, 20), (20, 20, 230)


# --------------------------------------------------------------------------- corpus helpers
def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG that declares ``width`` x ``height`` pixels (bilevel); its pixel data is a stub.

    A "small file, huge dimensions" decompression bomb: Pillow's guard looks at the header.
    """
    def chunk(tag: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + tag + data
                + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def two_tone(size=(40, 20), left=RED, right=BLUE, split=10) -> Image.Image:
    img = Image.new("RGB", size, right)
    img.paste(left, (0, 0, split, size[1]))
    return img


def encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def close(a, b, tol=12) -> bool:
    return all(abs(int(x) - int(y)) <= tol for x, y in zip(a, b))


def build_corpus(base: Path) -> tuple[Path, dict, dict]:
    """The issue's list of bad and odd inputs, plus ordinary images, under ``base/photos``.

    Returns (root, accepted, rejected): accepted maps path -> the index ``mode`` expected;
    rejected maps path -> the reason expected in the rejected table.
    """
    root = make_tree(base / "photos", {"apple": 3, "berry": 3}, fmt="png")
    for i in range(3):  # berry as JPEG
        (root / "berry" / f"{i:03d}.png").unlink()
        make_image(1, RNG).save(root / "berry" / f"{i:03d}.jpg", quality=92)
    apple, berry = root / "apple", root / "berry"
    accepted = {f"apple/{i:03d}.png": "RGB" for i in range(3)}
    accepted.update({f"berry/{i:03d}.jpg": "RGB" for i in range(3)})
    rejected = {}

    # modes that must be converted
    make_image(0, RNG).convert("CMYK").save(apple / "cmyk.jpg", quality=95)
    accepted["apple/cmyk.jpg"] = "CMYK"
    make_image(0, RNG).convert("L").save(apple / "gray.png")
    accepted["apple/gray.png"] = "L"
    two_tone().convert("P", palette=Image.ADAPTIVE, colors=4).save(apple / "palette.png")
    accepted["apple/palette.png"] = "P"
    rgba = Image.new("RGBA", (40, 20), (*RED, 255))
    rgba.paste((0, 0, 0, 0), (20, 0, 40, 20))  # right half fully transparent
    rgba.save(apple / "rgba.png")
    accepted["apple/rgba.png"] = "RGBA"
    g16 = np.zeros((20, 40), np.uint16)
    g16[:, :10], g16[:, 10:20] = 65535, 32896  # white, mid-grey; the rest black
    Image.fromarray(g16).save(apple / "gray16.png")
    accepted["apple/gray16.png"] = "I;16"
    Image.fromarray(np.full((20, 40), 200, np.uint16)).save(apple / "dark16.png")
    accepted["apple/dark16.png"] = "I;16"
    # EXIF orientation 6: displayed rotated 90 degrees clockwise (the left side ends on top)
    exif = Image.Exif()
    exif[0x0112] = 6
    two_tone().save(apple / "rotated.jpg", exif=exif.tobytes(), quality=95)
    accepted["apple/rotated.jpg"] = "RGB"
    frames = [Image.new("RGB", (24, 24), RED), Image.new("RGB", (24, 24), BLUE)]
    frames[0].save(apple / "animated.gif", save_all=True, append_images=frames[1:], duration=50)
    accepted["apple/animated.gif"] = "P"
    # names and folders
    make_image(0, RNG).save(apple / "crème brûlée.png")
    accepted["apple/crème brûlée.png"] = "RGB"
    make_image(1, RNG).save(berry / "日本 写真.jpg", quality=90)
    accepted["berry/日本 写真.jpg"] = "RGB"
    (apple / "2019" / "summer").mkdir(parents=True)
    make_image(0, RNG).save(apple / "2019" / "summer" / "beach.png")
    accepted["apple/2019/summer/beach.png"] = "RGB"
    (root / "single").mkdir()
    make_image(2, RNG).save(root / "single" / "only.png")
    accepted["single/only.png"] = "RGB"
    (root / "empty").mkdir()  # an empty class folder: no label, counted in empty_classes
    (root / "broken_only").mkdir()  # a class whose only file is unusable: also no label
    (root / "broken_only" / "bad.jpg").write_text("not a picture")
    rejected["broken_only/bad.jpg"] = "not_an_image"
    # exact duplicates across two classes: both kept, reported
    shutil.copy(apple / "000.png", berry / "copy of apple 000.png")
    accepted["berry/copy of apple 000.png"] = "RGB"

    # broken files
    (apple / "empty.jpg").write_bytes(b"")
    rejected["apple/empty.jpg"] = "empty_file"
    jpeg = encoded(make_image(0, RNG, size=(64, 64)), "JPEG", quality=90)
    (apple / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    rejected["apple/truncated.jpg"] = "corrupt"
    png = encoded(make_image(0, RNG, size=(64, 64)), "PNG")
    (apple / "truncated.png").write_bytes(png[: len(png) // 2])
    rejected["apple/truncated.png"] = "corrupt"
    (apple / "notes.jpg").write_text("these are my holiday notes, not a JPEG\n")
    rejected["apple/notes.jpg"] = "not_an_image"
    # Pillow's default limit is 89,478,485 pixels: it raises above twice that, and only warns
    # between 1x and 2x (the index rejects both). Each file is under 200 bytes.
    (apple / "bomb.png").write_bytes(png_header_only(20_000, 20_000))
    rejected["apple/bomb.png"] = "decompression_bomb"
    (apple / "bomb_warn.png").write_bytes(png_header_only(10_000, 10_000))
    rejected["apple/bomb_warn.png"] = "decompression_bomb"
    Image.new("RGB", (1, 1), RED).save(apple / "one_pixel.png")
    rejected["apple/one_pixel.png"] = "too_small"
    make_image(0, RNG).save(apple / "unreadable.png")
    os.chmod(apple / "unreadable.png", 0)
    if IS_ROOT:  # root reads anything: the file is simply a good image
        accepted["apple/unreadable.png"] = "RGB"
    else:
        rejected["apple/unreadable.png"] = "unreadable"
    (apple / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    rejected["apple/.DS_Store"] = "hidden"
    (root / "stray.jpg").write_bytes((berry / "000.jpg").read_bytes())
    rejected["stray.jpg"] = "not_in_class_folder"
    with open(os.path.join(os.fsencode(apple), b"caf\xe9.png"), "wb") as fh:  # Latin-1 name
        fh.write((apple / "000.png").read_bytes())
    rejected["apple/caf\\xe9.png"] = "bad_filename"
    os.mkfifo(apple / "pipe.png")
    rejected["apple/pipe.png"] = "not_a_file"

    # symlinks
    outside = base / "outside"
    outside.mkdir()
    make_image(3, RNG).save(outside / "secret.png")
    os.symlink(outside / "secret.png", apple / "escape.png")
    rejected["apple/escape.png"] = "symlink_outside_root"
    os.symlink(outside, root / "linked_class")
    rejected["linked_class"] = "symlinked_folder"
    os.symlink("loop2.png", apple / "loop1.png")
    os.symlink("loop1.png", apple / "loop2.png")
    rejected["apple/loop1.png"] = rejected["apple/loop2.png"] = "broken_symlink"
    os.symlink("gone.png", apple / "dangling.png")
    rejected["apple/dangling.png"] = "broken_symlink"
    os.symlink("../berry/001.jpg", apple / "inside link.jpg")  # stays inside: followed
    accepted["apple/inside link.jpg"] = "RGB"
    return root, accepted, rejected


def good_only_copy(root: Path, paths, dest: Path) -> Path:
    """A clean tree holding only the given files (symlinks resolved to their bytes)."""
    for rel in paths:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((root / rel).read_bytes())
    return dest


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    base = tmp_path_factory.mktemp("corpus")
    root, accepted, rejected = build_corpus(base)
    index, rej, info = ix.build_index(root, min_side=8, drop_duplicates=False, workers=2)
    yield {"base": base, "root": root, "accepted": accepted, "rejected": rejected,
           "index": index, "rej": rej, "info": info}
    os.chmod(root / "apple" / "unreadable.png", 0o644)


@pytest.fixture(scope="module")
def lite0_32():
    return build_backbone(LITE0, "DEFAULT", 32)


# --------------------------------------------------------------------------- 1. the corpus
def test_every_file_is_indexed_or_rejected_with_its_reason(corpus):
    index, rej = corpus["index"], corpus["rej"]
    assert dict(zip(rej["path"], rej["reason"])) == corpus["rejected"]
    assert dict(zip(index["path"], index["mode"])) == corpus["accepted"]
    assert (rej["detail"].str.len() > 0).all()  # every rejection says why
    detail = dict(zip(rej["path"], rej["detail"]))
    assert detail["apple/loop1.png"] == "symlink loop"
    assert detail["apple/dangling.png"].startswith("dangling symlink")
    if not IS_ROOT:
        assert "permission denied" in rej.set_index("path").loc["apple/unreadable.png", "detail"]


def test_classes_labels_and_duplicates(corpus):
    index, info = corpus["index"], corpus["info"]
    assert sorted(index["class"].unique()) == ["apple", "berry", "single"]
    assert dict(index.groupby("class")["label"].first()) == {"apple": 0, "berry": 1, "single": 2}
    assert (index["class"] == "single").sum() == 1  # a one-image class is a class like any other
    assert info["empty_classes"] == ["broken_only", "empty"]
    row = index.set_index("path").loc["berry/copy of apple 000.png"]
    assert row["duplicate_of"] == "apple/000.png"
    m = ix.index_metrics(index, corpus["rej"], info)
    assert m["cross_class_duplicate_groups"] >= 1 and m["empty_classes"] == 2
    assert m["animated_images"] == 1 and m["cmyk_images"] == 1
    assert m["alpha_images"] == 1 and m["palette_images"] == 2  # palette.png + animated.gif


def test_odd_images_load_correctly(corpus):
    """The extract loading path: every mode becomes RGB, EXIF applied, first frame used."""
    root, index = corpus["root"], corpus["index"].set_index("path")
    for rel in index.index:
        img = images.load_rgb(root / rel)
        assert img.mode == "RGB", rel
        assert img.size == (index.loc[rel, "width"], index.loc[rel, "height"]), rel
    def load(rel):
        return images.load_rgb(root / rel)

    cmyk = np.asarray(load("apple/cmyk.jpg"), dtype=float)
    assert cmyk[..., 0].mean() > cmyk[..., 2].mean() + 60  # still red, not inverted colours
    gray = np.asarray(load("apple/gray.png"))
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    pal = load("apple/palette.png")
    assert close(pal.getpixel((2, 2)), RED, 0) and close(pal.getpixel((30, 2)), BLUE, 0)
    rgba = load("apple/rgba.png")
    assert rgba.getpixel((5, 5)) == RED and rgba.getpixel((30, 5)) == (255, 255, 255)
    g16 = load("apple/gray16.png")
    assert g16.getpixel((2, 2)) == (255,) * 3 and g16.getpixel((15, 2)) == (128,) * 3
    assert g16.getpixel((30, 2)) == (0,) * 3
    assert load("apple/dark16.png").getpixel((0, 0)) == (1,) * 3  # 200/65535: nearly black
    rot = load("apple/rotated.jpg")
    assert rot.size == (20, 40)
    assert close(rot.getpixel((10, 3)), RED, 30) and close(rot.getpixel((10, 36)), BLUE, 30)
    assert index.loc["apple/rotated.jpg", "width"] == 20  # index reports the rotated size
    gif = load("apple/animated.gif")
    assert close(gif.getpixel((5, 5)), RED, 10) and index.loc["apple/animated.gif", "n_frames"] == 2
    assert load("apple/crème brûlée.png").size == (40, 32)


def test_good_files_give_the_same_results_as_a_clean_tree_of_only_them(corpus, lite0_32,
                                                                      tmp_path):
    """Index rows, features, PCA and clustering of the good files are unaffected by the rest."""
    index = corpus["index"]
    clean_root = good_only_copy(corpus["root"], index["path"], tmp_path / "clean")
    clean, clean_rej, clean_info = ix.build_index(clean_root, min_side=8, workers=1)
    assert clean_rej.empty and clean_info["empty_classes"] == []
    pd.testing.assert_frame_equal(index, clean)
    m_messy = ix.index_metrics(index, corpus["rej"], corpus["info"])
    m_clean = ix.index_metrics(clean, clean_rej, clean_info)
    for key in ("rejected", "rejected_by_reason", "empty_classes"):
        m_messy.pop(key), m_clean.pop(key)
    assert m_messy == m_clean

    def features(root):
        f, _ = ex.extract_features(lite0_32, root, index["path"].tolist(), 32, "squash",
                                   batch_size=4, device="cpu", progress=False)
        return f

    f_messy, f_clean = features(corpus["root"]), features(clean_root)
    assert f_messy.shape == (len(index), 1280) and np.isfinite(f_messy).all()
    np.testing.assert_array_equal(f_messy, f_clean)
    p_messy, p_clean = rd.fit_pca(f_messy, 4), rd.fit_pca(f_clean, 4)
    np.testing.assert_array_equal(p_messy.scores, p_clean.scores)
    y = index["label"].to_numpy()
    a = cluster.evaluate_labels(p_messy.scores, y, cluster.run_kmeans(p_messy.scores, 3, 4, 100,
                                                                     0)[0], 100, 0)
    b = cluster.evaluate_labels(p_clean.scores, y, cluster.run_kmeans(p_clean.scores, 3, 4, 100,
                                                                     0)[0], 100, 0)
    assert a == b


def test_index_stage_outputs_hold_paths_relative_to_the_root(corpus, in_tmp_cwd):
    params = {"seed": 0, "data": {"root": str(corpus["root"])},
              "index": {"min_side": 8, "drop_duplicates": False, "workers": 2,
                        "sample_per_class": 3, "sample_classes": 5}}
    index_stage.run(parse_stage(params, index_stage.Params))
    index = pd.read_parquet("data/index.parquet")
    rejected = pd.read_csv("data/rejected.csv", keep_default_na=False)
    assert set(index["path"]) == set(corpus["accepted"])
    assert dict(zip(rejected["path"], rejected["reason"])) == corpus["rejected"]
    base = str(corpus["base"])
    for rel in list(index["path"]) + list(rejected["path"]):
        assert not os.path.isabs(rel) and ".." not in Path(rel).parts, rel
        assert base not in rel and "\\" not in rel.replace("\\xe9", ""), rel
    for rel in index["path"]:  # every indexed path is a file inside the root
        assert (corpus["root"] / rel).resolve().is_relative_to(corpus["root"].resolve())
    metrics = json.loads(Path("metrics/index.json").read_text())
    assert base not in json.dumps(metrics)


def test_symlinks_leaving_the_root_are_not_followed(corpus):
    secret = (corpus["base"] / "outside" / "secret.png").read_bytes()
    import hashlib

    assert hashlib.sha256(secret).hexdigest() not in set(corpus["index"]["sha256"])
    assert not any(p.startswith("linked_class") for p in corpus["index"]["path"])


def test_unreadable_file_is_rejected_even_as_root(tmp_path, monkeypatch):
    """The permission code path, simulated (root can read a chmod 000 file)."""
    root = make_tree(tmp_path / "r", {"a": 2, "b": 2})
    real = Path.read_bytes

    def deny(self):
        if self.name == "001.png" and self.parent.name == "a":
            raise PermissionError(13, "Permission denied")
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", deny)
    index, rejected, _ = ix.build_index(root)
    row = rejected.set_index("path").loc["a/001.png"]
    assert row["reason"] == "unreadable" and "permission denied" in row["detail"]
    assert "a/001.png" not in set(index["path"])


def test_unreadable_folder_is_listed_not_skipped(tmp_path, monkeypatch):
    """A class sub-folder that cannot be listed (simulated: root can list anything)."""
    root = make_tree(tmp_path / "r", {"a": 2, "b": 2})
    (root / "a" / "locked").mkdir()
    make_image(0, RNG).save(root / "a" / "locked" / "x.png")
    real = os.scandir

    def deny(path="."):
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", deny)
    index, rejected, _ = ix.build_index(root)
    row = rejected.set_index("path").loc["a/locked"]
    assert row["reason"] == "unreadable" and "cannot list the folder" in row["detail"]
    assert len(index) == 4


def test_bomb_limit_follows_pillow_setting(tmp_path, monkeypatch):
    """Lowering PIL.Image.MAX_IMAGE_PIXELS makes ordinary images bombs; None disables it."""
    root = make_tree(tmp_path / "r", {"a": 2, "b": 2})
    make_image(0, RNG, size=(100, 100)).save(root / "a" / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)  # 100x100 is 2x: Pillow only warns
    _, rejected, _ = ix.build_index(root)
    row = rejected.set_index("path").loc["a/big.png"]
    assert row["reason"] == "decompression_bomb" and "MAX_IMAGE_PIXELS" in row["detail"]
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    index, _, _ = ix.build_index(root)
    assert "a/big.png" in set(index["path"])


def test_unconvertible_mode_is_rejected_not_crashed_later(tmp_path, monkeypatch):
    """A file that decodes but cannot become RGB is rejected by index, never fails extract."""
    root = make_tree(tmp_path / "r", {"a": 2, "b": 2})
    real = images.to_rgb

    def picky(img):  # as Pillow does for a few rare modes (e.g. "La")
        if img.mode == "L":
            raise ValueError("conversion from L to RGB not supported")
        return real(img)

    monkeypatch.setattr(images, "to_rgb", picky)
    make_image(0, RNG).convert("L").save(root / "a" / "weird.png")
    index, rejected, _ = ix.build_index(root)
    row = rejected.set_index("path").loc["a/weird.png"]
    assert row["reason"] == "unsupported_mode" and "mode L" in row["detail"]
    assert len(index) == 4


def test_folder_changed_after_indexing_is_a_clear_error(tmp_path, lite0_32):
    root = make_tree(tmp_path / "r", {"a": 2, "b": 2})
    index, _, _ = ix.build_index(root)
    (root / "a" / "001.png").write_text("overwritten")
    with pytest.raises(DataError, match=r"a/001.png: cannot be read any more.*dvc repro"):
        ex.extract_features(lite0_32, root, index["path"].tolist(), 32, device="cpu",
                            progress=False)


def test_leftovers_of_a_killed_write_are_removed_by_the_next_run(tmp_path, in_tmp_cwd):
    """After SIGKILL mid-write, `.<name>.<random>.tmp` may stay beside an output; it is never an
    output itself, and the stage's next run removes it (and nothing else)."""
    data = in_tmp_cwd / "data"
    data.mkdir()
    (data / ".features.npy.k2j3h4.npy.tmp").write_bytes(b"half")
    (data / ".digits.x81a.tmp").mkdir()
    (data / ".digits.x81a.tmp" / "0").mkdir()
    keep = [data / "features.npy", data / ".features.npy.notes", data / ".other.npy.ab.npy.tmp"]
    for k in keep:
        k.write_bytes(b"keep")
    removed = remove_stale_tmp("data/features.npy", "data/digits", "data/absent/x.npy")
    assert sorted(p.name for p in removed) == [".digits.x81a.tmp", ".features.npy.k2j3h4.npy.tmp"]
    assert sorted(p.name for p in data.iterdir()) == sorted(k.name for k in keep)
    root = make_tree(tmp_path / "r", {"a": 2, "b": 2})  # a stage run does it for its outputs
    (data / ".index.parquet.zz9.parquet.tmp").write_bytes(b"half")
    index_stage.run(parse_stage(_index_params(root), index_stage.Params))
    assert not (data / ".index.parquet.zz9.parquet.tmp").exists()
    assert (data / "index.parquet").is_file()


# --------------------------------------------------------------------------- 2. hard errors
def one_line_error(fn, capsys) -> str:
    """Run ``fn`` as a stage CLI would: exit code 2 and one `error:` line, the last on stderr
    (before it, only the stage's own log and progress lines; no traceback)."""
    capsys.readouterr()
    assert run_cli(lambda argv: fn()) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], lines
    assert not any(ln.startswith("Traceback") for ln in lines), lines
    return errors[0]


def nothing_written(cwd: Path) -> bool:
    return not [p for p in cwd.rglob("*") if p.is_file()]


def _index_params(root, **over):
    p = {"seed": 0, "data": {"root": str(root)},
         "index": {"min_side": 8, "drop_duplicates": False, "workers": 2,
                   "sample_per_class": 3, "sample_classes": 5}}
    p["index"].update(over)
    return p


def _no_decoding(monkeypatch):
    def fail(*a, **k):
        raise AssertionError("images were decoded before the error")

    monkeypatch.setattr(ix, "inspect_image", fail)
    monkeypatch.setattr(ix, "_inspect_bytes", fail)   # what the index's workers call per file


def test_root_missing_or_not_a_folder(tmp_path, in_tmp_cwd, capsys):
    missing = tmp_path / "nope"
    err = one_line_error(lambda: index_stage.run(parse_stage(_index_params(missing), index_stage.Params)), capsys)
    assert "data.root" in err and str(missing) in err and "does not exist" in err
    (tmp_path / "file.jpg").write_text("x")
    err = one_line_error(lambda: index_stage.run(parse_stage(_index_params(tmp_path / "file.jpg"),
                                                             index_stage.Params)), capsys)
    assert "data.root" in err and "file.jpg" in err and "not a folder" in err
    with pytest.raises(DataError, match=r"data.root.*does not exist.*set `data.root`"):
        ix.check_root(missing)
    locked = make_tree(tmp_path / "locked", {"a": 1, "b": 1})
    real = os.scandir

    def deny(path="."):  # root lists anything: simulate a chmod 000 folder
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied")
        return real(path)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "scandir", deny)
        err = one_line_error(lambda: index_stage.run(parse_stage(_index_params(locked), index_stage.Params)), capsys)
    assert "data.root: cannot list" in err and str(locked) in err and "read access" in err
    assert nothing_written(in_tmp_cwd)


def test_fewer_than_two_classes_before_decoding(tmp_path, in_tmp_cwd, capsys, monkeypatch):
    one = make_tree(tmp_path / "one", {"only": 3})
    _no_decoding(monkeypatch)
    err = one_line_error(lambda: index_stage.run(parse_stage(_index_params(one), index_stage.Params)), capsys)
    assert "data.root" in err and "1 class folder ('only')" in err and "at least 2" in err
    flat = tmp_path / "flat"
    flat.mkdir()
    make_image(0, RNG).save(flat / "x.png")
    err = one_line_error(lambda: index_stage.run(parse_stage(_index_params(flat), index_stage.Params)), capsys)
    assert "0 class folders" in err and "root/<class>/<image>" in err
    assert nothing_written(in_tmp_cwd)


def test_usable_images_in_only_one_class(tmp_path, in_tmp_cwd, capsys):
    root = make_tree(tmp_path / "r", {"a": 3})
    (root / "b").mkdir()
    (root / "b" / "x.jpg").write_text("no")
    err = one_line_error(lambda: index_stage.run(parse_stage(_index_params(root), index_stage.Params)), capsys)
    assert "usable images in only 1 class ('a')" in err
    assert "without a usable image: b; 1 entry rejected: not_an_image 1" in err
    assert nothing_written(in_tmp_cwd)


def test_no_valid_images(tmp_path, in_tmp_cwd, capsys, monkeypatch):
    root = tmp_path / "r"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        (root / cls / "x.jpg").write_text("no")
        (root / cls / "y.png").write_bytes(b"")
    err = one_line_error(lambda: index_stage.run(parse_stage(_index_params(root), index_stage.Params)), capsys)
    assert "data.root: no usable image under" in err and str(root) in err
    assert "(4 entries rejected: empty_file 2, not_an_image 2)" in err
    empty = tmp_path / "empty"
    (empty / "a").mkdir(parents=True)
    (empty / "b").mkdir()
    _no_decoding(monkeypatch)
    err = one_line_error(lambda: index_stage.run(parse_stage(_index_params(empty), index_stage.Params)), capsys)
    assert "no image file under" in err and str(empty) in err
    assert nothing_written(in_tmp_cwd)


@pytest.fixture
def small_pca(in_tmp_cwd):
    """12 points in 3 groups, as the clustering stages read them."""
    rng = np.random.default_rng(0)
    X = np.concatenate([c + rng.normal(0, 0.3, (4, 3)) for c in (0, 5, 10)]).astype(np.float32)
    save_npy("data/pca.npy", X)
    write_table("data/index.parquet", pd.DataFrame({
        "path": [f"c{i // 4}/{i}.png" for i in range(12)],
        "class": [f"c{i // 4}" for i in range(12)], "label": [i // 4 for i in range(12)]}))
    params = {"seed": 0, "metrics": {"silhouette_sample": 100},
              "kmeans": {"k": [3], "n_init": 2, "max_iter": 50},
              "agglomerative": {"linkage": ["ward"], "k": [3]},
              "gmm": {"k": [3], "covariance_type": "diag", "max_iter": 50},
              "dbscan": {"eps_percentile": [50], "min_samples": 3},
              "hdbscan": {"min_cluster_size": [3], "min_samples": None},
              "nmf": {"k": [3], "n_components": 3, "max_iter": 100, "negative": "shift"},
              "select": {"metric": "nmi", "max_noise": 0.3}}
    return in_tmp_cwd, params


def _outputs(cwd: Path) -> set[str]:
    return {p.relative_to(cwd).as_posix() for p in cwd.rglob("*") if p.is_file()}


@pytest.mark.parametrize("method,value,key", [
    ("kmeans", 13, "kmeans.k"), ("gmm", 50, "gmm.k"), ("agglomerative", "ward", "agglomerative.k"),
    ("dbscan", 50, "dbscan.min_samples"), ("hdbscan", 20, "hdbscan.min_cluster_size"),
    ("nmf", 13, "nmf.k")])
def test_k_larger_than_the_number_of_images(small_pca, capsys, monkeypatch, method, value, key):
    cwd, params = small_pca
    params["agglomerative"]["k"] = [3, 40]
    params["dbscan"]["min_samples"] = 30
    for fn in ("run_kmeans", "run_gmm", "run_dbscan", "run_hdbscan", "linkage_tree"):
        monkeypatch.setattr(cluster, fn, lambda *a, **k: pytest.fail("fitted before the check"))
    before = _outputs(cwd)
    err = one_line_error(lambda: run_point(method, value, params), capsys)
    assert f"`{key}`" in err and "larger than the number of images (12)" in err
    assert "params.yaml" in err and _outputs(cwd) == before


def test_unknown_linkage(small_pca, capsys):
    cwd, params = small_pca
    before = _outputs(cwd)
    err = one_line_error(lambda: run_point("agglomerative", "centroid", params), capsys)
    assert "`agglomerative.linkage`" in err and "ward, complete, average, single" in err
    assert "'centroid'" in err and _outputs(cwd) == before


def test_no_metric_param_so_ward_is_always_euclidean():
    """There is no distance-metric parameter: every linkage (ward included) runs on Euclidean
    distances, so "ward with a non-Euclidean metric" cannot be asked for. If a metric key is
    ever added, this test fails as a reminder to reject ward with anything but euclidean."""
    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    for section in ("agglomerative", "kmeans", "gmm", "dbscan", "hdbscan"):
        assert "metric" not in (params.get(section) or {}), section
        assert "affinity" not in (params.get(section) or {}), section
    from scipy.cluster.hierarchy import linkage

    X = np.random.default_rng(0).normal(size=(30, 4))
    np.testing.assert_allclose(cluster.linkage_tree(X, "ward"), linkage(X, "ward"), rtol=1e-9)


def test_empty_grid(small_pca, capsys):
    _, params = small_pca
    params["agglomerative"]["k"] = []
    err = one_line_error(lambda: run_point("agglomerative", "ward", params), capsys)
    assert "`agglomerative.k`" in err and "non-empty list" in err
    for key in ("kmeans", "gmm"):
        params[key]["k"] = []
    params["agglomerative"]["linkage"] = []
    params["dbscan"]["eps_percentile"] = []
    params["hdbscan"]["min_cluster_size"] = []
    params["nmf"]["k"] = []
    err = one_line_error(lambda: clustering_stage.run(parse_stage(params, clustering_stage.Params)), capsys)
    assert "`kmeans.k`" in err and "every clustering grid is empty" in err
    assert not Path("metrics/clustering.json").exists()


def test_pca_components_larger_than_min_n_d(in_tmp_cwd, capsys):
    save_npy("data/features.npy", np.random.default_rng(0).normal(size=(12, 7)).astype(np.float32))
    write_table("data/index.parquet", pd.DataFrame({"path": [f"{i}.png" for i in range(12)],
                                                    "class": ["a"] * 6 + ["b"] * 6}))
    before = _outputs(in_tmp_cwd)
    params = {"seed": 0, "reduce": {"standardize": True, "n_components": 8}}
    err = one_line_error(lambda: reduce_stage.run(parse_stage(params, reduce_stage.Params)), capsys)
    assert "`reduce.n_components` = 8" in err and "min(12, 7) = 7" in err
    assert _outputs(in_tmp_cwd) == before


def _extract_params(root, **over):
    p = {"seed": 0, "data": {"root": str(root)},
         "extract": {"backbone": LITE0, "weights": "DEFAULT", "image_size": 32,
                     "resize": "squash", "batch_size": 4, "device": "cpu", "workers": 0,
                     "precision": "fp32", "jit": "auto", "store": "none"}}
    p["extract"].update(over)
    return p


@pytest.fixture
def indexed(image_tree, in_tmp_cwd, monkeypatch):
    index, _, _ = ix.build_index(image_tree)
    write_table("data/index.parquet", index)
    monkeypatch.setattr(ex, "extract_features",
                        lambda *a, **k: pytest.fail("features extracted before the check"))
    return image_tree, in_tmp_cwd


def test_unknown_backbone(indexed, capsys):
    root, cwd = indexed
    err = one_line_error(
        lambda: extract_stage.run(parse_stage(_extract_params(root, backbone="resnet_18"),
                                              extract_stage.Params)), capsys)
    assert "`extract.backbone`" in err and "'resnet_18'" in err and "resnet18" in err
    assert _outputs(cwd) == {"data/index.parquet"}


def test_cuda_requested_but_absent(indexed, capsys, monkeypatch):
    root, cwd = indexed
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    err = one_line_error(lambda: extract_stage.run(parse_stage(_extract_params(root, device="cuda"),
                                                               extract_stage.Params)), capsys)
    assert "`extract.device`" in err and "CUDA is not available" in err and "`cpu`" in err
    assert _outputs(cwd) == {"data/index.parquet"}


def test_weights_file_that_does_not_fit(indexed, capsys, tmp_path):
    root, cwd = indexed
    wrong_keys = tmp_path / "other_model.pt"
    torch.save({"encoder.weight": torch.zeros(2, 2)}, wrong_keys)
    err = one_line_error(
        lambda: extract_stage.run(parse_stage(_extract_params(root, weights=str(wrong_keys)),
                                              extract_stage.Params)), capsys)
    assert "`extract.weights`" in err and str(wrong_keys) in err
    assert "does not fit backbone 'efficientnet_lite0'" in err and "missing keys" in err
    from torchvision.models import mobilenet_v3_small

    sd = mobilenet_v3_small().state_dict()
    sd["features.0.0.weight"] = torch.zeros(16, 3, 5, 5)  # right names, wrong shape
    wrong_shape = tmp_path / "wrong_shape.pt"
    torch.save(sd, wrong_shape)
    err = one_line_error(lambda: extract_stage.run(parse_stage(_extract_params(
        root, backbone="mobilenet_v3_small", weights=str(wrong_shape)), extract_stage.Params)), capsys)
    assert "`extract.weights`" in err and "size mismatch" in err and "features.0.0.weight" in err
    assert _outputs(cwd) == {"data/index.parquet"}


def test_extract_data_root_missing(indexed, capsys, tmp_path):
    _, cwd = indexed
    err = one_line_error(lambda: extract_stage.run(parse_stage(_extract_params(tmp_path / "moved"),
                                                               extract_stage.Params)), capsys)
    assert "data.root" in err and "moved" in err
    assert _outputs(cwd) == {"data/index.parquet"}


# --------------------------------------------------------------------------- 3. safety
SCANNED = [PROJECT / "clusterlens", PROJECT / "stages"]
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve",
                  "marshal"}


def code_tokens(path: Path) -> str:
    """The file's code without comments and strings (docstrings mention pickle on purpose)."""
    with open(path, "rb") as fh:
        toks = [t.string for t in tokenize.tokenize(fh.readline)
                if t.type not in (tokenize.COMMENT, tokenize.STRING, tokenize.ENCODING)]
    return " ".join(toks)


def unsafe_uses(path: Path) -> list[str]:
    found = []
    code = code_tokens(path)
    for pattern in (r"\bpickle\b", r"\bjoblib\b", r"\bdill\b", r"\bshelve\b",
                    r"\b(read|to)_pickle\b", r"allow_pickle\s*=\s*True"):
        if re.search(pattern, code):
            found.append(pattern)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + ([node.module] if isinstance(
                node, ast.ImportFrom) and node.module else [])
            found += [f"import {n}" for n in names if n.split(".")[0] in UNSAFE_MODULES]
        if isinstance(node, ast.Call):
            func = ast.unparse(node.func)
            kw = {k.arg: k.value for k in node.keywords}
            if func == "torch.load" or func.endswith(".load") and func.startswith("torch"):
                wo = kw.get("weights_only")
                if not (isinstance(wo, ast.Constant) and wo.value is True):
                    found.append(f"line {node.lineno}: {ast.unparse(node)}")
            if func in ("np.load", "numpy.load"):
                ap = kw.get("allow_pickle")
                if ap is not None and not (isinstance(ap, ast.Constant) and ap.value is False):
                    found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_no_pickle_and_torch_load_only_with_weights_only():
    files = sorted(f for d in SCANNED for f in d.rglob("*.py"))
    assert len(files) >= 30
    problems = {f.relative_to(PROJECT).as_posix(): u for f in files if (u := unsafe_uses(f))}
    assert problems == {}, f"unsafe serialisation in clusterlens/ or stages/: {problems}"
    uses = sum("torch.load(" in f.read_text() for f in files)
    assert uses >= 1  # the scan did look at the torch.load calls (backbones, cnn)


def test_the_scanner_catches_what_it_should(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import joblib\nimport torch\nfrom pickle import loads\n"
                   "x = torch.load(p)\ny = torch.load(p, weights_only=False)\n"
                   "z = np.load(p, allow_pickle=True)\n")
    found = unsafe_uses(bad)
    assert "import joblib" in found and "import pickle" in found
    assert sum("torch.load" in f for f in found) == 2 and any("np.load" in f for f in found)
    good = tmp_path / "good.py"
    good.write_text('"""never unpickled"""\nimport torch\n# no pickle here\n'
                    "x = torch.load(p, map_location='cpu', weights_only=True)\n"
                    "y = np.load(p, allow_pickle=False)\n")
    assert unsafe_uses(good) == []


def test_saved_arrays_are_never_pickled(tmp_path):
    save_npy(tmp_path / "a.npy", np.arange(3))
    with pytest.raises(ValueError):
        save_npy(tmp_path / "b.npy", np.array([object()], dtype=object))
    assert not (tmp_path / "b.npy").exists()


# --------------------------------------------------------------------------- 4. determinism
DATE = re.compile(r"\b(19|20)\d\d-[01]\d-[0-3]\d\b|\b[0-2]\d:[0-5]\d:[0-5]\d\b")


@pytest.mark.slow
def test_two_full_runs_give_byte_identical_metrics(e2e_base, tmp_path):
    """A second `dvc repro -f` of the whole pipeline, same params, on CPU, in a copy of the
    shared end-to-end repository without its feature store (so `extract` computes again): every
    file under metrics/ is byte-identical to the first run's, and holds no timing, absolute
    path or date. Timing goes to logs/extract_timing.json, which is not a metric."""
    def snapshot(repo):
        return {p.relative_to(repo).as_posix(): p.read_bytes()
                for p in sorted((repo / "metrics").rglob("*")) if p.is_file()}

    first_repo = e2e_base.repo
    first, first_lock = snapshot(first_repo), lock_outs(first_repo)
    timing = json.loads((first_repo / TIMING).read_text())
    assert {"seconds", "images_per_s", "images", "device", "extracted"} <= set(timing)
    repo = e2e_copy(e2e_base, tmp_path / "copy", feature_store=False).repo
    second_out = sh(repo, "dvc", "repro", "-f")
    assert sorted(ran_all(e2e_base.first_repro)) == sorted(ran_all(second_out))
    assert "extract" in ran_all(second_out)
    assert json.loads((repo / TIMING).read_text())["extracted"] == timing["extracted"]
    second = snapshot(repo)
    assert {"metrics/index.json", "metrics/extract.json", "metrics/reduce.json",
            "metrics/clustering.json", "metrics/clustering_table.csv"} <= set(first)
    assert first.keys() == second.keys()
    assert [rel for rel in first if first[rel] != second[rel]] == []
    for rel, data in first.items():
        text = data.decode("utf-8")
        for folder in (str(e2e_base.folder), str(tmp_path)):
            assert folder not in text, rel
        assert "seconds" not in text and "images_per_s" not in text, rel
        assert not DATE.search(text), rel
    # beyond metrics: every output DVC records has the same hash in both runs
    assert lock_outs(repo) == first_lock
