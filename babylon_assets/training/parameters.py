"""Run parameters of one training materialization without Dagster: the fields of the `trainer` asset's
run config (`config.py`) and of the `babylon train` flags, written once."""

from pydantic import Field

from babylon_assets.trajectories.rules import Lookback, WindowRule


class TrainingParameters(WindowRule, Lookback):
    """What to train on and how much: windows under the window rule inside the lookback; the model itself is
    the `trainer` resource's."""

    iterations: int = Field(default=10, ge=1, description="training steps (checkpoints) this materialization adds")
    windows_per_iteration: int = Field(default=20, ge=1, description="windows per step, never-used windows first")
    learning_rate: float = Field(default=5e-6, gt=0, description="AdamW learning rate (constant)")
    target_trajectories: int = Field(default=1000, ge=1, description="dropout sizes each step toward this many")
    max_dropout: float = Field(default=0.3, ge=0, lt=1, description="upper bound of the dropout rate")
    min_train_windows: int = Field(
        default=1, ge=1, description="windows left for training after the held-out split that a run needs to start"
    )
    held_out_fraction: float = Field(
        default=0.2, ge=0, lt=1, description="share of windows kept for evaluation, assigned once per window"
    )
    seed: int = Field(default=0, description="seed of window order ties and dropout sampling")
