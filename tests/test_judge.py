"""The RULER judge end to end: real ART `ruler` code, real LiteLLM HTTP, a local judge server, real PostgreSQL."""

import importlib
import json
import math
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from statistics import fmean

import litellm
import pytest
from pydantic import JsonValue, SecretStr

from babylon_assets.db.connection import DEFAULT_SCHEMA, AsyncConn, connect_async, store_conninfo
from babylon_assets.judging.judge import JudgeFailedError
from babylon_assets.judging.rubric import RUBRIC_VERSION
from babylon_assets.judging.ruler_judge import RulerJudge
from babylon_assets.judging.ruler_settings import RulerSettings
from babylon_assets.judging.scoring import score_completeness, score_window
from babylon_assets.simulation.writer import simulate
from babylon_assets.trajectories.messages import trajectory_messages
from babylon_assets.trajectories.models import Trajectory, window_key
from babylon_assets.trajectories.reader import load_accepted
from tests.support.judge_server import (
    JudgeRequest,
    JudgeServer,
    Reply,
    Responder,
    by_content,
    content_score,
    scores_reply,
)
from tests.support.scoring import WindowsFailedError, score_windows
from tests.support.trajectory_rows import ingest_and_validate

START = datetime(2026, 11, 20, 10, tzinfo=UTC)


@pytest.fixture
def server() -> Iterator[JudgeServer]:
    with JudgeServer(by_content) as running:
        yield running


@pytest.fixture
async def conn(store_url: str) -> AsyncIterator[AsyncConn]:
    async with await connect_async(store_url, autocommit=True) as connection:
        yield connection


def ruler_judge(server: JudgeServer, **overrides: float | int | str | SecretStr) -> RulerJudge:
    settings = RulerSettings(
        judge_model="openai/test-judge",
        api_base=server.api_base,
        api_key=SecretStr("test-key"),
        max_retries=2,
        timeout_seconds=5.0,
        retry_backoff_seconds=0.001,
    )
    return RulerJudge(settings.model_copy(update=overrides))


async def seeded_windows(database_url: str, conn: AsyncConn, *, windows: int = 1, agents: int = 5) -> list[datetime]:
    simulate(database_url, agents=agents, windows=windows, seed=7, start=START)
    ids = [START + timedelta(hours=hour) for hour in range(windows)]
    await ingest_and_validate(database_url, store_conninfo(database_url, DEFAULT_SCHEMA), ids, min_actions=1)
    return ids


def replies_of(trajectory: Trajectory) -> str:
    messages = trajectory_messages(trajectory)
    return "\n".join(message.content for message in messages if message.role == "assistant")


async def stored_scores(conn: AsyncConn, window_id: datetime) -> dict[str, float]:
    cursor = await conn.execute("SELECT trajectory_id, score FROM trajectory_scores WHERE window_id = %s", (window_id,))
    return {str(trajectory_id): float(score) for trajectory_id, score in await cursor.fetchall()}


async def test_scores_follow_the_returned_ids_when_the_judge_answers_out_of_order(
    database_url: str, conn: AsyncConn, server: JudgeServer
) -> None:
    [window_id] = await seeded_windows(database_url, conn)
    trajectories = await load_accepted(conn, window_id)

    scoring = await score_window(conn, ruler_judge(server), window_id)

    # The server lists its scores in reverse id order; each score belongs to what that trajectory said.
    expected = {t.trajectory_id: content_score(replies_of(t)) for t in trajectories}
    assert len(set(expected.values())) == len(expected)
    assert await stored_scores(conn, window_id) == pytest.approx(expected)
    assert {row.trajectory_id: row.score for row in scoring.scores} == pytest.approx(expected)
    assert scoring.judge == "ruler:openai/test-judge" and scoring.rubric_version == RUBRIC_VERSION
    assert scoring.stats.calls_made == server.request_count == 2 and scoring.stats.calls_cached == 0
    assert scoring.stats.prompt_tokens == 200 and scoring.stats.completion_tokens == 40
    assert scoring.stats.unpriced_calls == 2 and scoring.stats.cost_usd == 0.0
    best = max(trajectories, key=lambda t: expected[t.trajectory_id])
    assert scoring.top_agent == best.agent_id
    assert (await score_completeness(conn, window_id)).passed


