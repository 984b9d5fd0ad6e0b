import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from statistics import fmean

import psycopg
import pytest

from babylon_assets.errors import BabylonError
from babylon_assets.simulation.episodes import default_start, generate_window, generate_windows
from babylon_assets.simulation.strategies import STRATEGIES
from babylon_assets.simulation.writer import insert_windows, simulate
from babylon_assets.tools.cli import main
from babylon_assets.trajectories.models import Trajectory
from babylon_assets.trajectories.reader import load_market_outcomes, load_window
from tests.support.trajectory_rows import ingest_and_validate

WINDOW = datetime(2026, 11, 20, 10, tzinfo=UTC)


def test_simulate_creates_the_games_tables_in_a_database_without_them(empty_database_url: str) -> None:
    simulate(empty_database_url, agents=2, windows=1, seed=1, start=WINDOW)
    with psycopg.connect(empty_database_url) as conn:
        columns = conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'public' AND table_name = 'trajectories' ORDER BY ordinal_position"
        ).fetchall()
        rows = conn.execute('SELECT "windowId", "isTrainingData" FROM "trajectories"').fetchall()
    assert ("stepsJson", "text") in columns and ("windowId", "character varying") in columns
    assert ("startTime", "timestamp without time zone") in columns and ("finalPnL", "double precision") in columns
    assert rows == [("2026-11-20T10:00", True)] * 2


def test_same_seed_same_rows_other_seed_other_rows() -> None:
    first = generate_window(seed=7, window_id=WINDOW, agents=5)
    again = generate_window(seed=7, window_id=WINDOW, agents=5)
    other = generate_window(seed=8, window_id=WINDOW, agents=5)
    assert first.model_dump() == again.model_dump()
    assert [row.steps_json() for row in first.trajectories] == [row.steps_json() for row in again.trajectories]
    assert first.model_dump() != other.model_dump()


def test_trade_and_post_counts_of_known_episodes_follow_the_games_rule() -> None:
    # The game counts steps whose actionType contains BUY or SELL as trades (so OPEN_PERP is none) and
    # those containing POST as posts (game-database.md); these episodes were counted by hand.
    window = generate_window(seed=1, window_id=WINDOW, agents=3)
    episodes = {
        row.agent_id: ([step.action.action_type for step in row.steps], row.trades_executed, row.posts_created)
        for row in window.trajectories
    }
    assert episodes == {
        "sim-conservative-00": (["HOLD"] * 5, 0, 0),
        "sim-balanced-01": (
            ["HOLD", "HOLD", "BUY_SHARES", "BUY_SHARES", "CREATE_POST", "HOLD", "OPEN_PERP", "HOLD", "HOLD"],
            2,
            1,
        ),
        "sim-aggressive-02": (
            ["OPEN_PERP"] * 4
            + ["BUY_SHARES", "CREATE_POST", "CREATE_POST", "OPEN_PERP", "BUY_SHARES", "CREATE_POST", "HOLD"],
            2,
            3,
        ),
    }


def test_rows_are_consistent_with_their_steps() -> None:
    window = generate_window(seed=1, window_id=WINDOW, agents=8)
    assert {row.agent_id for row in window.trajectories} == {
        f"sim-{STRATEGIES[index % 5].name}-{index:02d}" for index in range(8)
    }
    for row in window.trajectories:
        types = [step.action.action_type for step in row.steps]
        assert row.episode_length == len(row.steps)
        assert row.trades_executed == sum(1 for kind in types if "BUY" in kind or "SELL" in kind)
        assert row.posts_created == sum(1 for kind in types if "POST" in kind)
        assert row.total_reward == pytest.approx(sum(step.reward for step in row.steps), abs=1e-4)
        # Rewards are the P&L the agent made in the window, which its recorded P&L deltas show too.
        pnl = row.steps[-1].environment_state.agent_pnl - row.steps[0].environment_state.agent_pnl
        assert row.total_reward == pytest.approx(pnl, abs=1e-2)
        for step in row.steps:
            (call,) = step.llm_calls
            assert call.purpose == "action"
            assert call.system_prompt.startswith("You are a Babylon trading agent with a")
            assert row.agent_id.split("-")[1] in call.system_prompt
            assert json.loads(call.response)["action"] == step.action.action_type
            assert step.provider_accesses[0].provider_name == "MARKET_DATA"
    assert len(window.stocks) == 32
    assert {prediction.outcome for prediction in window.predictions} <= {"YES", "NO", "UNRESOLVED"}


