"""The outcome judge: scores from the window's ground truth, for running without any LLM.

Chosen by configuration (the local profile), never as a stand-in for a failing RULER judge. The
score is absolute, so it does not depend on how a window was split:
    0.5 * P&L term + 0.3 * prediction accuracy + 0.2 * (1 - risk term), each in [0, 1].
"""

import math

from pydantic import BaseModel, ConfigDict, Field

from babylon_assets.judging.cache import AnswerCache
from babylon_assets.judging.judge import CallStats, GroupScoring, JudgeFailedError, JudgeGroup, PermutationScore
from babylon_assets.trajectories.facts import FACTS_VERSION, TrajectoryFacts
from babylon_assets.trajectories.models import MarketOutcomes, window_key
from babylon_assets.trajectories.reader import AcceptedRow

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


def assess(facts: TrajectoryFacts, outcomes: MarketOutcomes) -> OutcomeAssessment:
    """Realised window P&L, directional calls right vs the outcomes, and the worst P&L drawdown."""
    resolved = {market.market_id: market.outcome for market in outcomes.predictions if market.outcome != "UNRESOLVED"}
    moves = {stock.ticker: stock.change_percent for stock in outcomes.stocks if stock.change_percent}
    correct = judged = 0
    for call in facts.calls:
        if call.market_id is not None and call.market_id in resolved:
            truth = 1 if resolved[call.market_id] == "YES" else -1
        elif call.ticker is not None and call.ticker in moves:
            truth = 1 if moves[call.ticker] > 0 else -1
        else:
            continue
        judged += 1
        correct += call.direction == truth
    return OutcomeAssessment(
        window_pnl=facts.window_pnl, calls_correct=correct, calls_judged=judged, max_drawdown=facts.max_drawdown
    )


def _facts(group: JudgeGroup, row: AcceptedRow) -> TrajectoryFacts:
    if row.facts is None or row.facts.version != FACTS_VERSION:
        raise JudgeFailedError(
            f"window {window_key(group.window_id)}: row {row.source_id} was validated "
            + ("before facts were recorded" if row.facts is None else f"with facts version {row.facts.version}")
            + f" (the outcome judge needs version {FACTS_VERSION}); validate the window again: "
            "`babylon dagster asset materialize -m babylon_assets.definitions "
            f"--select validated_windows,scored_groups --partition {window_key(group.window_id)}`"
        )
    return row.facts


class OutcomeJudge:
    """Scores every trajectory from ground truth and the facts validation recorded for its row (it reads no
    steps); one 'permutation' per group, no calls."""

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

    @property
    def reads_steps(self) -> bool:
        return False

    async def score_group(self, group: JudgeGroup, cache: AnswerCache) -> GroupScoring:
        assessments = [(row, assess(_facts(group, row), group.outcomes)) for row in group.rows]
        return GroupScoring(
            group_index=group.group_index,
            scores={row.trajectory_id: assessment.score for row, assessment in assessments},
            permutations=[
                PermutationScore(
                    permutation=0,
                    trajectory_id=row.trajectory_id,
                    position=position,
                    score=assessment.score,
                    explanation=assessment.explanation(),
                    cache_key=None,
                )
                for position, (row, assessment) in enumerate(assessments, start=1)
            ],
            stats=CallStats(),
        )
