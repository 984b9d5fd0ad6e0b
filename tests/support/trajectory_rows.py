"""Hand-built rows of the game's "trajectories", inserted the way the game's recorder inserts them:
camelCase columns, steps as JSON text, windowId as the `YYYY-MM-DDTHH:00` string, TIMESTAMP(3) in UTC
without a zone, TEXT ids."""

import itertools
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import psycopg
from psycopg import sql
from pydantic import JsonValue, TypeAdapter

from babylon_assets.trajectories.models import Step, Trajectory, window_key
from babylon_assets.trajectories.reader import parse_recorded

FIXTURES = Path(__file__).parents[1] / "fixtures"
StepShape = Literal["recorder", "plugin"]
STEP_REWARD: dict[StepShape, float] = {"recorder": 1.25, "plugin": -0.5}
# Rows built later were recorded later: "createdAt" orders them, as the validator's rules rely on.
_RECORDED_AT = datetime(2026, 11, 30, tzinfo=UTC)
_ORDER = itertools.count()
_STEPS = TypeAdapter(list[Step])


def fixture_steps(
    shape: StepShape, count: int, *, start_ms: int = 1795525260000, salt: str = ""
) -> list[dict[str, JsonValue]]:
    """`count` copies of the shape's fixture step, numbered 0.. and a minute apart from `start_ms`; `salt`
    goes into each prompt, so that two agents' episodes are not identical (a replay)."""
    text = (FIXTURES / f"{shape}_step.json").read_text()
    steps: list[dict[str, JsonValue]] = [json.loads(text) for _ in range(count)]  # independent copies
    for number, step in enumerate(steps):
        step["stepNumber"] = number
        step["timestamp"] = start_ms + number * 60_000
        calls = step["llmCalls"]
        assert isinstance(calls, list) and isinstance(calls[0], dict)
        calls[0]["userPrompt"] = f"{calls[0]['userPrompt']} [{salt} {number}]"
    return steps


def utc_naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def row(
    window_id: datetime | None, agent_id: str, *, steps: int = 5, shape: StepShape = "recorder"
) -> dict[str, object]:
    """A valid row's columns under the game's names; override any of them to make it malformed.
    With `window_id` None the row has no windowId (the plugin logger's) and starts in 2026-11-20T10:00."""
    start = (window_id or datetime.fromisoformat("2026-11-20T10:00:00+00:00")) + timedelta(minutes=1)
    trajectory_id = f"traj-{uuid.uuid4().hex[:12]}"
    step_list = fixture_steps(shape, steps, start_ms=int(start.timestamp() * 1000), salt=trajectory_id)
    kinds = ["BUY_SHARES" if shape == "recorder" else "OPEN_PERP"] * steps
    return {
        "id": f"row-{uuid.uuid4().hex[:16]}",
        "trajectoryId": trajectory_id,
        "agentId": agent_id,
        "startTime": utc_naive(start),
        "endTime": utc_naive(start + timedelta(minutes=50)),
        "durationMs": 50 * 60_000,
        "windowId": window_key(window_id) if window_id is not None else None,
        "windowHours": 1,
        "episodeId": "episode-1",
        "scenarioId": "scenario-1",
        "stepsJson": json.dumps(step_list),
        "rewardComponentsJson": json.dumps({"pnl": 1.5}),
        "metricsJson": json.dumps({}),
        "metadataJson": json.dumps({"isTrainingData": True, "source": "test"}),
        "totalReward": round(STEP_REWARD[shape] * steps, 6),
        "episodeLength": steps,
        "finalStatus": "completed",
        "finalBalance": 1010.0,
        "finalPnL": 10.0,
        "tradesExecuted": sum(1 for kind in kinds if "BUY" in kind or "SELL" in kind),
        "postsCreated": 0,
        "isTrainingData": True,
        "createdAt": utc_naive(_RECORDED_AT + timedelta(milliseconds=next(_ORDER))),
        "updatedAt": utc_naive(_RECORDED_AT),
    }


def insert_rows(url: str, rows: list[dict[str, object]]) -> list[str]:
    """Insert the rows in order, as the recorder does; returns their ids."""
    ids: list[str] = []
    with psycopg.connect(url, autocommit=True) as conn:
        for columns in rows:
            query = sql.SQL('INSERT INTO "trajectories" ({}) VALUES ({}) RETURNING "id"').format(
                sql.SQL(", ").join(sql.Identifier(name) for name in columns),
                sql.SQL(", ").join(sql.Placeholder() for _ in columns),
            )
            inserted = conn.execute(query, list(columns.values())).fetchone()
            assert inserted is not None
            ids.append(str(inserted[0]))
    return ids


def window_agents(window_id: datetime, agents: int, *, steps: int = 5) -> list[dict[str, object]]:
    return [row(window_id, f"agent-{index}", steps=steps) for index in range(agents)]


async def ingest_and_validate(game_url: str, store_url: str, windows: list[datetime], min_actions: int = 5) -> None:
    """raw_trajectories then validated_windows for each window, as the pipeline runs them."""
    from babylon_assets.trajectories.ingest import ingest_window
    from babylon_assets.trajectories.validation import validate_window

    async with (
        await psycopg.AsyncConnection.connect(game_url) as game,
        await psycopg.AsyncConnection.connect(store_url) as store,
        await psycopg.AsyncConnection.connect(store_url, autocommit=True) as verdicts,
    ):
        for window_id in windows:
            await ingest_window(game, store, window_id)
            await validate_window(verdicts, window_id, min_actions=min_actions)


def trajectory_from_steps(window_id: datetime, trajectory_id: str, steps: list[Step]) -> Trajectory:
    """A validated trajectory of hand-built steps (timestamps must lie in the window's hour)."""
    columns = {
        **row(window_id, f"agent-{trajectory_id}", steps=len(steps)),
        "id": f"row-{trajectory_id}",
        "trajectoryId": trajectory_id,
        "startTime": utc_naive(window_id),
        "endTime": utc_naive(window_id + timedelta(hours=1)),
        "stepsJson": _STEPS.dump_json(steps, by_alias=True).decode(),
        "totalReward": sum(step.reward for step in steps),
        "tradesExecuted": None,
        "postsCreated": None,
        "isEvaluation": False,
    }
    recorded = {key: value.isoformat(timespec="milliseconds") if isinstance(value, datetime) else value
                for key, value in columns.items()}  # fmt: skip
    parsed = parse_recorded(json.dumps(recorded))
    assert not isinstance(parsed, str), parsed
    return Trajectory(window_id=window_id, snapshot_id=None, row=parsed)
