"""Automatic training: one training run once enough scored windows exist that no checkpoint has used."""

import hashlib
from datetime import UTC, datetime

import dagster as dg

from babylon_assets.db.connection import Conn, connect
from babylon_assets.instance import TRAINING_WORKLOAD, TRAINING_WORKLOAD_TAG
from babylon_assets.jobs import training_job
from babylon_assets.training.config import TrainingConfig
from babylon_assets.trajectories.models import lookback_start, window_key
from resources.database import DatabaseResource

MIN_FRESH_WINDOWS = 3
ACTIVE_RUN_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def fresh_scored_windows(conn: Conn, *, since: datetime) -> list[str]:
    """Scored windows since `since` that no checkpoint trained on and that are not held out for evaluation.

    Held-out windows are never trained on, and windows older than the lookback are never picked:
    counting either would ask for training that cannot use them.
    """
    rows = conn.execute(
        """
        SELECT s.window_id
        FROM window_scores AS s
        WHERE s.window_id >= %s
          AND NOT EXISTS (SELECT 1 FROM checkpoint_windows AS c WHERE c.window_id = s.window_id)
          AND NOT EXISTS (
              SELECT 1 FROM training_window_splits AS h WHERE h.window_id = s.window_id AND h.held_out
          )
        ORDER BY s.window_id
        """,
        (since,),
    ).fetchall()
    return [window_key(window_id) for (window_id,) in rows]


def training_run_key(window_keys: list[str]) -> str:
    """Same fresh windows, same key: a later tick over an unchanged set requests nothing new."""
    digest = hashlib.sha256(",".join(sorted(window_keys)).encode()).hexdigest()[:16]
    return f"train-{digest}"


@dg.sensor(
    job=training_job,
    minimum_interval_seconds=60,
    description=f"Requests one training run when {MIN_FRESH_WINDOWS}+ scored windows exist that no checkpoint used.",
)
def training_sensor(context: dg.SensorEvaluationContext, database: DatabaseResource) -> dg.SkipReason | dg.RunRequest:
    # The training run only picks windows inside its lookback; older ones would never be used.
    since = lookback_start(datetime.now(UTC), TrainingConfig().lookback_hours)
    with connect(database.store_url()) as conn:
        fresh = fresh_scored_windows(conn, since=since)
    if len(fresh) < MIN_FRESH_WINDOWS:
        return dg.SkipReason(f"{len(fresh)} fresh windows < {MIN_FRESH_WINDOWS}")
    active = context.instance.get_runs(
        filters=dg.RunsFilter(tags={TRAINING_WORKLOAD_TAG: TRAINING_WORKLOAD}, statuses=ACTIVE_RUN_STATUSES),
        limit=1,
    )
    if active:
        return dg.SkipReason(
            f"{len(fresh)} fresh windows >= {MIN_FRESH_WINDOWS}, but training run {active[0].run_id} "
            f"({active[0].status.value}) has not finished; waiting for it"
        )
    return dg.RunRequest(
        run_key=training_run_key(fresh),
        tags={
            "babylon/fresh_windows": str(len(fresh)),
            "babylon/first_window": fresh[0],
            "babylon/last_window": fresh[-1],
        },
    )
