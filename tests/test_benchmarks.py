"""The benchmark scripts still run against the current pipeline (a tiny size; the figures
themselves are measured by running the scripts, never asserted here)."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import bench_grid  # noqa: E402


@pytest.mark.slow
def test_bench_grid_runs_the_current_dvc_pipeline_and_its_checks_pass(tmp_path):
    """`reduce` gained a dependency (data/fused.npy, issue 8) that the benchmark's temporary
    repositories lacked: this keeps the benchmark in step with dvc.yaml."""
    out = tmp_path / "grid.json"
    with pytest.raises(SystemExit) as stop:  # exit status 0 = the checks passed
        bench_grid.main(["--n", "400", "--dim", "64", "--repeats", "1", "--skip-baseline",
                         "--no-breakdown", "--keep", "--workdir", str(tmp_path / "w"),
                         "--out", str(out)])
    assert stop.value.code == 0
    res = json.loads(out.read_text())
    pipe = res["pipeline"]["pipeline"]
    assert pipe["median_seconds"] > 0
    assert {"reduce", "clustering"} <= set(pipe["median_stage_seconds"])
    assert any(s.startswith("kmeans@") for s in pipe["median_stage_seconds"])
    chk = res["checks"]["pipeline"]
    assert chk["kmeans"] and all(r["ok"] for r in chk["kmeans"])
    assert chk["metrics"] and all(r["ok"] for r in chk["metrics"])
    # the in-process breakdown ("where the time goes") calls the stages' functions as they are
    repo = next(p.parent.parent for p in (tmp_path / "w").rglob("data/pca.npy"))
    steps = bench_grid.in_stage_breakdown(repo, threads=1)
    assert "error" not in steps, steps.get("error")
    assert steps["agglomerative ward: metrics (4 cuts)"] > 0 and steps["kmeans: fit (all K)"] > 0
