"""A year of hourly windows in Dagster: 8,760 registered partitions and one backfill of all of them.

    python -m bench.bench_backfill [--partitions 8760]

On a fresh instance in a scratch database (BABYLON_BENCH_ADMIN_URL, default the local server), measures
against the same steps for 100 partitions:
- registering the partitions (what the fresh-windows sensor does, in one call);
- reading them back (every sensor tick, the UI's partition bar);
- building and storing one backfill of raw -> validated -> scored over all of them (the UI's "Materialize all").
The databases are dropped afterwards.
"""

import argparse
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg

from babylon_assets.instance import prepare_instance
from babylon_assets.partitions import WINDOW_PARTITIONS
from babylon_assets.trajectories.models import window_key
from bench.scratch import scratch_database
from tests.support.celery_cluster import launch_window_backfill
from tests.support.dagster_instance import drop_dagster_database

FIRST_WINDOW = datetime(2026, 1, 1, tzinfo=UTC)


def measure(partitions: int) -> tuple[float, float, float]:
    """(register, read, backfill) seconds for `partitions` windows on a fresh instance."""
    keys = [window_key(FIRST_WINDOW + timedelta(hours=hour)) for hour in range(partitions)]
    with scratch_database() as url:
        home = prepare_instance(url, Path(tempfile.mkdtemp(prefix="bench-backfill-")))
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
                launch_window_backfill(instance, keys)
                backfill = time.perf_counter() - started
                return register, read, backfill
        finally:
            drop_dagster_database(url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--partitions", type=int, default=8760)
    args = parser.parse_args()
    # The backfill needs the asset graph: load the code first, so that its import is in neither figure.
    import babylon_assets.definitions  # noqa: F401

    small = measure(100)
    large = measure(args.partitions)
    print(f"{args.partitions} partitions vs 100 (seconds, ratio)")
    for name, few, many in zip(("register", "read back", "add backfill"), small, large, strict=True):
        print(f"{name:13}: {many:7.2f} s vs {few:6.3f} s  ({many / few:6.1f}x for {args.partitions / 100:.0f}x keys)")


if __name__ == "__main__":
    main()
