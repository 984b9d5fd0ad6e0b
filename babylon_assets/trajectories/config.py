"""validated_windows' run config: the trainable-window rule of `rules.py` as Dagster config."""

import dagster as dg

from babylon_assets.trajectories.rules import WindowRule


class WindowConfig(dg.Config, WindowRule):
    """validated_windows' run config: min_agents and min_actions, with `babylon`'s defaults."""
