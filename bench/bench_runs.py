"""Per-window run overhead: window chains launched as runs through the instance's run launcher vs the same
chain materialized in one process.

    python -m bench.bench_runs [--windows 16] [--agents 5] [--concurrent 1] [--launcher default celery]
        [--repeat 3]

A scratch database (BABYLON_BENCH_ADMIN_URL) gets `--windows` simulated windows. Then, with the local
profile's outcome judge (no judge latency, so only the platform's own cost shows):
- baseline: raw -> validated -> scored for every window, one `dg.materialize` after the other in this
  process, the definitions already loaded, on the project's instance (dagster.yaml: runs and events in
  PostgreSQL, as launched runs store them); the same on an in-memory instance is shown for reference;
- launched: the Dagster daemon on a fresh instance of the project's dagster.yaml, one backfill of the same
  windows, `--concurrent` runs at a time; with the default launcher each run is a process forked from the
  daemon's warm forkserver (tools/run_launcher.py), with `--launcher celery` a task on `--concurrent`
  `babylon worker`s, four times as many runs in flight as the README says (needs RabbitMQ on 5672 and Redis
  on 6379).
It prints the baseline's time per window and, per launcher, the median run's wall time from the moment it has a
process (default: its launch, which forks it; Celery: its task's start in a pool process) to its end, with its
ratio to the baseline (target at most 2x); then the time per window from the first run's
submission to the last run's end, which adds the queue: the daemon hands out runs once a second, and the
first launched run waits for the forkserver's imports. The backfill daemon's pick-up (here its start-up, otherwise
up to its fixed 30 s interval, once per backfill) is shown apart. Medians of `--repeat` runs. The databases
are dropped afterwards.
"""

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, get_args

import dagster as dg
from dagster._core.events import DagsterEventType
from pydantic import BaseModel, ConfigDict

from babylon_assets.judging.assets import scored_groups
from babylon_assets.partitions import WINDOW_PARTITIONS
from babylon_assets.simulation.writer import simulate
from babylon_assets.tools.instance import instance_environment, prepare_instance
from babylon_assets.tools.workers import BACKEND_ENV, BROKER_ENV
from babylon_assets.trajectories.assets import raw_trajectories, validated_windows
from bench.scratch import scratch_database
from resources.database import DatabaseResource
from resources.judge import JudgeResource
from tests.support.celery_cluster import (
    delete_windows_queue,
    launch_window_backfill,
    require_brokers,
    start_daemon,
    start_worker,
    stop,
    wait_until_serving,
)
from tests.support.dagster_instance import drop_dagster_database

FIRST_WINDOW = datetime(2026, 1, 1, tzinfo=UTC)
TARGET_RATIO = 2.0


def in_process(url: str, keys: list[str], instance: dg.DagsterInstance) -> float:
    """Seconds per window, materializing the chain in this process on `instance`."""
    os.environ["DATABASE_URL"] = url
    instance.add_dynamic_partitions(WINDOW_PARTITIONS, keys)
    resources = {"database": DatabaseResource(), "judge": JudgeResource(kind="outcome")}
    assets = [raw_trajectories, validated_windows, scored_groups]
    # Events go to the instance as in a launched run, not also to this terminal (a screenful per window).
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    dg.materialize(assets, partition_key=keys[0], resources=resources, instance=instance, run_config=quiet)
    started = time.perf_counter()
    for key in keys:
        result = dg.materialize(assets, partition_key=key, resources=resources, instance=instance, run_config=quiet)
        if not result.success:
            raise SystemExit(f"window {key} failed in process")
    return (time.perf_counter() - started) / len(keys)


def on_project_instance(url: str, keys: list[str]) -> float:
    """in_process on a fresh instance of the project's dagster.yaml."""
    home = Path(tempfile.mkdtemp(prefix="bench-runs-")) / "dagster_home"
    prepare_instance(url, home)
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            return in_process(url, keys, instance)
    finally:
        drop_dagster_database(url)


class Launched(BaseModel):
    """One backfill's figures, in seconds."""

    model_config = ConfigDict(frozen=True)

    pick_up: float
    per_window: float
    median_run: float


Launcher = Literal["default", "celery"]


def run_time(instance: dg.DagsterInstance, record: dg.RunRecord, launcher: Launcher) -> float:
    """A run's wall time from the moment it has a process to its end, without its wait in a queue: with the default
    launcher from its launch (the daemon's "starting" event, written just before the launcher forks the run's
    process), on Celery from its task's start in a worker's pool process (the run worker's "Started process"
    event; before it the run waits in the broker, by design, for a free process)."""
    run_id = record.dagster_run.run_id
    if launcher == "default":
        (start,) = instance.all_logs(run_id, of_type=DagsterEventType.RUN_STARTING)
    else:
        engine = instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT)
        (start,) = [event for event in engine if event.message.startswith("Started process for run")]
    return (record.end_time or 0.0) - start.timestamp


