"""Which windows are ready to become partitions: over (plus a settle delay for late rows) and eligible."""

from datetime import datetime, timedelta

from babylon_assets.db.connection import AsyncConn
from babylon_assets.trajectories.game import discover_windows
from babylon_assets.trajectories.models import WindowCandidate, hour_floor, lookback_start

HOUR = timedelta(hours=1)


def before_lookback(now: datetime, lookback_hours: int) -> datetime:
    """The hour just before the oldest window of the lookback: `after` for `eligible_windows_between`."""
    return lookback_start(now, lookback_hours) - HOUR


def latest_completed_window(now: datetime, settle_minutes: int) -> datetime:
    """The last window whose end plus the settle delay is not after `now`."""
    return hour_floor(now - timedelta(minutes=settle_minutes)) - HOUR


async def eligible_windows_between(
    conn: AsyncConn, *, after: datetime, until: datetime, min_agents: int, min_actions: int
) -> list[WindowCandidate]:
    """The windows starting in (after, until] that discovery finds eligible, oldest first.

    Discovery's index range covers exactly those hours, so the cost follows the windows in the
    range, not the size of the table.
    """
    hours = int((until - after) / HOUR)
    if hours <= 0:
        return []
    found = await discover_windows(
        conn, lookback_hours=hours, min_agents=min_agents, min_actions=min_actions, now=until + HOUR
    )
    return sorted(found, key=lambda window: window.window_id)
