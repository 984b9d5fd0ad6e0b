"""Validated window reading vs a raw driver fetch of the same rows, measured in the same run.

    python bench/bench_reader.py [--windows 1000] [--agents 50]

Creates a scratch database on the server of BABYLON_BENCH_ADMIN_URL (default the local server),
fills it with simulated trajectories of 10-15 steps, then reads every window three ways:
- raw fetch: the rows as psycopg returns them by default (jsonb decoded by the driver's json.loads);
- raw text fetch: the same rows with steps as unparsed text (transfer only, no parsing at all);
- validated: `load_window`, i.e. every row parsed into typed models or rejected with a reason.
Target: validated reading at least half as fast as the raw fetch. The database is dropped afterwards.
"""

import argparse
import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta

import psycopg

from babylon_assets.db.connection import AsyncConn
from babylon_assets.trajectories.reader import load_window
from babylon_assets.trajectories.simulate import simulate
from bench.scratch import scratch_database

FIRST_WINDOW = datetime(2026, 1, 1, tzinfo=UTC)
ROUNDS = 2  # best of; the first round also warms the server's cache

RAW_QUERY = "SELECT * FROM trajectories WHERE window_id >= %s AND window_id < %s ORDER BY id"
RAW_TEXT_QUERY = (
    "SELECT id, trajectory_id, agent_id, start_time, end_time, duration_ms, window_id, window_hours, episode_id, "
    "scenario_id, steps::text, reward_components::text, metrics::text, metadata::text, total_reward, episode_length, "
    "final_status, final_balance, final_pnl, trades_executed, posts_created, is_training_data, used_in_training, "
    "trained_in_batch FROM trajectories WHERE window_id >= %s AND window_id < %s ORDER BY id"
)

Reader = Callable[[AsyncConn, datetime], Awaitable[int]]


def _raw(query: str) -> Reader:
    async def read(conn: AsyncConn, window_id: datetime) -> int:
        async with conn.cursor() as cur:
            await cur.execute(query, (window_id, window_id + timedelta(hours=1)))
            return len(await cur.fetchall())

    return read


async def _validated(conn: AsyncConn, window_id: datetime) -> int:
    load = await load_window(conn, window_id, min_actions=10)
    if load.rejected:
        raise RuntimeError(f"simulated rows were rejected: {load.rejected[0].reason}")
    return len(load.accepted)


async def _rates(url: str, windows: list[datetime], readers: dict[str, Reader]) -> dict[str, float]:
    """Best trajectories/s of each reader over the rounds; the readers take turns within each round so
    that load from other processes hits them alike."""
    best = dict.fromkeys(readers, 0.0)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for _ in range(ROUNDS):
            for name, read in readers.items():
                started = time.perf_counter()
                rows = 0
                for window_id in windows:
                    rows += await read(conn, window_id)
                best[name] = max(best[name], rows / (time.perf_counter() - started))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, default=1000)
    parser.add_argument("--agents", type=int, default=50)
    args = parser.parse_args()
    with scratch_database() as url:
        started = time.perf_counter()
        # One process per core, each simulating (and inserting) its own consecutive windows.
        workers = os.cpu_count() or 1
        chunk = -(-args.windows // workers)
        with ProcessPoolExecutor(workers) as pool:
            futures = [
                pool.submit(
                    simulate,
                    url,
                    agents=args.agents,
                    windows=min(chunk, args.windows - first),
                    seed=1,
                    start=FIRST_WINDOW + timedelta(hours=first),
                    steps_range=(10, 15),
                )
                for first in range(0, args.windows, chunk)
            ]
            summaries = [future.result() for future in futures]
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE trajectories")
        trajectories = sum(summary.trajectories for summary in summaries)
        steps = sum(summary.steps for summary in summaries)
        print(
            f"simulated {trajectories:,} trajectories ({steps:,} steps, {steps / trajectories:.1f} per trajectory) "
            f"in {time.perf_counter() - started:.1f} s"
        )
        windows = [FIRST_WINDOW + timedelta(hours=offset) for offset in range(args.windows)]
        rates = asyncio.run(
            _rates(url, windows, {"raw": _raw(RAW_QUERY), "raw_text": _raw(RAW_TEXT_QUERY), "validated": _validated})
        )
        print(f"raw fetch (driver decodes jsonb):    {rates['raw']:>10,.0f} trajectories/s")
        print(f"raw text fetch (no parsing at all):  {rates['raw_text']:>10,.0f} trajectories/s")
        print(f"validated (load_window):             {rates['validated']:>10,.0f} trajectories/s")
        ratio = rates["validated"] / rates["raw"]
        print(f"validated / raw fetch: {ratio:.2f} (target >= 0.5: {'met' if ratio >= 0.5 else 'NOT met'})")
        print(f"validated / raw text fetch: {rates['validated'] / rates['raw_text']:.2f}")


if __name__ == "__main__":
    main()
