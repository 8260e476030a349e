"""The `umap` stage: a seeded UMAP of a sample of the PCA features, off by default."""
import importlib.util
import os
import sys

import numpy as np
import pytest

from clusterlens.config.base import parse_stage
from clusterlens.core.errors import ParamError
from clusterlens.core.io import save_npy
from stages import umap as stage

# not imported here: importing umap-learn imports numba, which must come after the cache is set
pytestmark = pytest.mark.skipif(importlib.util.find_spec("umap") is None,
                                reason="umap-learn is not installed")


def params(**umap) -> dict:
    return {"seed": 0, "umap": {"enabled": True, "sample": 150, "dim": 5, "n_neighbors": 10,
                                "min_dist": 0.1, **umap}}


def blobs(n_per=50, k=4, dim=12, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 8, (k, dim))
    y = np.repeat(np.arange(k), n_per)
    return (centers[y] + rng.normal(0, 1, (len(y), dim))).astype(np.float32), y


def test_off_by_default_it_writes_an_empty_embedding(in_tmp_cwd):
    save_npy("data/pca.npy", np.zeros((20, 3), np.float32))
    cfg = parse_stage({"seed": 0, "umap": {}}, stage.Params)
    assert cfg.umap.enabled is False
    assert stage.run(cfg) == {"points": 0}
    out = np.load(stage.OUT)
    assert out["rows"].shape == (0,) and out["embedding"].shape == (0, 2)
    assert out["reduced"].shape == (0, cfg.umap.dim)


def test_a_seeded_sample_is_embedded_the_same_twice_and_keeps_the_clusters_apart(in_tmp_cwd):
    from sklearn.metrics import silhouette_score

    X, y = blobs()
    save_npy("data/pca.npy", X)
    runs = []
    for _ in range(2):
        assert stage.run(parse_stage(params(), stage.Params)) == {"points": 150}
        with np.load(stage.OUT) as out:
            runs.append({k: out[k] for k in out.files})
    rows = runs[0]["rows"]
    assert len(rows) == 150 and (np.diff(rows) > 0).all()
    assert runs[0]["embedding"].shape == (150, 2) and runs[0]["reduced"].shape == (150, 5)
    for k in runs[0]:
        assert runs[0][k].tobytes() == runs[1][k].tobytes(), k
    assert silhouette_score(runs[0]["reduced"], y[rows]) > 0.5
    assert silhouette_score(runs[0]["embedding"], y[rows]) > 0.5
    assert os.environ["NUMBA_CPU_NAME"] == "generic"  # the CPU pin (stages/__init__.py)


def test_numbas_cache_is_set_before_numba_is_imported_and_left_alone_after(in_tmp_cwd,
                                                                             monkeypatch):
    from clusterlens.clustering import umap_embed

    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.delitem(sys.modules, "numba", raising=False)
    assert umap_embed.configure_numba(".cache/numba")
    assert os.environ["NUMBA_CACHE_DIR"] == os.path.abspath(".cache/numba")
    assert os.path.isdir(".cache/numba")
    monkeypatch.setitem(sys.modules, "numba", object())  # imported: its settings are fixed
    assert not umap_embed.configure_numba("elsewhere")
    assert os.environ["NUMBA_CACHE_DIR"] == os.path.abspath(".cache/numba")
    assert not os.path.exists("elsewhere")


def test_too_few_rows_and_bad_params_name_the_key(in_tmp_cwd):
    save_npy("data/pca.npy", np.zeros((3, 2), np.float32))
    with pytest.raises(ParamError, match="umap.sample.*at least 5 points"):
        stage.run(parse_stage(params(), stage.Params))
    for key, value in (("dim", 1), ("min_dist", 1.5), ("n_neighbors", 1), ("sample", 2)):
        with pytest.raises(ParamError, match=f"umap.{key}"):
            parse_stage(params(**{key: value}), stage.Params)


