"""Async reading of recorded trajectories: window discovery, validated window loads, market outcomes.

Every row of a window comes back either as a `Trajectory` or as a `Rejection` whose reason names what
is wrong; one bad row never raises and never disappears. A row belongs to the window of the UTC hour
its window id falls in, so a window id that is not on the hour is loaded (and rejected) rather than lost.
Steps are parsed from `steps::text` by pydantic's Rust JSON parser; the parsed steps are handed to
`Trajectory` as instances, which pydantic does not validate twice.
"""

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from statistics import fmean

from psycopg import sql
from psycopg.rows import TupleRow
from pydantic import JsonValue, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from babylon_assets.db.connection import AsyncConn
from babylon_assets.errors import BabylonError
from babylon_assets.trajectories.models import (
    MarketOutcomes,
    PredictionOutcome,
    Rejection,
    Step,
    StockOutcome,
    Trajectory,
    WindowCandidate,
    WindowLoad,
    WindowStats,
    hour_floor,
    lookback_start,
    window_key,
)

# A trajectory's steps JSON above this size is rejected unparsed: a real hour of agent steps is far
# smaller, and one runaway recorder row must not exhaust the reader's memory.
MAX_STEPS_BYTES = 8 * 1024 * 1024
WINDOW = timedelta(hours=1)
_MAX_REASON_ERRORS = 3

_STEPS = TypeAdapter(list[Step])
_JSON_OBJECT = TypeAdapter(dict[str, JsonValue] | None)

# Every column the verdict needs, in this order. A steps value stored as a JSON string is recorder
# text: `#>> '{}'` unwraps it so it is parsed like any other steps JSON. `first_row` is the earliest
# other row carrying the same trajectory id (served by the trajectory_id index).
_SELECT_ROWS = sql.SQL(
    """
    SELECT t.id, t.trajectory_id, t.agent_id, t.start_time, t.end_time, t.duration_ms, t.window_id,
           t.window_hours, t.episode_id, t.scenario_id, jsonb_typeof(t.steps),
           CASE WHEN jsonb_typeof(t.steps) = 'string' THEN t.steps #>> '{{}}' ELSE t.steps::text END,
           t.reward_components::text, t.metrics::text, t.metadata::text, t.total_reward, t.episode_length,
           t.final_status, t.final_balance, t.final_pnl, t.trades_executed, t.posts_created,
           t.is_training_data, t.used_in_training, t.trained_in_batch, first_row.id, first_row.window_id
    FROM trajectories t
    LEFT JOIN LATERAL (
        SELECT d.id, d.window_id FROM trajectories d
        WHERE d.trajectory_id = t.trajectory_id AND d.id < t.id
        ORDER BY d.id LIMIT 1
    ) first_row ON true
    {where}
    ORDER BY t.id
    """
)


def _json_path(loc: Sequence[int | str]) -> str:
    path = "steps"
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _describe(error: ErrorDetails, path: str) -> str:
    kind, value = error["type"], error["input"]
    if kind == "missing":
        return f"{path} is missing"
    if value is None:
        return f"{path} is missing (NULL)"
    message = error["msg"].removeprefix("Value error, ")
    if not path:
        return message
    if kind == "value_error" or isinstance(value, dict | list):
        return f"{path}: {message}"
    shown = value.isoformat() if isinstance(value, datetime) else repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return f"{path}: {message} (got {shown})"


def _reason(error: ValidationError, *, steps: bool) -> str:
    details = error.errors(include_url=False)
    parts = []
    for detail in details[:_MAX_REASON_ERRORS]:
        loc = detail["loc"]
        if steps:
            path = _json_path(loc)
        else:
            path = ".".join(str(part) for part in loc)
        parts.append(_describe(detail, path))
    more = len(details) - _MAX_REASON_ERRORS
    return "; ".join(parts) + (f"; and {more} more error(s)" if more > 0 else "")


def _parse_steps(steps_type: str | None, steps_text: str | None) -> list[Step] | str:
    """The parsed steps, or the reason they cannot be used."""
    if steps_type is None or steps_text is None:
        return "steps is missing (NULL)"
    if len(steps_text) > MAX_STEPS_BYTES:  # characters, a lower bound on bytes: good enough for a guard
        return f"steps JSON is {len(steps_text):,} characters, over the {MAX_STEPS_BYTES:,} limit (MAX_STEPS_BYTES)"
    if steps_type not in ("array", "string"):
        return f"steps is a JSON {steps_type}, expected an array of steps"
    try:
        steps = _STEPS.validate_json(steps_text)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        if first["type"] == "json_invalid":
            return f"steps is recorder text that is not valid JSON: {first['ctx']['error']}"
        if first["type"] == "list_type":
            return "steps is recorder text whose JSON is not an array of steps"
        return _reason(error, steps=True)
    if not steps:
        return "steps is empty: the episode recorded no actions"
    return steps


