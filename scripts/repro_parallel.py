"""`dvc repro` with several stages at once, on every core: independent stages (the grid points,
and the audit stages beside them) run side by side, each as its own ``dvc repro --single-item``.

    python scripts/repro_parallel.py -j 8                  # the whole pipeline, 8 stages at once
    python scripts/repro_parallel.py -j 8 -f -s grid/dvc.yaml   # force every grid point, only them
    python scripts/repro_parallel.py --dry                 # the plan, and what is changed now

It plans what `dvc repro` with the same targets would (DVC's own graph and order, see
:func:`plan`), then runs the stages with :func:`schedule`:

- a stage starts once every stage upstream of it that is in the plan has finished;
- a stage is run when it is changed at the start (``dvc status``), or when a stage upstream of
  it ran and its outputs changed (their hashes in the lock file); any other stage is skipped
  without starting DVC, as `dvc repro` skips it;
- among the stages ready to start, the one on the longest remaining path goes first, with the
  stages' times of the last run (``.dvc/tmp/repro_parallel.json``; 1 s where unknown).

Each stage runs in a ``dvc --wait-for-lock repro --single-item <stage>`` of its own (its output:
``.dvc/tmp/repro_parallel/<stage>.log``). DVC holds its repository lock while it checks a stage
and writes the lock file, and releases it while the stage's command runs (per-path read/write
locks, ``.dvc/tmp/rwlock``, then keep two commands off the same outputs). So the commands run in
parallel and the lock-file updates one at a time. ``dvc.lock`` and ``grid/dvc.lock`` end as a
serial `dvc repro` leaves them: every stage is the same process with the same inputs, an entry
keeps its place in the file, and the entries a run adds are put in the order a serial run
appends them (:meth:`LockReader.order_new_entries`). At the end it checks that every planned
stage is up to date (``--no-check``: skip).

Memory: up to ``-j`` stages run at once, so the peak is about the sum of the ``-j`` largest
stage peaks. The grid points run one thread each (``stages/grid_point.py``), so ``-j`` = the
number of cores keeps every core busy without oversubscribing them.

Cost: every stage starts DVC once more (about 1 s) and DVC's locked work runs one stage at a
time, so stages of a few seconds (the demo's grid points) gain little; points of tens of
seconds and more (10^5 images and up) gain up to ``-j`` times (docs/scaling.md).
"""
from __future__ import annotations

import argparse
import heapq
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

TIMES_FILE = Path(".dvc/tmp/repro_parallel.json")  # stage -> seconds of its last run
LOG_DIR = Path(".dvc/tmp/repro_parallel")  # each stage's `dvc repro` output, of the last run
DEFAULT_COST = 1.0  # seconds assumed for a stage never timed


@dataclass
class Plan:
    """What `dvc repro` would consider: ``order`` (upstream first), each stage's ``upstream``
    stages within the plan, the stages ``changed`` now, and where each stage's lock entry is
    (``lock_entry``: stage -> (lock file, name in it); absent for `.dvc` file stages)."""
    order: list[str]
    upstream: dict[str, list[str]]
    changed: set[str]
    lock_entry: dict[str, tuple[str, str]] = field(default_factory=dict)


@dataclass
class Outcome:
    """One stage as :func:`schedule` ran it."""
    stage: str
    ran: bool  # started (False: skipped, nothing upstream changed)
    outs_changed: bool = False
    seconds: float = 0.0
    error: str | None = None


def critical_paths(order: list[str], upstream: dict[str, list[str]],
                   cost: dict[str, float]) -> dict[str, float]:
    """Each stage's cost plus that of the costliest chain of stages downstream of it."""
    downstream: dict[str, list[str]] = {s: [] for s in order}
    for s in order:
        for u in upstream[s]:
            downstream[u].append(s)
    path: dict[str, float] = {}
    for s in reversed(order):  # downstream first
        path[s] = cost.get(s, DEFAULT_COST) + max((path[d] for d in downstream[s]), default=0.0)
    return path


