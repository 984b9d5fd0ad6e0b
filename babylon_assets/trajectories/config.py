"""Run parameters of the window assets: which windows count and what a trajectory needs."""

import dagster as dg
from pydantic import Field


class WindowConfig(dg.Config):
    """The trainable-window rule; the same defaults as the original `--min-agents` and friends."""

    min_agents: int = Field(default=5, ge=1, description="distinct agents with valid trajectories a window needs")
    min_actions: int = Field(default=5, ge=1, description="steps a trajectory needs to be kept")
    lookback_hours: int = Field(default=168, ge=1, description="how far back windows are discovered")
    settle_minutes: int = Field(
        default=10, ge=0, description="how long after a window ends before it counts as complete (late rows)"
    )
