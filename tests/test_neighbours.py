"""Nearest neighbours: exact chunked search, groups, outlier scores, and the stage."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clusterlens.audit import neighbours as nb
from clusterlens.config.base import parse_stage
from clusterlens.core.errors import DataError, ParamError
from clusterlens.core.io import read_json, read_table, save_npy, write_table

ENGINES = ["faiss", "sklearn"]


def brute_force(Z: np.ndarray, k: int):
    """The reference: the full similarity matrix, self excluded, sorted."""
    S = (Z.astype(np.float64) @ Z.T.astype(np.float64))
    np.fill_diagonal(S, -np.inf)
    idx = np.argsort(-S, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(S, idx, axis=1), idx


def generated(seed=0, classes=5, per_class=300, dim=64, copies=40, cross=10, outliers=20):
    """Gaussian classes plus injected near-copies (some given another class) and outliers.

    Returns features, labels, the set of injected (original, copy) pairs, the copies whose
    label differs from the original's, and the outlier rows.
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim))
    y = np.repeat(np.arange(classes), per_class)
    X = centres[y] + rng.normal(size=(len(y), dim))
    src = rng.choice(len(y), copies, replace=False)
    noise = rng.uniform(0.05, 0.3, size=(copies, 1)) * np.linalg.norm(X[src], axis=1,
                                                                      keepdims=True)
    X_copy = X[src] + noise * rng.normal(size=(copies, dim)) / np.sqrt(dim)
    y_copy = y[src].copy()
    y_copy[:cross] = (y_copy[:cross] + 1) % classes       # copies filed under another class
    X_out = rng.normal(size=(outliers, dim)) * np.linalg.norm(X, axis=1).mean() / np.sqrt(dim)
    n = len(y)
    X = np.vstack([X, X_copy, X_out]).astype(np.float32)
    y = np.concatenate([y, y_copy, rng.integers(0, classes, outliers)])
    pairs = {(int(s), n + i) for i, s in enumerate(src)}
    conflicts = {(int(s), n + i) for i, s in enumerate(src[:cross])}
    out_rows = set(range(n + copies, n + copies + outliers))
    return X, y, pairs, conflicts, out_rows


# --------------------------------------------------------------------------- search
@pytest.mark.parametrize("engine", ENGINES)
def test_chunked_search_equals_brute_force(engine):
    rng = np.random.default_rng(1)
    Z = nb.normalise(rng.normal(size=(700, 32)))
    # ~4 query rows per block: 175 blocks
    assert nb.block_rows(700, 0.05) == 4
    nn = nb.nearest_neighbours(Z, 7, engine=engine, block_mb=0.05)
    ref_s, ref_i = brute_force(Z, 7)
    assert nn.indices.shape == (700, 7) and nn.indices.dtype == np.int64
    assert nn.similarities.dtype == np.float32
    np.testing.assert_allclose(nn.similarities, ref_s, atol=1e-5)
    np.testing.assert_array_equal(nn.indices, ref_i)        # continuous data: no ties
    assert not (nn.indices == np.arange(700)[:, None]).any()
    # one block or many: the same neighbours
    whole = nb.nearest_neighbours(Z, 7, engine=engine, block_mb=1024)
    np.testing.assert_array_equal(whole.indices, nn.indices)


def test_engines_agree_and_self_is_dropped_among_exact_copies():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(50, 8))
    X[10:20] = X[10]                                  # ten identical rows: self ties with them
    Z = nb.normalise(X)
    a = nb.nearest_neighbours(Z, 4, engine="faiss")
    b = nb.nearest_neighbours(Z, 4, engine="sklearn")
    np.testing.assert_allclose(a.similarities, b.similarities, atol=1e-5)
    for nn in (a, b):
        assert not (nn.indices == np.arange(50)[:, None]).any()
        assert set(nn.indices[10]) <= set(range(11, 20))


def test_normalise_and_input_checks():
    Z = nb.normalise(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(Z, [[0.6, 0.8], [0.0, 0.0]])   # a zero row stays zero
    assert Z.dtype == np.float32 and Z.flags.c_contiguous
    with pytest.raises(ValueError, match="NaN"):
        nb.normalise(np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match="2-D"):
        nb.normalise(np.zeros(3))
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, 2\]"):
        nb.nearest_neighbours(nb.normalise(np.eye(3)), 3)
    with pytest.raises(ValueError, match="engine"):
        nb.nearest_neighbours(nb.normalise(np.eye(3)), 1, engine="annoy")


def test_block_rows_bound_the_working_memory():
    for n in (10, 10_000, 100_000, 10_000_000):
        rows = nb.block_rows(n, 256)
        assert rows >= 1 and (rows * n * 16 <= 256 * 2**20 or rows == 1)
    assert nb.block_rows(10, 256) == 10


