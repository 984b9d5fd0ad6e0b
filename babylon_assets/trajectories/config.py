"""Which windows count: the rule a validated window meets, and which windows discovery takes up."""

import dagster as dg
from pydantic import BaseModel, ConfigDict, Field


class WindowConfig(dg.Config):
    """validated_windows' run config: the trainable-window rule, with the original `--min-agents` defaults."""

    min_agents: int = Field(default=5, ge=1, description="distinct agents with valid trajectories a window needs")
    min_actions: int = Field(default=5, ge=1, description="steps a trajectory needs to be kept")


class WindowDiscovery(BaseModel):
    """Which windows the fresh-windows sensor and `babylon train` take up: eligible under `rule`, started
    inside the lookback, and over for at least `settle_minutes`.

    Not run config: no asset reads the lookback or the settle delay, so the launchpad does not offer them.
    """

    model_config = ConfigDict(frozen=True)

    rule: WindowConfig = Field(default_factory=WindowConfig)
    lookback_hours: int = Field(default=168, ge=1, description="how far back windows are discovered")
    settle_minutes: int = Field(
        default=10,
        ge=0,
        description="how long a window must be over and without new rows before its chain runs (late rows)",
    )
    overlap_minutes: int = Field(
        default=10,
        ge=0,
        description="how far before its watermark the sensor reads again, for rows whose transaction commits late",
    )
