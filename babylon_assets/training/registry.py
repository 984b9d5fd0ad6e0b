"""The policy's registered checkpoints in PostgreSQL: a checkpoint exists for the platform only once
`register_checkpoint` committed it together with all of its lineage."""

from collections.abc import Sequence

from psycopg.rows import class_row, dict_row
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, JsonValue

from babylon_assets.db.connection import Conn
from babylon_assets.errors import BabylonError, ConfigurationError
from babylon_assets.training.types import (
    BestCheckpoint,
    CheckpointRef,
    PolicySpec,
    RegisteredCheckpoint,
    ScoredGroup,
    StepOutcome,
)


class TrainingInProgressError(BabylonError):
    """Another process is training the same model."""


def lock_key(model_name: str) -> str:
    return f"babylon-train:{model_name}"


def try_lock_model(conn: Conn, model_name: str) -> None:
    """Session-level advisory lock on an autocommit connection: one trainer per model at a time."""
    row = conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (lock_key(model_name),)).fetchone()
    if row is None or not row[0]:
        raise TrainingInProgressError(
            f"model {model_name!r} is being trained by another run right now; wait for it to finish"
        )


class ModelLockLostError(BabylonError):
    """This trainer no longer provably holds its model: nothing of the step was registered."""


class ModelLease(BaseModel):
    """Proof of holding a model: the fencing token taken and the backend whose session holds the lock."""

    model_config = ConfigDict(frozen=True)

    model_name: str
    token: int
    backend_pid: int


def lock_model(conn: Conn, model_name: str) -> ModelLease:
    """`try_lock_model`, then take the model's next fencing token; `register_checkpoint` checks both.

    A session lock alone is dropped silently when the server restarts or ends the session, and the
    trainer would go on registering without it; the token makes any later holder visible.
    """
    try_lock_model(conn, model_name)
    row = conn.execute(
        "INSERT INTO model_fences (model_name, token) VALUES (%s, 1) ON CONFLICT (model_name) "
        "DO UPDATE SET token = model_fences.token + 1, taken_at = now() RETURNING token",
        (model_name,),
    ).fetchone()
    if row is None:
        raise BabylonError(f"taking the fencing token of model {model_name!r} returned nothing; run again")
    return ModelLease(model_name=model_name, token=row[0], backend_pid=conn.info.backend_pid)


def _require_lease(conn: Conn, lease: ModelLease) -> None:
    """Inside the registering transaction: the token is still ours and our lock's session still holds it.

    The row lock makes a newer trainer's token wait for this transaction, so the check holds until commit.
    """
    row = conn.execute(
        """
        SELECT f.token, EXISTS (
            SELECT 1 FROM pg_locks AS l
            WHERE l.locktype = 'advisory' AND l.granted AND l.pid = %s AND l.objsubid = 1
              AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtextextended(%s, 0)
        )
        FROM model_fences AS f WHERE f.model_name = %s FOR UPDATE
        """,
        (lease.backend_pid, lock_key(lease.model_name), lease.model_name),
    ).fetchone()
    token, locked = (None, False) if row is None else (row[0], row[1])
    if token == lease.token and locked:
        return
    why = (
        f"another trainer took it (fencing token {token} > {lease.token})"
        if token != lease.token
        else "its lock's connection to PostgreSQL was lost (a server restart or a terminated session)"
    )
    raise ModelLockLostError(
        f"this trainer no longer holds model {lease.model_name!r}: {why}; the step was not registered. "
        "Run training again: it resumes from the last registered step"
    )


def ensure_policy_model(conn: Conn, policy: PolicySpec) -> None:
    """Create the model on first use; refuse a different base model, project or backend for the same name."""
    conn.execute(
        "INSERT INTO policy_models (name, base_model, project, backend) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT (name) DO NOTHING",
        (policy.name, policy.base_model, policy.project, policy.backend),
    )
    with conn.cursor(row_factory=dict_row) as cursor:
        stored = cursor.execute(
            "SELECT base_model, project, backend FROM policy_models WHERE name = %s", (policy.name,)
        ).fetchone()
    if stored is None:
        raise BabylonError(f"model {policy.name!r} vanished while it was being created; run again")
    wanted = policy.model_dump(include=set(stored))
    if stored != wanted:
        raise ConfigurationError(
            f"model {policy.name!r} was created with base_model={stored['base_model']!r}, "
            f"project={stored['project']!r}, backend={stored['backend']!r}, but the trainer is configured with "
            f"base_model={wanted['base_model']!r}, project={wanted['project']!r}, backend={wanted['backend']!r}; "
            "restore that configuration or choose a new model_name"
        )


