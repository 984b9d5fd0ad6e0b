"""An evaluation as a W&B run of the model's group: one summary metric set per policy."""

from babylon_assets.evaluation.evaluate import EvaluationResult
from babylon_assets.training.tracking import ExperimentTracker


def log_evaluation(wandb: ExperimentTracker, result: EvaluationResult) -> str:
    """Log the evaluation at the checkpoint's step; returns the run's path."""
    run = wandb.start_run(
        name=f"{result.model_name}-evaluation-step-{result.step}",
        group=result.model_name,
        config={"evaluation_id": result.evaluation_id, **result.settings.model_dump()},
    )
    metrics: dict[str, float] = {}
    for score in result.policies:
        prefix = f"evaluation/{score.policy.replace(':', '_')}"
        metrics[f"{prefix}/mean_pnl"] = score.mean_pnl
        if score.vs_base is not None:
            metrics[f"{prefix}/pnl_vs_base"] = score.vs_base.mean_difference
            metrics[f"{prefix}/win_rate_vs_base"] = score.vs_base.win_rate
        if score.invalid_rate is not None:
            metrics[f"{prefix}/invalid_rate"] = score.invalid_rate
        if score.tokens_per_second is not None:
            metrics[f"{prefix}/tokens_per_second"] = score.tokens_per_second
    try:
        run.log(metrics, step=result.step)
    except BaseException:
        run.finish(failed=True)
        raise
    run.finish(failed=False)
    return run.path
