"""Register each newly completed, eligible window as a partition and request its ingest-validate-score run.

The cursor is the last completed window already considered, so a tick reads only the rows of
windows after it: the work is proportional to what is new, whatever the history.
"""

import asyncio
from datetime import UTC, datetime, timedelta

import dagster as dg
from pydantic import BaseModel, ConfigDict

from babylon_assets.db.connection import AsyncConn, connect_async
from babylon_assets.jobs import window_chain_job
from babylon_assets.partitions import window_partitions
from babylon_assets.trajectories.config import WindowDiscovery
from babylon_assets.trajectories.discovery import (
    HOUR,
    before_lookback,
    eligible_windows_between,
    latest_completed_window,
)
from babylon_assets.trajectories.models import WindowCandidate, parse_window_key, window_key
from resources.database import DatabaseResource


def current_time() -> datetime:
    """The sensor's clock, a function of its own so tests can move time forward."""
    return datetime.now(UTC)


class FreshWindows(BaseModel):
    """What one tick found: the new eligible windows, the next cursor, and what it waits for next."""

    model_config = ConfigDict(frozen=True)

    windows: list[WindowCandidate]
    considered: int
    cursor: str
    waiting_for: str


async def find_fresh_windows(
    conn: AsyncConn, *, cursor: str | None, now: datetime, config: WindowDiscovery
) -> FreshWindows:
    """The eligible windows completed since `cursor` (within the lookback), and the cursor to store next."""
    until = latest_completed_window(now, config.settle_minutes)
    earliest = before_lookback(now, config.lookback_hours)
    after = max(parse_window_key(cursor), earliest) if cursor else earliest
    next_window = max(after, until) + HOUR
    completes_at = next_window + HOUR + timedelta(minutes=config.settle_minutes)
    waiting_for = f"window {window_key(next_window)} to complete at {completes_at:%Y-%m-%d %H:%M} UTC"
    if until <= after:
        return FreshWindows(windows=[], considered=0, cursor=cursor or window_key(after), waiting_for=waiting_for)
    windows = await eligible_windows_between(
        conn, after=after, until=until, min_agents=config.rule.min_agents, min_actions=config.rule.min_actions
    )
    considered = int((until - after) / HOUR)
    return FreshWindows(windows=windows, considered=considered, cursor=window_key(until), waiting_for=waiting_for)


async def _find_fresh_windows(url: str, cursor: str | None, config: WindowDiscovery) -> FreshWindows:
    async with await connect_async(url) as conn:
        return await find_fresh_windows(conn, cursor=cursor, now=current_time(), config=config)


@dg.sensor(
    job=window_chain_job,
    minimum_interval_seconds=60,
    description=(
        "Registers each completed window with enough agents as a partition and runs ingest, validate "
        "and score for it (run key = window id)."
    ),
)
def fresh_windows_sensor(context: dg.SensorEvaluationContext, database: DatabaseResource) -> dg.SensorResult:
    config = WindowDiscovery()
    fresh = asyncio.run(_find_fresh_windows(database.game_url(), context.cursor, config))
    if not fresh.windows:
        checked = (
            f"none of the {fresh.considered} window(s) completed up to {fresh.cursor} has "
            f"{config.rule.min_agents}+ agents with {config.rule.min_actions}+ actions; "
            if fresh.considered
            else "no window completed since the last tick; "
        )
        return dg.SensorResult(skip_reason=f"{checked}waiting for {fresh.waiting_for}", cursor=fresh.cursor)
    keys = [window_key(window.window_id) for window in fresh.windows]
    # The cursor moves only together with these requests: the tick stores both or neither.
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=key, partition_key=key) for key in keys],
        dynamic_partitions_requests=[window_partitions.build_add_request(keys)],
        cursor=fresh.cursor,
    )
