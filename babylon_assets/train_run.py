"""`babylon train`: the whole chain for the lookback's windows, then training, on the project's instance.

Every window runs the same asset job the sensor launches (so the runs show in the UI). One window's
failure does not stop the others, but then no training happens and the command fails naming them;
a window stopped by the blocking agent check is skipped with its reason, which is not a failure.
"""

import asyncio
import os
from datetime import UTC, datetime, timedelta
from typing import Literal

import dagster as dg
from pydantic import BaseModel, ConfigDict

from babylon_assets.db.connection import connect_async, resolve_database_url
from babylon_assets.db.migrate import require_migrated
from babylon_assets.errors import BabylonError
from babylon_assets.instance import instance_environment, prepare_instance
from babylon_assets.partitions import HOUR, eligible_windows_between, hour_floor, latest_completed_window
from babylon_assets.trajectories.assets import ENOUGH_VALID_AGENTS
from babylon_assets.trajectories.config import WindowConfig
from babylon_assets.trajectories.models import WindowCandidate, window_key
from babylon_assets.training.config import TrainingConfig

MetadataNumber = int | float
WindowStatus = Literal["scored", "skipped", "failed"]


class TrainingFailedError(BabylonError):
    """Some window or the training itself failed; the message names each failure."""


class WindowOutcome(BaseModel):
    model_config = ConfigDict(frozen=True)

    window: str
    status: WindowStatus
    reason: str | None
    numbers: dict[str, MetadataNumber]


class TrainReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    windows: list[WindowOutcome]
    checkpoint: dict[str, MetadataNumber | str]


def numbers_of(result: dg.ExecuteInProcessResult) -> dict[str, MetadataNumber]:
    """The numeric metadata of every materialization in the run, as `asset.key`."""
    numbers: dict[str, MetadataNumber] = {}
    for event in result.get_asset_materialization_events():
        materialization = event.materialization
        for key, value in materialization.metadata.items():
            if isinstance(value, dg.IntMetadataValue | dg.FloatMetadataValue) and value.value is not None:
                numbers[f"{materialization.asset_key.to_user_string()}.{key}"] = value.value
    return numbers


def failure_reason(result: dg.ExecuteInProcessResult) -> str:
    """The first failed step and the innermost error message, which is the one a user can act on."""
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data is not None:
            error = event.step_failure_data.error
            while error is not None and error.cause is not None:
                error = error.cause
            message = error.message.strip().splitlines()[0] if error is not None else "no error recorded"
            return f"{event.step_key}: {message}"
    return f"run {result.run_id} failed without a failed step; see it in the Dagster UI"


def window_outcome(window: str, result: dg.ExecuteInProcessResult) -> WindowOutcome:
    numbers = numbers_of(result)
    if result.success:
        return WindowOutcome(window=window, status="scored", reason=None, numbers=numbers)
    stopped = [
        evaluation
        for evaluation in result.get_asset_check_evaluations()
        if evaluation.check_name == ENOUGH_VALID_AGENTS and not evaluation.passed
    ]
    failed_steps = [event.step_key for event in result.all_events if event.is_step_failure]
    # The blocking check fails its own step; any other failed step is a real failure.
    if stopped and failed_steps == ["validated_windows"]:
        return WindowOutcome(window=window, status="skipped", reason=stopped[0].description, numbers=numbers)
    return WindowOutcome(window=window, status="failed", reason=failure_reason(result), numbers=numbers)


async def _discover(url: str, config: WindowConfig, now: datetime) -> list[WindowCandidate]:
    until = latest_completed_window(now, config.settle_minutes)
    after = hour_floor(now) - timedelta(hours=config.lookback_hours) - HOUR
    async with await connect_async(url) as conn:
        return await eligible_windows_between(
            conn, after=after, until=until, min_agents=config.min_agents, min_actions=config.min_actions
        )


def train(window_config: WindowConfig, training_config: TrainingConfig) -> TrainReport:
    """Materialize raw -> validated -> scored for each eligible window, then trained_checkpoint."""
    url = resolve_database_url()
    require_migrated(url)
    prepare_instance(url)
    # In-process runs and their resources read these, exactly like `babylon dev`'s processes.
    os.environ.update(instance_environment(url))
    from babylon_assets.definitions import defs  # after the environment is in place

    candidates = asyncio.run(_discover(url, window_config, datetime.now(UTC)))
    if not candidates:
        raise BabylonError(
            f"no window of the last {window_config.lookback_hours} h is over and has {window_config.min_agents}+ "
            f"agents with {window_config.min_actions}+ actions; run `babylon simulate` or `babylon verify`"
        )
    keys = [window_key(candidate.window_id) for candidate in candidates]
    window_job = defs.resolve_job_def("window_chain_job")
    training_job = defs.resolve_job_def("training_job")
    outcomes: list[WindowOutcome] = []
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("windows", keys)
        for key in keys:
            result = window_job.execute_in_process(
                partition_key=key,
                instance=instance,
                run_config=dg.RunConfig(ops={"validated_windows": window_config}),
                tags={"babylon/command": "train"},
                raise_on_error=False,
            )
            outcomes.append(window_outcome(key, result))
        failed = [outcome for outcome in outcomes if outcome.status == "failed"]
        if failed:
            names = "; ".join(f"{outcome.window} ({outcome.reason})" for outcome in failed)
            raise TrainingFailedError(
                f"{len(failed)} of {len(keys)} window(s) failed, so nothing was trained: {names}. "
                "The other windows' results are stored; fix the cause and run `babylon train` again."
            )
        if not any(outcome.status == "scored" for outcome in outcomes):
            reasons = "; ".join(f"{outcome.window}: {outcome.reason}" for outcome in outcomes)
            raise TrainingFailedError(f"every window was stopped by the agent check, nothing to train on: {reasons}")
        result = training_job.execute_in_process(
            instance=instance,
            run_config=dg.RunConfig(ops={"trained_checkpoint": training_config}),
            tags={"babylon/command": "train"},
            raise_on_error=False,
        )
        if not result.success:
            raise TrainingFailedError(f"training failed: {failure_reason(result)}")
    return TrainReport(windows=outcomes, checkpoint=dict(numbers_of(result)))


def render_report(report: TrainReport) -> str:
    """One summary a person reads: windows, trajectories, rejections, judge calls, step, checkpoint."""
    scored = [outcome for outcome in report.windows if outcome.status == "scored"]
    skipped = [outcome for outcome in report.windows if outcome.status == "skipped"]

    def total(key: str) -> int:
        return int(sum(outcome.numbers.get(key, 0) for outcome in report.windows))

    lines = [
        f"windows:      {len(scored)} scored, {len(skipped)} skipped of {len(report.windows)} eligible",
        f"trajectories: {total('validated_windows.accepted')} accepted, "
        f"{total('validated_windows.rejected')} rejected",
        f"judge calls:  {total('scored_groups.judge_calls')}",
    ]
    lines.extend(f"  skipped {outcome.window}: {outcome.reason}" for outcome in skipped)
    lines.extend(f"{key}: {value}" for key, value in report.checkpoint.items())
    return "\n".join(lines)
