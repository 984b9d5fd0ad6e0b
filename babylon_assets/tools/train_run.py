"""`babylon train`: the whole chain for the lookback's windows, then training, on the project's instance.

Every window runs the same asset job the sensor launches (so the runs show in the UI). One window's
failure does not stop the others, but then no training happens and the command fails naming them;
a window stopped by the blocking agent check is skipped with its reason, which is not a failure.
"""

import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Literal, NoReturn

import dagster as dg
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.definitions.repository_definition import SINGLETON_REPOSITORY_NAME
from dagster._core.execution.api import execute_run
from dagster._core.execution.execution_result import ExecutionResult
from dagster._core.remote_origin import RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.storage.tags import PARTITION_NAME_TAG
from dagster._core.workspace.load_target import WorkspaceFileTarget
from pydantic import BaseModel, ConfigDict

from babylon_assets.db.connection import (
    AsyncConn,
    resolve_database_url,
    resolve_store_base_url,
    resolve_store_url,
    run_with_connection,
)
from babylon_assets.db.migrate import require_migrated
from babylon_assets.errors import BabylonError, ConfigurationError
from babylon_assets.evaluation.assets import EvaluationConfig
from babylon_assets.evaluation.settings import EvaluationSettings
from babylon_assets.partitions import WINDOW_PARTITIONS
from babylon_assets.progress import progress
from babylon_assets.run_failures import failure_text
from babylon_assets.tools.instance import instance_environment, prepare_instance
from babylon_assets.tools.run_health import RUN_PID_TAG, clean_up_dead_runs, process_tags
from babylon_assets.training.config import TrainingConfig
from babylon_assets.trajectories.assets import ENOUGH_VALID_AGENTS
from babylon_assets.trajectories.config import WindowConfig
from babylon_assets.trajectories.discovery import before_lookback, eligible_windows_between, latest_completed_window
from babylon_assets.trajectories.models import WindowCandidate, window_key
from babylon_assets.trajectories.rules import WindowDiscovery

DEFINITIONS_MODULE = "babylon_assets.definitions"
MetadataNumber = int | float
ConsoleConfig = dict[str, dict[str, dict[str, str]]]
# Every event still goes to the instance (and the UI). The terminal gets this command's lines; a failed
# step's traceback (Dagster logs it at ERROR, some 250 lines) only with --debug.
QUIET_CONSOLE: ConsoleConfig = {"console": {"config": {"log_level": "CRITICAL"}}}
DEBUG_CONSOLE: ConsoleConfig = {"console": {"config": {"log_level": "WARNING"}}}
WindowStatus = Literal["scored", "skipped", "failed"]
COMMAND_TAG = "babylon/command"
# How a shell reports a command stopped by these signals (128 + signal number).
STOP_SIGNALS = {signal.SIGINT: ("Ctrl-C", 130), signal.SIGTERM: ("SIGTERM", 143)}


class TrainCommandError(BabylonError):
    """Some window or the training itself failed; the message names each failure."""


class WindowOutcome(BaseModel):
    model_config = ConfigDict(frozen=True)

    window: str
    status: WindowStatus
    reason: str | None
    numbers: dict[str, MetadataNumber]


class CheckpointSummary(BaseModel):
    """What trained_checkpoint reported, as text for the summary."""

    model_config = ConfigDict(frozen=True)

    model: str
    step: str
    steps_done: str
    checkpoint: str
    windows: list[str]
    trajectories: str
    held_out_windows: str
    wandb_run: str


class TrainReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    windows: list[WindowOutcome]
    checkpoint: CheckpointSummary
    promotion: str  # the promotion check's verdict and its evidence


def metadata_of(result: ExecutionResult) -> dict[str, dict[str, dg.MetadataValue]]:
    """Each materialized asset's metadata in the run, by asset name."""
    return {
        event.materialization.asset_key.to_user_string(): dict(event.materialization.metadata)
        for event in result.get_asset_materialization_events()
    }


def numbers_of(result: ExecutionResult) -> dict[str, MetadataNumber]:
    """The numeric metadata of every materialization in the run, as `asset.key`."""
    return {
        f"{asset}.{key}": value.value
        for asset, metadata in metadata_of(result).items()
        for key, value in metadata.items()
        if isinstance(value, dg.IntMetadataValue | dg.FloatMetadataValue) and value.value is not None
    }


