"""Reading the game's rows validated vs a raw driver fetch of the same rows, measured in the same run.

    python -m bench.bench_reader [--windows 1000] [--agents 50]

Creates a scratch database on the server of BABYLON_BENCH_ADMIN_URL (default the local server),
fills the game's "trajectories" with simulated rows of 10-15 steps, then reads every window:
- raw fetch: `SELECT *` of the window's game rows as psycopg returns them (stepsJson as text, unparsed);
- raw fetch + json.loads: the same, with the JSON text columns decoded (the least a reader of steps does);
- validated: the game's rows as the platform reads them (row JSON and hash on the server, a server-side
  cursor) and every row parsed into typed models or rejected with a reason (what `babylon verify` does);
- ingested: the snapshot of the window landed in the platform's schema (first ingest), then validated
  from it (`load_window`), i.e. the pipeline's raw_trajectories + validated_windows reads.
Target: validated reading at least half as fast as the raw fetch. The database is dropped afterwards.
"""

import argparse
import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg.rows import dict_row

from babylon_assets.db.connection import AsyncConn
from babylon_assets.simulation.writer import simulate
from babylon_assets.trajectories.game import read_window_rows
from babylon_assets.trajectories.ingest import ingest_window
from babylon_assets.trajectories.models import window_key
from babylon_assets.trajectories.reader import load_window, validate_rows
from bench.scratch import scratch_database, store_url

FIRST_WINDOW = datetime(2026, 1, 1, tzinfo=UTC)
ROUNDS = 2  # best of; the first round also warms the server's cache

RAW_QUERY = 'SELECT * FROM "trajectories" WHERE "windowId" = %s ORDER BY "id"'
JSON_COLUMNS = ("stepsJson", "rewardComponentsJson", "metricsJson", "metadataJson")

Reader = Callable[[AsyncConn, AsyncConn, datetime], Awaitable[int]]


async def _raw(game: AsyncConn, store: AsyncConn, window_id: datetime) -> int:
    async with game.cursor() as cur:
        await cur.execute(RAW_QUERY, (window_key(window_id),))
        return len(await cur.fetchall())


async def _raw_decoded(game: AsyncConn, store: AsyncConn, window_id: datetime) -> int:
    """The least any reader of the steps does: fetch the rows and decode their JSON text columns."""
    async with game.cursor(row_factory=dict_row) as cur:
        await cur.execute(RAW_QUERY, (window_key(window_id),))
        rows = await cur.fetchall()
    for row in rows:
        for column in JSON_COLUMNS:
            json.loads(row[column])
    return len(rows)


def _checked(accepted: int, rejected: list[str]) -> int:
    if rejected:
        raise RuntimeError(f"simulated rows were rejected: {rejected[0]}")
    return accepted


async def _validated(game: AsyncConn, store: AsyncConn, window_id: datetime) -> int:
    load = validate_rows(await read_window_rows(game, window_id), window_id, snapshot_id=None, min_actions=10)
    return _checked(len(load.accepted), [r.reason for r in load.rejected])


async def _ingested(game: AsyncConn, store: AsyncConn, window_id: datetime) -> int:
    await ingest_window(game, store, window_id)
    load = await load_window(store, window_id, min_actions=10)
    return _checked(len(load.accepted), [r.reason for r in load.rejected])


async def _rates(game_url: str, windows: list[datetime], readers: dict[str, Reader]) -> dict[str, float]:
    """Best trajectories/s of each reader over the rounds; the readers take turns within each round so
    that load from other processes hits them alike. Ingest only counts its first round (a re-ingest of
    unchanged windows reads versions only)."""
    best = dict.fromkeys(readers, 0.0)
    async with (
        await psycopg.AsyncConnection.connect(game_url, autocommit=True) as game,
        await psycopg.AsyncConnection.connect(store_url(game_url), autocommit=True) as store,
    ):
        for round_number in range(ROUNDS):
            for name, read in readers.items():
                if name == "ingested" and round_number > 0:
                    continue
                started = time.perf_counter()
                rows = 0
                for window_id in windows:
                    rows += await read(game, store, window_id)
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
            conn.execute('VACUUM ANALYZE "trajectories"')
        trajectories = sum(summary.trajectories for summary in summaries)
        steps = sum(summary.steps for summary in summaries)
        print(
            f"simulated {trajectories:,} trajectories ({steps:,} steps, {steps / trajectories:.1f} per trajectory) "
            f"in {time.perf_counter() - started:.1f} s"
        )
        windows = [FIRST_WINDOW + timedelta(hours=offset) for offset in range(args.windows)]
        rates = asyncio.run(
            _rates(
                url,
                windows,
                {"raw": _raw, "decoded": _raw_decoded, "validated": _validated, "ingested": _ingested},
            )
        )
        print(f"raw fetch (SELECT *, no parsing):        {rates['raw']:>10,.0f} trajectories/s")
        print(f"raw fetch + json.loads of the JSON text: {rates['decoded']:>10,.0f} trajectories/s")
        print(f"validated from the game (verify's read): {rates['validated']:>10,.0f} trajectories/s")
        print(f"ingested as snapshots, then validated:   {rates['ingested']:>10,.0f} trajectories/s")
        ratio = rates["validated"] / rates["decoded"]
        print(
            f"validated / raw fetch + json.loads: {ratio:.2f} (target >= 0.5: {'met' if ratio >= 0.5 else 'NOT met'})"
        )
        print(f"validated / raw fetch without parsing: {rates['validated'] / rates['raw']:.2f}")
        print(f"ingested + validated / raw fetch + json.loads: {rates['ingested'] / rates['decoded']:.2f}")


if __name__ == "__main__":
    main()
