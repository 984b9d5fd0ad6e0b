"""Hand-built `trajectories` rows for reader tests, from the recorder's camelCase step fixtures."""

import json
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

import psycopg
from psycopg import sql
from pydantic import JsonValue

FIXTURES = Path(__file__).parent / "fixtures"
StepShape = Literal["recorder", "plugin"]


def fixture_steps(shape: StepShape, count: int) -> list[dict[str, JsonValue]]:
    """`count` copies of the shape's fixture step, numbered 0.. and a minute apart."""
    text = (FIXTURES / f"{shape}_step.json").read_text()
    steps: list[dict[str, JsonValue]] = [json.loads(text) for _ in range(count)]  # independent copies
    for number, step in enumerate(steps):
        step["stepNumber"] = number
        step["timestamp"] = 1795525260000 + number * 60_000
    return steps


def row(
    window_id: datetime | None, agent_id: str, *, steps: int = 5, shape: StepShape = "recorder"
) -> dict[str, object]:
    """A valid row's columns; override any of them to make it malformed."""
    start = (window_id or datetime.fromisoformat("2026-11-20T10:00:00+00:00")) + timedelta(minutes=1)
    return {
        "trajectory_id": f"traj-{uuid.uuid4().hex[:12]}",
        "agent_id": agent_id,
        "start_time": start,
        "end_time": start + timedelta(minutes=50),
        "duration_ms": 50 * 60_000,
        "window_id": window_id,
        "window_hours": 1,
        "episode_id": "episode-1",
        "scenario_id": "scenario-1",
        "steps": json.dumps(fixture_steps(shape, steps)),
        "reward_components": json.dumps({"pnl": 1.5}),
        "metrics": None,
        "metadata": json.dumps({"source": "test"}),
        "total_reward": 1.5,
        "episode_length": steps,
        "final_status": "completed",
        "final_balance": 1010.0,
        "final_pnl": 10.0,
        "trades_executed": steps,
        "posts_created": 0,
        "is_training_data": True,
    }


def insert_rows(url: str, rows: list[dict[str, object]]) -> list[int]:
    """Insert the rows in order (string values go to jsonb columns as JSON text); returns their row ids."""
    ids: list[int] = []
    with psycopg.connect(url, autocommit=True) as conn:
        for columns in rows:
            query = sql.SQL("INSERT INTO trajectories ({}) VALUES ({}) RETURNING id").format(
                sql.SQL(", ").join(sql.Identifier(name) for name in columns),
                sql.SQL(", ").join(sql.Placeholder() for _ in columns),
            )
            inserted = conn.execute(query, list(columns.values())).fetchone()
            assert inserted is not None
            ids.append(int(inserted[0]))
    return ids


def window_agents(window_id: datetime, agents: int, *, steps: int = 5) -> list[dict[str, object]]:
    return [row(window_id, f"agent-{index}", steps=steps) for index in range(agents)]
