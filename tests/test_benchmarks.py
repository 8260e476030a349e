"""The benchmark scripts still run against the current pipeline (a tiny size and grid; the
figures themselves are measured by running the scripts, never asserted here)."""
import json

import pytest

from benchmarks import bench_grid


@pytest.mark.slow
def test_bench_grid_runs_the_current_dvc_pipeline_and_its_checks_pass(tmp_path):
    """The benchmark's temporary repositories keep in step with dvc.yaml (e.g. every input that
    `reduce` declares), and its in-process breakdown calls the library as it is."""
    out = tmp_path / "grid.json"
    with pytest.raises(SystemExit) as stop:  # exit status 0 = the checks passed
        bench_grid.main(["--n", "300", "--dim", "64", "--repeats", "1", "--skip-baseline",
                         "--k", "3", "5", "--linkage", "ward", "--no-breakdown", "--keep",
                         "--workdir", str(tmp_path / "w"), "--out", str(out)])
    assert stop.value.code == 0
    res = json.loads(out.read_text())
    pipe = res["pipeline"]["pipeline"]
    assert pipe["median_seconds"] > 0
    assert set(pipe["median_stage_seconds"]) == {"reduce", "kmeans@3", "kmeans@5",
                                                 "agglomerative@ward", "umap", "clustering"}
    chk = res["checks"]["pipeline"]
    assert [r["k"] for r in chk["kmeans"]] == [3, 5] and all(r["ok"] for r in chk["kmeans"])
    assert len(chk["metrics"]) == 4 and all(r["ok"] for r in chk["metrics"])
    # the in-process breakdown ("where the time goes") calls the library's functions as they are
    repo = next(p.parent.parent for p in (tmp_path / "w").rglob("data/pca.npy"))
    steps = bench_grid.in_stage_breakdown(repo, threads=1)
    assert "error" not in steps, steps.get("error")
    assert steps["agglomerative ward: metrics (2 cuts)"] > 0 and steps["kmeans: fit (all K)"] > 0


def test_bench_demo_reads_import_times_and_can_hide_the_c_yaml_loader(tmp_path):
    import subprocess
    import sys

    from benchmarks import _util as u
    from benchmarks import bench_demo

    stderr = ("import time: self [us] | cumulative | imported package\n"
              "import time:      1000 |       1000 |   numpy.core\n"
              "import time:       500 |       1500 | numpy\n"
              "import time:      2000 |     900000 |     scipy\n"
              "import time:     30000 |    1200000 | sklearn\n"
              "some other line\n")
    prof = bench_demo.import_profile(stderr)
    assert prof["import_seconds"] == 0.0335
    assert prof["heavy"] == {"scipy": 0.9, "sklearn": 1.2}   # first import of each
    probe = [sys.executable, "-c", "from ruamel.yaml.main import CParser; print(CParser)"]
    native = subprocess.run(probe, env=u.bench_env(), capture_output=True, text=True)
    pure = subprocess.run(probe, env=bench_demo.pure_yaml_env(u.bench_env(), tmp_path),
                          capture_output=True, text=True)
    assert "CParser" in native.stdout     # requirements.txt installs ruamel.yaml.clib
    assert pure.stdout.strip() == "None"  # the baseline's DVC parses in pure Python


def test_bench_neighbours_runs_the_current_search(tmp_path):
    """The search benchmark calls neighbours.py as it is (normalise, nearest_neighbours,
    outlier_scores)."""
    from benchmarks import bench_neighbours

    out = tmp_path / "neighbours.json"
    res = bench_neighbours.main(["--sizes", "300", "--dim", "16", "--engines", "sklearn",
                                 "approximate", "--out", str(out)])
    exact, approx = res["rows"]
    assert exact["ok"] and approx["ok"], (exact.get("error"), approx.get("error"))
    assert set(exact["seconds"]) == set(approx["seconds"]) == {"normalise", "knn", "scores"}
    assert "recall" not in exact and 0.5 <= approx["recall"] <= 1
    assert json.loads(out.read_text())["rows"][0]["n"] == 300