async def test_market_outcomes_reach_the_judge_prompt_but_never_the_trajectories(
    database_url: str, conn: AsyncConn, server: JudgeServer
) -> None:
    [window_id] = await seeded_windows(database_url, conn)
    async with await connect_async(database_url) as game:
        cursor = await game.execute(
            'SELECT "question" FROM "market_outcomes" WHERE "windowId" = %s AND "predictionMarketId" IS NOT NULL',
            (window_key(window_id),),
        )
        questions = [str(row[0]) for row in await cursor.fetchall()]
    assert questions

    await score_window(conn, ruler_judge(server, permutations=1), window_id)

    [request] = server.requests
    assert "<market_outcomes>" in request.system_prompt
    assert "Source: the game's market_outcomes table." in request.system_prompt
    assert all(f"({question}): resolved" in request.system_prompt for question in questions)
    assert all("resolved" not in text and "market_outcomes" not in text for text in request.trajectories.values())


async def test_each_trajectory_gets_the_mean_of_its_scores_over_the_shown_orders(
    database_url: str, conn: AsyncConn, server: JudgeServer
) -> None:
    [window_id] = await seeded_windows(database_url, conn)
    raw_by_replies: dict[str, list[float]] = defaultdict(list)

    def first_place_bonus(request: JudgeRequest) -> Reply:
        # A position-biased judge: whoever is shown first gets +0.2.
        scores = {i: request.content_score(i) + (0.2 if i == "1" else 0.0) for i in request.trajectories}
        for i, score in scores.items():
            raw_by_replies[request.assistant_replies(i)].append(score)
        return scores_reply(scores)

    server.responder = first_place_bonus
    await score_window(conn, ruler_judge(server, permutations=3), window_id)

    assert server.request_count == 3
    firsts = {next(iter(sorted(r.trajectories.items())))[1] for r in server.requests}
    assert len(firsts) >= 2, "the reversed order shows another trajectory first"
    trajectories = await load_accepted(conn, window_id)
    expected = {t.trajectory_id: fmean(raw_by_replies[replies_of(t)]) for t in trajectories}
    assert await stored_scores(conn, window_id) == pytest.approx(expected)
    cursor = await conn.execute(
        "SELECT trajectory_id, permutation, position, score FROM judge_permutation_scores WHERE window_id = %s",
        (window_id,),
    )
    raw = await cursor.fetchall()
    assert len(raw) == 3 * len(trajectories)
    for trajectory in trajectories:
        mine = [row for row in raw if row[0] == trajectory.trajectory_id]
        assert sorted(row[1] for row in mine) == [0, 1, 2]
        assert fmean(float(row[3]) for row in mine) == pytest.approx(expected[trajectory.trajectory_id])
        shown_first = [row for row in mine if row[2] == 1]
        assert all(float(row[3]) == pytest.approx(content_score(replies_of(trajectory)) + 0.2) for row in shown_first)


async def test_rescoring_a_window_is_served_from_the_cache_without_any_judge_call(
    database_url: str, conn: AsyncConn, server: JudgeServer
) -> None:
    [window_id] = await seeded_windows(database_url, conn, agents=12)
    first = await score_window(conn, ruler_judge(server, group_size=6), window_id)
    calls = server.request_count
    assert calls == first.stats.calls_made == 4  # two groups of six, two orders each

    # A fresh judge (as in a new run): only the database remembers.
    second = await score_window(conn, ruler_judge(server, group_size=6), window_id)

    assert server.request_count == calls
    assert second.stats.calls_made == 0 and second.stats.calls_cached == 4
    assert second.stats.prompt_tokens == 0
    assert second.scores == first.scores
    cursor = await conn.execute("SELECT count(*), sum(prompt_tokens) FROM judge_cache")
    assert await cursor.fetchone() == (4, 400)


async def test_a_warm_rerun_makes_no_judge_call_and_reads_no_steps(
    database_url: str, conn: AsyncConn, server: JudgeServer
) -> None:
    [window_id] = await seeded_windows(database_url, conn, agents=12)
    first = await score_window(conn, ruler_judge(server, group_size=6), window_id)
    # The stored rows' steps made unreadable, their content hashes left as ingested: a re-run that
    # loaded or parsed any trajectory would fail on them.
    await conn.execute("""UPDATE snapshot_rows SET recorded = jsonb_set(recorded, '{stepsJson}', '"[not json"')""")

    second = await score_window(conn, ruler_judge(server, group_size=6), window_id)

    assert server.request_count == first.stats.calls_made == 4
    assert (second.stats.calls_made, second.stats.calls_cached) == (0, 4)
    assert second.scores == first.scores
    assert await stored_scores(conn, window_id) == {row.trajectory_id: row.score for row in first.scores}
    assert (await score_completeness(conn, window_id)).passed