def test_every_search_call_holds_at_most_one_block_of_queries(monkeypatch):
    calls = []
    search = nb._search

    def spy(Z, Q, k, engine, model=None):
        calls.append(len(Q))
        return search(Z, Q, k, engine, model)

    monkeypatch.setattr(nb, "_search", spy)
    Z = nb.normalise(np.random.default_rng(7).normal(size=(1000, 16)))
    nb.nearest_neighbours(Z, 5, block_mb=0.1)
    rows = nb.block_rows(1000, 0.1)
    assert rows == 6 and max(calls) == rows and sum(calls) == 1000


# --------------------------------------------------------------------------- pairs and groups
def test_groups_are_connected_components_numbered_by_first_row():
    groups = nb.connected_groups(8, np.array([5, 1, 2]), np.array([6, 2, 3]))
    np.testing.assert_array_equal(groups, [-1, 0, 0, 0, -1, 1, 1, -1])
    empty = np.zeros(0, dtype=np.int64)
    np.testing.assert_array_equal(nb.connected_groups(3, empty, empty), [-1, -1, -1])


def test_ranks_overall_and_within_class():
    scores = np.array([0.1, 0.5, 0.5, 0.9, 0.2])
    np.testing.assert_array_equal(nb.ranks(scores), [5, 2, 3, 1, 4])    # ties by row order
    classes = np.array(["a", "b", "a", "b", "a"])
    np.testing.assert_array_equal(nb.ranks(scores, classes), [3, 2, 1, 1, 2])


# --------------------------------------------------------------------------- detection
def test_injected_outliers_rank_first():
    X, y, _, _, true_out = generated()
    nn = nb.nearest_neighbours(nb.normalise(X), 10)
    scores = nb.outlier_scores(nn)
    top = set(np.argsort(-scores)[:len(true_out)].tolist())
    # the top-20 of 1,560 by chance holds ~0.3 of them
    assert len(top & true_out) >= 0.9 * len(true_out)
    names = np.array([f"c{v}" for v in y])
    in_class = nb.ranks(scores, names)
    assert all(in_class[r] <= 5 for r in true_out)   # ~4 outliers per class, each atypical
    wider = nb.nearest_neighbours(nb.normalise(X), 15)  # searched deeper for candidates
    np.testing.assert_allclose(nb.outlier_scores(wider, 10), scores)


# --------------------------------------------------------------------------- stage
def _stage_inputs(tmp, n=36, copies=6):
    """A folder of photo-like JPEGs (3 classes) with planted copies, its index and features
    (a noisy copy of each image's label centre: neighbours within the class)."""
    from PIL import Image

    from tests.planting import COPY_KINDS, photo, planted

    rng = np.random.default_rng(5)
    root = tmp / "photos"
    paths, truth = [], set()
    for i in range(n):
        (root / f"c{i % 3}").mkdir(parents=True, exist_ok=True)
        paths.append(f"c{i % 3}/{i:03d}.jpg")
        photo(700 + i).save(root / paths[-1], quality=92)
    for j in range(copies):
        src = 5 * j
        paths.append(f"c{(src + 1) % 3}/copy{j}.jpg")      # filed under another class
        planted(Image.open(root / paths[src]).convert("RGB"), COPY_KINDS[j % 4], rng).save(
            root / paths[-1], quality=92)
        truth.add((src, len(paths) - 1))
    names = np.array([p.split("/")[0] for p in paths])
    index = pd.DataFrame({"path": paths, "class": names,
                          "label": pd.Categorical(names).codes.astype(np.int64),
                          "sha256": [f"{i:064x}" for i in range(len(paths))]})
    write_table("data/index.parquet", index)
    centres = rng.normal(size=(3, 16))
    save_npy("data/features.npy", (centres[index["label"]] + rng.normal(size=(len(paths), 16))
                                   ).astype(np.float32))
    params = {"data": {"root": str(root)}, "seed": 0,
              "neighbours": {"k": 5, "candidates": 5, "hash_distance": 10, "workers": 2,
                             "block_mb": 1, "engine": "auto"}}
    return params, truth


