"""Reading the game's own database: its camelCase Prisma tables, read and never altered.

A row belongs to the window its `"windowId"` names. Rows of the plugin logger carry no windowId: by
the game's own definition of a window (the UTC hour floor of the episode), such a row belongs to the
hour of its `"startTime"`. A windowId that is not a `YYYY-MM-DDTHH:00` key names no window: such rows
are listed by `babylon verify` with the fix, since no window can hold them.

A row is read as JSON under the game's column names, less the bookkeeping columns that the game or
publishing rewrite without changing the episode; its content hash is taken over that JSON on the server.
"""

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

from psycopg import sql
from pydantic import BaseModel, ConfigDict, ValidationError

from babylon_assets.db.connection import AsyncConn
from babylon_assets.errors import BabylonError
from babylon_assets.trajectories.models import (
    MarketOutcomes,
    PredictionOutcome,
    PredictionResult,
    StockOutcome,
    WindowCandidate,
    hour_floor,
    lookback_start,
    parse_window_key,
    window_key,
)

HOUR = timedelta(hours=1)
# Columns that change without the episode changing: Prisma's updatedAt, the usage marks publishing
# writes, and the game's own judge's verdict. They are left out of the recorded row and its hash.
BOOKKEEPING_COLUMNS = ("updatedAt", "usedInTraining", "trainedInBatch", "aiJudgeReward", "aiJudgeReasoning", "judgedAt")
WINDOW_KEY_PATTERN = r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):00$"
# Whitespace that agent-id comparison ignores (Python's str.strip, for the ASCII cases SQL can name).
_AGENT_TRIM = " \t\n\r\x0b\x0c"
_RECORDED = sql.SQL("(to_jsonb(t) - %(bookkeeping)s::text[])")
# The distinct agents, found by skipping through the game's ("agentId", "startTime") index one value at
# a time. The game has no index on "startTime" alone: rows without a windowId are read agent by agent
# through that index, so the cost follows the agents and the hours asked for, not the history's size.
_AGENTS = sql.SQL(
    """agents(id) AS (
        (SELECT "agentId" FROM "trajectories" ORDER BY "agentId" LIMIT 1)
        UNION ALL
        SELECT (SELECT n."agentId" FROM "trajectories" n WHERE n."agentId" > a.id ORDER BY n."agentId" LIMIT 1)
        FROM agents a WHERE a.id IS NOT NULL
    )"""
)
_IN_WINDOW = sql.SQL(
    """t."id" IN (
        WITH RECURSIVE {agents}
        SELECT w."id" FROM "trajectories" w WHERE w."windowId" = %(key)s
        UNION ALL
        SELECT u."id" FROM agents a CROSS JOIN LATERAL (
            SELECT u."id" FROM "trajectories" u
            WHERE u."agentId" = a.id AND u."startTime" >= %(start)s AND u."startTime" < %(end)s
              AND u."windowId" IS NULL
        ) u
    )"""
).format(agents=_AGENTS)


class RecordedRow(BaseModel):
    """A game row as recorded: its JSON text and the ids needed to report on it even when it is malformed."""

    model_config = ConfigDict(frozen=True)

    source_id: str
    trajectory_id: str | None
    agent_id: str | None
    content_hash: str
    recorded: str


class RowVersion(BaseModel):
    model_config = ConfigDict(frozen=True)

    source_id: str
    content_hash: str


class RecordedMark(BaseModel):
    """One row written since a moment: its id, the window it belongs to, and when it was last written."""

    model_config = ConfigDict(frozen=True)

    source_id: str
    window: str
    written: datetime


class UnwindowedRow(BaseModel):
    """A row whose windowId is not a window key: no window can hold it."""

    model_config = ConfigDict(frozen=True)

    source_id: str
    trajectory_id: str
    agent_id: str
    window_id: str


class OutcomeError(BabylonError):
    """A market_outcomes row the judge cannot use; the message names it."""


class GameSchemaError(BabylonError):
    """The database named as the game's has no game tables."""

    exit_code = 2


async def require_game_tables(conn: AsyncConn) -> None:
    """Refuse a database without the game's "trajectories" table, saying how to get one."""
    if not await _tables_present(conn, "trajectories"):
        raise GameSchemaError(
            'the database has no "trajectories" table of the game; point DATABASE_URL at the game\'s database, '
            "or run `babylon simulate` to create and fill a stand-in"
        )


def naive_utc(moment: datetime) -> datetime:
    """The game's TIMESTAMP(3) columns hold UTC without a zone: compare them with naive UTC values, so the
    session's TimeZone never shifts the comparison."""
    return moment.astimezone(UTC).replace(tzinfo=None)


