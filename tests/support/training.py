"""Training inputs and outputs as the trainer, evaluation and promotion tests need them: scored trajectories
with the fields training does not read fixed, and checkpoints registered without windows behind them."""

from datetime import UTC, datetime

from babylon_assets.db.connection import Conn
from babylon_assets.training import registry
from babylon_assets.training.types import PolicySpec, ScoredTrajectory, StepOutcome
from babylon_assets.trajectories.messages import ChatMessage

# The window every such trajectory belongs to.
WINDOW = datetime(2026, 11, 24, 13, tzinfo=UTC)


def scored_trajectory(
    trajectory_id: str, score: float, messages: list[ChatMessage], *, group_index: int = 0
) -> ScoredTrajectory:
    return ScoredTrajectory(
        trajectory_id=trajectory_id,
        window_id=WINDOW,
        snapshot_id=1,
        source_id=f"row-{trajectory_id}",
        group_index=group_index,
        score=score,
        judge="test",
        rubric_version="v1",
        messages=messages,
    )


def register_without_lineage(
    conn: Conn,
    policy: PolicySpec,
    outcome: StepOutcome,
    lease: registry.ModelLease,
    *,
    eval_margin_before: float | None = None,
    eval_margin_after: float | None = None,
    eval_windows: int = 0,
) -> int:
    """A checkpoint registered with no windows, config or W&B run: evaluation needs only the checkpoint."""
    return registry.register_checkpoint(
        conn,
        policy=policy,
        outcome=outcome,
        groups=[],
        config={},
        eval_margin_before=eval_margin_before,
        eval_margin_after=eval_margin_after,
        eval_windows=eval_windows,
        wandb_run_id=None,
        wandb_artifact=None,
        lease=lease,
    )
