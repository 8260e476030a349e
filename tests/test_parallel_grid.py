"""scripts/repro_parallel.py: the scheduler on small fake pipelines (in-process), and one
end-to-end run of grid points in parallel whose lock files and outputs are byte-identical to the
serial run's."""
from __future__ import annotations

import hashlib
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import PROJECT, e2e_copy, sh

sys.path.insert(0, str(PROJECT / "scripts"))
import repro_parallel as rp  # noqa: E402

# A pipeline shaped like the project's: index -> reduce -> the grid points -> clustering -> report,
# with nmf -> nmf_k* beside the other points, and an audit stage that reads only `reduce`.
GRID = ["km2", "km3", "gmm3", "ward"]
ORDER = ["index", "reduce", "nmf", *GRID, "nmf_k3", "audit", "clustering", "report"]
UPSTREAM = {"index": [], "reduce": ["index"], "nmf": ["reduce"],
            **{p: ["reduce"] for p in GRID}, "nmf_k3": ["nmf", "reduce"], "audit": ["reduce"],
            "clustering": [*GRID, "nmf_k3"], "report": ["clustering", "audit"]}


class FakeDVC:
    """A ``run`` for :func:`rp.schedule` that sleeps ``seconds`` and records every start and end;
    ``same_outs`` are stages whose outputs come out unchanged, ``fail`` one that fails."""

    def __init__(self, seconds=0.05, same_outs=(), fail=None, durations=None):
        self.seconds, self.same, self.fail = seconds, set(same_outs), fail
        self.durations = durations or {}
        self.events: list[tuple[float, str, str]] = []
        self.lock = threading.Lock()
        self.now = 0

    def __call__(self, stage: str) -> rp.Outcome:
        with self.lock:
            self.events.append((time.perf_counter(), "start", stage))
        time.sleep(self.durations.get(stage, self.seconds))
        with self.lock:
            self.events.append((time.perf_counter(), "end", stage))
        if stage == self.fail:
            return rp.Outcome(stage, ran=True, error="exit 1")
        return rp.Outcome(stage, ran=True, outs_changed=stage not in self.same)

    def started(self) -> list[str]:
        return [s for _, kind, s in self.events if kind == "start"]

    def max_running(self) -> int:
        most = now = 0
        for _, kind, _ in sorted(self.events, key=lambda e: (e[0], e[1] == "start")):
            now += 1 if kind == "start" else -1
            most = max(most, now)
        return most


def check_order(events, upstream):
    """Every stage started after all of its upstream stages that ran had ended."""
    ended: set[str] = set()
    ran = {s for _, kind, s in events if kind == "start"}
    for _, kind, stage in sorted(events, key=lambda e: (e[0], e[1] == "start")):
        if kind == "start":
            missing = [u for u in upstream[stage] if u in ran and u not in ended]
            assert not missing, f"{stage} started before {missing} ended"
        else:
            ended.add(stage)


@pytest.mark.parametrize("jobs", [2, 4])
def test_a_changed_root_runs_everything_in_dependency_order_and_jobs_at_once(jobs):
    fake = FakeDVC(seconds=0.15)  # long enough that the `jobs` started together overlap
    outcomes = rp.schedule(ORDER, UPSTREAM, {"index"}, fake, jobs)
    assert sorted(fake.started()) == sorted(ORDER)
    assert sorted(o.stage for o in outcomes) == sorted(ORDER)
    check_order(fake.events, UPSTREAM)
    assert fake.max_running() == jobs  # 6 stages wait on `reduce` at once


def test_only_stages_changed_or_below_a_changed_output_run():
    # One grid point's params changed: it runs, then clustering and report; nothing else starts.
    fake = FakeDVC()
    outcomes = rp.schedule(ORDER, UPSTREAM, {"km3"}, fake, 2)
    assert fake.started() == ["km3", "clustering", "report"]
    assert {o.stage for o in outcomes if not o.ran} == set(ORDER) - {"km3", "clustering", "report"}
    # `index` always runs but writes the same table: nothing below it starts.
    fake = FakeDVC(same_outs={"index"})
    rp.schedule(ORDER, UPSTREAM, {"index"}, fake, 2)
    assert fake.started() == ["index"]
    # nmf's params changed but it writes the same W: nmf_k3 is skipped.
    fake = FakeDVC(same_outs={"nmf"})
    rp.schedule(ORDER, UPSTREAM, {"nmf"}, fake, 2)
    assert fake.started() == ["nmf"]
    # reduce changes and nmf's W comes out the same: nmf_k3 still runs (it reads reduce too).
    fake = FakeDVC(same_outs={"nmf"})
    rp.schedule(ORDER, UPSTREAM, {"reduce"}, fake, 3)
    assert sorted(fake.started()) == sorted(set(ORDER) - {"index"})
    check_order(fake.events, UPSTREAM)


