import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from pydantic import JsonValue

from babylon_assets.db.connection import AsyncConn
from babylon_assets.errors import BabylonError
from babylon_assets.trajectories.reader import (
    MAX_STEPS_BYTES,
    discover_windows,
    load_accepted,
    load_market_outcomes,
    load_unwindowed_rejections,
    load_window,
    window_stats,
)
from babylon_assets.trajectories.simulate import simulate
from babylon_assets.trajectories.validation import validate_window
from tests.trajectory_rows import fixture_steps, insert_rows, row, window_agents

NOW = datetime(2026, 11, 24, 13, 20, tzinfo=UTC)
HOUR = timedelta(hours=1)
WINDOW = datetime(2026, 11, 24, 10, tzinfo=UTC)


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[AsyncConn]:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as connection:
        yield connection


async def test_both_recorded_step_shapes_load(database_url: str, conn: AsyncConn) -> None:
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


async def test_discovery_counts_distinct_agents_with_enough_steps(database_url: str, conn: AsyncConn) -> None:
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
    # The lookback counts whole hours back from the current hour: 8 h reaches the window 8 h before it.
    assert await found(8, lookback=8) == {windows[8]: 8}
    candidates = await discover_windows(conn, lookback_hours=24, min_agents=2, min_actions=5, now=NOW)
    assert [c.window_id for c in candidates] == sorted(windows.values(), reverse=True)
    assert candidates[0].trajectories == 3  # the 2-agent window, newest: agent-0 twice


async def test_validate_window_stores_verdicts_idempotently(database_url: str, conn: AsyncConn) -> None:
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


async def test_window_stats_and_market_outcomes(database_url: str, conn: AsyncConn) -> None:
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


async def test_rows_without_window_are_reported_not_lost(database_url: str, conn: AsyncConn) -> None:
    with_start, without_start = insert_rows(
        database_url,
        [row(None, "plugin-agent", shape="plugin"), {**row(None, "plugin-agent", shape="plugin"), "start_time": None}],
    )
    rejections = await load_unwindowed_rejections(conn)
    assert [r.row_id for r in rejections] == [with_start, without_start]
    assert "no windowId" in rejections[0].reason and "date_trunc('hour', start_time, 'UTC')" in rejections[0].reason
    assert "no start_time either" in rejections[1].reason


# --- The malformed-row corpus: each row is rejected with its own reason; the valid rows still load. ---

Columns = dict[str, object]
Steps = list[dict[str, JsonValue]]


def _steps(count: int = 5, change: Callable[[Steps], object] | None = None, *, as_text: bool = False) -> str:
    """Steps JSON for the jsonb column; `as_text` stores it as recorder text (a JSON string)."""
    steps = fixture_steps("recorder", count)
    if change is not None:
        change(steps)
    text = json.dumps(steps)
    return json.dumps(text) if as_text else text


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


OVERSIZED = _steps(change=_in_step(4, "padding", value="x" * MAX_STEPS_BYTES))

