"""`policy_evaluation`: the latest checkpoint plays unseen simulated markets against the base model, the
current best and the scripted strategies; its blocking check promotes it only on evidence."""

from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

from babylon_assets.db.connection import connect
from babylon_assets.evaluation.settings import EvaluationSettings
from babylon_assets.metadata import markdown_table
from babylon_assets.paths import babylon_home
from babylon_assets.run_tags import TRAINING_WORKLOAD, TRAINING_WORKLOAD_TAG
from babylon_assets.training.assets import OWNERS
from babylon_assets.training.publish import publish_target
from resources.database import DatabaseResource
from resources.trainer import TrainerResource
from resources.wandb import WandbResource

if TYPE_CHECKING:
    # Evaluation and promotion load torch, peft and scipy: imported in the steps that run them, so loading
    # the definitions stays light.
    from babylon_assets.evaluation.evaluate import EvaluationResult


class EvaluationConfig(dg.Config, EvaluationSettings):
    """policy_evaluation's run config: the settings of `babylon evaluate`, with the same defaults."""


class PromotionConfig(dg.Config):
    alpha: float = Field(default=0.05, gt=0, lt=1, description="one-sided paired test level a candidate must pass")


def evaluation_table(result: "EvaluationResult") -> str:
    import pandas as pd

    frame = pd.DataFrame(
        {
            "policy": [score.policy for score in result.policies],
            "mean P&L": [score.mean_pnl for score in result.policies],
            "vs base": [None if s.vs_base is None else s.vs_base.mean_difference for s in result.policies],
            "CI low": [None if s.vs_base is None else s.vs_base.ci_low for s in result.policies],
            "CI high": [None if s.vs_base is None else s.vs_base.ci_high for s in result.policies],
            "win rate": [None if s.vs_base is None else s.vs_base.win_rate for s in result.policies],
            "invalid": [score.invalid_rate for score in result.policies],
            "tokens/s": [score.tokens_per_second for score in result.policies],
        }
    )
    return markdown_table(frame, floatfmt=("", ".2f", "+.2f", "+.2f", "+.2f", ".2f", ".2f", ".1f"))


@dg.asset(
    deps=["trained_checkpoint"],
    group_name="training",
    kinds={"pytorch", "wandb", "postgres"},
    owners=OWNERS,
    op_tags={TRAINING_WORKLOAD_TAG: TRAINING_WORKLOAD},
    pool=TRAINING_WORKLOAD,
    description=(
        "Closed-loop evaluation of the latest checkpoint: it, the base model, the best checkpoint and the "
        "scripted strategies play the same seeded unseen simulated markets (tables policy_evaluations, "
        "policy_evaluation_results); torch backend only, other backends are promoted on the held-out margin."
    ),
)
def policy_evaluation(
    context: dg.AssetExecutionContext,
    config: EvaluationConfig,
    database: DatabaseResource,
    trainer: TrainerResource,
    wandb: WandbResource,
) -> dg.MaterializeResult[None]:
    if trainer.backend != "torch":
        context.log.info(f"backend {trainer.backend}: the policy cannot be played here; promotion uses the margin")
        return dg.MaterializeResult(metadata={"evaluated": dg.MetadataValue.bool(False)})
    from babylon_assets.evaluation.evaluate import evaluate_checkpoint
    from babylon_assets.evaluation.tracking import log_evaluation

    settings = EvaluationSettings.model_validate(config.model_dump())
    result = evaluate_checkpoint(
        database.store_url(), trainer.model_name, None, settings, models_root=babylon_home() / "models"
    )
    run_path = log_evaluation(wandb, result)
    checkpoint = result.score("checkpoint")
    base = result.score("base")
    metadata: dict[str, dg.MetadataValue] = {
        "evaluated": dg.MetadataValue.bool(True),
        "evaluation_id": dg.MetadataValue.int(result.evaluation_id),
        "step": dg.MetadataValue.int(result.step),
        "markets": dg.MetadataValue.int(settings.markets),
        "decoding": dg.MetadataValue.text(settings.decoding),
        "checkpoint_mean_pnl": dg.MetadataValue.float(checkpoint.mean_pnl),
        "base_mean_pnl": dg.MetadataValue.float(base.mean_pnl),
        "checkpoint_invalid_rate": dg.MetadataValue.float(checkpoint.invalid_rate or 0.0),
        "policies": dg.MetadataValue.md(evaluation_table(result)),
        "wandb_run": dg.MetadataValue.text(run_path),
    }
    return dg.MaterializeResult(metadata=metadata)


@dg.asset_check(
    asset=policy_evaluation,
    blocking=True,
    description="Promotes the latest checkpoint to `best` only when it beats the current best (or the base "
    "model) on the closed-loop evaluation, or on the held-out margin for backends that cannot be played here.",
)
def promotion_check(
    config: PromotionConfig, database: DatabaseResource, trainer: TrainerResource
) -> dg.AssetCheckResult:
    from babylon_assets.evaluation.promotion import decide_promotion, promote

    publish_to = publish_target(database.game_url())
    with connect(database.store_url(), autocommit=True) as conn:
        decision = decide_promotion(conn, trainer.model_name, alpha=config.alpha)
        if decision.promote:
            promote(conn, trainer.model_name, decision, publish_to)
    return dg.AssetCheckResult(
        passed=decision.promote,
        severity=dg.AssetCheckSeverity.ERROR,
        description=decision.reason,
        metadata={
            "candidate_step": dg.MetadataValue.int(decision.candidate_step),
            "basis": dg.MetadataValue.text(decision.basis),
            "promoted": dg.MetadataValue.bool(decision.promote),
            "evidence": dg.MetadataValue.json(decision.evidence),
        },
    )
