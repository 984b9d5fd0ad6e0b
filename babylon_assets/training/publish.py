"""Publishing to the game, only when asked (`BABYLON_PUBLISH=1`): the promoted checkpoint becomes a row of
the game's "trained_models", and the trajectories it trained on are marked "usedInTraining" /
"trainedInBatch", in the same transaction that moves the platform's `best` pointer. Without the flag the
platform never writes to the game's database.

One transaction needs one database: publishing requires the platform's schema in the game's database
(no BABYLON_STORE_URL). The game's content hash leaves the marked columns out, so publishing never makes
a window look changed.
"""

import os
from datetime import UTC, datetime

from psycopg import sql
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, JsonValue

from babylon_assets.db.connection import STORE_URL_ENV, Conn, connect, resolve_store_base_url
from babylon_assets.errors import BabylonError, ConfigurationError

PUBLISH_ENV = "BABYLON_PUBLISH"


class PublishTarget(BaseModel):
    """Where the game's tables are, seen from a store connection (whose search_path is the platform's)."""

    model_config = ConfigDict(frozen=True)

    game_schema: str


def publish_target(game_url: str) -> PublishTarget | None:
    """None unless BABYLON_PUBLISH=1; then the game's schema, found the way the game's own role finds it."""
    raw = os.environ.get(PUBLISH_ENV, "").strip()
    if raw in ("", "0"):
        return None
    if raw != "1":
        raise ConfigurationError(f"{PUBLISH_ENV}={raw!r} is not 0 or 1; set 1 to publish to the game, or unset it")
    if resolve_store_base_url(game_url) != game_url:
        raise ConfigurationError(
            f"{PUBLISH_ENV}=1 writes to the game in the transaction that promotes a checkpoint, so the platform's "
            f"schema must be in the game's database: unset {STORE_URL_ENV}, or unset {PUBLISH_ENV}"
        )
    with connect(game_url) as conn:
        found = conn.execute(
            """SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE c.oid = to_regclass('"trained_models"')"""
        ).fetchone()
    if found is None:
        raise ConfigurationError(
            f'{PUBLISH_ENV}=1 but the game\'s database has no "trained_models" table; unset {PUBLISH_ENV} '
            "or point DATABASE_URL at the game's database"
        )
    return PublishTarget(game_schema=str(found[0]))


def publish_promotion(conn: Conn, target: PublishTarget, checkpoint_id: int, evidence: dict[str, JsonValue]) -> None:
    """Write the game's rows for the promoted checkpoint, inside the caller's transaction (the promotion's)."""
    found = conn.execute(
        """
        SELECT c.model_name, c.step, m.base_model, c.location, c.wandb_run_id, c.wandb_artifact,
               (SELECT avg(score) FROM checkpoint_trajectories WHERE checkpoint_id = c.id),
               (SELECT array_agg(trajectory_id ORDER BY trajectory_id) FROM checkpoint_trajectories
                WHERE checkpoint_id = c.id)
        FROM policy_checkpoints AS c JOIN policy_models AS m ON m.name = c.model_name
        WHERE c.id = %s
        """,
        (checkpoint_id,),
    ).fetchone()
    if found is None:
        raise BabylonError(f"checkpoint {checkpoint_id} is not registered; nothing to publish")
    model_name, step, base_model, location, wandb_run_id, wandb_artifact, avg_reward, trajectory_ids = found
    now = datetime.now(UTC).replace(tzinfo=None)  # the game's TIMESTAMP(3) holds UTC without a zone
    model_id = f"{model_name}-step-{step}"
    # The registry's name for the step's batch (see registry.register_checkpoint).
    batch = f"{model_name}/step-{step}"
    conn.execute(
        sql.SQL(
            """
            INSERT INTO {} ("id", "modelId", "version", "baseModel", "trainingBatch", "status", "storagePath",
                            "avgReward", "evalMetrics", "wandbRunId", "wandbArtifactId", "createdAt", "updatedAt")
            VALUES (%s, %s, %s, %s, %s, 'ready', %s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT ("modelId") DO UPDATE SET "status" = 'ready', "updatedAt" = EXCLUDED."updatedAt"
            """
        ).format(sql.Identifier(target.game_schema, "trained_models")),
        (
            f"babylon:{model_id}",
            model_id,
            str(step),
            base_model,
            batch,
            location,
            avg_reward,
            Jsonb(evidence),
            wandb_run_id,
            wandb_artifact,
            now,
            now,
        ),
    )
    conn.execute(
        sql.SQL(
            'UPDATE {} SET "usedInTraining" = true, "trainedInBatch" = %s, "updatedAt" = %s '
            'WHERE "trajectoryId" = ANY(%s)'
        ).format(sql.Identifier(target.game_schema, "trajectories")),
        (batch, now, list(trajectory_ids or [])),
    )