MALFORMED: list[tuple[str, Columns, str]] = [
    (
        "bad JSON in recorder text",
        {"steps": json.dumps(_steps()[:-40])},
        "steps is recorder text that is not valid JSON: EOF while parsing",
    ),
    ("steps NULL", {"steps": None}, "steps is missing (NULL)"),
    ("steps an object", {"steps": json.dumps({"stepNumber": 0})}, "steps is a JSON object, expected an array of steps"),
    (
        "recorder text not an array",
        {"steps": json.dumps(json.dumps({"steps": []}))},
        "steps is recorder text whose JSON is not an array of steps",
    ),
    ("empty steps", {"steps": "[]", "episode_length": 0}, "steps is empty: the episode recorded no actions"),
    ("fewer than min_actions", {"steps": _steps(3), "episode_length": 3}, "only 3 step(s), fewer than min_actions=5"),
    (
        "oversized payload",
        {"steps": OVERSIZED},
        f"characters, over the {MAX_STEPS_BYTES:,} limit (MAX_STEPS_BYTES)",
    ),
    (
        "missing step field",
        {"steps": _steps(change=_in_step(2, "llmCalls", 0, "systemPrompt", delete=True))},
        "steps[2].llmCalls[0].systemPrompt is missing",
    ),
    (
        "missing action",
        {"steps": _steps(change=_in_step(4, "action", delete=True))},
        "steps[4].action is missing",
    ),
    (
        "NaN in recorder text",
        {"steps": _steps(change=_in_step(1, "reward", value=float("nan")), as_text=True)},
        "steps[1].reward: Input should be a finite number",
    ),
    (
        "Infinity in recorder text",
        {"steps": _steps(change=_in_step(3, "environmentState", "agentPnL", value=float("inf")), as_text=True)},
        "steps[3].environmentState.agentPnL: Input should be a finite number",
    ),
    (
        "number beyond float in jsonb",
        {"steps": _steps().replace('"reward": 1.25', '"reward": 1e999', 1)},
        "steps[0].reward: Input should be a finite number",
    ),
    ("NaN total_reward", {"total_reward": float("nan")}, "total_reward: Input should be a finite number (got nan)"),
    ("infinite final_balance", {"final_balance": float("inf")}, "final_balance: Input should be a finite number"),
    (
        "unknown status",
        {"final_status": "exploded"},
        "final_status: Input should be 'completed', 'completed_with_errors', 'terminated', 'error' or 'timeout' "
        "(got 'exploded')",
    ),
    ("status NULL", {"final_status": None}, "final_status is missing (NULL)"),
    ("agent NULL", {"agent_id": None}, "agent_id is missing (NULL)"),
    ("agent empty", {"agent_id": ""}, "agent_id: String should have at least 1 character"),
    ("trajectory id NULL", {"trajectory_id": None}, "trajectory_id is missing (NULL)"),
    ("start time NULL", {"start_time": None}, "start_time is missing (NULL)"),
    (
        "window id not on the hour",
        {"window_id": WINDOW + timedelta(minutes=30)},
        "window_id: window id 2026-11-24T10:30:00+00:00 is not on the hour",
    ),
    ("window hours 2", {"window_hours": 2}, "window_hours: Input should be 1 (got 2)"),
    ("episode_length mismatch", {"episode_length": 7}, "episode_length is 7 but steps has 5 entries"),
    ("steps out of order", {"steps": _steps(change=_swap_first_steps)}, "step numbers must run 0, 1, 2, ... in order"),
    ("no LLM call", {"steps": _steps(change=_no_llm_calls)}, "no step has an LLM call"),
    (
        "unknown LLM call purpose",
        {"steps": _steps(change=_in_step(0, "llmCalls", 0, "purpose", value="planning"))},
        "steps[0].llmCalls[0].purpose: Input should be 'action', 'reasoning', 'evaluation', 'response' or 'other'",
    ),
    (
        "negative open positions",
        {"steps": _steps(change=_in_step(1, "environmentState", "openPositions", value=-2))},
        "steps[1].environmentState.openPositions: Input should be greater than or equal to 0 (got -2)",
    ),
    (
        "reward not a number",
        {"steps": _steps(change=_in_step(0, "reward", value="lots"))},
        "steps[0].reward: Input should be a valid number, unable to parse string as a number (got 'lots')",
    ),
    ("negative trade count", {"trades_executed": -1}, "trades_executed: Input should be greater than or equal to 0"),
    ("metrics an array", {"metrics": "[1, 2]"}, "metrics is not a JSON object: Input should be an object"),
    (
        "not training data",
        {"is_training_data": False},
        "is_training_data is false: the recorder marked this episode as not for training",
    ),
    ("duplicate trajectory id", {"trajectory_id": "valid-0"}, "duplicate trajectory_id 'valid-0': row "),
]


def _valid_rows() -> list[Columns]:
    rows = [{**row(WINDOW, f"valid-agent-{index}"), "trajectory_id": f"valid-{index}"} for index in range(3)]
    # Recorder text holding valid JSON is decoded, not rejected.
    rows.append({**row(WINDOW, "text-agent"), "trajectory_id": "valid-text", "steps": _steps(as_text=True)})
    return rows


@pytest.mark.parametrize(("columns", "reason"), [(c, r) for _, c, r in MALFORMED], ids=[n for n, _, _ in MALFORMED])
async def test_malformed_row_is_rejected_with_its_reason(
    database_url: str, conn: AsyncConn, columns: Columns, reason: str
) -> None:
    valid = _valid_rows()
    *valid_ids, bad_id = insert_rows(database_url, [*valid, {**row(WINDOW, "bad-agent"), **columns}])
    load = await load_window(conn, WINDOW, min_actions=5)
    (rejection,) = load.rejected
    assert rejection.row_id == bad_id
    assert reason in rejection.reason
    assert [t.row_id for t in load.accepted] == valid_ids
    assert [t.trajectory_id for t in load.accepted] == [r["trajectory_id"] for r in valid]


async def test_whole_corpus_in_one_window(database_url: str, conn: AsyncConn) -> None:
    assert len(MALFORMED) >= 20
    valid = _valid_rows()
    ids = insert_rows(
        database_url,
        [*valid, *({**row(WINDOW, f"bad-{i}"), **columns} for i, (_, columns, _) in enumerate(MALFORMED))],
    )
    (unwindowed_id,) = insert_rows(database_url, [row(None, "plugin-agent", shape="plugin")])
    load = await validate_window(conn, WINDOW, min_actions=5)
    assert [t.row_id for t in load.accepted] == ids[: len(valid)]
    reasons = {rejection.row_id: rejection.reason for rejection in load.rejected}
    assert list(reasons) == ids[len(valid) :]
    for row_id, (name, _, reason) in zip(ids[len(valid) :], MALFORMED, strict=True):
        assert reason in reasons[row_id], name
    assert f"row {ids[0]} (window id 2026-11-24T10:00:00+00:00) has it first" in reasons[ids[-1]]
    # The row without a window is in no window's load, and is reported on its own.
    assert unwindowed_id not in reasons
    assert [r.row_id for r in await load_unwindowed_rejections(conn)] == [unwindowed_id]
    async with conn.cursor() as cur:
        await cur.execute("SELECT count(*) FILTER (WHERE accepted), count(*) FROM trajectory_validations")
        assert await cur.fetchone() == (len(valid), len(valid) + len(MALFORMED))