async def test_a_group_whose_cached_answer_is_deleted_is_judged_again_and_only_it(
    database_url: str, conn: AsyncConn, server: JudgeServer
) -> None:
    [window_id] = await seeded_windows(database_url, conn, agents=12)
    first = await score_window(conn, ruler_judge(server, group_size=6), window_id)
    await conn.execute("DELETE FROM judge_cache WHERE cache_key = (SELECT min(cache_key) FROM judge_cache)")

    again = await score_window(conn, ruler_judge(server, group_size=6), window_id)

    assert (again.stats.calls_made, again.stats.calls_cached, server.request_count) == (1, 3, 5)
    assert again.scores == first.scores


async def test_another_judge_model_does_not_reuse_the_cached_answers(
    database_url: str, conn: AsyncConn, server: JudgeServer
) -> None:
    [window_id] = await seeded_windows(database_url, conn)
    await score_window(conn, ruler_judge(server), window_id)

    other = await score_window(conn, ruler_judge(server, judge_model="openai/other-judge"), window_id)

    assert (other.stats.calls_made, other.stats.calls_cached) == (2, 0)
    assert server.request_count == 4


def test_art_own_ruler_is_left_untouched_for_other_callers() -> None:
    # The judge runs a private copy of `ruler`; ART's module keeps calling LiteLLM directly.
    assert importlib.import_module("art.rewards.ruler").acompletion is litellm.acompletion


async def test_tokens_and_cost_come_from_litellm_usage_and_prices(
    database_url: str, conn: AsyncConn, server: JudgeServer
) -> None:
    [window_id] = await seeded_windows(database_url, conn)

    # A model LiteLLM has a price for, served by the local judge.
    scoring = await score_window(conn, ruler_judge(server, judge_model="openai/gpt-4o-mini"), window_id)

    assert (scoring.stats.prompt_tokens, scoring.stats.completion_tokens, scoring.stats.unpriced_calls) == (200, 40, 0)
    assert scoring.stats.cost_usd > 0
    cursor = await conn.execute("SELECT sum(cost_usd), sum(prompt_tokens) FROM judge_cache")
    assert await cursor.fetchone() == (pytest.approx(scoring.stats.cost_usd), 200)
    cursor = await conn.execute(
        "SELECT cost_usd, calls_made FROM judge_window_stats WHERE window_id = %s", (window_id,)
    )
    assert await cursor.fetchone() == (pytest.approx(scoring.stats.cost_usd), 2)


FAILURES = {
    "http 500": (Reply(status=500), "InternalServerError"),
    "http 429": (Reply(status=429), "RateLimitError"),
    "timeout": (Reply(content="{}", delay_seconds=2.0), "Timeout"),
    "malformed json": (Reply(content="The best agent is number 2."), "The best agent is number 2."),
}


@pytest.mark.parametrize("failure", sorted(FAILURES))
async def test_transport_and_format_failures_are_retried_then_raised_naming_the_window(
    database_url: str, conn: AsyncConn, server: JudgeServer, failure: str
) -> None:
    [window_id] = await seeded_windows(database_url, conn)
    reply, quoted = FAILURES[failure]
    server.responder = lambda request: reply

    with pytest.raises(JudgeFailedError) as raised:
        await score_window(conn, ruler_judge(server, permutations=1, timeout_seconds=0.3), window_id)

    assert server.request_count == 3  # the first attempt and two retries
    message = str(raised.value)
    assert window_key(window_id) in message and "after 3 attempts" in message and quoted in message
    cursor = await conn.execute("SELECT reason FROM judge_failures WHERE window_id = %s", (window_id,))
    assert await cursor.fetchone() == (message,)
    assert await stored_scores(conn, window_id) == {}


def _wrong_count(request: JudgeRequest) -> Reply:
    return scores_reply({i: 0.5 for i in sorted(request.trajectories)[:-1]})


def _out_of_range(request: JudgeRequest) -> Reply:
    return scores_reply({i: 1.7 if i == "2" else 0.5 for i in request.trajectories})


def _not_finite(request: JudgeRequest) -> Reply:
    return scores_reply({i: math.inf if i == "2" else 0.5 for i in request.trajectories})


def _renumbered(request: JudgeRequest) -> Reply:
    return scores_reply({str(int(i) + 1): 0.5 for i in request.trajectories})


