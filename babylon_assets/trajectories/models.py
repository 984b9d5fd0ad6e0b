"""Typed models of what the game records: camelCase JSON in, snake_case attributes out.

A game row is parsed from its JSON (the row's columns under the game's own names, steps as the
recorder's JSON text) in strict mode: a boolean or a string where a number belongs is an error, never
coerced. Every number must be finite and every window id a UTC hour start; anything else is a
validation error whose message, naming the field, becomes the row's stored rejection reason.
"""

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    AliasPath,
    BaseModel,
    ConfigDict,
    Field,
    Json,
    JsonValue,
    NonNegativeInt,
    SkipValidation,
)
from pydantic.alias_generators import to_camel

WINDOW_KEY_FORMAT = "%Y-%m-%dT%H:00"

FinalStatus = Literal["completed", "completed_with_errors", "terminated", "error", "timeout"]
CallPurpose = Literal["action", "reasoning", "evaluation", "response", "other"]
Sentiment = Literal["BULLISH", "BEARISH", "NEUTRAL"]
PredictionResult = Literal["YES", "NO", "UNRESOLVED"]


def _require_hour_start(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("window id must be timezone-aware (UTC hour start)")
    as_utc = value.astimezone(UTC)
    if (as_utc.minute, as_utc.second, as_utc.microsecond) != (0, 0, 0):
        raise ValueError(f"window id {as_utc.isoformat()} is not on the hour (windows are UTC hour starts)")
    return as_utc


WindowId = Annotated[datetime, AfterValidator(_require_hour_start)]


def _recorded_utc(value: datetime) -> datetime:
    if value.tzinfo is not None:
        raise ValueError("expected the game's TIMESTAMP(3) without time zone (UTC)")
    return value.replace(tzinfo=UTC)


# The game writes TIMESTAMP(3) without time zone, holding UTC.
RecordedTime = Annotated[datetime, AfterValidator(_recorded_utc)]
# Epoch milliseconds below this are from before 1973: a timestamp in seconds, not milliseconds.
_EARLIEST_MS = 100_000_000_000
# The recorder writes totalReward as the sum of the step rewards; rounding may differ in the last digits.
_REWARD_TOLERANCE = 1e-4


def hour_floor(moment: datetime) -> datetime:
    """The start of the UTC hour `moment` falls in: the window it belongs to."""
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def lookback_start(now: datetime, lookback_hours: int) -> datetime:
    """The oldest window of a lookback: whole hours back from the current hour's start, so that
    discovery, the sensors and training agree on which windows a lookback holds."""
    return hour_floor(now) - timedelta(hours=lookback_hours)


def window_key(window_id: datetime) -> str:
    """The partition key and display form of a window: `YYYY-MM-DDTHH:00` in UTC."""
    return _require_hour_start(window_id).strftime(WINDOW_KEY_FORMAT)


def parse_window_key(key: str) -> datetime:
    """Inverse of `window_key`; a malformed key is a ValueError that quotes it."""
    try:
        parsed = datetime.strptime(key, WINDOW_KEY_FORMAT).replace(tzinfo=UTC)
    except ValueError as error:
        raise ValueError(f"window key {key!r} is not of the form YYYY-MM-DDTHH:00 (UTC)") from error
    return parsed


class RecordedModel(BaseModel):
    """Shared config for the recorder's camelCase JSON."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        allow_inf_nan=False,
        frozen=True,
        extra="ignore",
        strict=True,
    )


class EnvironmentState(RecordedModel):
    agent_balance: float
    agent_pnl: float = Field(
        validation_alias=AliasChoices("agentPnL", "agentPnl", "agent_pnl"), serialization_alias="agentPnL"
    )
    open_positions: NonNegativeInt
    active_markets: NonNegativeInt
    # Plugin-logger extras.
    agent_points: float | None = None
    portfolio_value: float | None = None
    unread_messages: NonNegativeInt | None = None
    recent_engagement: float | None = None
    custom: dict[str, JsonValue] | None = None


class ProviderAccess(RecordedModel):
    provider_name: str
    data: dict[str, JsonValue]
    purpose: str


class LLMCall(RecordedModel):
    model: str
    model_version: str | None = None
    system_prompt: str
    user_prompt: str
    response: str
    reasoning: str | None = None
    temperature: float
    max_tokens: int
    latency_ms: float | None = None
    purpose: CallPurpose
    action_type: str | None = None
    # Plugin-logger extras.
    call_id: str | None = None
    timestamp: int | None = None
    messages: list[dict[str, JsonValue]] | None = None
    top_p: float | None = None
    prompt_tokens: NonNegativeInt | None = None
    completion_tokens: NonNegativeInt | None = None


class Action(RecordedModel):
    # The recorder says actionType; the plugin logger's attempt says actionName.
    action_type: str = Field(validation_alias=AliasChoices("actionType", "actionName", "action_type"))
    parameters: dict[str, JsonValue]
    success: bool
    result: JsonValue = None
    error: str | None = None
    reasoning: str | None = None
    correctness: JsonValue = None
    # Plugin-logger attempt extras.
    attempt_id: str | None = None
    llm_call_id: str | None = None
    immediate_reward: float | None = None


class Step(RecordedModel):
    step_number: NonNegativeInt
    timestamp: int
    environment_state: EnvironmentState
    provider_accesses: list[ProviderAccess]
    llm_calls: list[LLMCall]
    action: Action
    # The plugin logger records the reward on the action attempt as immediateReward. An alias path
    # (not a Python validator) keeps parsing inside pydantic's Rust JSON parser.
    reward: float = Field(validation_alias=AliasChoices("reward", AliasPath("action", "immediateReward")))
    # Plugin-logger extras.
    step_id: str | None = None
    observation: JsonValue = None
    reasoning: str | None = None
    done: bool | None = None
    metadata: dict[str, JsonValue] | None = None

    @property
    def deciding_call(self) -> LLMCall | None:
        """The LLM call that chose this step's action: purpose `action`, else the last call."""
        for call in reversed(self.llm_calls):
            if call.purpose == "action":
                return call
        return self.llm_calls[-1] if self.llm_calls else None


def agent_key(agent_id: str) -> str:
    """How agents are told apart: ids that differ only by surrounding whitespace or letter case are one agent."""
    return agent_id.strip().casefold()


def _counted(steps: list[Step], word: str) -> int:
    return sum(1 for step in steps if word in step.action.action_type.upper())


class RecordedTrajectory(RecordedModel):
    """One row of the game's "trajectories", parsed from the row's JSON under the game's column names."""

    source_id: Annotated[str, Field(alias="id", min_length=1)]
    trajectory_id: Annotated[str, Field(min_length=1, max_length=200)]
    agent_id: Annotated[str, Field(min_length=1, max_length=200)]
    start_time: RecordedTime
    end_time: RecordedTime
    duration_ms: NonNegativeInt
    # The recorder's window key; NULL from the plugin logger (the row then belongs to its startTime's hour).
    recorded_window: str | None = Field(alias="windowId")
    window_hours: Literal[1]
    episode_id: str | None
    scenario_id: str | None
    # The recorder's steps as JSON text; parsed into `steps` by `reader.parse_recorded`, on its own: the same
    # parse through pydantic's Json[] wrapper measured three times slower.
    steps_json: str = Field(alias="stepsJson", repr=False)
    steps: list[Step] = Field(default_factory=list, validation_alias="babylonParsedSteps", exclude=True)
    reward_components: Annotated[Json[dict[str, JsonValue]], Field(alias="rewardComponentsJson")]
    metrics: Annotated[Json[dict[str, JsonValue]], Field(alias="metricsJson")]
    # May hold `gameKnowledge` (ground truth): never part of what the policy is trained on.
    metadata: Annotated[Json[dict[str, JsonValue]], Field(alias="metadataJson")]
    total_reward: float
    episode_length: NonNegativeInt
    final_status: FinalStatus
    final_balance: float | None
    final_pnl: float | None = Field(alias="finalPnL")
    trades_executed: NonNegativeInt | None
    posts_created: NonNegativeInt | None
    is_training_data: bool
    is_evaluation: bool
    created_at: RecordedTime

    def inconsistency(self) -> str | None:
        """What contradicts the recorder's own invariants (its steps parsed), or None."""
        if not self.agent_id.strip():
            return f"agentId {self.agent_id!r} is empty or whitespace"
        if self.end_time < self.start_time:
            return (
                f"endTime {self.end_time:%Y-%m-%dT%H:%M:%S.%f} is before "
                f"startTime {self.start_time:%Y-%m-%dT%H:%M:%S.%f}"
            )
        if self.episode_length != len(self.steps):
            return f"episodeLength is {self.episode_length} but stepsJson has {len(self.steps)} steps"
        numbers = [step.step_number for step in self.steps]
        if numbers != list(range(len(numbers))):
            return "stepsJson: step numbers must run 0, 1, 2, ... in order"
        total = sum(step.reward for step in self.steps)
        if abs(total - self.total_reward) > _REWARD_TOLERANCE * max(1.0, abs(total)):
            return f"totalReward is {self.total_reward:g} but the step rewards sum to {total:g}"
        for column, word in (("tradesExecuted", "BUY"), ("postsCreated", "POST")):
            recorded = self.trades_executed if column == "tradesExecuted" else self.posts_created
            counted = _counted(self.steps, word) + (_counted(self.steps, "SELL") if word == "BUY" else 0)
            if recorded is not None and recorded != counted:
                return f"{column} is {recorded} but {counted} step(s) have such an actionType"
        start_ms = int(self.start_time.timestamp() * 1000)
        end_ms = int(self.end_time.timestamp() * 1000)
        for index, step in enumerate(self.steps):
            if step.timestamp < _EARLIEST_MS:
                return (
                    f"stepsJson[{index}].timestamp {step.timestamp} looks like seconds; "
                    "the recorder writes epoch milliseconds"
                )
            if not start_ms <= step.timestamp <= end_ms:
                return (
                    f"stepsJson[{index}].timestamp {step.timestamp} is outside the episode "
                    f"(startTime {start_ms} .. endTime {end_ms}, epoch ms)"
                )
        if all(step.deciding_call is None for step in self.steps):
            return "no step has an LLM call, so there is nothing the policy said to train on"
        return None


class Trajectory(BaseModel):
    """A validated game row in the window it was ingested into."""

    model_config = ConfigDict(frozen=True)

    window_id: WindowId
    # The ingested snapshot holding this row; None when validated straight from the game (babylon verify).
    snapshot_id: int | None
    # Validated when it was parsed; pydantic would otherwise run its model validator again here.
    row: Annotated[RecordedTrajectory, SkipValidation]

    @property
    def source_id(self) -> str:
        return self.row.source_id

    @property
    def trajectory_id(self) -> str:
        return self.row.trajectory_id

    @property
    def agent_id(self) -> str:
        return self.row.agent_id

    @property
    def agent_key(self) -> str:
        return agent_key(self.row.agent_id)

    @property
    def steps(self) -> list[Step]:
        return self.row.steps

    @property
    def is_evaluation(self) -> bool:
        return self.row.is_evaluation

    @property
    def window_pnl(self) -> float:
        """P&L made inside this window: recorders report lifetime P&L, so take the steps' delta."""
        return self.steps[-1].environment_state.agent_pnl - self.steps[0].environment_state.agent_pnl

    @property
    def action_count(self) -> int:
        return len(self.steps)


class Rejection(BaseModel):
    """A recorded row that failed validation, with the reason a person can act on."""

    model_config = ConfigDict(frozen=True)

    source_id: str
    snapshot_id: int | None
    trajectory_id: str | None
    agent_id: str | None
    window_id: datetime | None
    reason: str


class StockOutcome(RecordedModel):
    """A ticker's move over the window; the game's market_outcomes may leave any figure NULL."""

    ticker: str
    start_price: Annotated[float, Field(gt=0)] | None
    end_price: Annotated[float, Field(gt=0)] | None
    change_percent: float | None
    sentiment: Sentiment | None
    news_events: list[JsonValue]


class PredictionOutcome(RecordedModel):
    market_id: str
    question: str | None
    outcome: PredictionResult
    final_probability: Annotated[float, Field(ge=0, le=1)] | None


# market_outcomes: the game's table; price_history: derived from "StockPrice" and "Market" /
# "PredictionPriceHistory" because the window has no market_outcomes rows; none: no ground truth at all.
OutcomeSource = Literal["market_outcomes", "price_history", "none"]


class MarketOutcomes(BaseModel):
    """A window's ground truth: the judge's context, never the policy's input."""

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    window_id: WindowId
    source: OutcomeSource
    stocks: list[StockOutcome]
    predictions: list[PredictionOutcome]


class WindowLoad(BaseModel):
    """One window's rows: the valid ones as models, every other one as a rejection."""

    model_config = ConfigDict(frozen=True)

    window_id: WindowId
    # The snapshot validated; None when validated straight from the game (babylon verify).
    snapshot_id: int | None
    accepted: list[Trajectory]
    rejected: list[Rejection]

    @property
    def distinct_agents(self) -> int:
        return len({trajectory.agent_key for trajectory in self.accepted})


class WindowStats(BaseModel):
    """A window after validation: accepted trajectories only; P&L is each trajectory's `window_pnl`."""

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    window_id: WindowId
    agents: NonNegativeInt
    trajectories: NonNegativeInt
    rejected: NonNegativeInt
    actions: NonNegativeInt
    # None when the window has no accepted trajectory.
    pnl_min: float | None
    pnl_mean: float | None
    pnl_max: float | None


class WindowCandidate(BaseModel):
    """A window that discovery found with enough distinct agents (counted before validation)."""

    model_config = ConfigDict(frozen=True)

    window_id: WindowId
    agents: NonNegativeInt
    trajectories: NonNegativeInt
