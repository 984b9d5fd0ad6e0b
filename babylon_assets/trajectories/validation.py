"""Validate a window's newest snapshot and store every row's verdict, replacing the window's earlier results."""

from datetime import datetime

from babylon_assets.db.connection import AsyncConn
from babylon_assets.db.locks import WindowLock, lock_window
from babylon_assets.trajectories.facts import trajectory_facts
from babylon_assets.trajectories.models import WindowLoad
from babylon_assets.trajectories.reader import load_window


async def validate_window(conn: AsyncConn, window_id: datetime, *, min_actions: int) -> WindowLoad:
    """`load_window`, then one transaction that replaces the window's stored verdicts (with each accepted
    row's facts, see `facts.py`) and summary.

    A per-window advisory lock serialises validations of one window, so two at once both succeed (the
    second replaces the first's verdicts with its own). On an autocommit connection the write commits
    here; otherwise it joins the caller's transaction.
    """
    async with conn.transaction(), conn.cursor() as cur:
        # Two validations of one window at once would both insert its verdicts: one waits here.
        await lock_window(cur, WindowLock.VALIDATION, window_id)
        load = await load_window(conn, window_id, min_actions=min_actions)
        await cur.execute("DELETE FROM trajectory_validations WHERE window_id = %s", (load.window_id,))
        async with cur.copy(
            "COPY trajectory_validations (snapshot_id, source_id, trajectory_id, window_id, agent_id, agent_key, "
            "steps, is_evaluation, accepted, reason, facts) FROM STDIN"
        ) as copy:
            for t in load.accepted:
                await copy.write_row(
                    (t.snapshot_id, t.source_id, t.trajectory_id, load.window_id, t.agent_id, t.agent_key,
                     len(t.steps), t.is_evaluation, True, None, trajectory_facts(t).model_dump_json())
                )  # fmt: skip
            for r in load.rejected:
                await copy.write_row(
                    (r.snapshot_id, r.source_id, r.trajectory_id, load.window_id, r.agent_id, None, None, False,
                     False, r.reason, None)
                )  # fmt: skip
        await cur.execute(
            """
            INSERT INTO window_validations (window_id, snapshot_id, accepted, rejected, distinct_agents)
            VALUES (%s, %s, %s, %s, %s)
            ON CONFLICT (window_id) DO UPDATE SET
                snapshot_id = EXCLUDED.snapshot_id, accepted = EXCLUDED.accepted, rejected = EXCLUDED.rejected,
                distinct_agents = EXCLUDED.distinct_agents, validated_at = now()
            """,
            (load.window_id, load.snapshot_id, len(load.accepted), len(load.rejected), load.distinct_agents),
        )
    return load
