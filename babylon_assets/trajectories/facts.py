"""What an accepted trajectory did, in a few numbers: extracted once at validation and stored with its
verdict (trajectory_validations.facts, migration 0012), so that judging from them (the outcome judge)
reads a small record per row instead of loading and parsing the row's steps again.

Facts are the trajectory's alone, never a judgement: whether a directional call was right depends on
the window's ground truth, which the judge brings. Changing what is extracted here changes
FACTS_VERSION; rows validated under another version are refused until their window is validated again.
"""

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from babylon_assets.trajectories.models import Action, Trajectory

FACTS_VERSION = 1

Direction = Literal[1, -1]
_SIDES: dict[str, Direction] = {"YES": 1, "LONG": 1, "NO": -1, "SHORT": -1}


class DirectionalCall(BaseModel):
    """A successful action that bets on a direction: +1 on YES or a price rise, -1 on the opposite, in the
    prediction market or on the ticker it names (either may be missing)."""

    model_config = ConfigDict(frozen=True)

    direction: Direction
    market_id: str | None
    ticker: str | None


class TrajectoryFacts(BaseModel):
    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    version: int
    # P&L made inside the window (`Trajectory.window_pnl`) and the worst fall from a P&L peak in it.
    window_pnl: float
    max_drawdown: float = Field(ge=0)
    calls: list[DirectionalCall]


def _text(action: Action, *names: str) -> str | None:
    for name in names:
        value = action.parameters.get(name)
        if isinstance(value, str) and value:
            return value
    return None


def _direction(action: Action) -> Direction | None:
    """+1 for a bet on YES / a price rise, -1 for the opposite, None for no directional bet."""
    kind = action.action_type.upper()
    selling = "SELL" in kind
    side = _SIDES.get((_text(action, "side", "outcome", "direction") or "").upper())
    if side is not None and not kind.startswith("CLOSE"):
        return -side if selling else side  # selling YES shares is a bet on NO
    if "BUY" in kind:
        return 1
    if selling:
        return -1
    return None


def trajectory_facts(trajectory: Trajectory) -> TrajectoryFacts:
    calls = [
        DirectionalCall(
            direction=direction,
            market_id=_text(step.action, "marketId", "market_id"),
            ticker=_text(step.action, "ticker", "symbol"),
        )
        for step in trajectory.steps
        if step.action.success and (direction := _direction(step.action)) is not None
    ]
    peak = -math.inf
    drawdown = 0.0
    for step in trajectory.steps:
        pnl = step.environment_state.agent_pnl
        peak = max(peak, pnl)
        drawdown = max(drawdown, peak - pnl)
    return TrajectoryFacts(version=FACTS_VERSION, window_pnl=trajectory.window_pnl, max_drawdown=drawdown, calls=calls)