def test_bench_duplicates_plants_copies_and_scores_the_near_duplicate_step(tmp_path):
    """End to end on 30 generated photos in 3 classes, 2 copies planted per kind, random
    features (--no-extract): the JSON has every figure and the recalls are shares."""
    from benchmarks import bench_duplicates
    from tests.planting import photo

    root = tmp_path / "photos"
    for c in range(3):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(10):
            photo(100 * c + i).save(root / f"class{c}" / f"{i:02d}.jpg", "JPEG", quality=90)
    out, pairs = tmp_path / "duplicates.json", tmp_path / "unplanted.csv"
    res = bench_duplicates.main(["--root", str(root), "--per-kind", "2", "--no-extract",
                                 "--workdir", str(tmp_path / "w"), "--out", str(out),
                                 "--pairs-out", str(pairs)])
    saved = json.loads(out.read_text())["runs"]["photos"]
    assert saved["images"] == res["images"] == 38 and saved["planted"] == 8
    assert set(saved["recall"]) == {*bench_duplicates.PLANTED_KINDS, "all"}
    for r in saved["recall"].values():
        assert 0 <= r["recall"] <= 1 and 0 <= r["right_kind"] <= r["recall"]
    assert saved["recall"]["all"]["planted"] == 8
    step = saved["step"]
    assert set(step["seconds"]) == {"knn", "read", "candidates", "verify", "groups"}
    assert step["candidates"]["per_image"] > 0 and step["ms_per_pair"] > 0
    assert step["peak_rss_mb"] > 0 and saved["extraction"] is None
    assert saved["ratio_step_to_extraction"] is None
    assert saved["unplanted_per_1000_images"] >= 0 and pairs.is_file()
    truth = (tmp_path / "w" / "truth.csv").read_text().splitlines()
    assert len(truth) == 9  # header + 8 copies, half of each kind in another class


def test_bench_leaks_splits_plants_and_scores_leaks(tmp_path):
    """End to end on 30 generated photos in 3 classes, split 80/20, 2 copies of training
    images planted in test per kind, random features (--no-extract): every copy kind is
    found (the hashes find them), with its label conflicts."""
    from benchmarks import bench_leaks
    from tests.planting import photo

    root = tmp_path / "photos"
    for c in range(3):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(10):
            photo(300 * c + i).save(root / f"class{c}" / f"{i:02d}.jpg", "JPEG", quality=90)
    out, pairs = tmp_path / "leaks.json", tmp_path / "unplanted.csv"
    bench_leaks.main(["--root", str(root), "--per-kind", "2", "--no-extract", "--workdir",
                      str(tmp_path / "w"), "--out", str(out), "--pairs-out", str(pairs)])
    saved = json.loads(out.read_text())["runs"]["photos"]
    assert saved["planted"] == 10 and saved["split_column"] == "build_index(splits=...)"
    assert saved["splits"]["train"] + saved["splits"]["test"] == saved["images"] == 40
    assert saved["recall"]["all"]["recall"] >= 0.9
    assert saved["rates"]["by_split_pair"]["train->test"]["images_with_copy"] >= 9
    assert pairs.is_file()


def test_bench_density_runs_both_routes_and_compares_them(tmp_path):
    """The density benchmark on small blobs with a small switch point: both routes run at
    twice it, the sampled one is compared with the exact one."""
    from benchmarks import bench_density

    out = tmp_path / "density.json"
    res = bench_density.main(["--sizes", "--max-exact-n", "600", "--blobs", "5",
                              "--out", str(out)])
    rows = res["rows"]
    assert all(r["ok"] for r in rows), [r.get("error") for r in rows]
    assert [(r["n"], r["method"], r["route"]) for r in rows] == [
        (1200, "dbscan", "exact"), (1200, "hdbscan", "exact"), (1200, "dbscan", "sample"),
        (1200, "hdbscan", "sample")]
    assert all(0 <= r["ari_vs_exact"] <= 1 for r in rows[2:4])
    assert json.loads(out.read_text())["rows"][0]["n"] == 1200


