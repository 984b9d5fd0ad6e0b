"""Validate a window and store every row's verdict, replacing the window's earlier results."""

from datetime import datetime

from babylon_assets.db.connection import AsyncConn
from babylon_assets.db.locks import WindowLock, lock_window
from babylon_assets.trajectories.models import WindowLoad
from babylon_assets.trajectories.reader import load_window


async def validate_window(conn: AsyncConn, window_id: datetime, *, min_actions: int) -> WindowLoad:
    """`load_window`, then one transaction that replaces the window's stored verdicts and summary.

    Verdicts are stored under the window validated (an off-hour window id is stored under its hour), and a
    row that moved here from another window loses its old verdict, so each row has exactly one. On an
    autocommit connection the write commits here; otherwise it joins the caller's transaction.
    """
    load = await load_window(conn, window_id, min_actions=min_actions)
    verdicts = [(t.row_id, t.trajectory_id, t.agent_id, True, None) for t in load.accepted] + [
        (r.row_id, r.trajectory_id, r.agent_id, False, r.reason) for r in load.rejected
    ]
    async with conn.transaction(), conn.cursor() as cur:
        # Two validations of one window at once would both insert its verdicts: one waits here.
        await lock_window(cur, WindowLock.VALIDATION, load.window_id)
        await cur.execute(
            "DELETE FROM trajectory_validations WHERE window_id = %s OR row_id = ANY(%s)",
            (load.window_id, [verdict[0] for verdict in verdicts]),
        )
        async with cur.copy(
            "COPY trajectory_validations (row_id, trajectory_id, window_id, agent_id, accepted, reason) FROM STDIN"
        ) as copy:
            for row_id, trajectory_id, agent_id, accepted, reason in verdicts:
                await copy.write_row((row_id, trajectory_id, load.window_id, agent_id, accepted, reason))
        await cur.execute(
            """
            INSERT INTO window_validations (window_id, accepted, rejected, distinct_agents)
            VALUES (%s, %s, %s, %s)
            ON CONFLICT (window_id) DO UPDATE SET
                accepted = EXCLUDED.accepted, rejected = EXCLUDED.rejected,
                distinct_agents = EXCLUDED.distinct_agents, validated_at = now()
            """,
            (load.window_id, len(load.accepted), len(load.rejected), load.distinct_agents),
        )
    return load
