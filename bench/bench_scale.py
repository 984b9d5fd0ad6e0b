"""Windows in process vs on 2 and 4 Celery workers, against a local judge that answers after a fixed latency.

    python -m bench.bench_scale [--windows 100] [--agents 8] [--latency 0.2] [--workers 2 4]

Needs RabbitMQ on 127.0.0.1:5672 and Redis on 127.0.0.1:6379. For every configuration a scratch database
(BABYLON_BENCH_ADMIN_URL, default the local server) gets the same simulated windows, then
raw -> validated -> scored runs for every window with the RULER judge:
- in process: one window after the other in this process, as `babylon train` does;
- N workers: `babylon worker` x N and the Dagster daemon on a fresh instance, one backfill of all windows.
Wall time is from the first window's start (the backfill's submission) to the last window scored; the
workers' and daemon's start-up is shown apart. The databases are dropped afterwards.
"""

import argparse
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from babylon_assets.instance import instance_environment
from babylon_assets.judging.assets import scored_groups
from babylon_assets.partitions import WINDOW_PARTITIONS
from babylon_assets.trajectories.assets import raw_trajectories, validated_windows
from babylon_assets.trajectories.simulate import simulate
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
from tests.support.judge_server import JudgeRequest, JudgeServer, Reply, by_content

FIRST_WINDOW = datetime(2026, 1, 1, tzinfo=UTC)
JUDGE_KEY = "bench"


def in_process(url: str, keys: list[str], judge: JudgeResource) -> float:
    os.environ["DATABASE_URL"] = url
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(WINDOW_PARTITIONS, keys)
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
    return time.perf_counter() - started


def on_workers(url: str, keys: list[str], workers: int, api_base: str) -> tuple[float, float]:
    """(start-up seconds, wall seconds) of one backfill of `keys` on `workers` Celery workers."""
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
        # Enough runs in flight to keep every worker busy.
        "BABYLON_MAX_CONCURRENT_RUNS": str(2 * workers),
        "BABYLON_JUDGE": "ruler",
        "BABYLON_JUDGE_API_BASE": api_base,
        "BABYLON_JUDGE_API_KEY": JUDGE_KEY,
        **instance_environment(url, folder / "dagster_home"),
    }
    began = time.perf_counter()
    processes = [start_worker(environment, folder / f"worker-{n}.log") for n in range(workers)]
    try:
        deadline = time.monotonic() + 600
        for n, worker in enumerate(processes):
            wait_until_serving(worker, folder / f"worker-{n}.log", deadline)
        os.environ.update({name: environment[name] for name in ("DATABASE_URL", "DAGSTER_HOME")})
        processes.append(start_daemon(environment, folder / "daemon.log"))
        with dg.DagsterInstance.get() as instance:
            startup = time.perf_counter() - began
            started = time.perf_counter()
            launch_window_backfill(instance, keys)
            while len(instance.get_materialized_partitions(dg.AssetKey("scored_groups"))) < len(keys):
                failed = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
                if failed or time.monotonic() > deadline:
                    raise SystemExit(f"{len(failed)} run(s) failed or time ran out; see {folder}")
                time.sleep(0.2)
            return startup, time.perf_counter() - started
    finally:
        for process in processes:
            stop(process)


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
        rows: list[tuple[str, float, float | None]] = []
        with scratch_database() as url:
            keys = simulate(url, agents=args.agents, windows=args.windows, seed=1, start=FIRST_WINDOW).windows
            rows.append(("in process", in_process(url, keys, judge), None))
        for workers in args.workers:
            with scratch_database() as url:
                simulate(url, agents=args.agents, windows=args.windows, seed=1, start=FIRST_WINDOW)
                startup, wall = on_workers(url, keys, workers, server.api_base)
                rows.append((f"{workers} Celery workers", wall, startup))
        requests = server.request_count

    baseline = rows[0][1]
    print(
        f"{args.windows} windows x {args.agents} agents, judge latency {args.latency * 1000:.0f} ms, "
        f"{requests} judge requests in all, {os.cpu_count()} CPU(s)"
    )
    for name, seconds, setup in rows:
        started = "" if setup is None else f"  (+{setup:5.1f} s start-up)"
        print(
            f"{name:18}: {seconds:7.1f} s  {args.windows / seconds * 60:6.1f} windows/min  "
            f"{baseline / seconds:4.2f}x in process{started}"
        )


if __name__ == "__main__":
    main()
