"""Per-window advisory locks: one writer of a window's results at a time, for each kind of result.

Transaction-scoped (`pg_advisory_xact_lock`): taken first thing in the transaction that replaces a
window's rows, released by its commit or rollback, and so never left behind by a dead process.
"""

from datetime import datetime
from enum import IntEnum

from psycopg import AsyncCursor
from psycopg.rows import TupleRow


class WindowLock(IntEnum):
    """The lock's first key: what is being written (ASCII tags, so they read in pg_locks)."""

    INGEST = 0x696E6765  # "inge": window_snapshots, snapshot_rows
    VALIDATION = 0x76616C69  # "vali": trajectory_validations, window_validations
    SCORES = 0x6A756467  # "judg": trajectory_scores, window_scores, judge_*


def window_lock_key(window_id: datetime) -> int:
    """The lock's second key: the window's hour since the epoch (fits PostgreSQL's int4)."""
    return int(window_id.timestamp()) // 3600


async def lock_window(cur: AsyncCursor[TupleRow], kind: WindowLock, window_id: datetime) -> None:
    """Wait until no other transaction writes this kind of result for the window; hold it until commit."""
    await cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", (int(kind), window_lock_key(window_id)))
