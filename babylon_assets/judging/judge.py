"""The judge interface: what scoring asks of a judge, and what a judge returns for one group.

Two implementations: `RulerJudge` (an LLM via ART's RULER) and `OutcomeJudge` (the window's ground
truth, no LLM). Configuration picks one; neither ever stands in for the other.
"""

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Protocol

from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, NonNegativeInt

from babylon_assets.errors import BabylonError
from babylon_assets.judging.cache import AnswerCache
from babylon_assets.trajectories.models import MarketOutcomes, Trajectory
from babylon_assets.trajectories.reader import AcceptedRow

UnitScore = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


class JudgeFailedError(BabylonError):
    """The judge could not score a group after its retries; the message names the window."""


class JudgeGroup(BaseModel):
    """One group of a window, as handed to a judge."""

    model_config = ConfigDict(frozen=True)

    window_id: datetime
    group_index: NonNegativeInt
    # The group's rows as validation accepted them (with their facts), in the split's order.
    rows: Annotated[list[AcceptedRow], Field(min_length=1)]
    # The same rows parsed, for a judge that reads steps (`Judge.reads_steps`); empty for one that does not.
    trajectories: list[Trajectory]
    outcomes: MarketOutcomes


class PermutationScore(BaseModel):
    """One trajectory's raw score under one order the group was shown in."""

    model_config = ConfigDict(frozen=True)

    permutation: NonNegativeInt
    trajectory_id: str
    # 1-based position the trajectory had in the prompt (RULER's trajectory id for that order).
    position: Annotated[int, Field(ge=1)]
    score: UnitScore
    explanation: str
    cache_key: str | None


class CallStats(BaseModel):
    """Judge traffic: requests sent (every attempt), answers served from the cache, usage, cost."""

    model_config = ConfigDict(frozen=True)

    calls_made: NonNegativeInt = 0
    calls_cached: NonNegativeInt = 0
    prompt_tokens: NonNegativeInt = 0
    completion_tokens: NonNegativeInt = 0
    cost_usd: NonNegativeFloat = 0.0
    # Answers from a model LiteLLM has no price for (e.g. a self-hosted vLLM): their cost is unknown.
    unpriced_calls: NonNegativeInt = 0

    def __add__(self, other: "CallStats") -> "CallStats":
        return CallStats(
            calls_made=self.calls_made + other.calls_made,
            calls_cached=self.calls_cached + other.calls_cached,
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            cost_usd=self.cost_usd + other.cost_usd,
            unpriced_calls=self.unpriced_calls + other.unpriced_calls,
        )


def total_stats(items: Sequence[CallStats]) -> CallStats:
    total = CallStats()
    for item in items:
        total = total + item
    return total


class GroupScoring(BaseModel):
    """A judge's verdict on one group: final score per trajectory id, and how it was reached."""

    model_config = ConfigDict(frozen=True)

    group_index: NonNegativeInt
    scores: dict[str, UnitScore]
    permutations: list[PermutationScore]
    stats: CallStats


class Judge(Protocol):
    """Scores one group at a time; may be called for many groups concurrently."""

    @property
    def name(self) -> str:
        """What is stored with every score, e.g. `ruler:openai/o3` or `outcome`."""
        ...

    @property
    def rubric_version(self) -> str: ...

    @property
    def group_size(self) -> int: ...

    @property
    def concurrency(self) -> int:
        """Requests it may have in flight at once (1 for a judge that makes none)."""
        ...

    @property
    def settings_key(self) -> str | None:
        """What a group's scores depend on besides the rubric version, the window's ground truth and the
        group's rows (model, orders, view budget), as text: a group judged before under the same key is
        taken from the group cache without being shown again. None for a judge that makes no calls: its
        scores are computed from the rows every time."""
        ...

    @property
    def reads_steps(self) -> bool:
        """Whether it reads the group's trajectories (their steps); one that scores from the rows' facts
        (recorded at validation) and the ground truth is spared loading and parsing the window's rows."""
        ...

    async def score_group(self, group: JudgeGroup, cache: AnswerCache) -> GroupScoring:
        """Every trajectory of `group` scored in [0, 1]; raises JudgeFailedError, never drops one."""
        ...
