"""The outcome judge: scores from the window's ground truth, for running without any LLM.

Chosen by configuration (the local profile), never as a stand-in for a failing RULER judge. The
score is absolute, so it does not depend on how a window was split:
    0.5 * P&L term + 0.3 * prediction accuracy + 0.2 * (1 - risk term), each in [0, 1].
"""

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from babylon_assets.judging.cache import AnswerCache
from babylon_assets.judging.judge import CallStats, GroupScoring, JudgeGroup, PermutationScore
from babylon_assets.trajectories.models import Action, MarketOutcomes, Trajectory

OUTCOME_RUBRIC_VERSION = "outcome-2026-11-24.1"

# Players start with 1,000 points: P&L and drawdown are measured against that stake.
STARTING_POINTS = 1000.0
# A window P&L of +5% of the stake scores ~0.88 on the P&L term, -5% ~0.12.
PNL_SCALE = 0.05 * STARTING_POINTS
# A drawdown of 10% of the stake inside the window is the most risk the term distinguishes.
DRAWDOWN_LIMIT = 0.10 * STARTING_POINTS
PNL_WEIGHT, ACCURACY_WEIGHT, RISK_WEIGHT = 0.5, 0.3, 0.2


class OutcomeAssessment(BaseModel):
    """The ground-truth facts behind one trajectory's outcome score."""

    model_config = ConfigDict(frozen=True)

    window_pnl: float
    calls_correct: int
    calls_judged: int
    max_drawdown: float = Field(ge=0)

    @property
    def score(self) -> float:
        pnl_term = 0.5 + 0.5 * math.tanh(self.window_pnl / PNL_SCALE)
        accuracy = self.calls_correct / self.calls_judged if self.calls_judged else 0.5
        risk_term = min(1.0, self.max_drawdown / DRAWDOWN_LIMIT)
        return PNL_WEIGHT * pnl_term + ACCURACY_WEIGHT * accuracy + RISK_WEIGHT * (1.0 - risk_term)

    def explanation(self) -> str:
        return (
            f"window P&L {self.window_pnl:+.2f}; {self.calls_correct}/{self.calls_judged} directional calls right; "
            f"max drawdown {self.max_drawdown:.2f}"
        )


def _text(action: Action, *names: str) -> str | None:
    for name in names:
        value = action.parameters.get(name)
        if isinstance(value, str) and value:
            return value
    return None


_SIDES: dict[str, Literal[1, -1]] = {"YES": 1, "LONG": 1, "NO": -1, "SHORT": -1}


def _direction(action: Action) -> Literal[1, -1] | None:
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


def assess(trajectory: Trajectory, outcomes: MarketOutcomes) -> OutcomeAssessment:
    """Realised window P&L, directional calls right vs the outcomes, and the worst P&L drawdown."""
    resolved = {market.market_id: market.outcome for market in outcomes.predictions if market.outcome != "UNRESOLVED"}
    moves = {stock.ticker: stock.change_percent for stock in outcomes.stocks if stock.change_percent}
    correct = judged = 0
    for step in trajectory.steps:
        action = step.action
        direction = _direction(action) if action.success else None
        if direction is None:
            continue
        market = _text(action, "marketId", "market_id")
        ticker = _text(action, "ticker", "symbol")
        if market is not None and market in resolved:
            truth = 1 if resolved[market] == "YES" else -1
        elif ticker is not None and ticker in moves:
            truth = 1 if moves[ticker] > 0 else -1
        else:
            continue
        judged += 1
        correct += direction == truth
    peak = -math.inf
    drawdown = 0.0
    for step in trajectory.steps:
        pnl = step.environment_state.agent_pnl
        peak = max(peak, pnl)
        drawdown = max(drawdown, peak - pnl)
    return OutcomeAssessment(
        window_pnl=trajectory.window_pnl, calls_correct=correct, calls_judged=judged, max_drawdown=drawdown
    )


class OutcomeJudge:
    """Scores every trajectory from ground truth; one 'permutation' per group, no calls."""

    def __init__(self, group_size: int = 8) -> None:
        if group_size < 1:
            raise ValueError(f"group_size must be at least 1, got {group_size}")
        self._group_size = group_size

    @property
    def name(self) -> str:
        return "outcome"

    @property
    def rubric_version(self) -> str:
        return OUTCOME_RUBRIC_VERSION

    @property
    def group_size(self) -> int:
        return self._group_size

    @property
    def concurrency(self) -> int:
        return 1

    @property
    def settings_key(self) -> None:
        return None

    async def score_group(self, group: JudgeGroup, cache: AnswerCache) -> GroupScoring:
        assessments = [(trajectory, assess(trajectory, group.outcomes)) for trajectory in group.trajectories]
        return GroupScoring(
            group_index=group.group_index,
            scores={trajectory.trajectory_id: assessment.score for trajectory, assessment in assessments},
            permutations=[
                PermutationScore(
                    permutation=0,
                    trajectory_id=trajectory.trajectory_id,
                    position=position,
                    score=assessment.score,
                    explanation=assessment.explanation(),
                    cache_key=None,
                )
                for position, (trajectory, assessment) in enumerate(assessments, start=1)
            ],
            stats=CallStats(),
        )
