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
                                                 "agglomerative@ward", "clustering"}
    chk = res["checks"]["pipeline"]
    assert [r["k"] for r in chk["kmeans"]] == [3, 5] and all(r["ok"] for r in chk["kmeans"])
    assert len(chk["metrics"]) == 4 and all(r["ok"] for r in chk["metrics"])
    # the in-process breakdown ("where the time goes") calls the library's functions as they are
    repo = next(p.parent.parent for p in (tmp_path / "w").rglob("data/pca.npy"))
    steps = bench_grid.in_stage_breakdown(repo, threads=1)
    assert "error" not in steps, steps.get("error")
    assert steps["agglomerative ward: metrics (2 cuts)"] > 0 and steps["kmeans: fit (all K)"] > 0