def test_the_longest_remaining_path_starts_first():
    # One job: after `reduce`, the stage with the most work on its path to the end goes first
    # (nmf: 2 s, then nmf_k3 2 s), then the slow ward tree (3 s), then nmf_k3 (2 s).
    cost = {s: 1.0 for s in ORDER} | {"nmf": 2.0, "nmf_k3": 2.0, "ward": 3.0}
    fake = FakeDVC(seconds=0.001)
    rp.schedule(ORDER, UPSTREAM, {"index"}, fake, 1, cost=cost)
    assert fake.started()[:5] == ["index", "reduce", "nmf", "ward", "nmf_k3"]


def test_a_failure_starts_nothing_more_and_lets_the_running_finish():
    fake = FakeDVC(fail="km2", durations={"km2": 0.0, "nmf": 0.5})  # nmf ends after km2 fails
    outcomes = rp.schedule(ORDER, UPSTREAM, {"index"}, fake, 2)
    failed = [o for o in outcomes if o.error]
    assert [o.stage for o in failed] == ["km2"]
    started = fake.started()
    assert "clustering" not in started and "report" not in started
    ends = [s for _, kind, s in fake.events if kind == "end"]
    assert sorted(ends) == sorted(started)  # every started stage ran to its end
    assert set(started) == {"index", "reduce", "nmf", "km2"}  # the two first after reduce


def test_the_prediction_is_the_sum_on_one_job_and_the_longest_chain_on_many():
    seconds = {s: 1.0 for s in ORDER} | {"ward": 4.0}
    times = [rp.simulate(ORDER, UPSTREAM, seconds, j) for j in (1, 2, 3, 4, 64)]
    assert times[0] == sum(seconds.values()) == 14.0
    assert times[-1] == 8.0  # index, reduce, ward, clustering, report
    assert times == sorted(times, reverse=True) and times[1] < times[0]
    # two jobs: index, reduce (to 2 s); ward (to 6 s) beside nmf, km2, km3, gmm3 (to 6 s); then
    # nmf_k3 beside audit (to 7 s), clustering, report: 9 s
    assert times[1] == 9.0


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="jobs"):
        rp.schedule(ORDER, UPSTREAM, set(), FakeDVC(), 0)
    with pytest.raises(ValueError, match="upstream"):
        rp.schedule(["b", "a"], {"a": [], "b": ["a"]}, {"a"}, FakeDVC(), 1)


def test_entries_a_run_adds_to_a_lock_file_take_the_serial_order(tmp_path):
    (tmp_path / ".dvc/tmp").mkdir(parents=True)
    entry = "  {0}:\n    cmd: python -m stages.grid_point {0}\n"
    lock = tmp_path / "grid/dvc.lock"
    lock.parent.mkdir()
    # kmeans@2 and gmm@3 were in the file; ward, then kmeans@3 finished in the parallel run
    names = ["kmeans@2", "gmm@3", "ward", "kmeans@3"]
    lock.write_text("schema: '2.0'\nstages:\n" + "".join(entry.format(n) for n in names))
    plan = rp.Plan(order=["grid/dvc.yaml:" + n for n in ["kmeans@2", "kmeans@3", "gmm@3", "ward"]],
                   upstream={}, changed=set(),
                   lock_entry={f"grid/dvc.yaml:{n}": ("grid/dvc.lock", n) for n in names})
    reader = rp.LockReader(tmp_path)
    rewritten = reader.order_new_entries(plan, {"grid/dvc.lock": ["kmeans@2", "gmm@3"]})
    assert rewritten == ["grid/dvc.lock"]
    serial = ["kmeans@2", "gmm@3", "kmeans@3", "ward"]
    assert lock.read_text() == ("schema: '2.0'\nstages:\n"
                                + "".join(entry.format(n) for n in serial))
    assert reader.order_new_entries(plan, {"grid/dvc.lock": ["kmeans@2", "gmm@3"]}) == []


def md5s(repo: Path, folders=("data/clusters",)) -> dict[str, str]:
    return {p.relative_to(repo).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
            for f in folders for p in sorted((repo / f).rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_grid_points_in_parallel_end_as_the_serial_run(e2e_base, tmp_path):
    """Two jobs force-run K-Means and GMM points through DVC at once: the lock files and every
    grid output are byte for byte those of the serial build, and DVC finds nothing to do."""
    repo = e2e_copy(e2e_base, tmp_path / "copy").repo
    locks = {f: (repo / f).read_bytes() for f in ("dvc.lock", "grid/dvc.lock")}
    outputs = md5s(repo)
    out = sh(repo, sys.executable, str(PROJECT / "scripts/repro_parallel.py"), "-j", "2",
             "-f", "-s", "grid/dvc.yaml:kmeans", "grid/dvc.yaml:gmm")
    assert "3 of 3 stages started, 2 at once" in out
    for stage in ("kmeans@2", "kmeans@3", "gmm@3"):
        assert f"grid/dvc.yaml:{stage}: unchanged" in out  # ran, same outputs as the lock's
    assert {f: (repo / f).read_bytes() for f in locks} == locks
    assert md5s(repo) == outputs
    status = sh(repo, sys.executable, "-m", "dvc", "status", "grid/dvc.yaml")
    assert "Data and pipelines are up to date" in status
