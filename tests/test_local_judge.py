"""The local-llm judge: the production RULER path (ART's `ruler`, LiteLLM over HTTP, the pinned schema, the
answer cache, PostgreSQL) against a real xllamacpp server of SmolLM2-135M on 127.0.0.1."""

import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from babylon_assets.db.connection import AsyncConn, connect_async
from babylon_assets.judging.local_llm import local_judge_server, local_ruler_settings
from babylon_assets.judging.local_settings import LocalJudgeSettings
from babylon_assets.judging.ruler_judge import RulerJudge
from babylon_assets.judging.scoring import score_window
from babylon_assets.tools.cli import main
from tests.support.trajectory_rows import ingest_and_validate, insert_rows, window_agents

WINDOW = datetime(2026, 11, 20, 10, tzinfo=UTC)
# As fast as a real judge call gets: a short context, short answers, one thread (sane on 2 busy cores).
FAST = LocalJudgeSettings(
    context_tokens=2048, max_reply_tokens=256, threads=1, group_size=3, max_trajectory_tokens=100, max_group_tokens=300
)


@pytest.fixture
async def conn(store_url: str) -> AsyncIterator[AsyncConn]:
    async with await connect_async(store_url, autocommit=True) as connection:
        yield connection


async def test_ruler_through_a_real_xllamacpp_server_scores_a_group_of_3_by_their_ids_and_caches_it(
    database_url: str, store_url: str, conn: AsyncConn
) -> None:
    insert_rows(database_url, window_agents(WINDOW, 3, steps=1))
    await ingest_and_validate(database_url, store_url, [WINDOW], min_actions=1)
    cursor = await conn.execute(
        "SELECT trajectory_id FROM trajectory_validations WHERE window_id = %s AND accepted", (WINDOW,)
    )
    accepted = {str(trajectory_id) for (trajectory_id,) in await cursor.fetchall()}
    assert len(accepted) == 3

    with local_judge_server(FAST) as server:
        assert server.api_base.startswith("http://127.0.0.1:")
        judge = RulerJudge(local_ruler_settings(server, FAST).model_copy(update={"permutations": 1}))
        scoring = await score_window(conn, judge, WINDOW)
        again = await score_window(conn, judge, WINDOW)

    assert scoring.groups == 1 and scoring.stats.calls_made >= 1
    assert {row.trajectory_id for row in scoring.scores} == accepted
    assert all(0.0 <= row.score <= 1.0 for row in scoring.scores)
    # The second scoring is the cache's: no request, the same scores.
    assert again.stats.calls_made == 0 and again.stats.calls_cached == 1
    assert {row.trajectory_id: row.score for row in again.scores} == {
        row.trajectory_id: row.score for row in scoring.scores
    }
    with pytest.raises(urllib.error.URLError):  # stopped with the block
        urllib.request.urlopen(f"{server.api_base}/models", timeout=2)


def test_the_local_judge_server_refuses_a_request_without_its_key() -> None:
    with local_judge_server(FAST) as server:
        request = urllib.request.Request(f"{server.api_base}/models")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        request.add_header("Authorization", f"Bearer {server.api_key.get_secret_value()}")
        with urllib.request.urlopen(request, timeout=5) as answered:
            assert answered.status == 200
    assert refused.value.code == 401


def test_babylon_judge_serve_needs_a_key(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("BABYLON_JUDGE_API_KEY", raising=False)

    assert main(["judge", "serve", "--port", "0"]) == 2
    assert "BABYLON_JUDGE_API_KEY is not set" in capsys.readouterr().err


def test_babylon_judge_serve_answers_in_the_foreground_until_sigterm() -> None:
    key = "serve-test-key-0123456789"
    environment = {**os.environ, "BABYLON_JUDGE_API_KEY": key}
    command = [sys.executable, "-m", "babylon_assets.tools.cli", "judge", "serve", "--port", "0"]
    with subprocess.Popen(
        command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    ) as served:
        assert served.stdout is not None
        line = served.stdout.readline()
        found = re.search(r"at (http://127\.0\.0\.1:\d+/v1);", line)
        assert found, line
        request = urllib.request.Request(f"{found[1]}/models", headers={"Authorization": f"Bearer {key}"})
        with urllib.request.urlopen(request, timeout=5) as answered:
            assert answered.status == 200
        served.send_signal(signal.SIGTERM)
        assert served.wait(timeout=30) == 0