def _verdict(row: TupleRow, *, min_actions: int) -> Trajectory | Rejection:
    (
        row_id,
        trajectory_id,
        agent_id,
        start_time,
        end_time,
        duration_ms,
        window_id,
        window_hours,
        episode_id,
        scenario_id,
        steps_type,
        steps_text,
        reward_components,
        metrics,
        metadata,
        total_reward,
        episode_length,
        final_status,
        final_balance,
        final_pnl,
        trades_executed,
        posts_created,
        is_training_data,
        used_in_training,
        trained_in_batch,
        first_row_id,
        first_row_window,
    ) = row

    def reject(reason: str) -> Rejection:
        return Rejection(
            row_id=row_id, trajectory_id=trajectory_id, agent_id=agent_id, window_id=window_id, reason=reason
        )

    if first_row_id is not None:
        where = first_row_window.astimezone(UTC).isoformat() if first_row_window is not None else "NULL"
        return reject(
            f"duplicate trajectory_id {trajectory_id!r}: row {first_row_id} (window id {where}) has it first; "
            "later rows with the same id are rejected"
        )
    if not is_training_data:
        return reject("is_training_data is false: the recorder marked this episode as not for training")
    steps = _parse_steps(steps_type, steps_text)
    if isinstance(steps, str):
        return reject(steps)
    objects: dict[str, dict[str, JsonValue] | None] = {}
    for name, text in (("reward_components", reward_components), ("metrics", metrics), ("metadata", metadata)):
        try:
            objects[name] = _JSON_OBJECT.validate_json(text) if text is not None else None
        except ValidationError as error:
            return reject(f"{name} is not a JSON object: {error.errors(include_url=False)[0]['msg']}")
    try:
        trajectory = Trajectory(
            row_id=row_id,
            trajectory_id=trajectory_id,
            agent_id=agent_id,
            start_time=start_time,
            end_time=end_time,
            duration_ms=duration_ms,
            window_id=window_id,
            window_hours=window_hours,
            episode_id=episode_id,
            scenario_id=scenario_id,
            steps=steps,
            reward_components=objects["reward_components"],
            metrics=objects["metrics"],
            metadata=objects["metadata"],
            total_reward=total_reward,
            episode_length=episode_length,
            final_status=final_status,
            final_balance=final_balance,
            final_pnl=final_pnl,
            trades_executed=trades_executed,
            posts_created=posts_created,
            is_training_data=is_training_data,
            used_in_training=used_in_training,
            trained_in_batch=trained_in_batch,
        )
    except ValidationError as error:
        return reject(_reason(error, steps=False))
    if len(trajectory.steps) < min_actions:
        return reject(f"only {len(trajectory.steps)} step(s), fewer than min_actions={min_actions}")
    return trajectory


def _as_window(window_id: datetime) -> datetime:
    # window_key validates: a window id off the hour is a caller's bug, not a row to reject.
    window_key(window_id)
    return window_id.astimezone(UTC)


async def _verdicts(
    conn: AsyncConn, where: sql.Composable, params: Sequence[object], *, min_actions: int
) -> list[Trajectory | Rejection]:
    """Each selected row's verdict. fetchall() measured faster than streaming rows (single-row mode)."""
    async with conn.cursor() as cur:
        await cur.execute(_SELECT_ROWS.format(where=where), params)
        rows = await cur.fetchall()
    return [_verdict(row, min_actions=min_actions) for row in rows]


async def load_window(conn: AsyncConn, window_id: datetime, *, min_actions: int) -> WindowLoad:
    """Every row whose window id falls in this UTC hour, accepted as a model or rejected with a reason."""
    start = _as_window(window_id)
    where = sql.SQL("WHERE t.window_id >= %s AND t.window_id < %s")
    accepted: list[Trajectory] = []
    rejected: list[Rejection] = []
    for verdict in await _verdicts(conn, where, (start, start + WINDOW), min_actions=min_actions):
        if isinstance(verdict, Trajectory):
            accepted.append(verdict)
        else:
            rejected.append(verdict)
    return WindowLoad(window_id=start, accepted=accepted, rejected=rejected)


async def load_accepted(conn: AsyncConn, window_id: datetime) -> list[Trajectory]:
    """The rows the window's last stored validation accepted (see `validation.validate_window`)."""
    start = _as_window(window_id)
    async with conn.cursor() as cur:
        await cur.execute("SELECT 1 FROM window_validations WHERE window_id = %s", (start,))
        if await cur.fetchone() is None:
            raise BabylonError(
                f"window {window_key(start)} has never been validated; validate it first "
                "(materialize validated_windows for it, or call validate_window)"
            )
    where = sql.SQL(
        "WHERE t.id IN (SELECT v.row_id FROM trajectory_validations v WHERE v.window_id = %s AND v.accepted)"
    )
    trajectories: list[Trajectory] = []
    # min_actions was applied when the verdict was stored; here only a row changed since can fail.
    for verdict in await _verdicts(conn, where, (start,), min_actions=1):
        if isinstance(verdict, Rejection):
            raise BabylonError(
                f"row {verdict.row_id} of window {window_key(start)} was accepted but no longer validates "
                f"({verdict.reason}); validate the window again"
            )
        trajectories.append(verdict)
    return trajectories