def metadata_text(metadata: dict[str, dg.MetadataValue], key: str) -> str:
    value = metadata.get(key)
    if value is None:
        raise TrainCommandError(f"trained_checkpoint reported no {key!r}; this command and the asset disagree")
    if isinstance(value, dg.JsonMetadataValue):
        return json.dumps(value.data)
    return str(value.value)


def checkpoint_summary(result: ExecutionResult) -> CheckpointSummary:
    metadata = metadata_of(result).get("trained_checkpoint")
    if metadata is None:
        raise TrainCommandError(f"the training run {result.run_id} succeeded but materialized no checkpoint")
    windows = metadata.get("windows")
    if not (isinstance(windows, dg.JsonMetadataValue) and isinstance(windows.data, list)):
        raise TrainCommandError("trained_checkpoint reported no list of windows; this command and the asset disagree")
    return CheckpointSummary(
        model=metadata_text(metadata, "model"),
        step=metadata_text(metadata, "step"),
        steps_done=metadata_text(metadata, "steps_done"),
        checkpoint=metadata_text(metadata, "checkpoint"),
        windows=[str(key) for key in windows.data],
        trajectories=metadata_text(metadata, "trajectories_used"),
        held_out_windows=metadata_text(metadata, "held_out_windows"),
        wandb_run=metadata_text(metadata, "wandb_run"),
    )


def failure_reason(result: ExecutionResult) -> str:
    """The first failed step and its error as our code put it (see run_failures)."""
    found = failure_text(result.all_events)
    return found if found is not None else f"run {result.run_id} failed without a failed step; see it in the Dagster UI"


def window_outcome(window: str, result: ExecutionResult) -> WindowOutcome:
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


def _because(reason: str | None) -> str:
    return f": {reason}" if reason else ""


async def _discover(conn: AsyncConn, config: WindowDiscovery, now: datetime) -> list[WindowCandidate]:
    return await eligible_windows_between(
        conn,
        after=before_lookback(now, config.lookback_hours),
        until=latest_completed_window(now, config.settle_minutes),
        min_agents=config.rule.min_agents,
        min_actions=config.rule.min_actions,
    )


