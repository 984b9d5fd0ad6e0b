"""Automatic training: one training run once enough scored windows exist that no checkpoint has used.

A failed run is tried again by this sensor, after a wait that doubles each time, up to an attempt
limit; then the sensor stops asking for those windows and says why and how to resume. (Dagster 1.13's
run retries re-launch at once, which does not help against a full disk or a judge outage.)
"""

import hashlib
import os
from datetime import UTC, datetime, timedelta

import dagster as dg
from pydantic import BaseModel, ConfigDict, Field

from babylon_assets.db.connection import Conn, connect
from babylon_assets.jobs import training_job
from babylon_assets.run_failures import failure_text
from babylon_assets.run_tags import TRAINING_WORKLOAD, TRAINING_WORKLOAD_TAG
from babylon_assets.training.config import TrainingConfig
from babylon_assets.trajectories.models import lookback_start, window_key
from resources.database import DatabaseResource

# Scored windows no checkpoint used yet that make the sensor request a training run (not TrainingConfig's
# min_train_windows, which a run needs to train at all, nor `babylon verify --min-windows`, which reports readiness).
FRESH_WINDOWS_TO_TRAIN = 3
ATTEMPTS_ENV = "BABYLON_TRAINING_ATTEMPTS"
RETRY_SECONDS_ENV = "BABYLON_TRAINING_RETRY_SECONDS"
FRESH_SET_TAG = "babylon/fresh_set"
ATTEMPT_TAG = "babylon/attempt"
STOPPED_TAG = "babylon/stopped"
ACTIVE_RUN_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


class FreshWindow(BaseModel):
    """A scored window with the snapshot its scores belong to."""

    model_config = ConfigDict(frozen=True)

    key: str
    snapshot_id: int

    @property
    def version(self) -> str:
        return f"{self.key}@{self.snapshot_id}"


def fresh_scored_windows(conn: Conn, *, since: datetime) -> list[FreshWindow]:
    """Scored windows since `since` whose current content no checkpoint trained on, that are not held
    out for evaluation, oldest first.

    A window counts with the snapshot it was scored from, and only while that is its validated one (see
    training.data.eligible_windows): a window whose content changed after training used it is fresh
    again once its new scores are stored. Held-out windows are never trained on, and windows older than
    the lookback are never picked: counting either would ask for training that cannot use them.
    """
    rows = conn.execute(
        """
        SELECT s.window_id, s.snapshot_id
        FROM window_scores AS s
        JOIN window_validations AS v ON v.window_id = s.window_id AND v.snapshot_id = s.snapshot_id
        WHERE s.window_id >= %s
          AND NOT EXISTS (
              SELECT 1 FROM checkpoint_windows AS c WHERE c.window_id = s.window_id AND c.snapshot_id = s.snapshot_id
          )
          AND NOT EXISTS (
              SELECT 1 FROM training_window_splits AS h WHERE h.window_id = s.window_id AND h.held_out
          )
        ORDER BY s.window_id
        """,
        (since,),
    ).fetchall()
    return [FreshWindow(key=window_key(window_id), snapshot_id=snapshot_id) for window_id, snapshot_id in rows]


def current_time() -> datetime:
    """The sensor's clock, a function of its own so tests can move time forward."""
    return datetime.now(UTC)


class TrainingRetries(BaseModel):
    """How often a failed training run is tried again: `attempts` in all, waiting `first_wait_seconds`,
    then twice that, and so on (BABYLON_TRAINING_ATTEMPTS, BABYLON_TRAINING_RETRY_SECONDS)."""

    model_config = ConfigDict(frozen=True)

    attempts: int = Field(default=3, ge=1)
    first_wait_seconds: float = Field(default=300.0, ge=0)

    @classmethod
    def from_env(cls) -> "TrainingRetries":
        defaults = cls()
        return cls(
            attempts=int(os.environ.get(ATTEMPTS_ENV, defaults.attempts)),
            first_wait_seconds=float(os.environ.get(RETRY_SECONDS_ENV, defaults.first_wait_seconds)),
        )

    def wait_after(self, failures: int) -> timedelta:
        return timedelta(seconds=self.first_wait_seconds * 2 ** (failures - 1))


