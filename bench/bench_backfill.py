"""A year of hourly windows in Dagster: 8,760 registered partitions and one backfill of all of them.

    python -m bench.bench_backfill [--partitions 8760] [--submit-seconds 60]

On a fresh instance in a scratch database (BABYLON_BENCH_ADMIN_URL, default the local server), measures
against the same steps for 100 partitions:
- registering the partitions (what the fresh-windows sensor does, in one call);
- reading them back (every sensor tick, the UI's partition bar);
- building and storing one backfill of raw -> validated -> scored over all of them (the UI's "Materialize all");
- the real daemon on it: seconds until its backfill daemon submits the first run (planning), and runs
  submitted per second over `--submit-seconds` (the instance launches none: max_concurrent_runs 0, so the
  runs stay queued and only the daemon's own work is timed);
- the real webserver meanwhile: the GraphQL query of the asset page's partition bar for scored_groups
  (partition stats and statuses), median of 5.
The databases are dropped afterwards.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import dagster as dg
import yaml
from dagster._core.storage.tags import BACKFILL_ID_TAG
from pydantic import BaseModel, ConfigDict

from babylon_assets.partitions import WINDOW_PARTITIONS
from babylon_assets.tools.instance import YamlValue, ensure_dagster_database, instance_config, instance_environment
from babylon_assets.trajectories.models import window_key
from bench.scratch import scratch_database
from tests.support.celery_cluster import ROOT, launch_window_backfill, start, start_daemon, stop
from tests.support.dagster_instance import drop_dagster_database
from tests.test_webserver import free_port, graphql, wait_for_ui

FIRST_WINDOW = datetime(2026, 1, 1, tzinfo=UTC)
PARTITION_BAR_QUERY = """
{ assetNodes(assetKeys: [{path: ["scored_groups"]}]) {
    partitionStats { numMaterialized numPartitions numFailed numMaterializing }
    assetPartitionStatuses { ... on DefaultPartitionStatuses {
      materializedPartitions failedPartitions unmaterializedPartitions materializingPartitions } } } }
"""


class Measured(BaseModel):
    model_config = ConfigDict(frozen=True)

    registering: float
    read: float
    backfill: float
    first_run: float
    runs_per_second: float
    partition_bar: float


def partition_count(port: int) -> int:
    nodes = graphql(port, PARTITION_BAR_QUERY)["assetNodes"]
    assert isinstance(nodes, list) and isinstance(nodes[0], dict)
    stats = nodes[0]["partitionStats"]
    assert isinstance(stats, dict) and isinstance(stats["numPartitions"], int)
    return stats["numPartitions"]


def backfill_runs(instance: dg.DagsterInstance, backfill_id: str) -> int:
    return instance.get_runs_count(dg.RunsFilter(tags={BACKFILL_ID_TAG: backfill_id}))


def measure(partitions: int, submit_seconds: float) -> Measured:
    """The figures for `partitions` windows on a fresh instance."""
    keys = [window_key(FIRST_WINDOW + timedelta(hours=hour)) for hour in range(partitions)]
    with scratch_database() as url:
        folder = Path(tempfile.mkdtemp(prefix="bench-backfill-"))
        home = folder / "dagster_home"
        home.mkdir()
        config = instance_config(url)
        concurrency = cast(dict[str, dict[str, YamlValue]], config["concurrency"])
        concurrency["runs"]["max_concurrent_runs"] = 0
        (home / "dagster.yaml").write_text(yaml.safe_dump(config))
        ensure_dagster_database(url)
        environment = {**os.environ, "PYTHONPATH": str(ROOT), **instance_environment(url, home)}
        os.environ.update({name: environment[name] for name in ("DATABASE_URL", "DAGSTER_HOME")})
        processes: list[subprocess.Popen[bytes]] = []
        try:
            with dg.DagsterInstance.from_config(str(home)) as instance:
                started = time.perf_counter()
                instance.add_dynamic_partitions(WINDOW_PARTITIONS, keys)
                register = time.perf_counter() - started
                started = time.perf_counter()
                assert len(instance.get_dynamic_partitions(WINDOW_PARTITIONS)) == partitions
                read = time.perf_counter() - started
                # The backfill registers the partitions again (a no-op for known keys), as the UI's path does.
                started = time.perf_counter()
                backfill_id = launch_window_backfill(instance, keys)
                backfill = time.perf_counter() - started

                port = free_port()
                webserver_command = [str(Path(sys.executable).with_name("dagster-webserver"))]
                webserver_command += ["-h", "127.0.0.1", "-p", str(port), "-w", "workspace.yaml"]
                webserver = start(webserver_command, environment, folder / "webserver.log")
                processes.append(webserver)
                daemon = start_daemon(environment, folder / "daemon.log")
                processes.append(daemon)
                began = time.perf_counter()
                while backfill_runs(instance, backfill_id) == 0:
                    if daemon.poll() is not None or time.perf_counter() - began > 600:
                        raise SystemExit(f"the daemon submitted no run; see {folder / 'daemon.log'}")
                    time.sleep(0.2)
                # From the daemon's start: its own start-up (about the webserver's) is in this figure.
                first_run = time.perf_counter() - began
                counted_from, runs_before = time.perf_counter(), backfill_runs(instance, backfill_id)
                wait_for_ui(port, webserver, "dagster-webserver")
                assert partition_count(port) == partitions
                timings = []
                for _ in range(5):
                    started = time.perf_counter()
                    partition_count(port)
                    timings.append(time.perf_counter() - started)
                while time.perf_counter() - counted_from < submit_seconds:
                    if backfill_runs(instance, backfill_id) == partitions:
                        break
                    time.sleep(0.5)
                submitted = backfill_runs(instance, backfill_id) - runs_before
                rate = submitted / (time.perf_counter() - counted_from)
                return Measured(
                    registering=register,
                    read=read,
                    backfill=backfill,
                    first_run=first_run,
                    runs_per_second=rate,
                    partition_bar=statistics.median(timings),
                )
        finally:
            for process in processes:
                stop(process)
            drop_dagster_database(url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--partitions", type=int, default=8760)
    parser.add_argument("--submit-seconds", type=float, default=60.0)
    args = parser.parse_args()
    # The backfill needs the asset graph: load the code first, so that its import is in neither figure.
    import babylon_assets.definitions  # noqa: F401

    small = measure(100, args.submit_seconds)
    large = measure(args.partitions, args.submit_seconds)
    print(f"{args.partitions} partitions vs 100 ({args.partitions / 100:.0f}x keys; seconds unless said)")
    for name in ("registering", "read", "backfill", "first_run", "partition_bar"):
        many, few = getattr(large, name), getattr(small, name)
        print(f"{name:14}: {many:8.2f} vs {few:7.3f}  ({many / few:6.1f}x)")
    print(
        f"runs submitted: {large.runs_per_second:5.2f}/s vs {small.runs_per_second:5.2f}/s; all {args.partitions} "
        f"window runs submitted in about {args.partitions / large.runs_per_second / 60:.0f} min"
    )


if __name__ == "__main__":
    main()