def _window_params(window_id: datetime) -> dict[str, object]:
    return {
        "key": window_key(window_id),
        "start": naive_utc(window_id),
        "end": naive_utc(window_id + HOUR),
        "bookkeeping": list(BOOKKEEPING_COLUMNS),
    }


async def window_row_versions(conn: AsyncConn, window_id: datetime) -> list[RowVersion]:
    """Each of the window's rows by id with its content hash, in id order: enough to tell whether the
    window changed since its last snapshot without reading the rows themselves."""
    async with conn.cursor() as cur:
        await cur.execute(
            sql.SQL(
                """
                SELECT t."id", encode(sha256(convert_to({recorded}::text, 'UTF8')), 'hex')
                FROM "trajectories" t
                WHERE {in_window}
                ORDER BY t."id"
                """
            ).format(recorded=_RECORDED, in_window=_IN_WINDOW),
            _window_params(window_id),
        )
        return [RowVersion(source_id=source_id, content_hash=digest) for source_id, digest in await cur.fetchall()]


async def stream_window_rows(conn: AsyncConn, window_id: datetime) -> AsyncIterator[tuple[RecordedRow, datetime]]:
    """The window's rows in id order with the time each was last written, through a server-side cursor,
    so neither the game's server nor this process holds a large window at once. Needs a transaction."""
    async with conn.cursor(name="babylon_window_rows") as cur:
        cur.itersize = 200
        await cur.execute(
            sql.SQL(
                """
                SELECT r."id", r."trajectoryId", r."agentId", r.recorded,
                       encode(sha256(convert_to(r.recorded, 'UTF8')), 'hex'), r.written
                FROM (
                    SELECT t."id", t."trajectoryId", t."agentId", {recorded}::text AS recorded,
                           greatest(t."createdAt", t."updatedAt") AS written
                    FROM "trajectories" t
                    WHERE {in_window}
                ) r
                ORDER BY r."id"
                """
            ).format(recorded=_RECORDED, in_window=_IN_WINDOW),
            _window_params(window_id),
        )
        async for source_id, trajectory_id, agent_id, recorded, digest, written in cur:
            row = RecordedRow(
                source_id=source_id,
                trajectory_id=trajectory_id,
                agent_id=agent_id,
                content_hash=digest,
                recorded=recorded,
            )
            yield row, written.replace(tzinfo=UTC)


async def read_window_rows(conn: AsyncConn, window_id: datetime) -> list[RecordedRow]:
    """The window's rows as recorded (for `babylon verify`, which validates without ingesting)."""
    async with conn.transaction():
        return [row async for row, _ in stream_window_rows(conn, window_id)]


async def rows_written_since(conn: AsyncConn, since: datetime) -> list[RecordedMark]:
    """The rows whose "createdAt" or "updatedAt" is at or after `since`, with their window key (windowId,
    else the hour of startTime) and last write time, oldest write first.

    The game has no index on either column: each is answered by a scan of the table unless the
    deployment adds them (the README's "Unattended operation" names the two indexes).
    """
    await require_game_tables(conn)
    async with conn.cursor() as cur:
        await cur.execute(
            """
            SELECT t."id",
                   coalesce(t."windowId", to_char(date_trunc('hour', t."startTime"), 'YYYY-MM-DD"T"HH24:00')),
                   greatest(t."createdAt", t."updatedAt")
            FROM "trajectories" t
            WHERE t."createdAt" >= %(since)s OR t."updatedAt" >= %(since)s
            ORDER BY 3, 1
            """,
            {"since": naive_utc(since)},
        )
        return [
            RecordedMark(source_id=source_id, window=window, written=written.replace(tzinfo=UTC))
            for source_id, window, written in await cur.fetchall()
        ]


