"""The outcome judge (no LLM) and the group split: pure logic, plus their results in PostgreSQL."""

import asyncio
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from pydantic import JsonValue

from babylon_assets.db.connection import AsyncConn, connect_async
from babylon_assets.judging.cache import AnswerCache
from babylon_assets.judging.groups import permutation_orders, split_groups
from babylon_assets.judging.judge import JudgeFailedError, JudgeGroup
from babylon_assets.judging.outcome_judge import OUTCOME_RUBRIC_VERSION, OutcomeJudge, assess
from babylon_assets.judging.scoring import score_completeness, score_window
from babylon_assets.simulation.writer import simulate
from babylon_assets.trajectories.facts import FACTS_VERSION, trajectory_facts
from babylon_assets.trajectories.models import (
    Action,
    EnvironmentState,
    LLMCall,
    MarketOutcomes,
    PredictionOutcome,
    Step,
    StockOutcome,
    Trajectory,
)
from babylon_assets.trajectories.reader import AcceptedRow, load_accepted
from tests.support.trajectory_rows import ingest_and_validate, trajectory_from_steps

WINDOW = datetime(2026, 11, 20, 10, tzinfo=UTC)
OUTCOMES = MarketOutcomes(
    window_id=WINDOW,
    source="market_outcomes",
    stocks=[
        StockOutcome(
            ticker="BABY", start_price=10, end_price=12, change_percent=20, sentiment="BULLISH", news_events=[]
        )
    ],
    predictions=[PredictionOutcome(market_id="rates", question="Rate cut?", outcome="NO", final_probability=0.05)],
)


@pytest.fixture
async def conn(store_url: str) -> AsyncIterator[AsyncConn]:
    async with await connect_async(store_url, autocommit=True) as connection:
        yield connection


def trajectory(
    trajectory_id: str, pnl_path: list[float], actions: list[tuple[str, dict[str, JsonValue]]]
) -> Trajectory:
    """A hand-built trajectory: one step per P&L point, the given actions on the first steps, then HOLD."""
    steps = []
    for number, pnl in enumerate(pnl_path):
        action_type, parameters = actions[number] if number < len(actions) else ("HOLD", {})
        call = LLMCall(
            model="policy",
            system_prompt="You trade.",
            user_prompt=f"minute {number}",
            response=f"{action_type} {parameters}",
            temperature=0.7,
            max_tokens=100,
            purpose="action",
        )
        steps.append(
            Step(
                step_number=number,
                timestamp=int(WINDOW.timestamp() * 1000) + number * 60_000,
                environment_state=EnvironmentState(
                    agent_balance=1000 + pnl, agent_pnl=pnl, open_positions=0, active_markets=2
                ),
                provider_accesses=[],
                llm_calls=[call],
                action=Action(action_type=action_type, parameters=parameters, success=True),
                reward=0.0,
            )
        )
    return trajectory_from_steps(WINDOW, trajectory_id, steps)


GOOD_CALLS: list[tuple[str, dict[str, JsonValue]]] = [
    ("OPEN_PERP", {"ticker": "BABY", "side": "long", "margin": 50, "leverage": 2}),
    ("BUY_SHARES", {"marketId": "rates", "outcome": "NO", "amount": 30}),
]
BAD_CALLS: list[tuple[str, dict[str, JsonValue]]] = [
    ("OPEN_PERP", {"ticker": "BABY", "side": "short", "margin": 400, "leverage": 20}),
    ("BUY_SHARES", {"marketId": "rates", "outcome": "YES", "amount": 300}),
]


def group_of(trajectories: list[Trajectory]) -> JudgeGroup:
    """The group as scoring hands it to the outcome judge: rows with their facts, no steps."""
    rows = [
        AcceptedRow(
            source_id=f"row-{t.trajectory_id}",
            trajectory_id=t.trajectory_id,
            agent_id=t.agent_id,
            content_hash="0" * 64,
            facts=trajectory_facts(t),
        )
        for t in trajectories
    ]
    return JudgeGroup(window_id=WINDOW, group_index=0, rows=rows, trajectories=[], outcomes=OUTCOMES)


async def test_the_outcome_judge_ranks_a_clearly_better_trajectory_higher(conn: AsyncConn) -> None:
    good = trajectory("good", [0, 10, 25, 40], GOOD_CALLS)
    bad = trajectory("bad", [0, -60, -150, -90], BAD_CALLS)
    middling = trajectory("middling", [0, 5, -5, 2], [GOOD_CALLS[0], BAD_CALLS[1]])

    result = await OutcomeJudge().score_group(group_of([bad, middling, good]), AnswerCache(conn, asyncio.Lock()))

    assert result.scores["good"] > result.scores["middling"] > result.scores["bad"]
    assert all(0.0 <= score <= 1.0 for score in result.scores.values())
    assert result.stats.calls_made == 0
    assert assess(trajectory_facts(good), OUTCOMES).calls_correct == 2
    assert assess(trajectory_facts(bad), OUTCOMES).calls_correct == 0
    assert assess(trajectory_facts(bad), OUTCOMES).max_drawdown == 150