def test_bench_pipeline_folder_features_params_and_table(tmp_path):
    """The scale benchmark's generators on 120 files: the index rejects the tiny and corrupt
    files and finds the exact copies; the features put each exact copy on its source's row,
    the other copies near it, the outliers far; one params line is set in place; the results
    table and CSV hold every stage."""
    import csv
    import sys

    import numpy as np

    from benchmarks import _util as u
    from benchmarks import bench_pipeline as bp
    from clusterlens.data.index import build_index

    root = tmp_path / "images"
    plan, spec, secs = u.make_image_folder(root, 120, 3, copies=0.05, odd=0.06, workers=1)
    assert secs > 0 and u.make_image_folder(root, 120, 3, copies=0.05, odd=0.06)[2] == 0
    assert plan["role"].value_counts().to_dict() == {
        "image": 107, "exact": 3, "resized": 2, "mirror": 1, **dict.fromkeys(u.ODD_KINDS, 1)}
    index = build_index(root, workers=1)[0]
    assert len(index) == 118 and not index["path"].str.contains("_tiny|_corrupt").any()
    dup_of = index.set_index("path")["duplicate_of"]
    src = dict(zip(plan["id"], plan["path"]))
    for r in plan[plan["role"] == "exact"].itertuples():  # the later path names the earlier
        assert {dup_of[r.path], dup_of[src[r.source]]} == {"", min(r.path, src[r.source])}

    info = u.planted_features(index, plan, tmp_path / "f.npy", dim=256, outliers=0.03)
    X = np.load(tmp_path / "f.npy")
    row = {p: i for i, p in enumerate(index["path"])}
    for r in plan[plan["role"].isin(u.COPY_KINDS)].itertuples():
        a, b = X[row[r.path]], X[row[src[r.source]]]
        gap = np.linalg.norm(a - b) / np.linalg.norm(b)
        assert gap == 0 if r.role == "exact" else 0 < gap < 0.05
    far = [row[p] for p in info["outlier_paths"]]
    assert info["outliers"] == len(far) == 4 and info["copies"] == 6
    Z = X / np.linalg.norm(X, axis=1, keepdims=True)
    cos = Z @ Z.T
    np.fill_diagonal(cos, -1)
    nearest = 1 - cos.max(axis=1)  # cosine distance to the nearest other row
    assert nearest[far].min() > np.delete(nearest, far).max() + 0.1

    params = tmp_path / "params.yaml"
    params.write_text("seed: 0\ndata:\n  root: data/digits   # the folder\n  splits: auto\n"
                      "index:\n  root: keep\n")
    bp.set_param(params, "data.root", "/x/images")
    assert params.read_text() == ("seed: 0\ndata:\n  root: /x/images   # the folder\n"
                                  "  splits: auto\nindex:\n  root: keep\n")

    # a stage's peak memory, and a stage stopped at its timeout (with its whole process group)
    big = bp.run_stage(f"{sys.executable} -c 'b = bytearray(300 * 2**20); b[::4096] = "
                       "b\"x\" * len(b[::4096]); import time; time.sleep(0.3)'",
                       tmp_path, tmp_path / "big.log", timeout=60, max_gib=4)
    assert big["status"] == "ok" and 0.29 < big["peak_gib"] < 1 and big["cpu_seconds"] > 0
    slow = bp.run_stage("sleep 30 | cat", tmp_path, tmp_path / "slow.log", timeout=0.5,
                        max_gib=4)
    assert slow["status"] == "timeout" and slow["seconds"] < 10

    rec = {"status": "ok", "seconds": 2.0, "cpu_seconds": 1.5, "peak_gib": 0.5,
           "load1_at_start": 1.0}
    state = {"n": 120, "classes": 3, "commit": "abc", "stages": {
        "index": {**rec, "phase": "data"}, "reduce": {**rec, "phase": "after extraction"},
        "tsne": {**rec, "phase": "after extraction", "status": "timeout", "peak_gib": 1.25}}}
    state["stage_order"] = ["index", "extract", "reduce", "tsne", "report"]
    bp.save(state, tmp_path, tmp_path)
    assert state["totals"]["after_extraction_seconds"] == 4.0
    assert state["totals"]["after_extraction_peak_gib"] == 1.25
    assert state["totals"]["not_ok"] == ["tsne", "report"]  # report: not run yet
    assert not state["totals"]["complete"]
    rows = list(csv.DictReader(open(tmp_path / "pipeline_120.csv")))
    assert [r["stage"] for r in rows] == ["index", "reduce", "tsne"]
    assert "not complete: tsne, report" in bp.table(state)
