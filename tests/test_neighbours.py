"""Nearest neighbours: exact chunked search, near-duplicate pairs and groups, outlier scores."""
import io
import shutil
import tracemalloc

import numpy as np
import pandas as pd
import pytest

from clusterlens.audit import neighbours as nb
from clusterlens.config.base import parse_stage
from clusterlens.core.errors import DataError, ParamError
from clusterlens.core.io import read_json, read_table, save_npy, write_table
from tests.conftest import CIFAR

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


def test_duplicate_search_memory_is_bounded_by_the_block():
    # 4,000 rows in groups of 20 identical rows: every row's list (k = 5) is saturated, so every
    # row is compared with all rows; the full matrix would take 64 MB, one 1 MiB block 16 rows.
    rng = np.random.default_rng(3)
    Z = nb.normalise(np.repeat(rng.normal(size=(200, 16)), 20, axis=0))
    nn = nb.nearest_neighbours(Z, 5)
    tracemalloc.start()
    pairs = nb.duplicate_pairs(Z, nn, 0.99, block_mb=1)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(pairs) == 200 * (20 * 19 // 2)
    assert peak < 16 * 2**20, f"peak {peak / 2**20:.1f} MiB"
    groups = nb.duplicate_groups(len(Z), pairs)
    np.testing.assert_array_equal(groups, np.repeat(np.arange(200), 20))


# --------------------------------------------------------------------------- pairs and groups
def test_groups_are_connected_components_numbered_by_first_row():
    pairs = nb.DuplicatePairs(row_a=np.array([5, 1, 2]), row_b=np.array([6, 2, 3]),
                              similarity=np.ones(3, dtype=np.float32))
    groups = nb.duplicate_groups(8, pairs)
    np.testing.assert_array_equal(groups, [-1, 0, 0, 0, -1, 1, 1, -1])
    empty = nb.DuplicatePairs(*(np.zeros(0, dtype=t) for t in (np.int64, np.int64, np.float32)))
    np.testing.assert_array_equal(nb.duplicate_groups(3, empty), [-1, -1, -1])


def test_pairs_equal_the_brute_force_pairs_and_too_many_is_refused():
    X, *_ = generated(seed=4)
    Z = nb.normalise(X)
    nn = nb.nearest_neighbours(Z, 3)
    pairs = nb.duplicate_pairs(Z, nn, 0.9)
    S = Z @ Z.T
    ref = {(int(i), int(j)) for i, j in zip(*np.nonzero(np.triu(S, 1) >= 0.9))}
    assert set(zip(pairs.row_a.tolist(), pairs.row_b.tolist())) == ref
    assert (pairs.row_a < pairs.row_b).all() and (np.diff(pairs.similarity) <= 0).all()
    with pytest.raises(ValueError, match="near-duplicate pairs"):
        nb.duplicate_pairs(Z, nn, 0.1, max_pairs=100)
    with pytest.raises(ValueError, match="threshold"):
        nb.duplicate_pairs(Z, nn, 1.5)


def test_ranks_overall_and_within_class():
    scores = np.array([0.1, 0.5, 0.5, 0.9, 0.2])
    np.testing.assert_array_equal(nb.ranks(scores), [5, 2, 3, 1, 4])    # ties by row order
    classes = np.array(["a", "b", "a", "b", "a"])
    np.testing.assert_array_equal(nb.ranks(scores, classes), [3, 2, 1, 1, 2])


# --------------------------------------------------------------------------- detection
def test_injected_copies_conflicts_and_outliers_are_found():
    X, y, true_pairs, true_conflicts, true_out = generated()
    n = len(y)
    Z = nb.normalise(X)
    nn = nb.nearest_neighbours(Z, 10)
    pairs = nb.duplicate_pairs(Z, nn, 0.9)
    found = set(zip(pairs.row_a.tolist(), pairs.row_b.tolist()))
    precision = len(found & true_pairs) / max(len(found), 1)
    recall = len(found & true_pairs) / len(true_pairs)
    # chance: 40 true pairs among ~800,000
    assert precision >= 0.9 and recall >= 0.9, (precision, recall)
    names = np.array([f"c{v}" for v in y])
    groups = nb.duplicate_groups(n, pairs)
    table = nb.pairs_table(pairs, [f"img{i}.png" for i in range(n)], names, groups)
    conflicts = {(r.row_a, r.row_b) for r in table.itertuples() if r.label_conflict}
    assert len(conflicts & true_conflicts) >= 0.9 * len(true_conflicts)
    assert len(conflicts - true_conflicts) <= 0.1 * len(conflicts)
    scores = nb.outlier_scores(nn)
    top = set(np.argsort(-scores)[:len(true_out)].tolist())
    # the top-20 of 1,560 by chance holds ~0.3 of them
    assert len(top & true_out) >= 0.9 * len(true_out)
    in_class = nb.ranks(scores, names)
    assert all(in_class[r] <= 5 for r in true_out)   # ~4 outliers per class, each atypical


# --------------------------------------------------------------------------- stage
def _stage_inputs(X, names):
    index = pd.DataFrame({"path": [f"{c}/{i}.png" for i, c in enumerate(names)],
                          "class": names,
                          "label": pd.Categorical(names).codes.astype(np.int64)})
    write_table("data/index.parquet", index)
    save_npy("data/features.npy", X)
    return {"neighbours": {"k": 10, "duplicate_similarity": 0.9, "block_mb": 1,
                           "engine": "auto"}}


def test_stage_writes_the_documented_schemas(in_tmp_cwd):
    from stages import neighbours as stage

    X, y, true_pairs, true_conflicts, _ = generated(seed=5)
    params = _stage_inputs(X, np.array([f"c{v}" for v in y]))
    metrics = stage.run(parse_stage(params, stage.Params))
    table = read_table("data/neighbours.parquet")
    assert list(table.columns) == nb.TABLE_COLUMNS and len(table) == len(y)
    assert table["duplicate_group"].dtype == np.int64
    assert table["outlier_rank"].is_unique and table["outlier_rank"].min() == 1
    assert np.issubdtype(table["outlier_score"].dtype, np.floating)
    pairs = pd.read_csv("data/near_duplicates.csv")
    assert list(pairs.columns) == nb.PAIR_COLUMNS
    assert pairs["label_conflict"].dtype == bool
    assert (table.loc[pairs["row_a"], "duplicate_group"].to_numpy() == pairs["group"]).all()
    assert read_json("metrics/neighbours.json") == metrics
    assert set(metrics) >= {"duplicate_pairs", "duplicate_groups", "images_in_groups",
                            "label_conflicts", "k", "duplicate_similarity"}
    assert metrics["duplicate_pairs"] == len(pairs) >= 0.9 * len(true_pairs)
    assert metrics["label_conflicts"] == int(pairs["label_conflict"].sum())
    assert metrics["images_in_groups"] == int((table["duplicate_group"] >= 0).sum())


@pytest.mark.parametrize("side, expected", [(8, 0.97), (15, 0.97), (16, 0.9), (32, 0.9),
                                            (500, 0.9)])
def test_auto_duplicate_similarity_follows_the_image_size(side, expected):
    """`auto`: 0.97 for images of a few pixels (the demo's 8x8 digits), else 0.9 (photos)."""
    widths = np.array([side, side, side + 40])          # the median shorter side is `side`
    heights = np.array([side + 3, side, side])
    assert nb.auto_duplicate_similarity(widths, heights) == expected


def test_stage_resolves_auto_from_the_index_and_records_it(in_tmp_cwd):
    from stages import neighbours as stage

    X, y, true_pairs, _, _ = generated(seed=5)
    params = _stage_inputs(X, np.array([f"c{v}" for v in y]))
    index = read_table("data/index.parquet")
    auto = {"neighbours": {**params["neighbours"], "duplicate_similarity": "auto"}}
    for side, expected in [(8, 0.97), (224, 0.9)]:
        write_table("data/index.parquet", index.assign(width=side, height=side))
        metrics = stage.run(parse_stage(auto, stage.Params))
        assert metrics["duplicate_similarity"] == expected
        fixed = stage.run(parse_stage({"neighbours": {**params["neighbours"],
                                          "duplicate_similarity": expected}}, stage.Params))
        assert fixed == metrics                     # auto = the value it resolves to


def test_stage_errors_name_the_key(in_tmp_cwd, monkeypatch):
    from stages import neighbours as stage

    rng = np.random.default_rng(6)
    params = _stage_inputs(rng.normal(size=(12, 8)).astype(np.float32), np.array(["a", "b"] * 6))
    with pytest.raises(ParamError, match="neighbours.k"):
        stage.run(parse_stage({"neighbours": {**params["neighbours"], "k": 12}}, stage.Params))
    with pytest.raises(ParamError, match="neighbours.duplicate_similarity"):
        stage.run(parse_stage({"neighbours": {**params["neighbours"], "duplicate_similarity": 1.2}}, stage.Params))
    with pytest.raises(ParamError, match="did you mean `neighbours.block_mb`"):
        stage.run(parse_stage({"neighbours": {**params["neighbours"], "block_m": 2}}, stage.Params))
    with pytest.raises(ParamError, match="neighbours.engine"):
        stage.run(parse_stage({"neighbours": {**params["neighbours"], "engine": "annoy"}}, stage.Params))
    monkeypatch.setattr(nb, "MAX_PAIRS", 3)
    with pytest.raises(ParamError, match="neighbours.duplicate_similarity.*pairs"):
        stage.run(parse_stage({"neighbours": {**params["neighbours"], "duplicate_similarity": 0.01}}, stage.Params))
    save_npy("data/features.npy", np.zeros((11, 8), dtype=np.float32))
    with pytest.raises(DataError, match="11"):
        stage.run(parse_stage(params, stage.Params))


# --------------------------------------------------------------------------- real data
VARIANTS = [(48, 90), (64, 60), (32, 75), (40, 85)]   # (side in pixels, JPEG quality)


@pytest.mark.slow
@pytest.mark.skipif(not CIFAR.is_dir(), reason="../shared CIFAR-10 absent")
def test_resized_jpeg_copies_of_cifar_images_are_found(tmp_path):
    from PIL import Image

    from clusterlens.features.backbones import LITE0, build_backbone
    from clusterlens.features.extraction import extract_features

    paths = []
    for cls_dir in sorted(p for p in CIFAR.iterdir() if p.is_dir()):
        (tmp_path / cls_dir.name).mkdir()
        for f in sorted(cls_dir.glob("*.jpg"))[:50]:
            shutil.copy(f, tmp_path / cls_dir.name / f.name)
            paths.append(f"{cls_dir.name}/{f.name}")
    n = len(paths)
    rng = np.random.default_rng(0)
    sources = rng.choice(n, 40, replace=False)
    for j, i in enumerate(sources):
        side, quality = VARIANTS[j % len(VARIANTS)]
        img = Image.open(tmp_path / paths[i]).convert("RGB").resize((side, side),
                                                                    Image.BILINEAR)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=quality)
        copy = f"{paths[i][:-4]}_copy.jpg"
        (tmp_path / copy).write_bytes(buf.getvalue())
        paths.append(copy)
    X, _ = extract_features(build_backbone(LITE0, "DEFAULT", 64), tmp_path, paths, 64,
                            "squash", batch_size=60, device="cpu", progress=False)
    Z = nb.normalise(X)
    nn = nb.nearest_neighbours(Z, 10)
    pairs = nb.duplicate_pairs(Z, nn, 0.9)
    found = set(zip(pairs.row_a.tolist(), pairs.row_b.tolist()))
    true = {(int(i), n + j) for j, i in enumerate(sources)}
    precision = len(found & true) / max(len(found), 1)
    recall = len(found & true) / len(true)
    # chance: 40 copies among ~145,000 pairs
    assert precision >= 0.9 and recall >= 0.9, (precision, recall, len(found))
    # the copy's nearest neighbour is its original for nearly every copy
    nearest = nn.indices[n:, 0]
    assert (nearest == sources).mean() >= 0.9
