"""Window discovery and `babylon verify` as the game's history grows to 1,000,000 trajectories.

    python -m bench.bench_history [--sizes 10000,100000,1000000] [--repeat 3]

A scratch database (BABYLON_BENCH_ADMIN_URL) gets the game's tables and 10 recent simulated windows of 5
agents (inside the default 168 h lookback), then old history is bulk-loaded into the game's
"trajectories" table, server-side (INSERT ... SELECT FROM generate_series), until it holds each of
`--sizes` rows: one year of hourly windows (8,760, the same at every size, so only the rows grow), 100
agents, one row in ten without a windowId (the plugin logger's). At each size the bench times, as
medians of `--repeat`: discovery (what the sensor and `babylon train` run) and verify's whole report.
The baseline is the smallest size: both must stay flat (target at most 1.5x it at 1M). Dropped afterwards.
"""

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from babylon_assets.db.connection import connect, connect_async
from babylon_assets.simulation.writer import simulate
from babylon_assets.tools.verify import build_report
from babylon_assets.trajectories.game import discover_windows
from bench.scratch import scratch_database

TARGET_RATIO = 1.5
RECENT_WINDOWS = 10
# Old history: hours ending long before the lookback.
HISTORY_START = datetime(2020, 1, 1, tzinfo=UTC)
HOURS = 8760
AGENTS = 100

# Rows `first`..`last` of the history: the same small valid-looking row under other ids and hours.
HISTORY_ROWS = """
INSERT INTO "trajectories" ("id", "trajectoryId", "agentId", "startTime", "endTime", "durationMs", "windowId",
    "stepsJson", "rewardComponentsJson", "metricsJson", "metadataJson", "totalReward", "episodeLength",
    "finalStatus", "createdAt", "updatedAt")
SELECT 'hist-' || n, 'hist-traj-' || n, 'hist-agent-' || (n %% %(agents)s),
       start, start + interval '50 minutes', 3000000,
       CASE WHEN n %% 10 = 0 THEN NULL ELSE to_char(start, 'YYYY-MM-DD"T"HH24:00') END,
       '[]', '{}', '{}', '{"isTrainingData": true}', 0, 5, 'completed', start, start
FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS n,
     LATERAL (SELECT %(origin)s::timestamp + (n %% %(hours)s) * interval '1 hour' + interval '1 minute') AS s(start)
"""


async def _timed(url: str, work: Callable[[object], Awaitable[object]], repeat: int) -> float:
    walls = []
    async with await connect_async(url) as conn:
        for _ in range(repeat):
            started = time.perf_counter()
            await work(conn)
            walls.append(time.perf_counter() - started)
    return statistics.median(walls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sizes = sorted(int(size) for size in args.sizes.split(","))

    with scratch_database() as url:
        recent = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=RECENT_WINDOWS + 2)
        simulate(url, agents=5, windows=RECENT_WINDOWS, seed=1, start=recent)

        now = datetime.now(UTC)

        async def discover(conn: object) -> object:
            return await discover_windows(conn, lookback_hours=168, min_agents=5, min_actions=5, now=now)  # type: ignore[arg-type]

        async def verify(conn: object) -> object:
            report = await build_report(conn, lookback_hours=168, min_agents=5, min_actions=5, min_windows=3, now=now)  # type: ignore[arg-type]
            if len(report.ready_windows) != RECENT_WINDOWS:
                raise SystemExit(f"verify found {len(report.ready_windows)} ready windows, not {RECENT_WINDOWS}")
            return report

        loaded = 0
        figures: list[tuple[int, float, float]] = []
        for size in sizes:
            started = time.perf_counter()
            with connect(url, autocommit=True) as conn:
                conn.execute(
                    HISTORY_ROWS,
                    {
                        "first": loaded,
                        "last": size - 1,
                        "agents": AGENTS,
                        "hours": HOURS,
                        "origin": HISTORY_START.replace(tzinfo=None),
                    },
                )
                conn.execute('ANALYZE "trajectories"')
            loaded = size
            print(f"loaded {size:>9,} history rows ({time.perf_counter() - started:.1f} s)")
            figures.append(
                (size, asyncio.run(_timed(url, discover, args.repeat)), asyncio.run(_timed(url, verify, args.repeat)))
            )

    _, base_discover, base_verify = figures[0]
    print(f"\nmedians of {args.repeat}; baseline: the {sizes[0]:,}-row history")
    print(f"{'history rows':>12}  {'discovery s':>11}  {'x base':>6}  {'verify s':>8}  {'x base':>6}")
    for size, discover_s, verify_s in figures:
        print(
            f"{size:>12,}  {discover_s:>11.3f}  {discover_s / base_discover:>6.2f}  "
            f"{verify_s:>8.3f}  {verify_s / base_verify:>6.2f}"
        )
    _, last_discover, last_verify = figures[-1]
    flat = last_discover / base_discover <= TARGET_RATIO and last_verify / base_verify <= TARGET_RATIO
    print(f"flat (<= {TARGET_RATIO}x the baseline at {sizes[-1]:,}): {'yes' if flat else 'no'}")


if __name__ == "__main__":
    main()