@pytest.mark.parametrize(
    ("responder", "quoted"),
    [
        (_wrong_count, "Expected 5 scores, but got 4"),
        (_out_of_range, "1.7"),
        (_not_finite, "Infinity"),
        (_renumbered, '"trajectory_id": "6"'),
    ],
    ids=["wrong count", "out of range", "not finite", "unknown id"],
)
async def test_unusable_answers_are_retried_then_raised_quoting_the_last_answer(
    database_url: str,
    conn: AsyncConn,
    server: JudgeServer,
    responder: Responder,
    quoted: str,
) -> None:
    [window_id] = await seeded_windows(database_url, conn)
    server.responder = responder

    with pytest.raises(JudgeFailedError, match=window_key(window_id)) as raised:
        await score_window(conn, ruler_judge(server, permutations=1), window_id)

    assert server.request_count == 3
    assert quoted in str(raised.value)
    cursor = await conn.execute("SELECT count(*) FROM judge_cache")
    assert await cursor.fetchone() == (0,), "an unusable answer is never cached"


async def test_the_api_key_is_cut_out_of_a_quoted_answer_and_the_stored_failure(
    database_url: str, conn: AsyncConn, server: JudgeServer
) -> None:
    [window_id] = await seeded_windows(database_url, conn)
    secret = "sk-echoed-by-a-broken-proxy-0123456789"
    server.responder = lambda request: Reply(content=f"cannot parse; you sent {request.authorization}")

    with pytest.raises(JudgeFailedError) as raised:
        await score_window(conn, ruler_judge(server, permutations=1, api_key=SecretStr(secret)), window_id)

    assert {request.authorization for request in server.requests} == {f"Bearer {secret}"}
    assert "you sent Bearer" in str(raised.value) and secret not in str(raised.value)
    cursor = await conn.execute("SELECT reason FROM judge_failures WHERE window_id = %s", (window_id,))
    assert await cursor.fetchone() == (str(raised.value),)


async def test_a_judge_that_recovers_within_the_retries_scores_the_window(
    database_url: str, conn: AsyncConn, server: JudgeServer
) -> None:
    [window_id] = await seeded_windows(database_url, conn)
    server.responder = lambda request: Reply(status=503) if request.number <= 2 else by_content(request)

    scoring = await score_window(conn, ruler_judge(server, permutations=1), window_id)

    assert scoring.stats.calls_made == server.request_count == 3
    assert len(await stored_scores(conn, window_id)) == 5


async def test_a_refused_request_is_not_retried(database_url: str, conn: AsyncConn, server: JudgeServer) -> None:
    [window_id] = await seeded_windows(database_url, conn)
    server.responder = lambda request: Reply(status=401)

    with pytest.raises(JudgeFailedError, match="not retried"):
        await score_window(conn, ruler_judge(server, permutations=1), window_id)
    assert server.request_count == 1


async def test_a_cached_answer_that_no_longer_validates_is_named_and_deleting_it_recovers(
    database_url: str, conn: AsyncConn, server: JudgeServer
) -> None:
    [window_id] = await seeded_windows(database_url, conn)
    await score_window(conn, ruler_judge(server, permutations=1), window_id)
    cursor = await conn.execute("SELECT cache_key FROM judge_cache")
    [(cache_key,)] = await cursor.fetchall()
    await conn.execute("UPDATE judge_cache SET raw_answer = %s", ('{"scores": []}',))

    with pytest.raises(JudgeFailedError, match=f"cached judge answer {cache_key} no longer validates"):
        await score_window(conn, ruler_judge(server, permutations=1), window_id)
    assert server.request_count == 1, "a bad cached answer is reported, not silently re-asked"

    # What the error tells the user to do, although the window's stored scores cite that answer.
    await conn.execute("DELETE FROM judge_cache WHERE cache_key = %s", (cache_key,))
    scoring = await score_window(conn, ruler_judge(server, permutations=1), window_id)

    assert (scoring.stats.calls_made, scoring.stats.calls_cached, server.request_count) == (1, 0, 2)
    cursor = await conn.execute("SELECT DISTINCT cache_key FROM judge_permutation_scores")
    assert await cursor.fetchall() == [(cache_key,)]


async def test_answers_obtained_before_a_failure_stay_cached(
    database_url: str, conn: AsyncConn, server: JudgeServer
) -> None:
    [window_id] = await seeded_windows(database_url, conn, agents=10)
    trajectories = await load_accepted(conn, window_id)
    poisoned = replies_of(trajectories[0])

    def fails_one_group(request: JudgeRequest) -> Reply:
        replies = {request.assistant_replies(i) for i in request.trajectories}
        return Reply(status=500) if poisoned in replies else by_content(request)

    server.responder = fails_one_group
    with pytest.raises(JudgeFailedError):
        await score_window(conn, ruler_judge(server, permutations=1, group_size=5), window_id)
    assert server.request_count == 1 + 3  # the good group once, the bad one three times

    server.responder = by_content
    scoring = await score_window(conn, ruler_judge(server, permutations=1, group_size=5), window_id)

    assert server.request_count == 4 + 1
    assert (scoring.stats.calls_made, scoring.stats.calls_cached) == (1, 1)


