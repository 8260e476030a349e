"""Train/test leaks: the near-duplicate step run as the `neighbours` stage runs it, on a generated
train/test folder with planted copies of training images in the test split, then the leak
table, the per-image columns and the rates (clusterlens/audit/leaks.py)."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from clusterlens.audit import duplicates as dup
from clusterlens.audit import leaks
from tests.planting import photo, planted, thumbnail_neighbours

LEAK_KINDS = ("exact", "reencoded", "resized", "crop", "mirror")
EXPECTED_KIND = {"exact": "exact", "reencoded": "resized", "resized": "resized", "crop": "crop",
                 "mirror": "mirror"}
CLASSES = ("c0", "c1", "c2")
ORDER = ("train", "test")


def _save(root, rel: str, img: Image.Image) -> str:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    img.save(root / rel, quality=92)
    return rel


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """root/<split>/<class>/<image>: 48 training and 15 test photos, 30 planted leaks (6 per
    kind, 2 of each filed under another class), 3 copies within train and 2 within test, and 8
    test look-alikes of training photos (same layout, other details); then the near-duplicate
    step as the stage runs it and the leak functions."""
    root = tmp_path_factory.mktemp("splits")
    rng = np.random.default_rng(7)
    train = [_save(root, f"train/{CLASSES[i % 3]}/{i:03d}.jpg", photo(1000 + i, layout=i))
             for i in range(48)]
    test = [_save(root, f"test/{CLASSES[j % 3]}/{j:03d}.jpg", photo(2000 + j)) for j in range(15)]
    sources = rng.permutation(30)
    truth = []  # (original, copy, planted kind, same class)
    for j, i in enumerate(sources):
        kind = LEAK_KINDS[j // 6]
        orig_cls = train[i].split("/")[1]
        same = j % 3 != 0
        cls = orig_cls if same else CLASSES[(CLASSES.index(orig_cls) + 1 + j % 2) % 3]
        rel = f"test/{cls}/leak{j:02d}_{kind}.jpg"
        if kind == "exact":
            (root / rel).write_bytes((root / train[i]).read_bytes())
        else:
            _save(root, rel, planted(Image.open(root / train[i]).convert("RGB"), kind, rng))
        truth.append((train[i], rel, kind, same))
    within = []
    for k, (src, kind) in enumerate([(train[30], "resized"), (train[31], "crop"),
                                     (train[32], "mirror"), (test[0], "reencoded"),
                                     (test[1], "crop")]):
        split = src.split("/")[0]
        rel = _save(root, f"{split}/{CLASSES[k % 3]}/within{k}.jpg",
                    planted(Image.open(root / src).convert("RGB"), kind, rng))
        within.append((src, rel))
    look = [_save(root, f"test/{CLASSES[s % 3]}/look{s}.jpg", photo(7000 + s, layout=33 + s))
            for s in range(8)]

    paths = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.jpg"))  # index order
    splits = np.array([p.split("/")[0] for p in paths], dtype=object)
    classes = np.array([p.split("/")[1] for p in paths], dtype=object)
    sha = [hashlib.sha256((root / p).read_bytes()).hexdigest() for p in paths]
    images, hashes = dup.working_images(root, paths, workers=2)
    nn = thumbnail_neighbours([g for g, _ in images], 5)
    cands = dup.candidate_pairs(hashes, nn, sha, hash_k=dup.HASH_K, hash_distance=10)
    found = dup.verify(images, cands, workers=2)
    pairs = dup.pairs_table(found, paths, classes, dup.copy_groups(len(paths), found))
    return {"paths": paths, "splits": splits, "classes": classes, "pairs": pairs,
            "truth": truth, "within": within, "look": look,
            "leaks": leaks.leak_pairs(pairs, splits, order=ORDER),
            "image": leaks.leak_image_columns(len(paths), pairs, splits),
            "rates": leaks.leak_rates(pairs, splits, order=ORDER)}


def test_planted_copies_in_the_test_split_are_leaks_with_their_label_conflicts(folder):
    table = folder["leaks"]
    assert list(table.columns) == leaks.LEAK_COLUMNS
    assert (table["split_a"] == "train").all() and (table["split_b"] == "test").all()
    reported = {(r.path_a, r.path_b): r for r in table.itertuples()}
    hits = {kind: [] for kind in LEAK_KINDS}
    for orig, copy, kind, same in folder["truth"]:
        r = reported.get((orig, copy))
        hit = r is not None and r.kind in dup.COPY_KINDS
        hits[kind].append(hit)
        if hit:
            assert r.kind == EXPECTED_KIND[kind], (orig, copy, kind, r.kind)
            assert r.label_conflict == (not same) == (r.class_a != r.class_b)
        if not same:  # every copy filed under another class is reported as a conflict
            assert hit and r.label_conflict, (orig, copy, kind)
    recall = np.mean([h for v in hits.values() for h in v])
    assert recall >= 0.95, {k: np.mean(v) for k, v in hits.items()}
    # both sides of every found leak are flagged, nothing else
    rows = {p: i for i, p in enumerate(folder["paths"])}
    flagged = {rows[p] for r in table[table["kind"].isin(dup.COPY_KINDS)].itertuples()
               for p in (r.path_a, r.path_b)}
    image = folder["image"]
    assert list(image.columns) == leaks.LEAK_IMAGE_COLUMNS and len(image) == len(rows)
    assert set(np.flatnonzero(image["is_leak"])) == flagged
    assert (image.loc[image["is_leak"], "leak_score"] >= dup.COPY_AGREEMENT).all()
    assert (image.loc[~image["is_leak"], "leak_score"] == 0).all()


def test_copies_within_one_split_are_pairs_but_never_leaks(folder):
    pairs, table = folder["pairs"], folder["leaks"]
    copy_pairs = {frozenset(p) for p in pairs.loc[pairs["kind"].isin(dup.COPY_KINDS),
                                                  ["path_a", "path_b"]].to_numpy()}
    leak_paths = set(table["path_a"]) | set(table["path_b"])
    for src, copy in folder["within"]:
        assert frozenset((src, copy)) in copy_pairs, (src, copy)  # the step found it
        assert src not in leak_paths and copy not in leak_paths
    sa = folder["splits"][pairs["row_a"]]
    sb = folder["splits"][pairs["row_b"]]
    assert len(table) == int((sa != sb).sum())   # every cross-split pair, and only those


def test_look_alikes_across_splits_are_not_reported(folder):
    table = folder["leaks"]
    reported = set(table["path_a"]) | set(table["path_b"])
    assert not reported & set(folder["look"]), table[table["path_b"].isin(folder["look"])]


def test_rates_of_the_generated_folder(folder):
    rates, table = folder["rates"], folder["leaks"]
    assert list(rates) == ["by_split_pair", "overall"]
    (key, r), = rates["by_split_pair"].items()
    assert key == "train->test"
    n_test = int((folder["splits"] == "test").sum())
    copies = table[table["kind"].isin(dup.COPY_KINDS)]
    assert r["images"] == n_test == 15 + 30 + 2 + 8
    assert r["images_with_copy"] == copies["path_b"].nunique() >= 29
    assert r["copy_pairs"] == len(copies)
    assert r["label_conflicts"] == int(copies["label_conflict"].sum()) >= 10
    assert r["rate"] == round(r["images_with_copy"] / n_test, 6)
    assert rates["overall"] == {"images": n_test, "images_with_copy": r["images_with_copy"],
                                "rate": r["rate"]}


# --------------------------------------------------------------------------- hand-made pairs
SPLITS = ["train"] * 4 + ["val"] * 3 + ["test"] * 3       # rows 0-3, 4-6, 7-9
ORDER3 = ("train", "val", "test")


def _pairs(rows) -> pd.DataFrame:
    """A pair table in dup.PAIR_COLUMNS from (row_a, row_b, kind, class_a, class_b, score)."""
    df = pd.DataFrame(rows, columns=["row_a", "row_b", "kind", "class_a", "class_b", "score"])
    df["path_a"] = [f"{SPLITS[i]}/{c}/{i}.jpg" for i, c in zip(df["row_a"], df["class_a"])]
    df["path_b"] = [f"{SPLITS[i]}/{c}/{i}.jpg" for i, c in zip(df["row_b"], df["class_b"])]
    df["similarity"] = df["coverage"] = 1.0
    df["label_conflict"] = df["class_a"] != df["class_b"]
    df["group"] = -1
    return df[dup.PAIR_COLUMNS]


HAND = _pairs([
    (0, 7, "resized", "x", "x", 0.98),      # train->test
    (9, 2, "mirror", "y", "x", 0.97),       # test, train: turned round; another class
    (1, 7, "crop", "x", "x", 0.99),         # image 7 again
    (3, 8, "same_scene", "x", "x", 0.80),   # train->test, not a copy
    (4, 8, "exact", "z", "z", 1.0),         # val->test
    (0, 5, "resized", "x", "x", 0.96),      # train->val
    (1, 6, "same_scene", "x", "x", 0.85),   # train->val, not a copy
    (2, 3, "exact", "x", "x", 1.0),         # within train
    (7, 9, "resized", "x", "y", 0.99),      # within test
])


def test_leak_table_of_a_hand_made_case_is_oriented_and_sorted():
    table = leaks.leak_pairs(HAND, SPLITS, order=ORDER3)
    got = [(r.path_a, r.split_a, r.class_a, r.path_b, r.split_b, r.class_b, r.kind,
            r.label_conflict, r.score) for r in table.itertuples()]
    assert got == [
        ("train/x/0.jpg", "train", "x", "val/x/5.jpg", "val", "x", "resized", False, 0.96),
        ("train/x/1.jpg", "train", "x", "val/x/6.jpg", "val", "x", "same_scene", False, 0.85),
        ("train/x/0.jpg", "train", "x", "test/x/7.jpg", "test", "x", "resized", False, 0.98),
        ("train/x/1.jpg", "train", "x", "test/x/7.jpg", "test", "x", "crop", False, 0.99),
        ("train/x/2.jpg", "train", "x", "test/y/9.jpg", "test", "y", "mirror", True, 0.97),
        ("train/x/3.jpg", "train", "x", "test/x/8.jpg", "test", "x", "same_scene", False, 0.8),
        ("val/z/4.jpg", "val", "z", "test/z/8.jpg", "test", "z", "exact", False, 1.0)]
    # the input's row order does not matter
    shuffled = leaks.leak_pairs(HAND.iloc[::-1], SPLITS, order=ORDER3)
    pd.testing.assert_frame_equal(shuffled, table)


def test_rates_of_a_hand_made_case():
    rates = leaks.leak_rates(HAND, SPLITS, order=ORDER3)
    assert json.loads(json.dumps(rates)) == rates            # plain ints and floats
    assert rates == {
        "by_split_pair": {
            "train->val": {"earlier": "train", "later": "val", "images": 3,
                           "images_with_copy": 1, "rate": 0.333333, "copy_pairs": 1,
                           "label_conflicts": 0, "same_scene_pairs": 1},
            "train->test": {"earlier": "train", "later": "test", "images": 3,
                            "images_with_copy": 2, "rate": 0.666667, "copy_pairs": 3,
                            "label_conflicts": 1, "same_scene_pairs": 1},
            "val->test": {"earlier": "val", "later": "test", "images": 3,
                          "images_with_copy": 1, "rate": 0.333333, "copy_pairs": 1,
                          "label_conflicts": 0, "same_scene_pairs": 0}},
        "overall": {"images": 6, "images_with_copy": 4, "rate": 0.666667}}
    cols = leaks.leak_image_columns(10, HAND, SPLITS)
    assert cols["is_leak"].tolist() == [True, True, True, False, True, True, False, True, True,
                                        True]
    assert cols["leak_score"].tolist() == [0.98, 0.99, 0.97, 0.0, 1.0, 0.96, 0.0, 0.99, 1.0,
                                           0.97]


def test_a_split_without_images_has_no_rates():
    splits = [s if s != "val" else "train" for s in SPLITS]   # no val images
    rates = leaks.leak_rates(HAND, splits, order=ORDER3)
    assert list(rates["by_split_pair"]) == ["train->test"]
    assert rates["overall"]["images"] == 3


def test_a_folder_without_splits_has_no_leaks():
    splits = [""] * 10
    table = leaks.leak_pairs(HAND, splits, order=ORDER3)
    assert table.empty and list(table.columns) == leaks.LEAK_COLUMNS
    cols = leaks.leak_image_columns(10, HAND, splits)
    assert not cols["is_leak"].any() and (cols["leak_score"] == 0).all()
    assert leaks.leak_rates(HAND, splits, order=ORDER3) == {
        "by_split_pair": {}, "overall": {"images": 0, "images_with_copy": 0, "rate": 0.0}}
    assert leaks.leak_rates(HAND, splits, order=()) == leaks.leak_rates(HAND, splits, order=ORDER3)
    empty = HAND.iloc[:0]
    assert leaks.leak_pairs(empty, SPLITS, order=ORDER3).empty
    assert leaks.leak_rates(empty, SPLITS, order=ORDER3)["overall"] == {
        "images": 6, "images_with_copy": 0, "rate": 0.0}


def test_splits_outside_the_order_are_refused():
    with pytest.raises(ValueError, match="not in the split order"):
        leaks.leak_pairs(HAND, SPLITS, order=("train", "test"))
    with pytest.raises(ValueError, match="distinct"):
        leaks.leak_rates(HAND, SPLITS, order=("train", "val", "test", "train"))
