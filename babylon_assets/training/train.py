"""`train_policy`: one training materialization of the persistent policy.

Resume from the latest registered checkpoint, then for each iteration: select windows (least used
first), size the batch by dropout, train one step, let the backend write the checkpoint completely,
measure the held-out margin, and only then register the checkpoint with its lineage. A crash before
registration leaves nothing registered, so the next run resumes from the last registered step.
"""

import random
from collections.abc import Callable
from datetime import datetime

import psutil
from pydantic import BaseModel, ConfigDict, JsonValue

from babylon_assets.db.connection import AsyncConn, connect, run_with_connection
from babylon_assets.errors import BabylonError
from babylon_assets.training import data, metric_names, registry
from babylon_assets.training.backend import TrainerBackend
from babylon_assets.training.config import TrainingConfig
from babylon_assets.training.tracking import ExperimentTracker, TrackedRun, checkpoint_artifact
from babylon_assets.training.types import (
    MarginPair,
    PolicySpec,
    RegisteredCheckpoint,
    ScoredGroup,
    ScoredTrajectory,
    StepRecord,
    TrainingResult,
)
from babylon_assets.trajectories.models import window_key


class NoTrainableWindowsError(BabylonError):
    """No scored window qualifies for training; the message says how to produce some."""


class TrainingFailedError(BabylonError):
    """A training step failed; nothing of that step was registered."""


def _no_windows_message(config: TrainingConfig, eligible: int, held_out: int) -> str:
    return (
        f"{eligible - held_out} scored window(s) can be trained on ({held_out} held out for evaluation), "
        f"fewer than min_train_windows={config.min_train_windows}. A window qualifies when it is scored, "
        f"started in the last {config.lookback_hours} h and has {config.min_agents}+ distinct agents with "
        f"{config.min_actions}+ actions. Produce some with `babylon simulate` (or record games), then "
        "`babylon train` scores them (or materialize validated_windows and scored_groups for the windows)"
    )


def _run_config(trainer: TrainerBackend, config: TrainingConfig) -> dict[str, JsonValue]:
    policy = trainer.policy
    return {
        "model": {"name": policy.name, "base_model": policy.base_model, "project": policy.project},
        "trainer": trainer.settings(),
        "training": config.model_dump(),
    }


class Plan(BaseModel):
    """What a training materialization works with, fixed before its first step."""

    model_config = ConfigDict(frozen=True)

    split: data.WindowSplit
    latest: RegisteredCheckpoint | None
    pairs: list[MarginPair]


class StepContext(BaseModel):
    """What one step needs besides its trainer and run."""

    model_config = ConfigDict(frozen=True)

    url: str
    config: TrainingConfig
    plan: Plan
    run_config: dict[str, JsonValue]
    lease: registry.ModelLease


def plan_training(url: str, policy: PolicySpec, config: TrainingConfig, now: datetime) -> Plan:
    """Create the model if new, assign the splits of new windows, and find where to resume from."""
    with connect(url, autocommit=True) as conn:
        with conn.transaction():
            registry.ensure_policy_model(conn, policy)
            eligible = data.eligible_windows(conn, config, now)
            split = data.assign_splits(conn, eligible, config.held_out_fraction)
        if len(split.train) < config.min_train_windows:
            raise NoTrainableWindowsError(_no_windows_message(config, len(eligible), len(split.held_out)))
        # Held-out windows, plus the game's own evaluation episodes ("isEvaluation") of the training windows.
        latest = registry.latest_checkpoint(conn, policy.name)
    held_out = run_with_connection(url, lambda conn: _held_out_trajectories(conn, split, config.min_actions))
    return Plan(split=split, latest=latest, pairs=data.margin_pairs(held_out))


async def _held_out_trajectories(
    conn: AsyncConn, split: data.WindowSplit, min_actions: int
) -> dict[datetime, list[ScoredTrajectory]]:
    """The held-out windows, plus the game's own evaluation episodes ("isEvaluation") of the training windows."""
    held_out = await data.load_scored_trajectories(conn, [w.window_id for w in split.held_out], min_actions, use="all")
    held_out.update(
        await data.load_scored_trajectories(conn, [w.window_id for w in split.train], min_actions, use="evaluation")
    )
    return held_out


def _step_groups(
    context: StepContext, policy: PolicySpec, step: int, loaded: dict[datetime, list[ScoredTrajectory]]
) -> tuple[list[ScoredGroup], float]:
    """This step's groups after window selection and dropout; `loaded` caches windows across steps."""
    config = context.config
    with connect(context.url) as conn:
        selected = data.select_windows(conn, policy.name, context.plan.split.train, config.windows_per_iteration)
    missing = [window_id for window_id in selected if window_id not in loaded]
    loaded.update(
        run_with_connection(context.url, lambda conn: data.load_scored_trajectories(conn, missing, config.min_actions))
    )
    total = sum(len(loaded[window_id]) for window_id in selected)
    rate = data.dropout_rate(total, config.target_trajectories, config.max_dropout)
    groups = data.group_trajectories([t for window_id in selected for t in loaded[window_id]])
    return data.apply_dropout(groups, rate, random.Random(f"{config.seed}:{step}:dropout")), rate