def test_stage_writes_the_documented_schemas(in_tmp_cwd):
    from clusterlens.audit import duplicates as dup
    from stages import neighbours as stage

    params, truth = _stage_inputs(in_tmp_cwd)
    metrics = stage.run(parse_stage(params, stage.Params))
    table = read_table("data/neighbours.parquet")
    assert list(table.columns) == nb.TABLE_COLUMNS + dup.IMAGE_COLUMNS + ["is_leak", "leak_score"]
    assert not table["is_leak"].any() and metrics["leak_pairs"] == 0 and metrics["splits"] == []
    assert pd.read_csv("data/leaks.csv").empty
    assert table["duplicate_group"].dtype == np.int64
    assert table["outlier_rank"].is_unique and table["outlier_rank"].min() == 1
    pairs = pd.read_csv("data/near_duplicates.csv", keep_default_na=False)
    assert list(pairs.columns) == dup.PAIR_COLUMNS
    copies = pairs[pairs["kind"] != "same_scene"]
    # the copies are found by their hashes (the stand-in features are no help): all, no others
    assert set(zip(copies["row_a"], copies["row_b"])) == truth
    assert copies["label_conflict"].all()
    assert (table.loc[copies["row_a"], "duplicate_group"].to_numpy() == copies["group"]).all()
    assert read_json("metrics/neighbours.json") == metrics
    assert metrics["duplicate_pairs"] == len(truth) == metrics["label_conflicts"]
    assert metrics["images_in_groups"] == int((table["duplicate_group"] >= 0).sum()) == 2 * len(truth)
    assert table["is_near_duplicate"].sum() == 2 * len(truth)
    assert set(table.loc[table["is_near_duplicate"], "near_duplicate_kind"]) <= set(dup.COPY_KINDS)
    assert metrics["pair_cap"] == {"max_pairs_per_image": 100, "pairs_dropped": 0,
                                   "images_capped": 0} and metrics["hash_search"] == "exact"
    first = Path("data/near_duplicates.csv").read_bytes()
    assert any(Path(".cache/pixels").rglob("*.pix.bin"))   # neighbours.pixel_store's default
    assert stage.run(parse_stage(params, stage.Params)) == metrics  # from the store: the same
    assert Path("data/near_duplicates.csv").read_bytes() == first


def test_stage_reports_leaks_across_splits_and_silences_kept_pairs(in_tmp_cwd):
    from stages import neighbours as stage

    params, truth = _stage_inputs(in_tmp_cwd)
    index = read_table("data/index.parquet")
    # the originals in train, their copies in test; one copy pair marked keep on both sides
    index["split"] = np.where(index["path"].str.contains("copy"), "test", "train")
    kept_pair = sorted(truth)[0]
    index["correction"] = ""
    index.loc[list(kept_pair), "correction"] = "keep"
    write_table("data/index.parquet", index)
    metrics = stage.run(parse_stage({**params, "data": {**params["data"], "splits": "auto"}},
                                    stage.Params))
    leaks = pd.read_csv("data/leaks.csv", keep_default_na=False)
    found = {(index.index[index.path == a][0], index.index[index.path == b][0])
             for a, b in zip(leaks["path_a"], leaks["path_b"])}
    assert found == truth - {kept_pair}  # every planted copy but the kept pair
    assert (leaks["split_a"] == "train").all() and (leaks["split_b"] == "test").all()
    assert leaks["label_conflict"].all()  # every copy is filed under another class
    assert metrics["splits"] == ["train", "test"] and metrics["leak_pairs"] == len(truth) - 1
    rate = metrics["leaks"]["by_split_pair"]["train->test"]
    assert rate["images"] == len(truth) and rate["images_with_copy"] == len(truth) - 1
    assert rate["label_conflicts"] == len(truth) - 1
    table = read_table("data/neighbours.parquet")
    assert table["is_leak"].sum() == 2 * (len(truth) - 1)
    assert not table.loc[list(kept_pair), ["is_near_duplicate", "is_leak"]].to_numpy().any()


def test_stage_errors_name_the_key(in_tmp_cwd):
    from stages import neighbours as stage

    params, _ = _stage_inputs(in_tmp_cwd, n=9, copies=0)
    nbp = params["neighbours"]
    with pytest.raises(ParamError, match="neighbours.k"):
        stage.run(parse_stage({**params, "neighbours": {**nbp, "k": 9}}, stage.Params))
    with pytest.raises(ParamError, match="neighbours.candidates"):
        stage.run(parse_stage({**params, "neighbours": {**nbp, "candidates": 9}}, stage.Params))
    with pytest.raises(ParamError, match="neighbours.hash_distance"):
        parse_stage({**params, "neighbours": {**nbp, "hash_distance": 40}}, stage.Params)
    with pytest.raises(ParamError, match="did you mean `neighbours.block_mb`"):
        parse_stage({**params, "neighbours": {**nbp, "block_m": 2}}, stage.Params)
    with pytest.raises(ParamError, match="neighbours.engine"):
        parse_stage({**params, "neighbours": {**nbp, "engine": "annoy"}}, stage.Params)
    with pytest.raises(DataError, match="data.root"):
        stage.run(parse_stage({**params, "data": {"root": "nowhere"}}, stage.Params))
    save_npy("data/features.npy", np.zeros((8, 8), dtype=np.float32))
    with pytest.raises(DataError, match="8"):
        stage.run(parse_stage(params, stage.Params))


