"""`trained_checkpoint`: train the persistent policy on scored windows read from PostgreSQL.

A thin wrapper over `train_policy`; the metadata tells what was trained on and where it went.
"""

import dagster as dg

from babylon_assets.instance import TRAINING_WORKLOAD, TRAINING_WORKLOAD_TAG
from babylon_assets.metadata import markdown_table
from babylon_assets.training import metric_names
from babylon_assets.training.config import TrainingConfig
from babylon_assets.training.train import train_policy
from babylon_assets.training.types import TrainingResult
from resources.database import DatabaseResource
from resources.trainer import TrainerResource
from resources.wandb import WandbResource

OWNERS = ["team:ml-training"]


def steps_table(result: TrainingResult) -> str:
    """One markdown row per step: what it trained on, its loss and reward, and its held-out margin."""
    import pandas as pd  # lazily: see babylon_assets.metadata

    frame = pd.DataFrame(
        {
            "step": [record.step for record in result.steps],
            "windows": [len(record.windows) for record in result.steps],
            "trajectories": [record.trajectories for record in result.steps],
            "dropout": [record.dropout_rate for record in result.steps],
            "loss": [record.metrics.get(metric_names.LOSS) for record in result.steps],
            "reward": [record.metrics.get(metric_names.REWARD) for record in result.steps],
            "grad norm": [record.metrics.get(metric_names.GRAD_NORM) for record in result.steps],
            "eval margin": [record.eval_margin_after for record in result.steps],
        }
    )
    return markdown_table(frame, floatfmt=("", "", "", ".2f", ".6f", ".6f", ".6f", ".6f"))


def _margin(value: float | None) -> dg.MetadataValue:
    return dg.MetadataValue.null() if value is None else dg.MetadataValue.float(value)


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
        "eval_margin_before": _margin(result.eval_margin_before),
        "eval_margin_after": _margin(result.eval_margin_after),
        "best_step": dg.MetadataValue.null() if best is None else dg.MetadataValue.int(best.step),
        "best_checkpoint": dg.MetadataValue.null() if best is None else dg.MetadataValue.path(best.location),
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
    result = train_policy(database.url(), trainer.build(), wandb, config)
    context.log.info(
        f"model {result.model_name}: steps {result.first_step}-{result.last_step} on "
        f"{len(result.windows_used)} window(s), {result.trajectories_used} trajectories; "
        f"checkpoint {result.checkpoint_path}"
    )
    return dg.MaterializeResult(metadata=training_metadata(result))
