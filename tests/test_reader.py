"""Reading the game's database: discovery, ingest into snapshots, validation that cannot be fooled, and
the malformed-row corpus in the game's shape."""

import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from pydantic import JsonValue

from babylon_assets.db.connection import AsyncConn
from babylon_assets.errors import BabylonError
from babylon_assets.simulation.writer import simulate
from babylon_assets.trajectories.game import RecordedRow, discover_windows, read_market_outcomes, unwindowed_rows
from babylon_assets.trajectories.ingest import IngestReport, ingest_window
from babylon_assets.trajectories.models import window_key
from babylon_assets.trajectories.reader import (
    MAX_ROW_BYTES,
    load_accepted,
    load_market_outcomes,
    load_window,
    stats_of,
    validate_rows,
)
from babylon_assets.trajectories.validation import validate_window
from tests.support.trajectory_rows import fixture_steps, insert_rows, row, utc_naive, window_agents

NOW = datetime(2026, 11, 24, 13, 20, tzinfo=UTC)
HOUR = timedelta(hours=1)
WINDOW = datetime(2026, 11, 24, 10, tzinfo=UTC)


@pytest.fixture
async def conn(store_url: str) -> AsyncIterator[AsyncConn]:
    """The platform's store."""
    async with await psycopg.AsyncConnection.connect(store_url, autocommit=True) as connection:
        yield connection


