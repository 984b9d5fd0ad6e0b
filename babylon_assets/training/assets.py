"""`trained_checkpoint`: train the persistent policy on scored windows read from PostgreSQL.

A thin wrapper over `train_policy`; the metadata tells what was trained on and where it went.
"""

from datetime import UTC, datetime

import dagster as dg

from babylon_assets.metadata import markdown_table
from babylon_assets.progress import progress
from babylon_assets.run_tags import TRAINING_WORKLOAD, TRAINING_WORKLOAD_TAG
from babylon_assets.training import metric_names
from babylon_assets.training.config import TrainingConfig
from babylon_assets.training.train import train_policy
from babylon_assets.training.types import StepRecord, TrainingResult
from resources.database import DatabaseResource
from resources.trainer import TrainerResource
from resources.wandb import WandbResource

OWNERS = ["team:ml-training"]


# Losses, rewards and margins are shown to 6 decimals; the rest of a float is noise.
METRIC_DIGITS = 6
# The UI folds a longer markdown table away; every step's numbers are in the per-step observations.
TABLE_STEPS = 5


def steps_table(result: TrainingResult) -> str:
    """The last TABLE_STEPS steps as a markdown table: trajectories, loss, reward, grad norm, held-out margin."""
    import pandas as pd  # lazily: see babylon_assets.metadata

    steps = result.steps[-TABLE_STEPS:]
    frame = pd.DataFrame(
        {
            "step": [record.step for record in steps],
            "trajectories": [record.trajectories for record in steps],
            "loss": [record.metrics.get(metric_names.LOSS) for record in steps],
            "reward": [record.metrics.get(metric_names.REWARD) for record in steps],
            "grad norm": [record.metrics.get(metric_names.GRAD_NORM) for record in steps],
            "eval margin": [record.eval_margin_after for record in steps],
        }
    )
    return markdown_table(frame, floatfmt=("", "", ".4f", ".4f", ".4f", ".4f"))


def _rounded(value: float | None) -> dg.MetadataValue:
    return dg.MetadataValue.null() if value is None else dg.MetadataValue.float(round(value, METRIC_DIGITS))


def step_metrics(record: StepRecord) -> dict[str, dg.MetadataValue]:
    """One step's numbers as numeric metadata: Dagster plots each key over the asset's events."""
    return {
        "step": dg.MetadataValue.int(record.step),
        "loss": _rounded(record.metrics.get(metric_names.LOSS)),
        "reward": _rounded(record.metrics.get(metric_names.REWARD)),
        "grad_norm": _rounded(record.metrics.get(metric_names.GRAD_NORM)),
        "eval_margin": _rounded(record.eval_margin_after),
    }


def training_metadata(result: TrainingResult) -> dict[str, dg.MetadataValue]:
    best = result.best_checkpoint
    metadata: dict[str, dg.MetadataValue] = {
        "model": dg.MetadataValue.text(result.model_name),
        "backend": dg.MetadataValue.text(result.backend),
        "step": dg.MetadataValue.int(result.last_step),
        "first_step": dg.MetadataValue.int(result.first_step),
        "steps_done": dg.MetadataValue.int(result.steps_done),
        "windows_used": dg.MetadataValue.int(len(result.windows_used)),
        "windows": dg.MetadataValue.json(result.windows_used),
        "trajectories_used": dg.MetadataValue.int(result.trajectories_used),
        "held_out_windows": dg.MetadataValue.int(len(result.held_out_windows)),
        "checkpoint": dg.MetadataValue.path(result.checkpoint_path),
        "eval_margin_before": _rounded(result.eval_margin_before),
        "eval_margin_after": _rounded(result.eval_margin_after),
        "best_step": dg.MetadataValue.null() if best is None else dg.MetadataValue.int(best.step),
        "best_checkpoint": dg.MetadataValue.null() if best is None else dg.MetadataValue.path(best.location),
        # The last step's loss, reward, grad norm and margin (and "step" as above): plotted across materializations.
        **({} if not result.steps else step_metrics(result.steps[-1])),
        "steps": dg.MetadataValue.md(steps_table(result)),
        "wandb_run": dg.MetadataValue.text(result.wandb_run_path),
    }
    if result.wandb_url is not None:
        metadata["wandb_url"] = dg.MetadataValue.url(result.wandb_url)
    return metadata


@dg.asset(
    deps=["scored_groups"],
    group_name="training",
    kinds={"pytorch", "wandb", "postgres"},
    owners=OWNERS,
    # The instance limits runs with this tag to one at a time; the pool also covers runs launched
    # without the tag (e.g. a hand-picked materialization) once the instance limits the pool.
    op_tags={TRAINING_WORKLOAD_TAG: TRAINING_WORKLOAD},
    pool=TRAINING_WORKLOAD,
    description=(
        "The persistent policy after this materialization's training steps: reads scored windows from "
        "PostgreSQL (tables trajectory_scores, trajectory_validations), writes checkpoints under "
        "babylon_home()/checkpoints and registers them with lineage (policy_checkpoints, checkpoint_windows, "
        "checkpoint_trajectories); logs one W&B run."
    ),
)
def trained_checkpoint(
    context: dg.AssetExecutionContext,
    config: TrainingConfig,
    database: DatabaseResource,
    trainer: TrainerResource,
    wandb: WandbResource,
) -> dg.MaterializeResult[None]:
    def show(number: int, record: StepRecord) -> None:
        loss = record.metrics.get(metric_names.LOSS)
        progress(f"training step {number} of {config.iterations}" + ("" if loss is None else f", loss {loss:.4f}"))

    result = train_policy(database.store_url(), trainer.build(), wandb, config, datetime.now(UTC), on_step=show)
    # One observation per step, so the asset's plots show the learning curve within a run too.
    for record in result.steps:
        context.log_event(dg.AssetObservation(asset_key=context.asset_key, metadata=step_metrics(record)))
    context.log.info(
        f"model {result.model_name}: steps {result.first_step}-{result.last_step} on "
        f"{len(result.windows_used)} window(s), {result.trajectories_used} trajectories; "
        f"checkpoint {result.checkpoint_path}"
    )
    return dg.MaterializeResult(metadata=training_metadata(result))
