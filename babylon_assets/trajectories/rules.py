"""Which windows count, as plain models without Dagster: the rule a trainable window meets, how far back
windows are taken, and which windows discovery takes up.

The run configs (`trajectories/config.py`, `training/config.py`) and the `babylon` flags are built from
these fields, so each default and description is written once, here.
"""

from pydantic import BaseModel, ConfigDict, Field


class WindowRule(BaseModel):
    """The trainable-window rule."""

    min_agents: int = Field(default=5, ge=1, description="valid distinct agents a window needs")
    min_actions: int = Field(default=5, ge=1, description="steps a trajectory needs")


class Lookback(BaseModel):
    lookback_hours: int = Field(default=168, ge=1, description="window age limit in hours")


class WindowDiscovery(Lookback):
    """Which windows the fresh-windows sensor and `babylon train` take up: eligible under `rule`, started
    inside the lookback, and over for at least `settle_minutes`.

    Not run config: no asset reads the lookback or the settle delay, so the launchpad does not offer them.
    """

    model_config = ConfigDict(frozen=True)

    rule: WindowRule = Field(default_factory=WindowRule)
    settle_minutes: int = Field(
        default=10,
        ge=0,
        description="use a window only this long after it ended, without new rows (late rows)",
    )
    overlap_minutes: int = Field(
        default=10,
        ge=0,
        description="how far before its watermark the sensor reads again, for rows whose transaction commits late",
    )