@pytest.fixture
async def game(database_url: str) -> AsyncIterator[AsyncConn]:
    """The game's database."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as connection:
        yield connection


async def ingest(database_url: str, store_url: str, window_id: datetime = WINDOW) -> IngestReport:
    async with (
        await psycopg.AsyncConnection.connect(database_url) as game_conn,
        await psycopg.AsyncConnection.connect(store_url) as store_conn,
    ):
        return await ingest_window(game_conn, store_conn, window_id)


async def test_both_recorded_step_shapes_load(database_url: str, store_url: str, conn: AsyncConn) -> None:
    recorder_id, plugin_id = insert_rows(
        database_url, [row(WINDOW, "agent-a", steps=6), row(WINDOW, "agent-b", steps=5, shape="plugin")]
    )
    await ingest(database_url, store_url)
    load = await load_window(conn, WINDOW, min_actions=5)
    assert load.rejected == []
    by_row = {trajectory.source_id: trajectory for trajectory in load.accepted}
    recorder, plugin = by_row[recorder_id], by_row[plugin_id]
    assert recorder.row.episode_length == 6 and [s.step_number for s in recorder.steps] == list(range(6))
    assert recorder.steps[2].action.action_type == "BUY_SHARES" and recorder.steps[2].reward == 1.25
    assert plugin.steps[4].action.action_type == "OPEN_PERP" and plugin.steps[4].reward == -0.5
    assert plugin.steps[0].environment_state.portfolio_value == 1010.4
    assert recorder.window_id == WINDOW and recorder.row.reward_components == {"pnl": 1.5}
    assert recorder.row.start_time == WINDOW + timedelta(minutes=1)
    assert load.distinct_agents == 2


async def test_rows_without_window_id_belong_to_the_hour_of_their_start(
    database_url: str, store_url: str, conn: AsyncConn, game: AsyncConn
) -> None:
    # The plugin logger records no windowId: the row is the window's of its startTime hour.
    plugin_id, recorder_id = insert_rows(
        database_url, [{**row(WINDOW, "plugin-agent", shape="plugin"), "windowId": None}, row(WINDOW, "agent-a")]
    )
    # A windowId that is not a key names no window: verify lists it with the fix.
    (malformed_id,) = insert_rows(database_url, [{**row(WINDOW, "agent-b"), "windowId": "2026-11-24 10:00"}])
    report = await ingest(database_url, store_url)
    assert report.rows == 2
    load = await load_window(conn, WINDOW, min_actions=5)
    assert sorted(t.source_id for t in load.accepted) == sorted([plugin_id, recorder_id])
    listed, count = await unwindowed_rows(game, 10)
    assert count == 1 and [(r.source_id, r.window_id) for r in listed] == [(malformed_id, "2026-11-24 10:00")]
    (candidate,) = await discover_windows(game, lookback_hours=24, min_agents=2, min_actions=5, now=NOW)
    assert (candidate.window_id, candidate.agents) == (WINDOW, 2)


async def test_discovery_counts_distinct_agents_with_enough_steps(database_url: str, game: AsyncConn) -> None:
    windows = {agents: NOW.replace(minute=0) - agents * HOUR for agents in (2, 3, 5, 8)}
    rows = [r for agents, window in windows.items() for r in window_agents(window, agents)]
    # The same agent twice counts once (also with other case or surrounding spaces); a short trajectory
    # does not count; nor do windows that are older than the lookback, still open, or not for training.
    rows += [row(windows[2], "agent-0"), row(windows[2], " AGENT-0\t"), row(windows[3], "short-agent", steps=4)]
    rows += window_agents(NOW.replace(minute=0) - 30 * HOUR, 8)
    rows += window_agents(NOW.replace(minute=0), 8)
    rows += [{**r, "isTrainingData": False} for r in window_agents(windows[2] - 2 * HOUR, 8)]
    insert_rows(database_url, rows)

    async def found(min_agents: int, min_actions: int = 5, lookback: int = 24) -> dict[datetime, int]:
        candidates = await discover_windows(
            game, lookback_hours=lookback, min_agents=min_agents, min_actions=min_actions, now=NOW
        )
        return {candidate.window_id: candidate.agents for candidate in candidates}

    assert await found(2) == {window: agents for agents, window in windows.items()}
    assert await found(3) == {windows[3]: 3, windows[5]: 5, windows[8]: 8}
    assert await found(5) == {windows[5]: 5, windows[8]: 8}
    assert await found(8) == {windows[8]: 8}
    assert await found(9) == {}
    assert (await found(4, min_actions=4))[windows[3]] == 4
    assert len(await found(8, lookback=48)) == 2
    # The lookback counts whole hours back from the current hour: 8 h reaches the window 8 h before it.
    assert await found(8, lookback=8) == {windows[8]: 8}
    candidates = await discover_windows(game, lookback_hours=24, min_agents=2, min_actions=5, now=NOW)
    assert [c.window_id for c in candidates] == sorted(windows.values(), reverse=True)
    assert candidates[0].trajectories == 4  # the 2-agent window, newest: agent-0 three times


async def test_ingest_snapshots_only_changed_content_and_says_what_changed(
    database_url: str, store_url: str, conn: AsyncConn
) -> None:
    first_rows = window_agents(WINDOW, 3)
    insert_rows(database_url, first_rows)
    first = await ingest(database_url, store_url)
    assert (first.changed, first.version, first.rows, first.rows_added) == (True, 1, 3, 3)
    assert first.outcome_source == "none"
    # Bookkeeping the game (or publishing) rewrites is not content: no new snapshot.
    with psycopg.connect(database_url, autocommit=True) as game_conn:
        game_conn.execute('UPDATE "trajectories" SET "usedInTraining" = true, "updatedAt" = now()')
    again = await ingest(database_url, store_url)
    assert (again.changed, again.version, again.snapshot_id) == (False, 1, first.snapshot_id)
    await validate_window(conn, WINDOW, min_actions=5)
    trained_on = {t.trajectory_id: t.row.total_reward for t in await load_accepted(conn, WINDOW)}
    # The game edits one row, deletes one and records a new one.
    changed_id, gone_id = first_rows[0]["trajectoryId"], first_rows[1]["trajectoryId"]
    with psycopg.connect(database_url, autocommit=True) as game_conn:
        game_conn.execute('UPDATE "trajectories" SET "finalBalance" = 1.0 WHERE "trajectoryId" = %s', (changed_id,))
        game_conn.execute('DELETE FROM "trajectories" WHERE "trajectoryId" = %s', (gone_id,))
    insert_rows(database_url, [row(WINDOW, "agent-new")])
    second = await ingest(database_url, store_url)
    assert (second.changed, second.version) == (True, 2)
    assert (second.rows, second.rows_added, second.rows_changed, second.rows_gone) == (3, 1, 1, 1)
    # Until the window is validated again, downstream reads exactly what was validated (the first snapshot).
    assert {t.trajectory_id: t.row.total_reward for t in await load_accepted(conn, WINDOW)} == trained_on
    async with conn.cursor() as cur:
        await cur.execute("SELECT count(*) FROM snapshot_rows WHERE snapshot_id = %s", (first.snapshot_id,))
        assert await cur.fetchone() == (3,)
    await validate_window(conn, WINDOW, min_actions=5)
    accepted = await load_accepted(conn, WINDOW)
    assert gone_id not in {t.trajectory_id for t in accepted} and len(accepted) == 3
    assert next(t for t in accepted if t.trajectory_id == changed_id).row.final_balance == 1.0


async def test_an_empty_window_is_not_snapshotted(database_url: str, store_url: str, conn: AsyncConn) -> None:
    report = await ingest(database_url, store_url)
    assert (report.rows, report.snapshot_id, report.changed) == (0, None, False)
    with pytest.raises(BabylonError, match="never been ingested; materialize raw_trajectories"):
        await load_window(conn, WINDOW, min_actions=5)


async def test_validate_window_stores_verdicts_idempotently(database_url: str, store_url: str, conn: AsyncConn) -> None:
    good = window_agents(WINDOW, 3)
    bad = {**row(WINDOW, "agent-x"), "finalStatus": "exploded"}
    insert_rows(database_url, [*good, bad])
    await ingest(database_url, store_url)
    with pytest.raises(BabylonError, match="never been validated"):
        await load_accepted(conn, WINDOW)
    first = await validate_window(conn, WINDOW, min_actions=5)
    second = await validate_window(conn, WINDOW, min_actions=5)
    assert first == second
    async with conn.cursor() as cur:
        await cur.execute("SELECT accepted, count(*) FROM trajectory_validations GROUP BY accepted ORDER BY accepted")
        assert await cur.fetchall() == [(False, 1), (True, 3)]
        await cur.execute("SELECT window_id, accepted, rejected, distinct_agents FROM window_validations")
        assert await cur.fetchall() == [(WINDOW, 3, 1, 3)]
        await cur.execute("SELECT reason FROM trajectory_validations WHERE NOT accepted")
        (reason,) = await cur.fetchone() or ("",)
    assert "finalStatus" in reason and "exploded" in reason
    accepted = await load_accepted(conn, WINDOW)
    assert sorted(t.trajectory_id for t in accepted) == sorted(str(r["trajectoryId"]) for r in good)
    # A stricter re-validation replaces the earlier verdicts instead of adding to them.
    await validate_window(conn, WINDOW, min_actions=6)
    assert await load_accepted(conn, WINDOW) == []
    async with conn.cursor() as cur:
        await cur.execute("SELECT count(*) FROM trajectory_validations")
        assert await cur.fetchone() == (4,)


async def test_two_validations_of_one_window_at_once_both_succeed(
    database_url: str, store_url: str, conn: AsyncConn
) -> None:
    import asyncio

    insert_rows(database_url, window_agents(WINDOW, 5))
    await ingest(database_url, store_url)

    async def validate() -> int:
        async with await psycopg.AsyncConnection.connect(store_url, autocommit=True) as own:
            return len((await validate_window(own, WINDOW, min_actions=5)).accepted)

    assert list(await asyncio.gather(validate(), validate())) == [5, 5]


async def test_window_stats_and_market_outcomes(database_url: str, store_url: str, conn: AsyncConn) -> None:
    simulate(database_url, agents=5, windows=1, seed=5, start=WINDOW)
    insert_rows(database_url, [row(WINDOW, "agent-short", steps=2)])
    await ingest(database_url, store_url)
    load = await load_window(conn, WINDOW, min_actions=5)
    stats = stats_of(load)
    pnls = [t.window_pnl for t in load.accepted]
    assert (stats.agents, stats.trajectories, stats.rejected) == (5, 5, 1)
    assert stats.actions == sum(len(t.steps) for t in load.accepted)
    assert (stats.pnl_min, stats.pnl_max) == (min(pnls), max(pnls))
    assert stats.pnl_mean == pytest.approx(sum(pnls) / 5)
    outcomes = await load_market_outcomes(conn, WINDOW)
    assert outcomes.source == "market_outcomes"
    assert outcomes.window_id == WINDOW and len(outcomes.stocks) == 32 and len(outcomes.predictions) == 5


async def test_outcomes_are_derived_from_price_history_when_the_game_has_no_market_outcomes(
    database_url: str, game: AsyncConn
) -> None:
    inside, later = utc_naive(WINDOW + timedelta(minutes=5)), utc_naive(WINDOW + timedelta(minutes=50))
    with psycopg.connect(database_url, autocommit=True) as game_conn, game_conn.cursor() as cur:
        cur.execute("""INSERT INTO "Organization" ("id", "name") VALUES ('org-1', 'BABY')""")
        cur.executemany(
            """INSERT INTO "StockPrice" ("id", "organizationId", "price", "change", "changePercent", "timestamp")
               VALUES (%s, 'org-1', %s, 0, 0, %s)""",
            [("p1", 50.0, inside), ("p2", 55.0, later), ("p3", 99.0, utc_naive(WINDOW + 2 * HOUR))],
        )
        cur.execute(
            """INSERT INTO "Market" ("id", "question", "liquidity", "resolved", "resolution", "endDate", "updatedAt")
               VALUES ('m-1', 'Will it rain?', 100, true, false, %s, %s)""",
            (later, later),
        )
        cur.executemany(
            """INSERT INTO "PredictionPriceHistory" ("id", "marketId", "yesPrice", "noPrice", "yesShares",
                   "noShares", "liquidity", "eventType", "source", "createdAt")
               VALUES (%s, 'm-1', %s, %s, 1, 1, 100, 'trade', 'amm', %s)""",
            [("h1", 0.6, 0.4, inside), ("h2", 0.3, 0.7, later)],
        )
    outcomes = await read_market_outcomes(game, WINDOW)
    assert outcomes.source == "price_history"
    (stock,) = outcomes.stocks
    assert (stock.ticker, stock.start_price, stock.end_price, stock.change_percent) == ("BABY", 50.0, 55.0, 10.0)
    (market,) = outcomes.predictions
    assert (market.market_id, market.outcome, market.final_probability) == ("m-1", "NO", 0.3)
    # An hour with neither: judged without ground truth, and says so.
    assert (await read_market_outcomes(game, WINDOW + 5 * HOUR)).source == "none"


# --- Validation that cannot be fooled (found by an adversarial run) ---


async def test_one_agent_under_ids_that_differ_by_spaces_or_case_is_one_agent(
    database_url: str, store_url: str, conn: AsyncConn, game: AsyncConn
) -> None:
    insert_rows(database_url, [row(WINDOW, agent) for agent in ("a", " a", "a\t", "A")])
    assert await discover_windows(game, lookback_hours=24, min_agents=2, min_actions=5, now=NOW) == []
    await ingest(database_url, store_url)
    load = await validate_window(conn, WINDOW, min_actions=5)
    assert len(load.accepted) == 4 and load.distinct_agents == 1


async def test_an_episode_replayed_under_new_ids_is_rejected_as_a_duplicate(
    database_url: str, store_url: str, conn: AsyncConn
) -> None:
    original = row(WINDOW, "agent-a")
    replays = [{**row(WINDOW, f"agent-{name}"), "stepsJson": original["stepsJson"]} for name in "bcde"]
    insert_rows(database_url, [original, *replays])
    await ingest(database_url, store_url)
    load = await validate_window(conn, WINDOW, min_actions=5)
    assert [t.trajectory_id for t in load.accepted] == [original["trajectoryId"]]
    assert load.distinct_agents == 1
    assert all(f"identical to trajectory {original['trajectoryId']!r}" in r.reason for r in load.rejected)


def _recorded(columns: dict[str, object]) -> RecordedRow:
    """A row as the ingest hands it over: the game's columns as JSON (timestamps in Prisma's form)."""
    shown = {key: value.isoformat(timespec="milliseconds") if isinstance(value, datetime) else value
             for key, value in columns.items()}  # fmt: skip
    shown.setdefault("isEvaluation", False)
    return RecordedRow(
        source_id=str(columns["id"]),
        trajectory_id=str(columns["trajectoryId"]),
        agent_id=str(columns["agentId"]),
        content_hash="0" * 64,
        recorded=json.dumps(shown),
    )


def test_a_corrected_rewrite_of_a_broken_row_wins_over_it() -> None:
    # Where the game's unique index on trajectoryId is missing, a broken row and its corrected re-write
    # share the id: the first row that is valid on its own wins, whatever came first.
    broken = {**row(WINDOW, "agent-a"), "trajectoryId": "t-1", "finalStatus": "exploded"}
    corrected = {**row(WINDOW, "agent-a"), "trajectoryId": "t-1"}
    later_copy = {**row(WINDOW, "agent-b"), "trajectoryId": "t-1"}
    load = validate_rows(
        [_recorded(r) for r in (broken, corrected, later_copy)], WINDOW, snapshot_id=None, min_actions=5
    )
    assert [t.source_id for t in load.accepted] == [corrected["id"]]
    reasons = {r.source_id: r.reason for r in load.rejected}
    assert "finalStatus" in reasons[str(broken["id"])]
    assert f"duplicate trajectoryId 't-1': row {corrected['id']!r} has it first" in reasons[str(later_copy["id"])]
    # Accepted in another window already: rejected here.
    elsewhere = validate_rows(
        [_recorded(corrected)], WINDOW, snapshot_id=None, min_actions=5, accepted_elsewhere={"t-1": WINDOW - HOUR}
    )
    assert "already accepted in window 2026-11-24T09:00" in elsewhere.rejected[0].reason


# --- The malformed-row corpus: each row is rejected with its own reason; the valid rows still load. ---

Columns = dict[str, object]
Steps = list[dict[str, JsonValue]]
STEP_START_MS = int((WINDOW + timedelta(minutes=1)).timestamp() * 1000)


def _steps(count: int = 5, change: Callable[[Steps], object] | None = None) -> str:
    """A stepsJson text of `count` valid recorder steps inside the episode, after `change`."""
    steps = fixture_steps("recorder", count, start_ms=STEP_START_MS, salt="malformed")
    if change is not None:
        change(steps)
    return json.dumps(steps)


def _child(container: JsonValue, key: str | int) -> JsonValue:
    if isinstance(container, dict) and isinstance(key, str):
        return container[key]
    if isinstance(container, list) and isinstance(key, int):
        return container[key]
    raise TypeError(f"the fixture has no {key!r} here")


def _in_step(index: int, *path: str | int, value: JsonValue = None, delete: bool = False) -> Callable[[Steps], None]:
    """Set (or delete) the value at `path` inside step `index`."""

    def change(steps: Steps) -> None:
        target: JsonValue = steps[index]
        for key in path[:-1]:
            target = _child(target, key)
        last = path[-1]
        assert isinstance(target, dict) and isinstance(last, str)
        if delete:
            del target[last]
        else:
            target[last] = value

    return change


def _no_llm_calls(steps: Steps) -> None:
    for step in steps:
        step["llmCalls"] = []


def _swap_first_steps(steps: Steps) -> None:
    steps[0]["stepNumber"], steps[1]["stepNumber"] = 1, 0


OVERSIZED = _steps(change=_in_step(4, "padding", value="x" * MAX_ROW_BYTES))

MALFORMED: list[tuple[str, Columns, str]] = [
    ("bad JSON in stepsJson", {"stepsJson": _steps()[:-40]}, "stepsJson is not valid JSON: EOF while parsing"),
    ("stepsJson an object", {"stepsJson": json.dumps({"stepNumber": 0})}, "stepsJson: Input should be a valid array"),
    (
        "empty steps",
        {"stepsJson": "[]", "episodeLength": 0, "totalReward": 0.0, "tradesExecuted": 0},
        "stepsJson: List should have at least 1 item",
    ),
    (
        "fewer than min_actions",
        {"stepsJson": _steps(3), "episodeLength": 3, "totalReward": 3.75, "tradesExecuted": 3},
        "only 3 step(s), fewer than min_actions=5",
    ),
    ("oversized payload", {"stepsJson": OVERSIZED}, f"characters, over the {MAX_ROW_BYTES:,} limit (MAX_ROW_BYTES)"),
    (
        "missing step field",
        {"stepsJson": _steps(change=_in_step(2, "llmCalls", 0, "systemPrompt", delete=True))},
        "stepsJson[2].llmCalls[0].systemPrompt is missing",
    ),
    (
        "missing action",
        {"stepsJson": _steps(change=_in_step(4, "action", delete=True))},
        "stepsJson[4].action is missing",
    ),
    (
        "llmCalls null",
        {"stepsJson": _steps(change=_in_step(0, "llmCalls", value=None))},
        "stepsJson[0].llmCalls is NULL: Input should be a valid array",
    ),
    (
        "providerAccesses null",
        {"stepsJson": _steps(change=_in_step(1, "providerAccesses", value=None))},
        "stepsJson[1].providerAccesses is NULL: Input should be a valid array",
    ),
    (
        "messages a string",
        {"stepsJson": _steps(change=_in_step(0, "llmCalls", 0, "messages", value="system: hi"))},
        "stepsJson[0].llmCalls[0].messages: Input should be a valid array (got 'system: hi')",
    ),
    (
        "NaN reward",
        {"stepsJson": _steps(change=_in_step(1, "reward", value=float("nan")))},
        "stepsJson[1].reward: Input should be a finite number",
    ),
    (
        "Infinity P&L",
        {"stepsJson": _steps(change=_in_step(3, "environmentState", "agentPnL", value=float("inf")))},
        "stepsJson[3].environmentState.agentPnL: Input should be a finite number",
    ),
    (
        "number beyond float",
        {"stepsJson": _steps().replace('"reward": 1.25', '"reward": 1e999', 1)},
        "stepsJson[0].reward: Input should be a finite number",
    ),
    (
        "reward a boolean",
        {"stepsJson": _steps(change=_in_step(0, "reward", value=True))},
        "stepsJson[0].reward: Input should be a valid number (got True)",
    ),
    (
        "step number a boolean",
        {"stepsJson": _steps(change=_in_step(0, "stepNumber", value=True))},
        "stepsJson[0].stepNumber: Input should be a valid integer (got True)",
    ),
    (
        "reward a numeric string",
        {"stepsJson": _steps(change=_in_step(2, "reward", value="1.25"))},
        "stepsJson[2].reward: Input should be a valid number (got '1.25')",
    ),
    (
        "timestamp in seconds",
        {"stepsJson": _steps(change=_in_step(1, "timestamp", value=STEP_START_MS // 1000))},
        f"stepsJson[1].timestamp {STEP_START_MS // 1000} looks like seconds",
    ),
    (
        "timestamp outside the episode",
        {"stepsJson": _steps(change=_in_step(4, "timestamp", value=STEP_START_MS + 3 * 3_600_000))},
        "stepsJson[4].timestamp",
    ),
    ("NaN totalReward", {"totalReward": float("nan")}, "totalReward: Input should be a valid number (got 'NaN')"),
    ("infinite finalBalance", {"finalBalance": float("inf")}, "finalBalance: Input should be a valid number"),
    ("totalReward not the sum", {"totalReward": 99.0}, "totalReward is 99 but the step rewards sum to 6.25"),
    ("episodeLength mismatch", {"episodeLength": 7}, "episodeLength is 7 but stepsJson has 5 steps"),
    ("tradesExecuted mismatch", {"tradesExecuted": 3}, "tradesExecuted is 3 but 5 step(s) have such an actionType"),
    ("postsCreated mismatch", {"postsCreated": 2}, "postsCreated is 2 but 0 step(s) have such an actionType"),
    ("negative trade count", {"tradesExecuted": -1}, "tradesExecuted: Input should be greater than or equal to 0"),
    (
        "endTime before startTime",
        {"endTime": utc_naive(WINDOW)},
        "endTime 2026-11-24T10:00:00.000000 is before startTime 2026-11-24T10:01:00.000000",
    ),
    (
        "unknown status",
        {"finalStatus": "exploded"},
        "finalStatus: Input should be 'completed', 'completed_with_errors', 'terminated', 'error' or 'timeout' "
        "(got 'exploded')",
    ),
    ("agent empty", {"agentId": ""}, "agentId: String should have at least 1 character"),
    ("agent whitespace", {"agentId": " \t "}, "agentId ' \\t ' is empty or whitespace"),
    ("windowHours 2", {"windowHours": 2}, "windowHours: Input should be 1 (got 2)"),
    ("steps out of order", {"stepsJson": _steps(change=_swap_first_steps)}, "step numbers must run 0, 1, 2, ..."),
    ("no LLM call", {"stepsJson": _steps(change=_no_llm_calls)}, "no step has an LLM call"),
    (
        "unknown LLM call purpose",
        {"stepsJson": _steps(change=_in_step(0, "llmCalls", 0, "purpose", value="planning"))},
        "stepsJson[0].llmCalls[0].purpose: Input should be 'action', 'reasoning', 'evaluation', 'response' or 'other'",
    ),
    (
        "negative open positions",
        {"stepsJson": _steps(change=_in_step(1, "environmentState", "openPositions", value=-2))},
        "stepsJson[1].environmentState.openPositions: Input should be greater than or equal to 0 (got -2)",
    ),
    (
        "reward not a number",
        {"stepsJson": _steps(change=_in_step(0, "reward", value="lots"))},
        "stepsJson[0].reward: Input should be a valid number (got 'lots')",
    ),
    ("metricsJson an array", {"metricsJson": "[1, 2]"}, "metricsJson: Input should be an object"),
    ("rewardComponentsJson not JSON", {"rewardComponentsJson": "{pnl"}, "rewardComponentsJson is not valid JSON"),
    (
        "not training data",
        {"isTrainingData": False},
        "isTrainingData is false: the game marked this episode as not for training",
    ),
    (
        "a replay of a valid episode",
        {"stepsJson": "REPLAY"},
        "duplicate episode: its steps are identical to trajectory",
    ),
]


def _valid_rows() -> list[Columns]:
    return [{**row(WINDOW, f"valid-agent-{index}"), "trajectoryId": f"valid-{index}"} for index in range(4)]


def _malformed(valid: list[Columns], index: int, columns: Columns) -> Columns:
    bad = {**row(WINDOW, f"bad-{index}"), **columns}
    if bad["stepsJson"] == "REPLAY":
        bad["stepsJson"] = valid[0]["stepsJson"]
    return bad


@pytest.mark.parametrize(("columns", "reason"), [(c, r) for _, c, r in MALFORMED], ids=[n for n, _, _ in MALFORMED])
async def test_malformed_row_is_rejected_with_its_reason(
    database_url: str, store_url: str, conn: AsyncConn, columns: Columns, reason: str
) -> None:
    valid = _valid_rows()
    *valid_ids, bad_id = insert_rows(database_url, [*valid, _malformed(valid, 0, columns)])
    await ingest(database_url, store_url)
    load = await validate_window(conn, WINDOW, min_actions=5)
    (rejection,) = load.rejected
    assert rejection.source_id == bad_id
    assert reason in rejection.reason
    assert sorted(t.source_id for t in load.accepted) == sorted(valid_ids)


async def test_whole_corpus_in_one_window(database_url: str, store_url: str, conn: AsyncConn) -> None:
    assert len(MALFORMED) >= 35
    valid = _valid_rows()
    bad = [_malformed(valid, index, columns) for index, (_, columns, _) in enumerate(MALFORMED)]
    ids = insert_rows(database_url, [*valid, *bad])
    await ingest(database_url, store_url)
    load = await validate_window(conn, WINDOW, min_actions=5)
    assert sorted(t.source_id for t in load.accepted) == sorted(ids[: len(valid)])
    assert load.distinct_agents == len(valid)
    reasons = {rejection.source_id: rejection.reason for rejection in load.rejected}
    assert sorted(reasons) == sorted(ids[len(valid) :])
    for source_id, (name, _, reason) in zip(ids[len(valid) :], MALFORMED, strict=True):
        assert reason in reasons[source_id], name
    async with conn.cursor() as cur:
        await cur.execute("SELECT count(*) FILTER (WHERE accepted), count(*) FROM trajectory_validations")
        assert await cur.fetchone() == (len(valid), len(valid) + len(MALFORMED))
        await cur.execute("SELECT count(*) FROM trajectory_validations WHERE NOT accepted AND reason IS NULL")
        assert await cur.fetchone() == (0,)
    assert window_key(load.window_id) == "2026-11-24T10:00"
