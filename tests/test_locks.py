"""Locks that hold: one window's validation at a time, and one trainer registering per model."""

import asyncio

import psycopg
import pytest

from babylon_assets.training import registry
from babylon_assets.training.types import CheckpointRef, PolicySpec, StepOutcome
from babylon_assets.trajectories.models import parse_window_key
from babylon_assets.trajectories.validation import validate_window
from tests.support.dagster_instance import simulate_windows
from tests.support.training import register_without_lineage
from tests.support.trajectory_rows import ingest_and_validate


async def test_two_validations_of_one_window_at_once_both_succeed(database_url: str, store_url: str) -> None:
    (key,) = simulate_windows(database_url, windows=1, agents=6)
    window_id = parse_window_key(key)
    await ingest_and_validate(database_url, store_url, [window_id])

    async def validate() -> int:
        async with await psycopg.AsyncConnection.connect(store_url, autocommit=True) as conn:
            return len((await validate_window(conn, window_id, min_actions=5)).accepted)

    for _ in range(3):  # the race is between two transactions; give it a few chances
        assert list(await asyncio.gather(validate(), validate())) == [6, 6]
    with psycopg.connect(store_url) as conn:
        row = conn.execute("SELECT count(*) FROM trajectory_validations WHERE window_id = %s", (window_id,)).fetchone()
    assert row == (6,)


POLICY = PolicySpec(name="policy", base_model="tiny", project="test", backend="torch")


def register_step(url: str, step: int, lease: registry.ModelLease) -> int:
    outcome = StepOutcome(
        step=step, metrics={}, checkpoint=CheckpointRef(backend="torch", step=step, location=f"/tmp/step-{step}")
    )
    with psycopg.connect(url, autocommit=True) as conn:
        return register_without_lineage(conn, POLICY, outcome, lease)


def terminate(url: str, backend_pid: int) -> None:
    """What a server restart does to the lock's connection: the server ends its backend. Waits (up to 10 s)
    until the backend is gone and its locks with it: on a busy machine the next lock_model came first."""
    with psycopg.connect(url, autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s, 10000)", (backend_pid,)).fetchone() == (True,)


def test_a_trainer_whose_lock_connection_was_terminated_cannot_register(store_url: str) -> None:
    with psycopg.connect(store_url, autocommit=True) as conn:
        registry.ensure_policy_model(conn, POLICY)
    first = psycopg.connect(store_url, autocommit=True)
    try:
        lease = registry.lock_model(first, POLICY.name)
        assert register_step(store_url, 1, lease) > 0
        terminate(store_url, lease.backend_pid)
        # Nobody else took the model, but this trainer no longer provably holds it.
        with pytest.raises(registry.ModelLockLostError, match="no longer holds model 'policy'"):
            register_step(store_url, 2, lease)
    finally:
        first.close()


def test_after_a_lock_backend_is_terminated_only_the_new_holder_registers(store_url: str) -> None:
    with psycopg.connect(store_url, autocommit=True) as conn:
        registry.ensure_policy_model(conn, POLICY)
    first = psycopg.connect(store_url, autocommit=True)
    second = psycopg.connect(store_url, autocommit=True)
    try:
        old = registry.lock_model(first, POLICY.name)
        terminate(store_url, old.backend_pid)
        new = registry.lock_model(second, POLICY.name)  # the lock was free again: a second trainer took it
        assert new.token > old.token
        assert register_step(store_url, 1, new) > 0
        with pytest.raises(registry.ModelLockLostError):
            register_step(store_url, 2, old)
    finally:
        first.close()
        second.close()
    with psycopg.connect(store_url) as conn:
        assert conn.execute("SELECT step FROM policy_checkpoints").fetchall() == [(1,)]
