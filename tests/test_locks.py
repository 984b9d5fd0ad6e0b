"""Locks that hold: one window's validation at a time, and one trainer registering per model."""

import asyncio

import psycopg

from babylon_assets.trajectories.models import parse_window_key
from babylon_assets.trajectories.validation import validate_window
from tests.dagster_instance import simulate_windows


async def test_two_validations_of_one_window_at_once_both_succeed(database_url: str) -> None:
    (key,) = simulate_windows(database_url, windows=1, agents=6)
    window_id = parse_window_key(key)

    async def validate() -> int:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            return len((await validate_window(conn, window_id, min_actions=5)).accepted)

    for _ in range(3):  # the race is between two transactions; give it a few chances
        assert list(await asyncio.gather(validate(), validate())) == [6, 6]
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM trajectory_validations WHERE window_id = %s", (window_id,)).fetchone()
    assert row == (6,)