async def discover_windows(
    conn: AsyncConn, *, lookback_hours: int, min_agents: int, min_actions: int, now: datetime
) -> list[WindowCandidate]:
    """Windows that are over at `now` and started within the lookback, with at least `min_agents` distinct agents
    (ids compared trimmed and case-folded) having `min_actions` steps or more, counted before validation,
    newest first. The windowId range is answered by the game's ("windowId") index."""
    await require_game_tables(conn)
    since, closed = lookback_start(now, lookback_hours), hour_floor(now)
    async with conn.cursor() as cur:
        await cur.execute(
            sql.SQL(
                """
            WITH RECURSIVE {agents}
            SELECT coalesce(t."windowId", to_char(date_trunc('hour', t."startTime"), 'YYYY-MM-DD"T"HH24:00')),
                   count(DISTINCT lower(btrim(t."agentId", %(trim)s))), count(*)
            FROM (
                SELECT t."windowId", t."startTime", t."agentId" FROM "trajectories" t
                WHERE t."isTrainingData" AND t."episodeLength" >= %(min_actions)s
                  AND t."windowId" >= %(since_key)s AND t."windowId" < %(closed_key)s AND t."windowId" ~ %(pattern)s
                UNION ALL
                -- Rows without a windowId, by their startTime, agent by agent (see _AGENTS).
                SELECT t."windowId", t."startTime", t."agentId" FROM agents a
                CROSS JOIN LATERAL (
                    SELECT u."windowId", u."startTime", u."agentId" FROM "trajectories" u
                    WHERE u."agentId" = a.id AND u."startTime" >= %(since)s AND u."startTime" < %(closed)s
                      AND u."windowId" IS NULL AND u."isTrainingData" AND u."episodeLength" >= %(min_actions)s
                ) t
            ) t
            GROUP BY 1
            HAVING count(DISTINCT lower(btrim(t."agentId", %(trim)s))) >= %(min_agents)s
            ORDER BY 1 DESC
            """
            ).format(agents=_AGENTS),
            {
                "trim": _AGENT_TRIM,
                "min_actions": min_actions,
                "min_agents": min_agents,
                "since_key": window_key(since),
                "closed_key": window_key(closed),
                "pattern": WINDOW_KEY_PATTERN,
                "since": naive_utc(since),
                "closed": naive_utc(closed),
            },
        )
        rows = await cur.fetchall()
    candidates = []
    for key, agents, count in rows:
        try:
            window_id = parse_window_key(key)
        except ValueError:
            continue  # a key of the right shape but no real hour (Feb 30): listed by verify's unwindowed rows
        candidates.append(WindowCandidate(window_id=window_id, agents=agents, trajectories=count))
    return candidates


async def unwindowed_rows(conn: AsyncConn, limit: int) -> tuple[list[UnwindowedRow], int]:
    """Up to `limit` rows whose windowId is not a window key, and how many there are.

    The distinct windowIds are found by skipping through the game's ("windowId") index, one probe per
    value, so the cost follows the number of hours recorded, not the number of rows."""
    async with conn.cursor() as cur:
        await cur.execute(
            """
            WITH RECURSIVE keys(id) AS (
                (SELECT "windowId" FROM "trajectories" WHERE "windowId" IS NOT NULL ORDER BY "windowId" LIMIT 1)
                UNION ALL
                SELECT (SELECT t."windowId" FROM "trajectories" t WHERE t."windowId" > k.id
                        ORDER BY t."windowId" LIMIT 1)
                FROM keys k WHERE k.id IS NOT NULL
            )
            SELECT coalesce(array_agg(id), '{}') FROM keys WHERE id IS NOT NULL AND id !~ %s
            """,
            (WINDOW_KEY_PATTERN,),
        )
        found = await cur.fetchone()
        bad_keys: list[str] = found[0] if found is not None else []
        await cur.execute('SELECT count(*) FROM "trajectories" WHERE "windowId" = ANY(%s)', (bad_keys,))
        counted = await cur.fetchone()
        await cur.execute(
            'SELECT "id", "trajectoryId", "agentId", "windowId" FROM "trajectories" '
            'WHERE "windowId" = ANY(%s) ORDER BY "id" LIMIT %s',
            (bad_keys, limit),
        )
        rows = [
            UnwindowedRow(source_id=source_id, trajectory_id=trajectory_id, agent_id=agent_id, window_id=window)
            for source_id, trajectory_id, agent_id, window in await cur.fetchall()
        ]
    return rows, counted[0] if counted is not None else 0


async def _tables_present(conn: AsyncConn, *names: str) -> bool:
    async with conn.cursor() as cur:
        for name in names:
            await cur.execute("SELECT to_regclass(%s) IS NOT NULL", (f'"{name}"',))
            found = await cur.fetchone()
            if found is None or not found[0]:
                return False
    return True


