from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg.rows import TupleRow

from babylon_assets.errors import BabylonError
from babylon_assets.trajectories.reader import (
    discover_windows,
    load_accepted,
    load_market_outcomes,
    load_unwindowed_rejections,
    load_window,
    window_stats,
)
from babylon_assets.trajectories.simulate import simulate
from babylon_assets.trajectories.validation import validate_window
from tests.trajectory_rows import insert_rows, row, window_agents

NOW = datetime(2026, 11, 24, 13, 20, tzinfo=UTC)
HOUR = timedelta(hours=1)
WINDOW = datetime(2026, 11, 24, 10, tzinfo=UTC)

Conn = psycopg.AsyncConnection[TupleRow]


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[Conn]:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as connection:
        yield connection


async def test_both_recorded_step_shapes_load(database_url: str, conn: Conn) -> None:
    recorder_id, plugin_id = insert_rows(
        database_url, [row(WINDOW, "agent-a", steps=6), row(WINDOW, "agent-b", steps=5, shape="plugin")]
    )
    load = await load_window(conn, WINDOW, min_actions=5)
    assert load.rejected == []
    by_row = {trajectory.row_id: trajectory for trajectory in load.accepted}
    recorder, plugin = by_row[recorder_id], by_row[plugin_id]
    assert recorder.episode_length == 6 and [s.step_number for s in recorder.steps] == list(range(6))
    assert recorder.steps[2].action.action_type == "BUY_SHARES" and recorder.steps[2].reward == 1.25
    assert plugin.steps[4].action.action_type == "OPEN_PERP" and plugin.steps[4].reward == -0.5
    assert plugin.steps[0].environment_state.portfolio_value == 1010.4
    assert recorder.window_id == WINDOW and recorder.reward_components == {"pnl": 1.5}
    assert load.distinct_agents == 2


async def test_discovery_counts_distinct_agents_with_enough_steps(database_url: str, conn: Conn) -> None:
    windows = {agents: NOW.replace(minute=0) - agents * HOUR for agents in (2, 3, 5, 8)}
    rows = [r for agents, window in windows.items() for r in window_agents(window, agents)]
    # The same agent twice counts once; a short trajectory does not count; nor do windows that are
    # older than the lookback, still open, or marked not for training.
    rows += [row(windows[2], "agent-0"), row(windows[3], "short-agent", steps=4)]
    rows += window_agents(NOW.replace(minute=0) - 30 * HOUR, 8)
    rows += window_agents(NOW.replace(minute=0), 8)
    rows += [{**r, "is_training_data": False} for r in window_agents(windows[2] - 2 * HOUR, 8)]
    insert_rows(database_url, rows)

    async def found(min_agents: int, min_actions: int = 5, lookback: int = 24) -> dict[datetime, int]:
        candidates = await discover_windows(
            conn, lookback_hours=lookback, min_agents=min_agents, min_actions=min_actions, now=NOW
        )
        return {candidate.window_id: candidate.agents for candidate in candidates}

    assert await found(2) == {window: agents for agents, window in windows.items()}
    assert await found(3) == {windows[3]: 3, windows[5]: 5, windows[8]: 8}
    assert await found(5) == {windows[5]: 5, windows[8]: 8}
    assert await found(8) == {windows[8]: 8}
    assert await found(9) == {}
    assert (await found(4, min_actions=4))[windows[3]] == 4
    assert len(await found(8, lookback=48)) == 2
    candidates = await discover_windows(conn, lookback_hours=24, min_agents=2, min_actions=5, now=NOW)
    assert [c.window_id for c in candidates] == sorted(windows.values(), reverse=True)
    assert candidates[0].trajectories == 3  # the 2-agent window, newest: agent-0 twice


async def test_validate_window_stores_verdicts_idempotently(database_url: str, conn: Conn) -> None:
    good = window_agents(WINDOW, 3)
    bad = {**row(WINDOW, "agent-x"), "final_status": "exploded"}
    insert_rows(database_url, [*good, bad])
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
    assert "final_status" in reason and "exploded" in reason
    accepted = await load_accepted(conn, WINDOW)
    assert [t.trajectory_id for t in accepted] == [r["trajectory_id"] for r in good]
    # A stricter re-validation replaces the earlier verdicts instead of adding to them.
    await validate_window(conn, WINDOW, min_actions=6)
    assert await load_accepted(conn, WINDOW) == []
    async with conn.cursor() as cur:
        await cur.execute("SELECT count(*) FROM trajectory_validations")
        assert await cur.fetchone() == (4,)


async def test_window_stats_and_market_outcomes(database_url: str, conn: Conn) -> None:
    simulate(database_url, agents=5, windows=1, seed=5, start=WINDOW)
    insert_rows(database_url, [row(WINDOW, "agent-short", steps=2)])
    stats = await window_stats(conn, WINDOW, min_actions=5)
    load = await load_window(conn, WINDOW, min_actions=5)
    pnls = [t.window_pnl for t in load.accepted]
    assert (stats.agents, stats.trajectories, stats.rejected) == (5, 5, 1)
    assert stats.actions == sum(len(t.steps) for t in load.accepted)
    assert (stats.pnl_min, stats.pnl_max) == (min(pnls), max(pnls))
    assert stats.pnl_mean == pytest.approx(sum(pnls) / 5)
    outcomes = await load_market_outcomes(conn, WINDOW)
    assert outcomes.window_id == WINDOW and len(outcomes.stocks) == 32 and len(outcomes.predictions) == 5
    empty = await window_stats(conn, WINDOW + HOUR, min_actions=5)
    assert (empty.trajectories, empty.pnl_mean) == (0, None)
    assert (await load_market_outcomes(conn, WINDOW + HOUR)).stocks == []


async def test_rows_without_window_are_reported_not_lost(database_url: str, conn: Conn) -> None:
    with_start, without_start = insert_rows(
        database_url,
        [row(None, "plugin-agent", shape="plugin"), {**row(None, "plugin-agent", shape="plugin"), "start_time": None}],
    )
    rejections = await load_unwindowed_rejections(conn)
    assert [r.row_id for r in rejections] == [with_start, without_start]
    assert "no windowId" in rejections[0].reason and "date_trunc('hour', start_time, 'UTC')" in rejections[0].reason
    assert "no start_time either" in rejections[1].reason