async def test_one_failing_window_does_not_stop_the_others_and_is_reported_by_name(
    database_url: str, conn: AsyncConn, server: JudgeServer
) -> None:
    window_ids = await seeded_windows(database_url, conn, windows=3)
    broken = window_key(window_ids[1])

    def fails_one_window(request: JudgeRequest) -> Reply:
        body = json.dumps(request.body)
        return Reply(content="not json") if f"Window {broken} UTC" in body else by_content(request)

    server.responder = fails_one_window
    with pytest.raises(WindowsFailedError) as raised:
        await score_windows(conn, ruler_judge(server, permutations=1), window_ids)

    report = raised.value.report
    assert [window_key(s.window_id) for s in report.scored] == [window_key(window_ids[0]), window_key(window_ids[2])]
    assert [window_key(f.window_id) for f in report.failed] == [broken]
    assert broken in str(raised.value) and "not json" in str(raised.value)
    cursor = await conn.execute("SELECT window_id FROM window_scores ORDER BY window_id")
    assert [row[0] for row in await cursor.fetchall()] == [window_ids[0], window_ids[2]]


async def test_concurrent_judge_requests_stay_within_the_limit(
    database_url: str, conn: AsyncConn, server: JudgeServer
) -> None:
    window_ids = await seeded_windows(database_url, conn, windows=2, agents=12)
    server.responder = lambda request: by_content(request).model_copy(update={"delay_seconds": 0.05})

    report = await score_windows(conn, ruler_judge(server, group_size=3, max_concurrency=3), window_ids)

    assert sum(s.stats.calls_made for s in report.scored) == server.request_count == 16
    assert 1 < server.max_in_flight <= 3


def _answer_schema(request: JudgeRequest) -> dict[str, JsonValue]:
    response_format = request.body["response_format"]
    assert isinstance(response_format, dict) and response_format["type"] == "json_schema"
    json_schema = response_format["json_schema"]
    assert isinstance(json_schema, dict) and json_schema["strict"] is True
    schema = json_schema["schema"]
    assert isinstance(schema, dict)
    properties = schema["properties"]
    assert isinstance(properties, dict) and isinstance(properties["scores"], dict)
    return properties["scores"]


def _entry_properties(entry: JsonValue) -> dict[str, JsonValue]:
    assert isinstance(entry, dict) and isinstance(entry["properties"], dict)
    return entry["properties"]


async def test_the_schema_sent_pins_the_number_of_scores_and_the_ids_of_each_group(
    database_url: str, conn: AsyncConn, server: JudgeServer
) -> None:
    [window_id] = await seeded_windows(database_url, conn)

    # 5 trajectories in groups of at most 3: one call shows 3 of them, the other 2.
    await score_window(conn, ruler_judge(server, permutations=1, group_size=3), window_id)

    shown = sorted(len(request.trajectories) for request in server.requests)
    assert shown == [2, 3]
    for request in server.requests:
        scores = _answer_schema(request)
        ids = sorted(request.trajectories, key=int)
        assert scores["minItems"] == scores["maxItems"] == len(ids)
        entry = _entry_properties(scores["items"])
        assert entry["trajectory_id"] == {"type": "string", "enum": ids}
        assert entry["score"] == {"type": "number", "minimum": 0, "maximum": 1}
        # Keywords beyond OpenAI's structured-output subset only for servers that decode under a grammar.
        assert "prefixItems" not in scores and "enum" not in entry["score"]


async def test_a_grammar_constrained_judge_gets_each_position_id_and_score_levels_pinned(
    database_url: str, conn: AsyncConn, server: JudgeServer
) -> None:
    [window_id] = await seeded_windows(database_url, conn)

    await score_window(conn, ruler_judge(server, permutations=1, grammar_constrained=True), window_id)

    [request] = server.requests
    scores = _answer_schema(request)
    positions = scores["prefixItems"]
    assert isinstance(positions, list)
    assert [_entry_properties(entry)["trajectory_id"] for entry in positions] == [
        {"type": "string", "enum": [str(position)]} for position in range(1, 6)
    ]
    levels = _entry_properties(positions[0])["score"]
    assert isinstance(levels, dict) and levels["enum"] == [step / 20 for step in range(21)]