def schedule(order: list[str], upstream: dict[str, list[str]], changed: Iterable[str],
             run: Callable[[str], Outcome], jobs: int, cost: dict[str, float] | None = None,
             report: Callable[[Outcome], None] = lambda o: None) -> list[Outcome]:
    """Run the stages of a DAG, up to ``jobs`` at once (see the module doc).

    Parameters
    ----------
    order : list of str
        Every stage, each after all of its upstream stages.
    upstream : dict
        Stage -> the stages (in ``order``) whose outputs it reads.
    changed : iterable of str
        The stages changed at the start; they run. A stage downstream of a stage whose
        outputs changed runs too; the others are skipped.
    run : callable
        Runs one stage (called from a worker thread); returns its :class:`Outcome`.
    jobs : int
        How many stages run at once (>= 1).
    cost : dict or None
        Stage -> expected seconds, for the order among ready stages (longest path first).
    report : callable
        Called with every outcome (skips included), in the scheduling thread.

    Returns
    -------
    list of Outcome
        In the order they finished. On the first failure no further stage starts; the
        running ones finish, and the list ends there (the failed outcome has ``error``).
    """
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    index = {s: i for i, s in enumerate(order)}
    for s in order:
        if any(index.get(u, len(order)) >= index[s] for u in upstream[s]):
            raise ValueError(f"{s!r}: an upstream stage is not before it in the order")
    priority = critical_paths(order, upstream, cost or {})
    downstream: dict[str, list[str]] = {s: [] for s in order}
    for s in order:
        for u in upstream[s]:
            downstream[u].append(s)
    waiting = {s: len(upstream[s]) for s in order}
    triggered = set(changed)
    ready: list[tuple[float, int, str]] = []
    done: list[Outcome] = []
    failed = False

    def resolve(outcome: Outcome, todo: list[str]) -> None:
        done.append(outcome)
        report(outcome)
        for d in downstream[outcome.stage]:
            if outcome.outs_changed:
                triggered.add(d)
            waiting[d] -= 1
            if waiting[d] == 0:
                todo.append(d)

    def make_ready(stages: list[str]) -> None:
        while stages:  # skipping a stage can make its downstream stages ready at once
            s = stages.pop()
            if s in triggered:
                heapq.heappush(ready, (-priority[s], index[s], s))
            else:
                resolve(Outcome(s, ran=False), stages)

    make_ready([s for s in reversed(order) if waiting[s] == 0])
    running: dict[Future, str] = {}
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        while running or (ready and not failed):
            while ready and not failed and len(running) < jobs:
                s = heapq.heappop(ready)[2]
                running[pool.submit(run, s)] = s
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in sorted(finished, key=lambda f: index[running[f]]):
                s = running.pop(fut)
                try:
                    outcome = fut.result()
                except Exception as exc:  # noqa: BLE001 - reported as the stage's failure
                    outcome = Outcome(s, ran=True, error=f"{type(exc).__name__}: {exc}")
                if outcome.error is not None:
                    failed = True
                    done.append(outcome)
                    report(outcome)
                    continue
                todo: list[str] = []
                resolve(outcome, todo)
                make_ready(todo)
    return done