def test_the_grid_route_embeds_every_image_and_hdbscan_and_ward_cluster_it(in_tmp_cwd):
    """umap.grid: every image gets dim-D coordinates (the sample's are its fit's); HDBSCAN and
    Ward with `space: umap` cluster them (and recover the blobs); without them, the error names
    the key."""
    import pandas as pd

    from clusterlens.core.io import write_table
    from tests.conftest import run_point

    X, y = blobs(n_per=60)
    save_npy("data/pca.npy", X)
    write_table("data/index.parquet", pd.DataFrame({"path": [f"{i}.png" for i in range(len(y))],
                                                    "class": [f"c{v}" for v in y], "label": y}))
    grid_params = {"seed": 0, "metrics": {"silhouette_sample": 100},
                   "kmeans": {"k": [4], "n_init": 2, "max_iter": 50},
                   "hdbscan": {"min_cluster_size": [10], "min_samples": None, "space": "umap"},
                   "agglomerative": {"linkage": ["ward"], "k": [4], "space": "umap"}}
    stage.run(parse_stage(params(grid=False), stage.Params))
    assert np.load(stage.OUT_FEATURES).shape == (240, 0)
    with pytest.raises(ParamError, match="`hdbscan.space` is umap, but .* is empty"):
        run_point("hdbscan", 10, grid_params)
    stage.run(parse_stage(params(grid=True), stage.Params))
    every = np.load(stage.OUT_FEATURES)
    with np.load(stage.OUT) as out:
        rows, reduced = out["rows"], out["reduced"]
    assert every.shape == (240, 5) and np.isfinite(every).all() and len(rows) == 150
    np.testing.assert_array_equal(every[rows], reduced)  # the sample's own fit
    first = every.copy()
    stage.run(parse_stage(params(grid=True), stage.Params))
    assert np.load(stage.OUT_FEATURES).tobytes() == first.tobytes()
    hdb = run_point("hdbscan", 10, grid_params)["mcs10"]
    ward = run_point("agglomerative", "ward", grid_params)["ward_k4"]
    assert hdb["nmi"] > 0.9 and ward["nmi"] > 0.9, (hdb, ward)


# --------------------------------------------------------------------------- benchmarks
def test_bench_umap_times_both_embeddings_against_tsne(tmp_path, capsys):
    from benchmarks import bench_umap

    res = bench_umap.main(["--n", "250", "--classes", "4", "--tsne-max", "250", "--out",
                           str(tmp_path / "umap.json")])
    run = res["runs"][250]
    assert set(run) >= {"umap_2d", "umap_10d", "tsne_2d", "umap_2d_over_tsne"}
    assert run["umap_2d"]["seconds"] > 0 and run["umap_2d_over_tsne"] > 0
    # UMAP draws the generated classes apart better than their PCA-50 does
    assert run["umap_10d"]["class_silhouette"] > run["pca_class_silhouette"]
    assert "UMAP 2-D / t-SNE time ratio" in capsys.readouterr().out
    assert (tmp_path / "umap.json").is_file()


def test_bench_label_free_compares_the_choices_with_and_without_the_evenness_rule(tmp_path):
    from benchmarks import bench_label_free
    from clusterlens.clustering.selection import MIN_EVENNESS

    res = bench_label_free.main(["--sets", "generated10", "--generated-n", "600", "--out",
                                 str(tmp_path / "label_free.json")])
    r = res["sets"]["generated10"]
    even = {key: p["evenness"] for key, p in r["points"].items()}
    assert len(even) == 20  # K-Means and four linkages at K = 5, 10, 15, 20
    for crit in ("silhouette_pca", "silhouette_umap"):
        assert even[r[crit]["point"]] >= MIN_EVENNESS
        assert r[crit]["nmi_lost"] == pytest.approx(r["nmi"]["nmi"] - r[crit]["nmi"], abs=1e-4)
    # without the rule, the PCA silhouette picks a cut into one giant cluster and outliers
    ungated = r[f"silhouette_pca{bench_label_free.UNGATED}"]
    assert even[ungated["point"]] < MIN_EVENNESS and ungated["nmi"] < r["silhouette_pca"]["nmi"]
    assert res["silhouette_pca"]["of"] == 1
