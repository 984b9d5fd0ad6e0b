"""Time one fresh_windows_sensor tick with 10 new windows after 100, then 10,000 windows of history.

Usage: python -m bench.bench_sensor
A scratch database is created on BABYLON_BENCH_ADMIN_URL (default: the local server) and dropped.
The tick's cost should follow the 10 new windows, not the history: both figures come from this run,
without and then with the "createdAt"/"updatedAt" indexes the README asks a deployment to add (the
game has neither, so without them a tick scans the table).
"""

import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta

import dagster as dg
import psycopg

from babylon_assets.trajectories.models import hour_floor, window_key
from bench.scratch import scratch_database
from resources.database import DatabaseResource
from sensors.fresh_windows import DiscoveryCursor, fresh_windows_sensor

AGENTS_PER_WINDOW = 10
NEW_WINDOWS = 10
TICKS = 15
# Small but real step payloads, so the table has a realistic width next to its index.
STEPS_JSON = "[" + ",".join(f'{{"stepNumber": {n}, "reward": 0.1}}' for n in range(6)) + "]"
HOUR_KEY = 'YYYY-MM-DD"T"HH24:00'


def insert_windows(url: str, first_hours_ago: int, last_hours_ago: int, now: datetime) -> None:
    """AGENTS_PER_WINDOW game rows in every window from `first_hours_ago` down to `last_hours_ago`."""
    with psycopg.connect(url) as conn:
        conn.execute(
            """
            INSERT INTO "trajectories" ("id", "trajectoryId", "agentId", "startTime", "endTime", "durationMs",
                "windowId", "stepsJson", "rewardComponentsJson", "metricsJson", "metadataJson", "totalReward",
                "episodeLength", "finalStatus", "createdAt", "updatedAt")
            SELECT format('w%%s-a%%s', h, a), format('w%%s-a%%s', h, a), format('agent-%%s', a),
                   %(top)s - make_interval(hours => h), %(top)s - make_interval(hours => h) + interval '50 minutes',
                   3000000, to_char(%(top)s - make_interval(hours => h), %(key)s), %(steps)s, '{}', '{}', '{}',
                   0.6, 6, 'completed', %(top)s - make_interval(hours => h) + interval '1 hour',
                   %(top)s - make_interval(hours => h) + interval '1 hour'
            FROM generate_series(%(last)s::int, %(first)s::int) AS h, generate_series(1, %(agents)s::int) AS a
            """,
            {
                "top": hour_floor(now).replace(tzinfo=None),
                "key": HOUR_KEY,
                "steps": STEPS_JSON,
                "first": first_hours_ago,
                "last": last_hours_ago,
                "agents": AGENTS_PER_WINDOW,
            },
        )
        conn.execute('ANALYZE "trajectories"')


def time_ticks(instance: dg.DagsterInstance, cursor: str) -> tuple[float, int]:
    """Median tick time in ms over TICKS ticks from `cursor`, and the runs one tick requests."""
    timings: list[float] = []
    requested = 0
    for _ in range(TICKS):
        context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"database": DatabaseResource()})
        started = time.perf_counter()
        result = fresh_windows_sensor(context)
        timings.append((time.perf_counter() - started) * 1000)
        assert isinstance(result, dg.SensorResult)
        requested = len(result.run_requests or [])
    return statistics.median(timings), requested


def main() -> int:
    with scratch_database() as url:
        os.environ["DATABASE_URL"] = url
        now = datetime.now(UTC)
        # The 10 new windows end at least an hour ago, so they are complete whatever the minute (the settle
        # delay is 10 minutes); the history lies before them.
        newest, oldest_new = 2, NEW_WINDOWS + 1
        # Just before the new windows' rows were written (an hour after each starts), after the history's.
        written = hour_floor(now) - timedelta(hours=oldest_new - 1, minutes=1)
        cursor = DiscoveryCursor(watermark=written).model_dump_json()
        insert_windows(url, oldest_new, newest, now)
        figures: list[tuple[str, int, float, int]] = []
        with dg.instance_for_test() as instance:
            for history in (100, 10_000):
                registered = len(instance.get_dynamic_partitions("windows"))
                first_old = oldest_new + 1 + registered
                last_old = oldest_new + history
                insert_windows(url, last_old, first_old, now)
                instance.add_dynamic_partitions(
                    "windows",
                    [window_key(hour_floor(now) - timedelta(hours=h)) for h in range(first_old, last_old + 1)],
                )
                figures.append(("no index", history, *time_ticks(instance, cursor)))
            with psycopg.connect(url, autocommit=True) as conn:
                for column in ("createdAt", "updatedAt"):
                    conn.execute(f'CREATE INDEX ON "trajectories" ("{column}")')
                conn.execute('ANALYZE "trajectories"')
            figures.append(("indexed", 10_000, *time_ticks(instance, cursor)))
        for _, _, _, requested in figures:
            if requested != NEW_WINDOWS:
                raise RuntimeError(f"a tick requested {requested} runs, not the {NEW_WINDOWS} new windows")
        print(f"fresh_windows_sensor tick, {NEW_WINDOWS} new windows x {AGENTS_PER_WINDOW} agents, median of {TICKS}:")
        for label, history, median_ms, requested in figures:
            trajectories = history * AGENTS_PER_WINDOW
            print(
                f"  history {history:>6,} windows ({trajectories:>7,} trajectories), {label:8}: "
                f"{median_ms:7.2f} ms, {requested} runs requested"
            )
        baseline = figures[0][2]
        print(f"  ratio 10,000 / 100 windows of history, no index: {figures[1][2] / baseline:.2f}x")
        print(f"  ratio 10,000 indexed / 100 no index:          {figures[2][2] / baseline:.2f}x (same run)")
        return 0


if __name__ == "__main__":
    sys.exit(main())
