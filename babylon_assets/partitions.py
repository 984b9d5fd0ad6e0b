"""Windows become partitions only once they are over (plus a settle delay for late rows) and eligible."""

from datetime import UTC, datetime, timedelta

import dagster as dg
import psycopg
from psycopg.rows import TupleRow

from babylon_assets.trajectories.models import WindowCandidate

window_partitions = dg.DynamicPartitionsDefinition(name="windows")

HOUR = timedelta(hours=1)


def hour_floor(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def latest_completed_window(now: datetime, settle_minutes: int) -> datetime:
    """The last window whose end plus the settle delay is not after `now`."""
    return hour_floor(now - timedelta(minutes=settle_minutes)) - HOUR


def eligible_windows_between(
    conn: psycopg.Connection[TupleRow], *, after: datetime, until: datetime, min_agents: int, min_actions: int
) -> list[WindowCandidate]:
    """Windows in (after, until] where at least `min_agents` distinct agents have `min_actions`+ steps.

    Counted on the stored rows (validation may still reject some, which the blocking check then
    catches); the range walks the discovery index, so the cost follows the windows in the range,
    not the size of the table.
    """
    rows = conn.execute(
        """
        SELECT window_id, count(DISTINCT agent_id), count(*)
        FROM trajectories
        WHERE window_id > %s AND window_id <= %s AND is_training_data AND episode_length >= %s
        GROUP BY window_id
        HAVING count(DISTINCT agent_id) >= %s
        ORDER BY window_id
        """,
        (after, until, min_actions, min_agents),
    ).fetchall()
    return [
        WindowCandidate(window_id=window_id, agents=agents, trajectories=count) for window_id, agents, count in rows
    ]