class _Stopped(BaseException):
    """SIGINT or SIGTERM reached `babylon train`."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_stopped(signum: int, _frame: FrameType | None) -> NoReturn:
    raise _Stopped(signum)


def _stop_now(signum: int) -> NoReturn:
    """Cancel this process's unfinished runs, free their pool slots, say so in one line, and exit.

    The process then ends at once (os._exit): the run may be inside a training step or waiting for a
    pool slot, neither of which Dagster lets a signal interrupt. Ending the process closes its
    database connections, which releases the model's advisory lock; a half-written checkpoint is in a
    temporary folder the next writer removes, and nothing of an unfinished step is registered.
    """
    name, code = STOP_SIGNALS[signal.Signals(signum)]
    canceled: list[str] = []
    with dg.DagsterInstance.get() as instance:
        mine = instance.get_runs(
            filters=dg.RunsFilter(
                tags={RUN_PID_TAG: str(os.getpid())},
                statuses=[dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED],
            )
        )
        for run in mine:
            instance.report_run_canceled(run, f"babylon train was stopped by {name}")
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
            kind = "training run" if run.job_name == "training_job" else "window run"
            canceled.append(f"{kind} {run.run_id}")
    what = f"{', '.join(canceled)} canceled, its pool slots and locks released" if canceled else "no run was going"
    print(f"babylon train: stopped by {name}; {what}. Run `babylon train` again to go on.", file=sys.stderr)
    sys.stderr.flush()
    os._exit(code)


def _workspace_file() -> Path:
    """The code location the webserver and the daemon load: workspace.yaml beside the package (a checkout)
    or in the current directory (an installed package run from the project root, as in deploy/)."""
    for folder in (Path(__file__).resolve().parents[2], Path.cwd()):
        if (folder / "workspace.yaml").is_file():
            return folder / "workspace.yaml"
    raise ConfigurationError(f"no workspace.yaml in {Path.cwd()}; run `babylon train` from the project root")


def _remote_origin(job_name: str) -> RemoteJobOrigin:
    """The job's origin in the workspace's code location: a run carrying it belongs to that location, so the
    UI's overview timeline shows it next to the sensors' runs."""
    (location,) = WorkspaceFileTarget(paths=[str(_workspace_file())]).create_origins()
    return RemoteJobOrigin(
        repository_origin=RemoteRepositoryOrigin(
            code_location_origin=location, repository_name=SINGLETON_REPOSITORY_NAME
        ),
        job_name=job_name,
    )


def _execute(
    instance: dg.DagsterInstance,
    job_name: str,
    run_config: dg.RunConfig,
    tags: dict[str, str],
    partition_key: str | None = None,
) -> ExecutionResult:
    """Run the job in this process as a run of the workspace's code location (`execute_in_process`
    records runs without one, which the timeline leaves out)."""
    repository = ReconstructableRepository.for_module(DEFINITIONS_MODULE, "defs", str(_workspace_file().parent))
    reconstructable = repository.get_reconstructable_job(job_name)
    job = reconstructable.get_definition()
    partition = {PARTITION_NAME_TAG: partition_key} if partition_key is not None else {}
    run = instance.create_run_for_job(
        job_def=job,
        run_config=run_config.to_config_dict(),  # type: ignore[no-untyped-call]  # unannotated in Dagster 1.13
        tags={**job.run_tags, **tags, **partition},
        remote_job_origin=_remote_origin(job_name),
        job_code_origin=reconstructable.get_python_origin(),
    )
    return execute_run(reconstructable, run, instance)


def _run_stoppably(work: Callable[[], TrainReport]) -> TrainReport:
    """`work()` in a thread, so Ctrl-C and SIGTERM reach this (main) thread even while Dagster runs.

    Dagster's in-process execution swallows SIGINT outside user code (and so a run waiting for a pool
    slot could not be stopped at all); off the main thread it leaves the signals alone. Both handlers
    are installed explicitly: a SIGINT that the launching shell set to "ignore" (`babylon train &` in a
    script) would otherwise never stop it.
    """
    outcome: list[TrainReport] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            outcome.append(work())
        except BaseException as error:  # handed to the main thread, which raises it
            failure.append(error)

    worker = threading.Thread(target=target, name="babylon-train", daemon=True)
    previous = {signum: signal.signal(signum, _raise_stopped) for signum in STOP_SIGNALS}
    try:
        worker.start()
        while worker.is_alive():
            worker.join(0.2)
    except _Stopped as stopped:
        _stop_now(stopped.signum)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if failure:
        raise failure[0]
    return outcome[0]


def train(
    discovery: WindowDiscovery,
    training_config: TrainingConfig,
    evaluation: EvaluationSettings,
    *,
    now: datetime,
    debug: bool = False,
) -> TrainReport:
    """Materialize raw -> validated -> scored for each window eligible at `now`, then trained_checkpoint
    and its closed-loop evaluation (`evaluation`).

    Each skipped or failed window is one line on stderr; `debug` adds the failed steps' tracebacks.
    """
    console = DEBUG_CONSOLE if debug else QUIET_CONSOLE
    url = resolve_database_url()
    require_migrated(resolve_store_url(url))
    prepare_instance(resolve_store_base_url(url))
    # In-process runs and their resources read these, exactly like `babylon dev`'s processes.
    os.environ.update(instance_environment(url))
    return _run_stoppably(lambda: _train(url, discovery, training_config, evaluation, console, now))


def _clean_up_after_the_dead() -> None:
    """Runs a killed `babylon train` (or run worker) left STARTED here hold pool slots: free them first."""
    with dg.DagsterInstance.get() as instance:
        for dead in clean_up_dead_runs(instance):
            print(
                f"babylon train: run {dead.run_id} ({dead.job_name}) was left STARTED: {dead.reason}; "
                "marked it failed and freed its pool slots",
                file=sys.stderr,
            )


def _train(
    url: str,
    discovery: WindowDiscovery,
    training_config: TrainingConfig,
    evaluation: EvaluationSettings,
    console: ConsoleConfig,
    now: datetime,
) -> TrainReport:
    _clean_up_after_the_dead()
    candidates = run_with_connection(url, lambda conn: _discover(conn, discovery, now))
    if not candidates:
        raise BabylonError(
            f"no window of the last {discovery.lookback_hours} h is over and has {discovery.rule.min_agents}+ "
            f"agents with {discovery.rule.min_actions}+ actions; run `babylon simulate` or `babylon verify`"
        )
    keys = [window_key(candidate.window_id) for candidate in candidates]
    progress(f"babylon train: {len(keys)} eligible window(s) {keys[0]} .. {keys[-1]}")
    outcomes: list[WindowOutcome] = []
    # Each run names this process, so a later `babylon train` or the daemon can tell when it died.
    tags = {COMMAND_TAG: "train", **process_tags()}
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions(WINDOW_PARTITIONS, keys)
        for key in keys:
            result = _execute(
                instance,
                "window_chain_job",
                dg.RunConfig(
                    ops={"validated_windows": WindowConfig.model_validate(discovery.rule.model_dump())}, loggers=console
                ),
                tags,
                partition_key=key,
            )
            outcome = window_outcome(key, result)
            outcomes.append(outcome)
            line = f"window {key} {outcome.status}{_because(outcome.reason)}"
            if outcome.status == "scored":
                progress(f"babylon train: {line} ({len(outcomes)} of {len(keys)})")
            else:
                print(f"babylon train: {line}", file=sys.stderr)
        failed = [outcome for outcome in outcomes if outcome.status == "failed"]
        if failed:
            raise TrainCommandError(
                f"{len(failed)} of {len(keys)} window(s) failed (listed above), so nothing was trained; the other "
                "windows' results are stored: fix the cause and run `babylon train` again "
                "(`babylon train --debug` shows the tracebacks)"
            )
        if not any(outcome.status == "scored" for outcome in outcomes):
            reasons = "; ".join(f"{outcome.window}: {outcome.reason}" for outcome in outcomes)
            raise TrainCommandError(f"every window was stopped by the agent check, nothing to train on: {reasons}")
        progress(f"babylon train: training {training_config.iterations} iteration(s)")
        ops = {
            "trained_checkpoint": training_config,
            "policy_evaluation": EvaluationConfig.model_validate(evaluation.model_dump()),
        }
        result = _execute(instance, "training_job", dg.RunConfig(ops=ops, loggers=console), tags)
        evaluations = result.get_asset_check_evaluations()
        failed_steps = [event.step_key for event in result.all_events if event.is_step_failure]
        # A candidate the promotion check did not find better fails the check's own (blocking) step: that
        # is a verdict, not a failure. Any other failed step is.
        refused = [e for e in evaluations if not e.passed] and failed_steps == ["policy_evaluation_promotion_check"]
        if not result.success and not refused:
            raise TrainCommandError(f"training failed: {failure_reason(result)}")
    [promotion] = evaluations
    verdict = "promoted to best" if promotion.passed else "not promoted"
    return TrainReport(
        windows=outcomes,
        checkpoint=checkpoint_summary(result),
        promotion=f"{verdict}: {promotion.description}",
    )


def render_report(report: TrainReport) -> str:
    """One summary a person reads: windows, trajectories, rejections, judge calls, step, checkpoint, lineage."""
    scored = [outcome.window for outcome in report.windows if outcome.status == "scored"]
    skipped = [outcome for outcome in report.windows if outcome.status == "skipped"]

    def total(key: str) -> int:
        return int(sum(outcome.numbers.get(key, 0) for outcome in report.windows))

    checkpoint = report.checkpoint
    lines = [
        f"windows:      {len(scored)} scored, {len(skipped)} skipped of {len(report.windows)} eligible",
        *(f"  skipped {outcome.window}: {outcome.reason}" for outcome in skipped),
        f"trajectories: {total('validated_windows.accepted')} accepted, {total('validated_windows.rejected')} rejected",
        f"judge calls:  {total('scored_groups.calls_made')} made, {total('scored_groups.calls_cached')} cached",
        f"step:         {checkpoint.step} ({checkpoint.steps_done} new) of model {checkpoint.model}",
        f"checkpoint:   {checkpoint.checkpoint}",
        f"lineage:      {len(checkpoint.windows)} window(s) {', '.join(checkpoint.windows)} -> "
        f"{checkpoint.trajectories} trajectories -> step {checkpoint.step} "
        f"({checkpoint.held_out_windows} window(s) held out for evaluation)",
        f"W&B run:      {checkpoint.wandb_run}",
        f"promotion:    {report.promotion}",
    ]
    return "\n".join(lines)
