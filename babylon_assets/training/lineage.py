"""A registered checkpoint's lineage as a person reads it: what it was trained on, how it scored."""

from datetime import datetime

from psycopg.rows import dict_row
from pydantic import BaseModel, ConfigDict

from babylon_assets.db.connection import connect
from babylon_assets.errors import BabylonError
from babylon_assets.training import metric_names
from babylon_assets.trajectories.models import window_key


class WindowLineage(BaseModel):
    model_config = ConfigDict(frozen=True)

    window: str
    # The version of the window's ingested snapshot that was trained on.
    snapshot_version: int
    trajectories: int
    min_score: float
    max_score: float
    # The game's trajectoryIds.
    trajectory_ids: list[str]


class CheckpointLineage(BaseModel):
    model_config = ConfigDict(frozen=True)

    model_name: str
    step: int
    backend: str
    location: str
    created_at: datetime
    score_versions: list[str]
    loss: float | None
    reward: float | None
    eval_margin_before: float | None
    eval_margin_after: float | None
    is_best: bool
    wandb_run_id: str | None
    wandb_artifact: str | None
    windows: list[WindowLineage]


def checkpoint_lineage(url: str, model_name: str, step: int | None = None) -> CheckpointLineage:
    """The lineage of `model_name`'s checkpoint at `step` (default: the latest registered one)."""
    # Rows by column name: each alias is the field it fills, whatever the order of the SELECT.
    with connect(url) as conn, conn.cursor(row_factory=dict_row) as cursor:
        row = cursor.execute(
            """
            SELECT c.id, c.step, c.backend, c.location, c.created_at, c.score_versions,
                   (c.metrics ->> %s)::float8 AS loss, (c.metrics ->> %s)::float8 AS reward,
                   c.eval_margin_before, c.eval_margin_after, b.checkpoint_id IS NOT NULL AS is_best,
                   c.wandb_run_id, c.wandb_artifact
            FROM policy_checkpoints AS c
            LEFT JOIN best_checkpoints AS b ON b.checkpoint_id = c.id
            WHERE c.model_name = %s AND (%s::int IS NULL OR c.step = %s)
            ORDER BY c.step DESC LIMIT 1
            """,
            (metric_names.LOSS, metric_names.REWARD, model_name, step, step),
        ).fetchone()
        if row is None:
            which = "" if step is None else f" at step {step}"
            raise BabylonError(
                f"model {model_name!r} has no registered checkpoint{which}; train it with `babylon train`"
            )
        checkpoint_id = row.pop("id")
        windows = cursor.execute(
            """
            SELECT t.window_id, s.version AS snapshot_version, count(*) AS trajectories,
                   min(t.score) AS min_score, max(t.score) AS max_score,
                   array_agg(t.trajectory_id ORDER BY t.trajectory_id) AS trajectory_ids
            FROM checkpoint_trajectories AS t
            JOIN checkpoint_windows AS w ON w.checkpoint_id = t.checkpoint_id AND w.window_id = t.window_id
            JOIN window_snapshots AS s ON s.id = w.snapshot_id
            WHERE t.checkpoint_id = %s
            GROUP BY t.window_id, s.version ORDER BY t.window_id
            """,
            (checkpoint_id,),
        ).fetchall()
    return CheckpointLineage.model_validate(
        {
            **row,
            "model_name": model_name,
            "windows": [{"window": window_key(window.pop("window_id")), **window} for window in windows],
        }
    )


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.6f}"


def render_lineage(lineage: CheckpointLineage) -> str:
    trajectories = sum(window.trajectories for window in lineage.windows)
    best = " [best]" if lineage.is_best else ""
    lines = [
        f"checkpoint {lineage.model_name} step {lineage.step} ({lineage.backend}){best}",
        f"  location:     {lineage.location}",
        f"  trained on:   {len(lineage.windows)} window(s), {trajectories} trajectories, "
        f"scores by {', '.join(lineage.score_versions)}",
        f"  loss/reward:  {_number(lineage.loss)} / {_number(lineage.reward)}",
        f"  eval margin:  {_number(lineage.eval_margin_before)} -> {_number(lineage.eval_margin_after)} (held out)",
        f"  W&B:          run {lineage.wandb_run_id or 'n/a'}, artifact {lineage.wandb_artifact or 'n/a'}",
    ]
    for w in lineage.windows:
        lines.append(
            f"  window {w.window}: {w.trajectories} trajectories, scores {w.min_score:.2f}-{w.max_score:.2f} "
            f"(snapshot v{w.snapshot_version})"
        )
        lines.append(f"    trajectoryIds: {', '.join(w.trajectory_ids)}")
    return "\n".join(lines)