async def load_unwindowed_rejections(conn: AsyncConn) -> list[Rejection]:
    """Rows without a window id (the plugin logger records none): they belong to no window."""
    async with conn.cursor() as cur:
        await cur.execute(
            "SELECT id, trajectory_id, agent_id, start_time IS NOT NULL FROM trajectories "
            "WHERE window_id IS NULL ORDER BY id"
        )
        rows = await cur.fetchall()
    rejections = []
    for row_id, trajectory_id, agent_id, has_start in rows:
        fix = (
            "set its window_id to the UTC hour start of its start_time "
            "(date_trunc('hour', start_time, 'UTC')), then validate that window"
            if has_start
            else "it has no start_time either, so the recorder must write its windowId"
        )
        rejections.append(
            Rejection(
                row_id=row_id,
                trajectory_id=trajectory_id,
                agent_id=agent_id,
                window_id=None,
                reason=f"row has no windowId, so it belongs to no window; {fix}",
            )
        )
    return rejections


async def discover_windows(
    conn: AsyncConn, *, lookback_hours: int, min_agents: int, min_actions: int, now: datetime | None = None
) -> list[WindowCandidate]:
    """Windows that are over and started within the lookback, with at least `min_agents` distinct agents
    having `min_actions` steps or more (counted before validation), newest first.

    The WHERE clause matches the partial index trajectories_window_discovery, so this is an index-only scan.
    """
    moment = now or datetime.now(UTC)
    async with conn.cursor() as cur:
        await cur.execute(
            """
            SELECT date_trunc('hour', window_id, 'UTC') AS window_start,
                   count(DISTINCT agent_id), count(*)
            FROM trajectories
            WHERE window_id IS NOT NULL AND is_training_data
              AND window_id >= %(since)s AND window_id < %(closed)s
              AND episode_length >= %(min_actions)s
            GROUP BY window_start
            HAVING count(DISTINCT agent_id) >= %(min_agents)s
            ORDER BY window_start DESC
            """,
            {
                "since": lookback_start(moment, lookback_hours),
                "closed": hour_floor(moment),
                "min_actions": min_actions,
                "min_agents": min_agents,
            },
        )
        rows = await cur.fetchall()
    return [WindowCandidate(window_id=window, agents=agents, trajectories=count) for window, agents, count in rows]


async def load_market_outcomes(conn: AsyncConn, window_id: datetime) -> MarketOutcomes:
    start = _as_window(window_id)
    async with conn.cursor() as cur:
        await cur.execute(
            "SELECT ticker, start_price, end_price, change_percent, sentiment, news_events "
            "FROM market_outcomes_stock WHERE window_id = %s ORDER BY ticker",
            (start,),
        )
        stocks = [
            StockOutcome(
                ticker=ticker,
                start_price=start_price,
                end_price=end_price,
                change_percent=change,
                sentiment=sentiment,
                news_events=news,
            )
            for ticker, start_price, end_price, change, sentiment, news in await cur.fetchall()
        ]
        await cur.execute(
            "SELECT market_id, question, outcome, final_probability "
            "FROM market_outcomes_prediction WHERE window_id = %s ORDER BY market_id",
            (start,),
        )
        predictions = [
            PredictionOutcome(market_id=market_id, question=question, outcome=outcome, final_probability=probability)
            for market_id, question, outcome, probability in await cur.fetchall()
        ]
    return MarketOutcomes(window_id=start, stocks=stocks, predictions=predictions)


def stats_of(load: WindowLoad) -> WindowStats:
    """Statistics of a validated window: accepted trajectories only."""
    pnls = [trajectory.window_pnl for trajectory in load.accepted]
    return WindowStats(
        window_id=load.window_id,
        agents=load.distinct_agents,
        trajectories=len(load.accepted),
        rejected=len(load.rejected),
        actions=sum(trajectory.action_count for trajectory in load.accepted),
        pnl_min=min(pnls) if pnls else None,
        pnl_mean=fmean(pnls) if pnls else None,
        pnl_max=max(pnls) if pnls else None,
    )


async def window_stats(conn: AsyncConn, window_id: datetime, *, min_actions: int) -> WindowStats:
    return stats_of(await load_window(conn, window_id, min_actions=min_actions))