def train_one_step(
    context: StepContext,
    trainer: TrainerBackend,
    run: TrackedRun,
    *,
    previous_step: int,
    margin_before: float | None,
    loaded: dict[datetime, list[ScoredTrajectory]],
) -> StepRecord:
    """Train, let the backend finish its checkpoint, measure, then register; W&B hears of it last."""
    policy = trainer.policy
    step = previous_step + 1
    groups, rate = _step_groups(context, policy, step, loaded)
    try:
        outcome = trainer.train_step(
            groups, step=step, learning_rate=context.config.learning_rate, seed=context.config.seed
        )
    except BabylonError:
        raise
    except Exception as error:
        # torch.OutOfMemoryError (a RuntimeError) is named, not imported: this module is backend-agnostic.
        if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError":
            available = psutil.virtual_memory().available / 2**30
            raise TrainingFailedError(
                f"step {step} of model {policy.name!r} ran out of memory ({type(error).__name__}: {error}; "
                f"{available:.1f} GiB of RAM free now); lower --windows-per-iteration or --target-trajectories, "
                f"or stop other programs, then run again. Nothing was registered; it resumes from step {previous_step}"
            ) from error
        raise TrainingFailedError(
            f"step {step} of model {policy.name!r} failed ({type(error).__name__}: {error}); "
            f"nothing was registered, the next run resumes from step {previous_step}"
        ) from error
    if outcome.step != step:
        # Every train call adds exactly one checkpoint; another step number means the backend's state and
        # the registry disagree, and registering it would misstate the lineage.
        raise TrainingFailedError(
            f"the {policy.backend} backend reported step {outcome.step} after step {previous_step}, not {step}; "
            "nothing was registered"
        )
    measured = trainer.eval_margin(context.plan.pairs)
    margin_after = None if measured is None else measured.value
    trajectories = [t for group in groups for t in group.trajectories]
    metrics = {
        **outcome.metrics,
        metric_names.REWARD: sum(t.score for t in trajectories) / len(trajectories),
        metric_names.DROPOUT_RATE: rate,
        metric_names.WINDOWS: float(len({group.window_id for group in groups})),
    }
    if margin_after is not None:
        metrics[metric_names.EVAL_MARGIN] = margin_after
    with connect(context.url, autocommit=True) as conn:
        checkpoint_id = registry.register_checkpoint(
            conn,
            policy=policy,
            outcome=outcome.model_copy(update={"metrics": metrics}),
            groups=groups,
            config=context.run_config,
            eval_margin_before=margin_before,
            eval_margin_after=margin_after,
            eval_windows=0 if measured is None else measured.pairs,
            wandb_run_id=run.run_id,
            wandb_artifact=checkpoint_artifact(policy.name, outcome.step),
            lease=context.lease,
        )
    windows = [window_key(window_id) for window_id in sorted({group.window_id for group in groups})]
    run.log(metrics, step=outcome.step)
    run.log_checkpoint(
        name=policy.name,
        step=outcome.step,
        location=outcome.checkpoint.location,
        metadata={
            "checkpoint_id": checkpoint_id,
            "windows": list(windows),
            "trajectories": len(trajectories),
            "eval_margin_before": margin_before,
            "eval_margin_after": margin_after,
        },
    )
    return StepRecord(
        step=outcome.step,
        checkpoint_id=checkpoint_id,
        location=outcome.checkpoint.location,
        windows=windows,
        trajectory_ids=[t.trajectory_id for t in trajectories],
        dropout_rate=rate,
        metrics=metrics,
        eval_margin_before=margin_before,
        eval_margin_after=margin_after,
    )


def train_policy(
    url: str,
    trainer: TrainerBackend,
    tracker: ExperimentTracker,
    config: TrainingConfig,
    now: datetime,
    on_step: Callable[[int, StepRecord], None] | None = None,
) -> TrainingResult:
    """Add `config.iterations` registered checkpoints to the trainer's policy, trained on the windows
    eligible at `now`; see the module docstring.

    `on_step(n, record)` is called after the n-th (1-based) step of this call is registered."""
    policy = trainer.policy
    with connect(url, autocommit=True) as lock_conn:
        lease = registry.lock_model(lock_conn, policy.name)
        plan = plan_training(url, policy, config, now)
        context = StepContext(
            url=url,
            config=config,
            plan=plan,
            run_config=_run_config(trainer, config),
            lease=lease,
        )
        previous_step = 0 if plan.latest is None else plan.latest.step
        records: list[StepRecord] = []
        try:
            trainer.resume(None if plan.latest is None else registry.checkpoint_ref(plan.latest))
            start = trainer.eval_margin(plan.pairs)
            first_margin = margin = None if start is None else start.value
            run = tracker.start_run(
                name=f"{policy.name}-from-step-{previous_step}", group=policy.name, config=context.run_config
            )
            try:
                if margin is not None:
                    run.log({metric_names.EVAL_MARGIN: margin}, step=previous_step)
                loaded: dict[datetime, list[ScoredTrajectory]] = {}
                for number in range(1, config.iterations + 1):
                    record = train_one_step(
                        context, trainer, run, previous_step=previous_step, margin_before=margin, loaded=loaded
                    )
                    records.append(record)
                    if on_step is not None:
                        on_step(number, record)
                    previous_step, margin = record.step, record.eval_margin_after
            except BaseException:
                run.finish(failed=True)
                raise
            run.finish(failed=False)
        finally:
            trainer.close()
        with connect(url) as conn:
            best = registry.best_checkpoint(conn, policy.name)
    return TrainingResult(
        model_name=policy.name,
        backend=policy.backend,
        steps_done=len(records),
        first_step=records[0].step,
        last_step=records[-1].step,
        windows_used=sorted({key for record in records for key in record.windows}),
        trajectories_used=len({tid for record in records for tid in record.trajectory_ids}),
        held_out_windows=[window_key(w.window_id) for w in plan.split.held_out],
        checkpoint_path=records[-1].location,
        steps=records,
        eval_margin_before=first_margin,
        eval_margin_after=records[-1].eval_margin_after,
        best_checkpoint=best,
        wandb_run_path=run.path,
        wandb_url=run.url,
    )