def test_strategies_differ_in_outcome() -> None:
    rewards: dict[str, list[float]] = defaultdict(list)
    for window in generate_windows(seed=3, start=WINDOW, windows=150, agents=5):
        for row in window.trajectories:
            rewards[row.agent_id.split("-")[1]].append(row.total_reward)
    mean = {strategy: fmean(values) for strategy, values in rewards.items()}
    spread = {strategy: max(values) - min(values) for strategy, values in rewards.items()}
    assert mean["balanced"] > mean["conservative"] > mean["contrarian"]
    assert mean["momentum"] > mean["contrarian"]
    assert mean["contrarian"] < 0
    assert spread["aggressive"] > 4 * spread["conservative"]


def test_default_start_ends_at_the_current_hour() -> None:
    now = datetime(2026, 11, 24, 13, 42, tzinfo=UTC)
    assert default_start(3, now) == datetime(2026, 11, 24, 10, tzinfo=UTC)


async def test_simulate_writes_readable_rows_and_replaces_them_on_rerun(database_url: str, store_url: str) -> None:
    summary = simulate(database_url, agents=5, windows=3, seed=11, start=WINDOW)
    assert summary.windows == ["2026-11-20T10:00", "2026-11-20T11:00", "2026-11-20T12:00"]
    assert summary.trajectories == 15
    again = simulate(database_url, agents=5, windows=3, seed=11, start=WINDOW)
    assert again == summary
    await ingest_and_validate(database_url, store_url, [WINDOW, WINDOW + timedelta(hours=1)])
    async with await psycopg.AsyncConnection.connect(store_url) as conn:
        load = await load_window(conn, WINDOW + timedelta(hours=1), min_actions=5)
        outcomes = await load_market_outcomes(conn, WINDOW)
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute('SELECT count(*), sum("episodeLength") FROM "trajectories"')
        assert await cur.fetchone() == (15, summary.steps)
    assert load.rejected == []
    assert load.distinct_agents == 5
    generated = generate_window(seed=11, window_id=WINDOW + timedelta(hours=1), agents=5)
    loaded = {t.trajectory_id: t.steps for t in load.accepted}
    assert loaded == {row.trajectory_id: row.steps for row in generated.trajectories}
    assert len(outcomes.stocks) == 32 and len(outcomes.predictions) == 5


async def test_plugin_shape_rows_load_like_recorder_rows(database_url: str, store_url: str) -> None:
    window = generate_window(seed=2, window_id=WINDOW, agents=4, plugin_agents=frozenset({1, 3}))
    plugin_text = window.trajectories[1].steps_json()
    assert '"actionName"' in plugin_text and '"immediateReward"' in plugin_text and '"stepId"' in plugin_text
    insert_windows(database_url, iter([window]), start=WINDOW, windows=1)
    await ingest_and_validate(database_url, store_url, [WINDOW], min_actions=1)
    async with await psycopg.AsyncConnection.connect(store_url) as conn:
        load = await load_window(conn, WINDOW, min_actions=1)
    assert load.rejected == []
    loaded: dict[str, Trajectory] = {t.agent_id: t for t in load.accepted}
    for row in window.trajectories:
        assert [step.reward for step in loaded[row.agent_id].steps] == [step.reward for step in row.steps]
        types = [step.action.action_type for step in loaded[row.agent_id].steps]
        assert types == [step.action.action_type for step in row.steps]


def test_simulate_refuses_a_start_off_the_hour(database_url: str) -> None:
    with pytest.raises(BabylonError, match="not a UTC hour start"):
        simulate(database_url, agents=2, windows=1, seed=0, start=WINDOW + timedelta(minutes=30))


def test_simulate_command(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    assert main(["simulate", "--agents", "2", "--windows", "2", "--seed", "4", "--start", "2026-11-20T10:00"]) == 0
    out = capsys.readouterr().out
    assert "2 window(s) 2026-11-20T10:00 .. 2026-11-20T11:00" in out and "4 trajectories" in out
    assert main(["simulate", "--agents", "2", "--windows", "2", "--start", "2026-11-20T10:30"]) == 1
    assert "not a UTC hour start" in capsys.readouterr().err