def simulate(order: list[str], upstream: dict[str, list[str]], seconds: dict[str, float],
             jobs: int) -> float:
    """The wall time :func:`schedule` takes when every stage runs, stage ``s`` taking
    ``seconds[s]`` (:data:`DEFAULT_COST` where absent), with the same order among ready stages.

    It leaves out that DVC writes the lock files one stage at a time (a fraction of a second a
    stage, see docs/scaling.md), so with many jobs and short stages it is a lower bound.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    cost = {s: seconds.get(s, DEFAULT_COST) for s in order}
    priority = critical_paths(order, upstream, cost)
    index = {s: i for i, s in enumerate(order)}
    waiting = {s: len(upstream[s]) for s in order}
    downstream: dict[str, list[str]] = {s: [] for s in order}
    for s in order:
        for u in upstream[s]:
            downstream[u].append(s)
    ready = [(-priority[s], index[s], s) for s in order if waiting[s] == 0]
    heapq.heapify(ready)
    running: list[tuple[float, int, str]] = []
    now = 0.0
    while ready or running:
        while ready and len(running) < jobs:
            s = heapq.heappop(ready)[2]
            heapq.heappush(running, (now + cost[s], index[s], s))
        now, _, s = heapq.heappop(running)
        for d in downstream[s]:
            waiting[d] -= 1
            if waiting[d] == 0:
                heapq.heappush(ready, (-priority[d], index[d], d))
    return now


# --------------------------------------------------------------------------- DVC side
def _stage_lock(stage) -> tuple[str, str] | None:
    """(lock file relative to the repository, the stage's name in it), for a dvc.yaml stage."""
    name = getattr(stage, "name", None)
    path = Path(stage.dvcfile.relpath)
    if not name or path.suffix != ".yaml":
        return None
    return path.with_suffix(".lock").as_posix(), name


def plan(root: Path, targets: list[str], *, single_item: bool = False,
         force: bool = False) -> Plan:
    """The stages `dvc repro [--single-item] [--force] <targets>` would consider, in DVC's order."""
    from dvc.repo import Repo
    from dvc.repo.reproduce import collect_stages, get_active_graph, plan_repro

    with Repo(str(root)) as repo, repo.lock:
        stages = collect_stages(repo, targets or ["dvc.yaml"])
        graph = get_active_graph(repo.index.graph)
        steps = stages if single_item else plan_repro(graph, stages)
        planned = set(steps)
        order = [s.addressing for s in steps]
        upstream = {s.addressing: [u.addressing for u in graph.successors(s) if u in planned]
                    for s in steps}
        changed = {s.addressing for s in steps if force or s.changed()}
        entries = {s.addressing: e for s in steps if (e := _stage_lock(s)) is not None}
    return Plan(order, upstream, changed, entries)


class LockReader:
    """Reads stages' lock entries while holding DVC's repository lock, so that a lock file is
    never read half-written (DVC rewrites it under that lock)."""

    def __init__(self, root: Path):
        from dvc.lock import make_lock

        self.root = Path(root)
        self._lock = make_lock(str(self.root / ".dvc/tmp/lock"),
                               tmp_dir=str(self.root / ".dvc/tmp"), wait=True)
        self._mutex = threading.Lock()  # one holder per process (the lock is not reentrant)

    def _read(self, lockfiles: Iterable[str]) -> dict[str, dict]:
        import yaml

        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        files: dict[str, dict] = {}
        for lockfile in sorted(set(lockfiles)):
            path = self.root / lockfile
            text = path.read_text() if path.exists() else ""
            files[lockfile] = (yaml.load(text, Loader=loader) or {}).get("stages") or {}
        return files

    def stages(self, lockfiles: Iterable[str]) -> dict[str, list[str]]:
        """Lock file -> the names of its stages, in the file's order."""
        with self._mutex, self._lock:
            return {f: list(entries) for f, entries in self._read(lockfiles).items()}

    def outs(self, entries: dict[str, tuple[str, str]]) -> dict[str, object]:
        """Stage -> the ``outs`` of its lock entry (None where it has none)."""
        with self._mutex, self._lock:
            files = self._read(f for f, _ in entries.values())
        return {s: (files[f].get(name) or {}).get("outs") for s, (f, name) in entries.items()}

    def order_new_entries(self, plan_: Plan, before: dict[str, list[str]]) -> list[str]:
        """Put the entries the run added to each lock file in the plan's order, after the
        entries the file had: where a serial `dvc repro` appends them, as it runs them (DVC
        appends a stage's new entry when it finishes). Returns the lock files rewritten."""
        from dvc.utils.serialize import modify_yaml

        rank = {entry: i for i, s in enumerate(plan_.order)
                if (entry := plan_.lock_entry.get(s)) is not None}
        rewritten = []
        with self._mutex, self._lock:
            for lockfile, names in self._read(before).items():
                old = [n for n in names if n in before[lockfile]]
                added = sorted((n for n in names if n not in before[lockfile]),
                               key=lambda n: rank.get((lockfile, n), len(rank)))
                if old + added == list(names):
                    continue
                with modify_yaml(str(self.root / lockfile)) as data:
                    for name in old + added:
                        data["stages"].move_to_end(name)
                rewritten.append(lockfile)
        return rewritten


def dvc_runner(root: Path, plan_: Plan, *, force: bool, extra: list[str],
               reader: LockReader, before: dict[str, object]) -> Callable[[str], Outcome]:
    """A ``run`` for :func:`schedule`: ``dvc --wait-for-lock repro --single-item <stage>``."""
    def run(stage: str) -> Outcome:
        cmd = [sys.executable, "-m", "dvc", "--wait-for-lock", "repro", "--single-item",
               *(["--force"] if force else []), *extra, stage]
        t0 = time.perf_counter()
        res = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        output = res.stdout + res.stderr
        log = root / LOG_DIR / (stage.replace("/", "_").replace(":", "_") + ".log")
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(f"$ {' '.join(cmd[1:])}\n{output}")
        if res.returncode != 0:
            return Outcome(stage, ran=True, seconds=seconds,
                           error=f"exit {res.returncode}\n{output.strip()}")
        if "didn't change, skipping" in output:
            return Outcome(stage, ran=True, outs_changed=False, seconds=seconds)
        if stage not in plan_.lock_entry:  # a .dvc file stage: assume its outputs changed
            return Outcome(stage, ran=True, outs_changed=True, seconds=seconds)
        after = reader.outs({stage: plan_.lock_entry[stage]})[stage]
        return Outcome(stage, ran=True, outs_changed=after != before.get(stage), seconds=seconds)
    return run


def load_times(root: Path) -> dict[str, float]:
    try:
        return {str(k): float(v) for k, v in json.loads((root / TIMES_FILE).read_text()).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def save_times(root: Path, outcomes: list[Outcome]) -> None:
    times = load_times(root)
    times.update({o.stage: round(o.seconds, 2) for o in outcomes if o.ran and o.error is None})
    path = root / TIMES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(times, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def still_changed(root: Path, order: list[str]) -> list[str]:
    """The planned stages that are changed after the run (always-changed stages left out)."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo, repo.lock:
        wanted = set(order)
        return [s.addressing for s in repo.index.stages
                if s.addressing in wanted and not s.always_changed and s.changed()]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("targets", nargs="*", help="stages or dvc.yaml files (default: dvc.yaml, "
                    "which takes in the grid, as `dvc repro` does)")
    ap.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1,
                    help="stages at once (default: the number of cores)")
    ap.add_argument("-s", "--single-item", action="store_true",
                    help="only the targets, not the stages upstream of them")
    ap.add_argument("-f", "--force", action="store_true", help="run every planned stage")
    ap.add_argument("--no-run-cache", action="store_true", help="passed to `dvc repro`")
    ap.add_argument("--dry", action="store_true", help="print the plan; run nothing")
    ap.add_argument("--predict", type=int, nargs="+", metavar="J",
                    help="print the time a run of every planned stage would take with J jobs, "
                    "from the stages' times of the last runs; run nothing")
    ap.add_argument("--no-check", action="store_true",
                    help="skip the final check that every planned stage is up to date")
    args = ap.parse_args(argv)
    root = Path.cwd()
    p = plan(root, args.targets, single_item=args.single_item, force=args.force)
    if args.dry:
        for s in p.order:
            print(f"{'changed' if s in p.changed else '       '}  {s}  <- {', '.join(p.upstream[s])}")
        return 0
    if args.predict:
        times = load_times(root)
        known = sum(s in times for s in p.order)
        print(f"{known} of {len(p.order)} stages timed ({TIMES_FILE}); the rest "
              f"{DEFAULT_COST:g} s each")
        for j in args.predict:
            print(f"-j {j}: {simulate(p.order, p.upstream, times, j):.1f} s")
        return 0
    reader = LockReader(root)
    before = reader.outs(p.lock_entry)
    names_before = reader.stages(f for f, _ in p.lock_entry.values())
    runner = dvc_runner(root, p, force=args.force,
                        extra=["--no-run-cache"] if args.no_run_cache else [],
                        reader=reader, before=before)
    t0 = time.perf_counter()
    count = [0]

    def report(o: Outcome) -> None:
        if not o.ran:
            return
        count[0] += 1
        what = ("FAILED" if o.error else "changed" if o.outs_changed else "unchanged")
        print(f"[{count[0]}] {o.stage}: {what}, {o.seconds:.1f} s", flush=True)
        if o.error:
            print(o.error, file=sys.stderr, flush=True)

    outcomes = schedule(p.order, p.upstream, p.changed, runner, args.jobs,
                        cost=load_times(root), report=report)
    save_times(root, outcomes)
    reader.order_new_entries(p, names_before)
    ran = sum(o.ran for o in outcomes)
    print(f"{ran} of {len(p.order)} stages started, {args.jobs} at once: "
          f"{time.perf_counter() - t0:.1f} s", flush=True)
    if any(o.error for o in outcomes):
        return 1
    if not args.no_check and (left := still_changed(root, p.order)):
        print("not up to date after the run: " + ", ".join(left), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
