"""Per-window run overhead: window chains launched as runs through the instance's run launcher vs the same
chain materialized in one process.

    python -m bench.bench_runs [--windows 8] [--agents 5] [--concurrent 1]

A scratch database (BABYLON_BENCH_ADMIN_URL) gets `--windows` simulated windows. Then, with the local
profile's outcome judge (no judge latency, so only the platform's own cost shows):
- baseline: raw -> validated -> scored for every window, one `dg.materialize` after the other in this
  process, the definitions already loaded;
- launched: the Dagster daemon on a fresh instance of the project's dagster.yaml, one backfill of the same
  windows; the run launcher starts one run worker process per window (`--concurrent` at a time).
It prints the wall time per window of both (the launched one from the backfill's submission to the last
window scored, the daemon's start-up apart), the median run's own duration, and the ratio (target at
most 2x). The database is dropped afterwards.
"""

import argparse
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from babylon_assets.judging.assets import scored_groups
from babylon_assets.partitions import WINDOW_PARTITIONS
from babylon_assets.simulation.writer import simulate
from babylon_assets.tools.instance import instance_environment, prepare_instance
from babylon_assets.trajectories.assets import raw_trajectories, validated_windows
from bench.scratch import scratch_database
from resources.database import DatabaseResource
from resources.judge import JudgeResource
from tests.support.celery_cluster import launch_window_backfill, start_daemon, stop

FIRST_WINDOW = datetime(2026, 1, 1, tzinfo=UTC)
TARGET_RATIO = 2.0


def in_process(url: str, keys: list[str]) -> float:
    """Seconds per window, materializing the chain in this process."""
    os.environ["DATABASE_URL"] = url
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(WINDOW_PARTITIONS, keys)
    resources = {"database": DatabaseResource(), "judge": JudgeResource(kind="outcome")}
    assets = [raw_trajectories, validated_windows, scored_groups]
    dg.materialize(assets, partition_key=keys[0], resources=resources, instance=instance)  # warm-up
    started = time.perf_counter()
    for key in keys:
        if not dg.materialize(assets, partition_key=key, resources=resources, instance=instance).success:
            raise SystemExit(f"window {key} failed in process")
    return (time.perf_counter() - started) / len(keys)


def launched(url: str, keys: list[str], concurrent: int) -> tuple[float, float, float]:
    """(daemon start-up s, wall s per window, median run duration s) of one backfill of `keys`."""
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
    os.environ.update(
        {name: environment[name] for name in ("DATABASE_URL", "DAGSTER_HOME", "BABYLON_MAX_CONCURRENT_RUNS")}
    )
    prepare_instance(url, home)
    began = time.perf_counter()
    daemon = start_daemon(environment, folder / "daemon.log")
    try:
        with dg.DagsterInstance.get() as instance:
            startup = time.perf_counter() - began
            started = time.perf_counter()
            launch_window_backfill(instance, keys)
            deadline = time.monotonic() + 900
            while len(instance.get_materialized_partitions(dg.AssetKey("scored_groups"))) < len(keys):
                failed = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
                if failed or time.monotonic() > deadline:
                    raise SystemExit(f"{len(failed)} run(s) failed or time ran out; see {folder}")
                time.sleep(0.1)
            wall = time.perf_counter() - started
            records = instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.SUCCESS]))
            durations = [r.end_time - r.start_time for r in records if r.start_time and r.end_time]
            return startup, wall / len(keys), statistics.median(durations)
    finally:
        stop(daemon)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--windows", type=int, default=8)
    parser.add_argument("--agents", type=int, default=5)
    parser.add_argument("--concurrent", type=int, default=1, help="runs in flight at once")
    args = parser.parse_args()

    with scratch_database() as url:
        keys = simulate(url, agents=args.agents, windows=args.windows, seed=1, start=FIRST_WINDOW).windows
        baseline = in_process(url, keys)
    with scratch_database() as url:
        simulate(url, agents=args.agents, windows=args.windows, seed=1, start=FIRST_WINDOW)
        startup, per_window, run_median = launched(url, keys, args.concurrent)

    print(f"{args.windows} windows x {args.agents} agents, outcome judge, {args.concurrent} run(s) at a time")
    print(f"baseline: in one process  : {baseline:6.2f} s per window")
    print(
        f"launched runs             : {per_window:6.2f} s per window ({per_window / baseline:.1f}x baseline, "
        f"target <= {TARGET_RATIO:g}x); median run {run_median:.2f} s; daemon start-up {startup:.1f} s"
    )


if __name__ == "__main__":
    main()
