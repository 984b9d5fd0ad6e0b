"""Windows in process vs on 2 and 4 Celery workers, against a local judge that answers after a fixed latency.

    python -m bench.bench_scale [--windows 100] [--agents 8] [--latency 0.2] [--workers 2 4]

Needs RabbitMQ on 127.0.0.1:5672 and Redis on 127.0.0.1:6379. For every configuration a scratch database
(BABYLON_BENCH_ADMIN_URL, default the local server) gets the same simulated windows, then
raw -> validated -> scored runs for every window with the RULER judge:
- in process: one window after the other in this process, as `babylon train` does;
- N workers: `babylon worker` x N and the Dagster daemon, one backfill of all windows, the `judge` pool at N.
Every configuration has the project's instance (dagster.yaml, runs and events in PostgreSQL), so each
window run stores the same events wherever it executes.
Wall time is from the first window's start (the backfill's submission) to the last window scored; the
workers' and daemon's start-up is shown apart. The databases are dropped afterwards.
"""

import argparse
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
from pydantic import BaseModel, ConfigDict

from babylon_assets.judging.assets import JUDGE_POOL, scored_groups
from babylon_assets.partitions import WINDOW_PARTITIONS
from babylon_assets.simulation.writer import simulate
from babylon_assets.tools.instance import instance_environment, prepare_instance
from babylon_assets.tools.workers import preload_window_run_imports
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
from tests.support.judge_server import JudgeRequest, JudgeServer, Reply, by_content

FIRST_WINDOW = datetime(2026, 1, 1, tzinfo=UTC)
JUDGE_KEY = "bench"


class Measured(BaseModel):
    """One configuration's backfill: wall seconds, the workers' start-up (None in process), each window run's
    seconds."""

    model_config = ConfigDict(frozen=True)

    wall: float
    startup: float | None
    windows: list[float]


def window_seconds(instance: dg.DagsterInstance) -> list[float]:
    """Each window run's time from its start to its end, as the instance recorded it."""
    records = instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.SUCCESS]))
    return [record.end_time - record.start_time for record in records if record.start_time and record.end_time]


def in_process(url: str, keys: list[str], judge: JudgeResource) -> Measured:
    """The windows one after the other in this process, on a PostgreSQL instance like the workers'."""
    os.environ["DATABASE_URL"] = url
    folder = prepare_instance(url, Path(tempfile.mkdtemp(prefix="bench-scale-")) / "dagster_home")
    try:
        with dg.DagsterInstance.from_config(str(folder)) as instance:
            instance.add_dynamic_partitions(WINDOW_PARTITIONS, keys)
            # What a worker imports before its pool starts (shown as start-up there), outside the wall time.
            preload_window_run_imports()
            started = time.perf_counter()
            for key in keys:
                result = dg.materialize(
                    [raw_trajectories, validated_windows, scored_groups],
                    partition_key=key,
                    resources={"database": DatabaseResource(), "judge": judge},
                    instance=instance,
                )
                if not result.success:
                    raise SystemExit(f"window {key} failed in process")
            wall = time.perf_counter() - started
            return Measured(wall=wall, startup=None, windows=window_seconds(instance))
    finally:
        drop_dagster_database(url)


def on_workers(url: str, keys: list[str], workers: int, api_base: str) -> Measured:
    """One backfill of `keys` on `workers` Celery workers."""
    settings = require_brokers()
    delete_windows_queue()
    folder = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    environment = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
        "BABYLON_HOME": str(folder),
        "BABYLON_PROFILE": "local",
        "BABYLON_CELERY_BROKER": settings.broker,
        "BABYLON_CELERY_BACKEND": settings.backend,
        # As the README says to set it for workers: four runs in flight per worker process.
        "BABYLON_MAX_CONCURRENT_RUNS": str(4 * workers),
        "BABYLON_JUDGE": "ruler",
        "BABYLON_JUDGE_API_BASE": api_base,
        "BABYLON_JUDGE_API_KEY": JUDGE_KEY,
        **instance_environment(url, folder / "dagster_home"),
    }
    began = time.perf_counter()
    processes = [start_worker(environment, folder / f"worker-{n}.log") for n in range(workers)]
    try:
        deadline = time.monotonic() + 900
        for n, worker in enumerate(processes):
            wait_until_serving(worker, folder / f"worker-{n}.log", deadline)
        os.environ.update({name: environment[name] for name in ("DATABASE_URL", "DAGSTER_HOME")})
        processes.append(start_daemon(environment, folder / "daemon.log"))
        with dg.DagsterInstance.get() as instance:
            # One window judged per worker process at a time, as the README says to set it for workers.
            instance.event_log_storage.set_concurrency_slots(JUDGE_POOL, workers)
            startup = time.perf_counter() - began
            started = time.perf_counter()
            launch_window_backfill(instance, keys)
            while len(instance.get_materialized_partitions(dg.AssetKey("scored_groups"))) < len(keys):
                failed = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
                if failed or time.monotonic() > deadline:
                    raise SystemExit(f"{len(failed)} run(s) failed or time ran out; see {folder}")
                time.sleep(0.2)
            wall = time.perf_counter() - started
            return Measured(wall=wall, startup=startup, windows=window_seconds(instance))
    finally:
        for process in processes:
            stop(process)
        drop_dagster_database(url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--windows", type=int, default=100)
    parser.add_argument("--agents", type=int, default=8)
    parser.add_argument("--latency", type=float, default=0.2, help="seconds the judge takes per answer")
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 4])
    args = parser.parse_args()

    def slow_judge(request: JudgeRequest) -> Reply:
        return by_content(request).model_copy(update={"delay_seconds": args.latency})

    with JudgeServer(slow_judge) as server:
        judge = JudgeResource(kind="ruler", api_base=server.api_base, api_key=JUDGE_KEY)
        rows: list[tuple[str, Measured]] = []
        with scratch_database() as url:
            keys = simulate(url, agents=args.agents, windows=args.windows, seed=1, start=FIRST_WINDOW).windows
            rows.append(("in process", in_process(url, keys, judge)))
        for workers in args.workers:
            with scratch_database() as url:
                simulate(url, agents=args.agents, windows=args.windows, seed=1, start=FIRST_WINDOW)
                rows.append((f"{workers} Celery workers", on_workers(url, keys, workers, server.api_base)))
        requests = server.request_count

    baseline = rows[0][1].wall
    print(
        f"{args.windows} windows x {args.agents} agents, judge latency {args.latency * 1000:.0f} ms, "
        f"{requests} judge requests in all, {os.cpu_count()} CPU(s); the same PostgreSQL instance storage in all"
    )
    for name, measured in rows:
        started = "" if measured.startup is None else f"  (+{measured.startup:5.1f} s start-up)"
        print(
            f"{name:18}: {measured.wall:7.1f} s  {args.windows / measured.wall * 60:6.1f} windows/min  "
            f"{baseline / measured.wall:4.2f}x in process's throughput  "
            f"median window run {statistics.median(measured.windows):5.2f} s{started}"
        )


if __name__ == "__main__":
    main()