async def _recorded_outcomes(
    conn: AsyncConn, window_id: datetime
) -> tuple[list[StockOutcome], list[PredictionOutcome]]:
    stocks: list[StockOutcome] = []
    predictions: list[PredictionOutcome] = []
    async with conn.cursor() as cur:
        await cur.execute(
            """
            SELECT "id", "stockTicker", "startPrice"::float8, "endPrice"::float8, "changePercent"::float8,
                   "sentiment", coalesce("newsEvents", '[]'::jsonb), "predictionMarketId", "question",
                   "outcome", "finalProbability"::float8
            FROM "market_outcomes" WHERE "windowId" = %s ORDER BY "id"
            """,
            (window_key(window_id),),
        )
        for (
            row_id,
            ticker,
            start,
            end,
            change,
            sentiment,
            news,
            market_id,
            question,
            outcome,
            probability,
        ) in await cur.fetchall():
            try:
                if ticker is not None and market_id is None:
                    stocks.append(
                        StockOutcome(
                            ticker=ticker,
                            start_price=start,
                            end_price=end,
                            change_percent=change,
                            sentiment=sentiment,
                            news_events=news if isinstance(news, list) else [news],
                        )
                    )
                elif market_id is not None and ticker is None:
                    predictions.append(
                        PredictionOutcome(
                            market_id=market_id,
                            question=question,
                            # NULL is the game's "not known yet": the market has not resolved.
                            outcome=outcome if outcome is not None else "UNRESOLVED",
                            final_probability=probability,
                        )
                    )
                else:
                    raise OutcomeError(
                        f"market_outcomes row {row_id!r} of window {window_key(window_id)} sets "
                        f"{'both' if ticker is not None else 'neither'} stockTicker and predictionMarketId; "
                        "a row is either a stock row or a prediction row: fix or delete it, then re-ingest the window"
                    )
            except ValidationError as error:
                detail = error.errors(include_url=False)[0]
                raise OutcomeError(
                    f"market_outcomes row {row_id!r} of window {window_key(window_id)}: "
                    f"{'.'.join(str(part) for part in detail['loc'])}: {detail['msg']} (got {detail['input']!r}); "
                    "fix or delete the row, then re-ingest the window"
                ) from error
    return stocks, predictions


async def _derived_outcomes(conn: AsyncConn, window_id: datetime) -> tuple[list[StockOutcome], list[PredictionOutcome]]:
    """Outcomes from the game's price history: each organization's first and last price in the window,
    and each prediction market's last YES price in the window with its resolution (if any)."""
    params = {"start": naive_utc(window_id), "end": naive_utc(window_id + HOUR)}
    stocks: list[StockOutcome] = []
    predictions: list[PredictionOutcome] = []
    async with conn.cursor() as cur:
        if await _tables_present(conn, "StockPrice", "Organization"):
            await cur.execute(
                """
                SELECT o."name", p.first_price, p.last_price
                FROM (
                    SELECT "organizationId",
                           (array_agg("price" ORDER BY "timestamp", "id"))[1] AS first_price,
                           (array_agg("price" ORDER BY "timestamp" DESC, "id" DESC))[1] AS last_price
                    FROM "StockPrice" WHERE "timestamp" >= %(start)s AND "timestamp" < %(end)s
                    GROUP BY "organizationId"
                ) p JOIN "Organization" o ON o."id" = p."organizationId"
                WHERE p.first_price > 0 AND p.last_price > 0
                ORDER BY o."name"
                """,
                params,
            )
            for name, first, last in await cur.fetchall():
                stocks.append(
                    StockOutcome(
                        ticker=name,
                        start_price=first,
                        end_price=last,
                        change_percent=round((last / first - 1) * 100, 4),
                        # The game records no sentiment with its prices.
                        sentiment=None,
                        news_events=[],
                    )
                )
        if await _tables_present(conn, "Market", "PredictionPriceHistory"):
            await cur.execute(
                """
                SELECT m."id", m."question", m."resolved", m."resolution", last."yesPrice"
                FROM "Market" m
                JOIN LATERAL (
                    SELECT h."yesPrice" FROM "PredictionPriceHistory" h
                    WHERE h."marketId" = m."id" AND h."createdAt" >= %(start)s AND h."createdAt" < %(end)s
                    ORDER BY h."createdAt" DESC, h."id" DESC LIMIT 1
                ) last ON true
                ORDER BY m."id"
                """,
                params,
            )
            for market_id, question, resolved, resolution, yes_price in await cur.fetchall():
                outcome: PredictionResult = (
                    "UNRESOLVED" if not resolved or resolution is None else ("YES" if resolution else "NO")
                )
                predictions.append(
                    PredictionOutcome(
                        market_id=market_id,
                        question=question,
                        outcome=outcome,
                        final_probability=min(1.0, max(0.0, yes_price)),
                    )
                )
    return stocks, predictions


async def read_market_outcomes(conn: AsyncConn, window_id: datetime) -> MarketOutcomes:
    """The window's ground truth: the game's market_outcomes rows when it has any, else derived from its
    price history, else none (the judge is then told that it judges without ground truth)."""
    stocks, predictions = await _recorded_outcomes(conn, window_id)
    if stocks or predictions:
        return MarketOutcomes(window_id=window_id, source="market_outcomes", stocks=stocks, predictions=predictions)
    stocks, predictions = await _derived_outcomes(conn, window_id)
    source = "price_history" if stocks or predictions else "none"
    return MarketOutcomes(window_id=window_id, source=source, stocks=stocks, predictions=predictions)