async def test_the_outcome_judge_refuses_rows_validated_without_facts_or_under_other_facts(conn: AsyncConn) -> None:
    good = trajectory("good", [0, 10, 25, 40], GOOD_CALLS)
    cache = AnswerCache(conn, asyncio.Lock())
    (row,) = group_of([good]).rows
    older = trajectory_facts(good).model_copy(update={"version": FACTS_VERSION - 1})

    for facts in (None, older):
        group = group_of([good]).model_copy(update={"rows": [row.model_copy(update={"facts": facts})]})
        with pytest.raises(JudgeFailedError, match="validate the window again"):
            await OutcomeJudge().score_group(group, cache)


def test_selling_yes_shares_is_a_call_on_no_and_closing_is_no_call() -> None:
    sold_yes = trajectory("sold", [0, 1], [("SELL_SHARES", {"marketId": "rates", "outcome": "YES", "shares": 3})])
    closed = trajectory("closed", [0, 1], [("CLOSE_PERP", {"ticker": "BABY"})])

    sold = assess(trajectory_facts(sold_yes), OUTCOMES)
    assert (sold.calls_correct, sold.calls_judged) == (1, 1)
    assert assess(trajectory_facts(closed), OUTCOMES).calls_judged == 0


def test_the_split_is_balanced_and_does_not_depend_on_input_order() -> None:
    trajectories = [trajectory(f"t{index:02d}", [0, 1], []) for index in range(20)]
    shuffled = trajectories[:]
    random.Random(3).shuffle(shuffled)

    groups = split_groups(trajectories, 8)

    assert [len(group) for group in groups] == [7, 7, 6]
    assert [[t.trajectory_id for t in group] for group in split_groups(shuffled, 8)] == [
        [t.trajectory_id for t in group] for group in groups
    ]
    assert sorted(t.trajectory_id for group in groups for t in group) == [t.trajectory_id for t in trajectories]
    assert [len(group) for group in split_groups(trajectories[:8], 8)] == [8]
    assert [len(group) for group in split_groups(trajectories[:9], 8)] == [5, 4]


@pytest.mark.parametrize(("size", "count"), [(5, 2), (5, 4), (3, 2), (3, 3), (8, 2), (4, 4), (6, 3)])
def test_every_trajectory_takes_a_different_position_in_each_order(size: int, count: int) -> None:
    ids = [f"t{index}" for index in range(size)]
    orders = permutation_orders(ids, count)

    assert orders == permutation_orders(ids, count) and len(orders) == count
    assert all(sorted(order) == list(range(size)) for order in orders)
    for trajectory in range(size):
        positions = [order.index(trajectory) for order in orders]
        # With 2 orders of an odd group, the middle trajectory too moves (a reverse would leave it in place).
        assert len(set(positions)) == count, (trajectory, positions)


def test_a_group_gets_at_most_as_many_orders_as_positions() -> None:
    ids = [f"t{index}" for index in range(5)]
    assert len(permutation_orders(ids[:2], 4)) == 2 and len(permutation_orders(ids[:1], 4)) == 1
    # n orders of n: every trajectory takes every position once.
    full = permutation_orders(ids, 9)
    assert len(full) == 5 and all(sorted(order.index(t) for order in full) == list(range(5)) for t in range(5))


async def test_scoring_with_the_outcome_judge_stores_the_split_and_replaces_earlier_scores(
    database_url: str, store_url: str, conn: AsyncConn
) -> None:
    simulate(database_url, agents=20, windows=1, seed=11, start=WINDOW)
    await ingest_and_validate(database_url, store_url, [WINDOW], min_actions=1)

    first = await score_window(conn, OutcomeJudge(group_size=8), WINDOW)
    second = await score_window(conn, OutcomeJudge(group_size=8), WINDOW)

    assert first == second
    assert (first.judge, first.rubric_version, first.groups) == ("outcome", OUTCOME_RUBRIC_VERSION, 3)
    assert (first.stats.calls_made, first.stats.calls_cached) == (0, 0)
    assert first.score_min <= first.score_mean <= first.score_max
    assert first.top_agent == first.scores[0].agent_id and first.bottom_agent == first.scores[-1].agent_id
    cursor = await conn.execute(
        "SELECT trajectory_ids FROM judge_groups WHERE window_id = %s ORDER BY group_index", (WINDOW,)
    )
    stored = [list(row[0]) for row in await cursor.fetchall()]
    accepted = await load_accepted(conn, WINDOW)
    assert stored == [[t.trajectory_id for t in group] for group in split_groups(accepted, 8)]
    assert [len(group) for group in stored] == [7, 7, 6]
    assert {row.trajectory_id: row.group_index for row in first.scores} == {
        trajectory_id: index for index, group in enumerate(stored) for trajectory_id in group
    }
    cursor = await conn.execute("SELECT count(*) FROM trajectory_scores WHERE window_id = %s", (WINDOW,))
    assert await cursor.fetchone() == (20,)
    assert (await score_completeness(conn, WINDOW)).passed


async def test_the_completeness_check_fails_when_an_accepted_trajectory_has_no_score(
    database_url: str, store_url: str, conn: AsyncConn
) -> None:
    simulate(database_url, agents=5, windows=1, seed=11, start=WINDOW)
    await ingest_and_validate(database_url, store_url, [WINDOW], min_actions=1)
    scoring = await score_window(conn, OutcomeJudge(), WINDOW)
    lost = scoring.scores[2].trajectory_id
    await conn.execute("DELETE FROM trajectory_scores WHERE trajectory_id = %s", (lost,))

    verdict = await score_completeness(conn, WINDOW)

    assert not verdict.passed and verdict.missing == [lost] and verdict.accepted == 5