def fresh_set_key(windows: list[FreshWindow]) -> str:
    """Names the set of fresh windows: a new scored window, or new scores of a window, make a new set."""
    digest = hashlib.sha256(",".join(sorted(window.version for window in windows)).encode()).hexdigest()[:16]
    return f"train-{digest}"


def training_run_key(windows: list[FreshWindow], attempt: int = 1) -> str:
    """Same fresh windows and attempt, same key: a later tick over an unchanged set requests nothing new."""
    return f"{fresh_set_key(windows)}-attempt-{attempt}"


def run_failure(instance: dg.DagsterInstance, run_id: str) -> str:
    events = [record.dagster_event for record in instance.all_logs(run_id) if record.dagster_event is not None]
    return failure_text(events) or "no reason recorded; see the run in the Dagster UI"


@dg.sensor(
    job=training_job,
    minimum_interval_seconds=60,
    description=f"Requests one training run when {FRESH_WINDOWS_TO_TRAIN}+ scored windows exist that no checkpoint "
    "used.",
)
def training_sensor(context: dg.SensorEvaluationContext, database: DatabaseResource) -> dg.SkipReason | dg.RunRequest:
    # The training run only picks windows inside its lookback; older ones would never be used.
    now = current_time()
    since = lookback_start(now, TrainingConfig().lookback_hours)
    with connect(database.store_url()) as conn:
        fresh = fresh_scored_windows(conn, since=since)
    if len(fresh) < FRESH_WINDOWS_TO_TRAIN:
        return dg.SkipReason(f"{len(fresh)} fresh windows < {FRESH_WINDOWS_TO_TRAIN}")
    active = context.instance.get_runs(
        filters=dg.RunsFilter(tags={TRAINING_WORKLOAD_TAG: TRAINING_WORKLOAD}, statuses=ACTIVE_RUN_STATUSES),
        limit=1,
    )
    if active:
        return dg.SkipReason(
            f"{len(fresh)} fresh windows >= {FRESH_WINDOWS_TO_TRAIN}, but training run {active[0].run_id} "
            f"({active[0].status.value}) has not finished; waiting for it"
        )
    fresh_set = fresh_set_key(fresh)
    earlier = context.instance.get_run_records(filters=dg.RunsFilter(tags={FRESH_SET_TAG: fresh_set}), limit=100)
    failed = [
        record
        for record in earlier
        if record.dagster_run.status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)
    ]
    retries = TrainingRetries.from_env()
    if failed:
        latest = failed[0]  # newest first
        run_id = latest.dagster_run.run_id
        reason = run_failure(context.instance, run_id)
        if len(failed) >= retries.attempts:
            stopped = (
                f"training on {len(fresh)} fresh windows stopped after {len(failed)} failed attempts; the last, "
                f"run {run_id}, failed: {reason}. Fix that, then run `babylon train` (it trains on these windows), "
                "or wait for a new scored window, which this sensor tries again by itself"
            )
            if latest.dagster_run.tags.get(STOPPED_TAG) != stopped:
                context.instance.add_run_tags(run_id, {STOPPED_TAG: stopped})
            return dg.SkipReason(stopped)
        ended = datetime.fromtimestamp(latest.end_time or latest.update_timestamp.timestamp(), UTC)
        due = ended + retries.wait_after(len(failed))
        if now < due:
            return dg.SkipReason(
                f"training run {run_id} failed ({reason}); attempt {len(failed) + 1} of {retries.attempts} "
                f"at {due:%Y-%m-%d %H:%M:%S} UTC"
            )
    attempt = len(failed) + 1
    return dg.RunRequest(
        run_key=training_run_key(fresh, attempt),
        tags={
            "babylon/fresh_windows": str(len(fresh)),
            "babylon/first_window": fresh[0].key,
            "babylon/last_window": fresh[-1].key,
            FRESH_SET_TAG: fresh_set,
            ATTEMPT_TAG: str(attempt),
        },
    )