def latest_checkpoint(conn: Conn, model_name: str) -> RegisteredCheckpoint | None:
    # Rows by column name (class_row): a column moved in the SELECT still lands in its field.
    with conn.cursor(row_factory=class_row(RegisteredCheckpoint)) as cursor:
        return cursor.execute(
            "SELECT id, model_name, step, backend, location, eval_margin_after FROM policy_checkpoints "
            "WHERE model_name = %s ORDER BY step DESC LIMIT 1",
            (model_name,),
        ).fetchone()


def checkpoint_ref(checkpoint: RegisteredCheckpoint) -> CheckpointRef:
    return CheckpointRef(backend=checkpoint.backend, step=checkpoint.step, location=checkpoint.location)


def best_checkpoint(conn: Conn, model_name: str) -> BestCheckpoint | None:
    with conn.cursor(row_factory=class_row(BestCheckpoint)) as cursor:
        return cursor.execute(
            "SELECT c.id, c.step, c.location, b.eval_margin FROM best_checkpoints AS b "
            "JOIN policy_checkpoints AS c ON c.id = b.checkpoint_id WHERE b.model_name = %s",
            (model_name,),
        ).fetchone()


def register_checkpoint(
    conn: Conn,
    *,
    policy: PolicySpec,
    outcome: StepOutcome,
    groups: Sequence[ScoredGroup],
    config: dict[str, JsonValue],
    eval_margin_before: float | None,
    eval_margin_after: float | None,
    eval_windows: int,
    wandb_run_id: str | None,
    wandb_artifact: str | None,
    lease: ModelLease,
) -> int:
    """Register a complete checkpoint with its lineage in one transaction; return its id.

    The `best` pointer is not moved here: only the promotion check moves it, on evidence
    (babylon_assets/evaluation/promotion.py). Refuses (ModelLockLostError) once `lease` no longer holds the
    model. `conn` must be in autocommit mode so that the transaction below is a real BEGIN/COMMIT rather
    than a savepoint inside an open transaction.
    """
    if not conn.autocommit:
        raise BabylonError("register_checkpoint needs an autocommit connection (its transaction must commit)")
    trajectories = [trajectory for group in groups for trajectory in group.trajectories]
    windows = sorted({group.window_id for group in groups})
    versions = sorted({f"{t.judge}@{t.rubric_version}" for t in trajectories})
    batch = f"{policy.name}/step-{outcome.step}"
    with conn.transaction():
        _require_lease(conn, lease)
        row = conn.execute(
            """
            INSERT INTO policy_checkpoints (
                model_name, step, backend, location, score_versions, config, metrics,
                eval_margin_before, eval_margin_after, eval_windows, wandb_run_id, wandb_artifact
            ) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
            RETURNING id
            """,
            (
                policy.name,
                outcome.step,
                outcome.checkpoint.backend,
                outcome.checkpoint.location,
                versions,
                Jsonb(config),
                Jsonb(outcome.metrics),
                eval_margin_before,
                eval_margin_after,
                eval_windows,
                wandb_run_id,
                wandb_artifact,
            ),
        ).fetchone()
        if row is None:
            raise BabylonError(f"registering {batch} returned no id")
        checkpoint_id: int = row[0]
        with conn.cursor() as cur:
            snapshots = {t.window_id: t.snapshot_id for t in trajectories}
            cur.executemany(
                "INSERT INTO checkpoint_windows (checkpoint_id, window_id, snapshot_id) VALUES (%s, %s, %s)",
                [(checkpoint_id, window_id, snapshots[window_id]) for window_id in windows],
            )
            cur.executemany(
                "INSERT INTO checkpoint_trajectories (checkpoint_id, trajectory_id, snapshot_id, source_id, "
                "window_id, group_index, score, judge, rubric_version) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (checkpoint_id, t.trajectory_id, t.snapshot_id, t.source_id, t.window_id, t.group_index, t.score,
                     t.judge, t.rubric_version)
                    for t in trajectories
                ],
            )  # fmt: skip
    return checkpoint_id