def launched(url: str, keys: list[str], launcher: Launcher, concurrent: int) -> Launched:
    """One backfill of `keys` through the daemon and the run launcher: the default one (each run forked from
    the daemon's warm forkserver) or Celery's (`concurrent` `babylon worker` processes, whose pool processes
    are forked once with the code imported, RabbitMQ and Redis on 127.0.0.1)."""
    folder = Path(tempfile.mkdtemp(prefix="bench-runs-"))
    home = folder / "dagster_home"
    environment = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
        "BABYLON_HOME": str(folder),
        "BABYLON_PROFILE": "local",
        "BABYLON_MAX_CONCURRENT_RUNS": str(concurrent),
        **instance_environment(url, home),
    }
    if launcher == "celery":
        settings = require_brokers()
        delete_windows_queue()
        environment.update({BROKER_ENV: settings.broker, BACKEND_ENV: settings.backend})
        # As the README says to set it for workers: four times their processes, so that each has its next run
        # waiting in the broker when one ends, instead of waiting for the daemon's next dequeue (every second).
        environment["BABYLON_MAX_CONCURRENT_RUNS"] = str(4 * concurrent)
    saved = dict(os.environ)
    os.environ.update(environment)  # the dagster.yaml written and the instance read here are the workers'
    processes: list[subprocess.Popen[bytes]] = []
    try:
        prepare_instance(url, home)
        if launcher == "celery":
            processes = [start_worker(environment, folder / f"worker-{n}.log") for n in range(concurrent)]
            for n, worker in enumerate(processes):
                wait_until_serving(worker, folder / f"worker-{n}.log", time.monotonic() + 300)
        with dg.DagsterInstance.get() as instance:
            submitted = time.time()
            launch_window_backfill(instance, keys)
            # The backfill daemon's first look for backfills is at its start, the next 30 s later.
            processes.append(start_daemon(environment, folder / "daemon.log"))
            deadline = time.monotonic() + 900
            while len(instance.get_materialized_partitions(dg.AssetKey("scored_groups"))) < len(keys):
                failed = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
                if failed or time.monotonic() > deadline:
                    raise SystemExit(f"{len(failed)} run(s) failed or time ran out; see {folder}")
                time.sleep(0.1)
            records = instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.SUCCESS]))
            first_submitted = min(record.create_timestamp.timestamp() for record in records)
            last_end = max(record.end_time or 0.0 for record in records)
            return Launched(
                pick_up=first_submitted - submitted,
                per_window=(last_end - first_submitted) / len(keys),
                median_run=statistics.median(run_time(instance, record, launcher) for record in records),
            )
    finally:
        for process in processes:
            stop(process)
        drop_dagster_database(url)
        os.environ.clear()
        os.environ.update(saved)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--windows", type=int, default=16)
    parser.add_argument("--agents", type=int, default=5)
    parser.add_argument("--concurrent", type=int, default=1, help="runs in flight at once (Celery: workers)")
    parser.add_argument("--launcher", choices=get_args(Launcher), nargs="+", default=list(get_args(Launcher)))
    parser.add_argument("--repeat", type=int, default=3, help="runs of each measurement; medians are printed")
    args = parser.parse_args()

    def simulated(url: str) -> list[str]:
        return simulate(url, agents=args.agents, windows=args.windows, seed=1, start=FIRST_WINDOW).windows

    in_memory: list[float] = []
    baseline: list[float] = []
    runs: dict[str, list[Launched]] = {launcher: [] for launcher in args.launcher}
    for _ in range(args.repeat):
        with scratch_database() as url:
            in_memory.append(in_process(url, simulated(url), dg.DagsterInstance.ephemeral()))
        with scratch_database() as url:
            baseline.append(on_project_instance(url, simulated(url)))
        for launcher in args.launcher:
            with scratch_database() as url:
                runs[launcher].append(launched(url, simulated(url), launcher, args.concurrent))

    median = statistics.median
    print(
        f"{args.windows} windows x {args.agents} agents, outcome judge, {args.concurrent} run(s) at a time "
        f"(Celery: worker processes), medians of {args.repeat}"
    )
    print(
        f"baseline: in one process    : {median(baseline):6.2f} s per window "
        f"(in-memory instance: {median(in_memory):.2f} s)"
    )
    for launcher, measured in runs.items():
        per_run = median(run.median_run for run in measured)
        print(
            f"launched, {launcher:7} launcher: {per_run:6.2f} s per run, given a process "
            f"({per_run / median(baseline):.1f}x baseline, target <= {TARGET_RATIO:g}x); "
            f"{median(run.per_window for run in measured):.2f} s per window from the first submission to the "
            f"last end (queue included); backfill picked up after "
            f"{median(run.pick_up for run in measured):.1f} s (the daemon's start-up)"
        )


if __name__ == "__main__":
    main()
