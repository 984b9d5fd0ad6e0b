"""Ingest: land one window of the game's rows in the platform's store as an immutable snapshot.

The game's side is read in one read-only REPEATABLE READ transaction, so the row versions compared and
the rows copied are the same. A window whose rows and outcomes are unchanged since its last snapshot
gets no new one; otherwise the new snapshot says what changed (rows added, changed, gone). Ingests of
one window are serialised by a per-window advisory lock in the store, so two at once never interleave.
"""

import hashlib
from datetime import datetime

from psycopg import IsolationLevel
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, NonNegativeInt

from babylon_assets.db.connection import AsyncConn
from babylon_assets.db.locks import WindowLock, lock_window
from babylon_assets.trajectories.game import (
    read_market_outcomes,
    require_game_tables,
    stream_window_rows,
    window_row_versions,
)
from babylon_assets.trajectories.models import MarketOutcomes, OutcomeSource


class IngestReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    window_id: datetime
    # The window's snapshot after this ingest (None: the game has no rows for it and it never had).
    snapshot_id: int | None
    version: int
    changed: bool
    rows: NonNegativeInt
    rows_added: NonNegativeInt
    rows_changed: NonNegativeInt
    rows_gone: NonNegativeInt
    outcome_source: OutcomeSource
    bytes: NonNegativeInt


class WindowContent(BaseModel):
    """What a window holds in the game now: its rows' (id, hash) pairs, its outcomes, and their hash,
    which is the content_hash of the snapshot an ingest of it makes."""

    model_config = ConfigDict(frozen=True)

    versions: list[tuple[str, str]]
    outcomes: MarketOutcomes
    content_hash: str


async def window_content(game: AsyncConn, window_id: datetime) -> WindowContent:
    """The window's content version, read without copying its rows (hashes are taken on the server)."""
    versions = [(row.source_id, row.content_hash) for row in await window_row_versions(game, window_id)]
    outcomes = await read_market_outcomes(game, window_id)
    digest = hashlib.sha256()
    for source_id, row_hash in versions:
        digest.update(f"{source_id}\t{row_hash}\n".encode())
    digest.update(outcomes.model_dump_json().encode())
    return WindowContent(versions=versions, outcomes=outcomes, content_hash=digest.hexdigest())


async def ingest_window(game: AsyncConn, store: AsyncConn, window_id: datetime) -> IngestReport:
    """Snapshot the window's game rows and outcomes into the store when they changed (see the module)."""
    await game.set_isolation_level(IsolationLevel.REPEATABLE_READ)
    await game.set_read_only(True)
    async with game.transaction(), store.transaction(), store.cursor() as cur:
        await require_game_tables(game)
        await lock_window(cur, WindowLock.INGEST, window_id)
        content = await window_content(game, window_id)
        versions, outcomes, content_hash = content.versions, content.outcomes, content.content_hash
        await cur.execute(
            "SELECT id, version, content_hash FROM window_snapshots WHERE window_id = %s ORDER BY version DESC LIMIT 1",
            (window_id,),
        )
        previous = await cur.fetchone()
        before: dict[str, str] = {}
        if previous is not None:
            await cur.execute(
                "SELECT source_id, content_hash FROM snapshot_rows WHERE snapshot_id = %s", (previous[0],)
            )
            before = dict(await cur.fetchall())
        now = dict(versions)
        added = sum(1 for source_id in now if source_id not in before)
        changed = sum(1 for source_id, digest in now.items() if source_id in before and before[source_id] != digest)
        gone = sum(1 for source_id in before if source_id not in now)
        if (previous is not None and previous[2] == content_hash) or (previous is None and not versions):
            return IngestReport(
                window_id=window_id,
                snapshot_id=previous[0] if previous is not None else None,
                version=previous[1] if previous is not None else 0,
                changed=False,
                rows=len(versions),
                rows_added=0,
                rows_changed=0,
                rows_gone=0,
                outcome_source=outcomes.source,
                bytes=0,
            )
        version = previous[1] + 1 if previous is not None else 1
        await cur.execute(
            """
            INSERT INTO window_snapshots (window_id, version, content_hash, rows, rows_added, rows_changed,
                                          rows_gone, outcome_source, outcomes)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id
            """,
            (
                window_id,
                version,
                content_hash,
                len(versions),
                added,
                changed,
                gone,
                outcomes.source,
                Jsonb(outcomes.model_dump(mode="json")),
            ),
        )
        inserted = await cur.fetchone()
        assert inserted is not None  # INSERT ... RETURNING of one row
        snapshot_id: int = inserted[0]
        size = 0
        recorded_until: datetime | None = None
        async with cur.copy(
            "COPY snapshot_rows (snapshot_id, source_id, trajectory_id, agent_id, content_hash, recorded) FROM STDIN"
        ) as copy:
            async for row, written in stream_window_rows(game, window_id):
                size += len(row.recorded)
                recorded_until = written if recorded_until is None else max(recorded_until, written)
                await copy.write_row(
                    (snapshot_id, row.source_id, row.trajectory_id, row.agent_id, row.content_hash, row.recorded)
                )
        await cur.execute(
            "UPDATE window_snapshots SET recorded_until = %s WHERE id = %s", (recorded_until, snapshot_id)
        )
    return IngestReport(
        window_id=window_id,
        snapshot_id=snapshot_id,
        version=version,
        changed=True,
        rows=len(versions),
        rows_added=added,
        rows_changed=changed,
        rows_gone=gone,
        outcome_source=outcomes.source,
        bytes=size,
    )
