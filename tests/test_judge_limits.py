"""Judge limits a user controls: a per-window deadline, Retry-After on 429, windows judged side by side."""

import json
import time
from datetime import datetime, timedelta

import pytest

from babylon_assets.db.connection import DEFAULT_SCHEMA, AsyncConn, store_conninfo
from babylon_assets.trajectories.messages import trajectory_messages
from babylon_assets.trajectories.models import window_key
from babylon_assets.trajectories.reader import load_accepted
from tests.support.judge_server import JudgeRequest, JudgeServer, Reply, by_content
from tests.support.scoring import WindowsFailedError, score_windows
from tests.support.trajectory_rows import fixture_steps, ingest_and_validate, insert_rows, row, window_agents
from tests.test_judge import START, conn, ruler_judge, seeded_windows, server

__all__ = ["conn", "server"]  # fixtures


def window_of(request: JudgeRequest, window_ids: list[datetime]) -> datetime:
    body = json.dumps(request.body)
    (found,) = [window_id for window_id in window_ids if f"Window {window_key(window_id)} UTC" in body]
    return found


async def test_a_never_answering_judge_fails_its_window_within_the_deadline_and_the_others_score(
    database_url: str, conn: AsyncConn, server: JudgeServer
) -> None:
    window_ids = await seeded_windows(database_url, conn, windows=3)
    silent = window_ids[1]

    def never_answers_one_window(request: JudgeRequest) -> Reply:
        if window_of(request, window_ids) == silent:
            return Reply(delay_seconds=3600)
        return by_content(request)

    server.responder = never_answers_one_window
    started = time.monotonic()
    with pytest.raises(WindowsFailedError) as raised:
        # The request timeout alone would wait 4 x 60 s; the window's deadline ends it after 2 s.
        await score_windows(
            conn, ruler_judge(server, permutations=1, timeout_seconds=60, max_retries=3), window_ids, deadline_seconds=2
        )
    elapsed = time.monotonic() - started

    assert elapsed < 10
    report = raised.value.report
    assert [s.window_id for s in report.scored] == [window_ids[0], window_ids[2]]
    (failure,) = report.failed
    assert failure.window_id == silent
    assert "did not finish within 2 s" in failure.reason and "window_deadline_seconds" in failure.reason


async def test_a_429_waits_as_long_as_retry_after_says(database_url: str, conn: AsyncConn, server: JudgeServer) -> None:
    window_ids = await seeded_windows(database_url, conn, windows=1)
    arrivals: list[float] = []

    def busy_once(request: JudgeRequest) -> Reply:
        arrivals.append(time.monotonic())
        if len(arrivals) == 1:
            return Reply(status=429, headers={"Retry-After": "2"})
        return by_content(request)

    server.responder = busy_once
    # The judge's own backoff is a millisecond: only Retry-After explains a 2-second wait.
    report = await score_windows(conn, ruler_judge(server, permutations=1), window_ids)

    assert len(report.scored) == 1
    assert len(arrivals) == 2 and arrivals[1] - arrivals[0] >= 2.0


async def test_windows_are_judged_side_by_side_up_to_the_limit(
    database_url: str, conn: AsyncConn, server: JudgeServer
) -> None:
    window_ids = await seeded_windows(database_url, conn, windows=4)
    server.responder = lambda request: by_content(request).model_copy(update={"delay_seconds": 0.3})

    await score_windows(conn, ruler_judge(server, permutations=1, max_concurrency=8), window_ids, max_windows=2)

    assert server.max_in_flight == 2


async def test_an_overlong_trajectory_is_shortened_in_the_judges_view_only_and_its_window_scores(
    database_url: str, conn: AsyncConn, server: JudgeServer
) -> None:
    steps = fixture_steps("recorder", 5, start_ms=int((START + timedelta(minutes=1)).timestamp() * 1000))
    calls = steps[0]["llmCalls"]
    assert isinstance(calls, list) and isinstance(calls[0], dict)
    calls[0]["userPrompt"] = "market tape " * 100_000  # 1.2 MB in one prompt
    rows = [*window_agents(START, 4), {**row(START, "agent-big"), "stepsJson": json.dumps(steps)}]
    insert_rows(database_url, rows)
    await ingest_and_validate(database_url, store_conninfo(database_url, DEFAULT_SCHEMA), [START], min_actions=1)
    judge = ruler_judge(server, permutations=1, max_trajectory_tokens=2000)

    report = await score_windows(conn, judge, [START])

    assert len(report.scored) == 1 and len(report.scored[0].scores) == 5
    (request,) = server.requests
    big = [text for text in request.trajectories.values() if "tokens cut from the judge's view" in text]
    assert len(big) == 1 and len(big[0]) < 20_000
    # Training reads the full text.
    (trajectory,) = [t for t in await load_accepted(conn, START) if t.agent_id == "agent-big"]
    assert "market tape " * 100_000 in "".join(m.content for m in trajectory_messages(trajectory))