# --------------------------------------------------------------------------- large N
def _structured(n: int, d: int = 256, classes: int = 40, seed: int = 0) -> np.ndarray:
    """Features with class structure and a decaying spectrum, as CNN features have."""
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(48, d)) * (0.85 ** np.arange(48))[:, None]
    centres = rng.normal(size=(classes, 48))
    codes = centres[rng.integers(0, classes, n)] + rng.normal(scale=0.6, size=(n, 48))
    return (codes @ basis + rng.normal(scale=0.05, size=(n, d))).astype(np.float32)


def test_approximate_search_finds_the_exact_neighbours_deterministically():
    pytest.importorskip("faiss")
    Z = nb.normalise(_structured(6000))
    exact = nb.nearest_neighbours(Z, 10)
    approx, info = nb.approximate_neighbours(Z, 10, seed=0)
    assert (info.dim, info.nlist, info.nprobe, info.candidates) == (128, 153, 32, 33)
    hits = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact.indices, approx.indices)])
    assert hits >= 0.95
    # recall() measures the same on its sample, and the exact search scores 1
    assert nb.recall(Z, approx, seed=0) == pytest.approx(hits, abs=0.03)
    assert nb.recall(Z, exact, seed=0) == 1.0
    # the similarities are exact (re-ranked on the full features), sorted, never the row itself
    rows = np.arange(len(Z))[:, None]
    np.testing.assert_allclose(approx.similarities,
                               np.einsum("id,ijd->ij", Z, Z[approx.indices]), atol=1e-5)
    assert (np.diff(approx.similarities, axis=1) <= 1e-6).all()
    assert not (approx.indices == rows).any()
    np.testing.assert_allclose(nb.outlier_scores(approx, 5), nb.outlier_scores(exact, 5),
                               atol=0.02)
    again, _ = nb.approximate_neighbours(Z, 10, seed=0)
    assert np.array_equal(again.indices, approx.indices)
    assert np.array_equal(again.similarities, approx.similarities)


def test_the_search_follows_n():
    pytest.importorskip("faiss")
    assert nb.choose_search(50_000, "auto", 50_000, "auto") == "exact"
    assert nb.choose_search(50_001, "auto", 50_000, "auto") == "approximate"
    assert nb.choose_search(50_001, "auto", 50_000, "sklearn") == "exact"
    assert nb.choose_search(10, "approximate", 50_000, "faiss") == "approximate"
    assert nb.choose_search(10**6, "exact", 50_000, "auto") == "exact"
    with pytest.raises(ValueError, match="needs faiss"):
        nb.choose_search(10, "approximate", 50_000, "sklearn")
    Z = nb.normalise(_structured(800))
    nn, how = nb.find_neighbours(Z, 5, exact_max_n=1000)
    assert how == {"method": "exact"}
    assert np.array_equal(nn.indices, nb.nearest_neighbours(Z, 5).indices)
    nn, how = nb.find_neighbours(Z, 5, exact_max_n=500, seed=3)
    assert how["method"] == "approximate" and how["recall_queries"] == 800
    assert how["recall"] == round(nb.recall(Z, nn, seed=3), 6) and how["recall"] >= 0.9
    assert 0 <= how["similarity_gap"] < 0.01
    assert nb.measure(Z, nb.nearest_neighbours(Z, 5), seed=3) == {"recall": 1.0,
                                                                   "similarity_gap": 0.0}
    assert "recall" in nb.search_text(how) and nb.search_text({"method": "exact"}) == "exact search"


def test_stage_switches_to_the_approximate_search_above_exact_max_n(in_tmp_cwd):
    pytest.importorskip("faiss")
    from stages import neighbours as stage

    params, truth = _stage_inputs(in_tmp_cwd)
    params["neighbours"]["exact_max_n"] = 20   # 42 images: approximate
    metrics = stage.run(parse_stage(params, stage.Params))
    assert metrics["search"]["method"] == "approximate" and metrics["hash_search"] == "inverted_file"
    assert 0 <= metrics["search"]["recall"] <= 1 and metrics["search"]["recall_queries"] == 42
    pairs = pd.read_csv("data/near_duplicates.csv", keep_default_na=False)
    copies = pairs[pairs["kind"] != "same_scene"]
    assert set(zip(copies["row_a"], copies["row_b"])) == truth  # the hashes still find them
    with pytest.raises(ParamError, match="neighbours.search"):
        stage.run(parse_stage({**params, "neighbours": {**params["neighbours"],
                                                        "search": "approximate",
                                                        "engine": "sklearn"}}, stage.Params))
