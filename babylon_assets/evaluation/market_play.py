"""A policy plays a simulated market: at each decision it reads the prompt an agent would see, replies,
and its parsed action is executed in the market; its P&L follows from the market as for scripted agents.

The market model, prompts and portfolio are the simulator's (babylon_assets/simulation/).
Executing a *given* action is not factored out there (each strategy decides and executes in one
function), so `execute` below applies the simulator's trading rules (fees, margin, share prices) to an
action the policy chose.
"""

import json
import random
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, JsonValue, TypeAdapter, ValidationError

from babylon_assets.simulation.episodes import generate_trajectory, user_prompt
from babylon_assets.simulation.market import (
    TRADING_FEE,
    WINDOW_MINUTES,
    Perp,
    Portfolio,
    Shares,
    SimulatedMarket,
    simulate_market,
)
from babylon_assets.simulation.strategies import STRATEGIES, Strategy, StrategyName
from babylon_assets.trajectories.messages import ChatMessage

# Evaluation markets are drawn from their own seed stream and dated in 2000, so no window that
# `babylon simulate` or the game produced for training can be one of them.
EVALUATION_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
STARTING_CASH = 1000.0
MAX_LEVERAGE = 20


class Frozen(BaseModel):
    # Extra keys (the reply's reasoning, SELL_SHARES' outcome and shares) carry nothing to execute.
    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False)


# Bounds on the free-text fields, so that a reply decoded under the schema always ends: a ticker, a
# market id (the game's are cuids of about 25 characters), a post as long as the feed allows.
Ticker = Annotated[str, Field(max_length=16)]
MarketId = Annotated[str, Field(alias="marketId", max_length=64)]
# For the decoder only (parsing takes any positive number): cents, as the simulator's agents write them,
# and at most a million points (a book starts with 1,000), so that a decoded number ends too.
Points = Annotated[float, Field(gt=0, json_schema_extra={"multipleOf": 0.01, "maximum": 1_000_000})]


class OpenPerp(Frozen):
    ticker: Ticker
    side: Literal["long", "short"]
    margin: Points
    leverage: int = Field(ge=1, le=MAX_LEVERAGE)


class ClosePerp(Frozen):
    ticker: Ticker


class BuyShares(Frozen):
    market_id: MarketId
    outcome: Literal["YES", "NO"]
    amount: Points


class SellShares(Frozen):
    market_id: MarketId


class OpenPerpAction(Frozen):
    action: Literal["OPEN_PERP"]
    parameters: OpenPerp


class ClosePerpAction(Frozen):
    action: Literal["CLOSE_PERP"]
    parameters: ClosePerp


class BuySharesAction(Frozen):
    action: Literal["BUY_SHARES"]
    parameters: BuyShares


class SellSharesAction(Frozen):
    action: Literal["SELL_SHARES"]
    parameters: SellShares


class NoParameters(Frozen):
    pass


class Post(Frozen):
    content: str = Field(max_length=280)


class HoldAction(Frozen):
    action: Literal["HOLD"]
    parameters: NoParameters = NoParameters()


class PostAction(Frozen):
    """A social post: it does not change the book."""

    action: Literal["CREATE_POST"]
    parameters: Post


AgentAction = Annotated[
    OpenPerpAction | ClosePerpAction | BuySharesAction | SellSharesAction | HoldAction | PostAction,
    Field(discriminator="action"),
]
_ACTION = TypeAdapter(AgentAction)
# A sentence, as the prompt asks; the bound keeps a reply decoded under the schema inside max_new_tokens.
REASONING_CHARACTERS = 160


def reply_schema() -> dict[str, JsonValue]:
    """The JSON schema of a reply as the prompt states it (simulation/episodes.ACTION_FORMAT): one action
    with exactly its parameters, then the reasoning. Built from the action models, so decoding under it
    (`--decoding json-schema`) yields replies that `parse_action` accepts."""
    choices: list[JsonValue] = []
    for variant in get_args(get_args(AgentAction)[0]):
        (name,) = get_args(variant.model_fields["action"].annotation)
        parameters = variant.model_fields["parameters"].annotation
        if not (isinstance(parameters, type) and issubclass(parameters, BaseModel)):
            raise TypeError(f"{variant.__name__}.parameters must be a model")
        closed: dict[str, JsonValue] = {**parameters.model_json_schema(by_alias=True), "additionalProperties": False}
        choices.append(
            {
                "type": "object",
                "properties": {
                    "action": {"const": name},
                    "parameters": closed,
                    "reasoning": {"type": "string", "maxLength": REASONING_CHARACTERS},
                },
                "required": ["action", "parameters", "reasoning"],
                "additionalProperties": False,
            }
        )
    return {"anyOf": choices}


def parse_action(reply: str) -> AgentAction | None:
    """The action in a reply, the simulator's JSON {"action", "parameters", "reasoning"} (the first JSON
    object in it); None when there is none or it is not a valid action."""
    start = reply.find("{")
    if start < 0:
        return None
    try:
        value, _ = json.JSONDecoder().raw_decode(reply[start:])
    except json.JSONDecodeError:
        return None
    try:
        return _ACTION.validate_python(value)
    except ValidationError:
        return None


def execute(action: AgentAction, market: SimulatedMarket, book: Portfolio, minute: int) -> bool:
    """Apply `action` to `book` at `minute` with the simulator's rules; False (book unchanged) when the
    market cannot carry it out: unknown ticker or market, not enough cash, nothing to close or sell,
    or a position already open there."""
    if isinstance(action, HoldAction | PostAction):
        return True
    if isinstance(action, OpenPerpAction):
        order = action.parameters
        cost = order.margin + order.margin * order.leverage * TRADING_FEE
        if order.ticker not in market.tickers or order.ticker in book.perps or cost > book.cash:
            return False
        book.cash -= cost
        side: Literal[1, -1] = 1 if order.side == "long" else -1
        entry = market.tickers[order.ticker].prices[minute]
        book.perps[order.ticker] = Perp(side=side, margin=order.margin, leverage=order.leverage, entry=entry)
        return True
    if isinstance(action, ClosePerpAction):
        held = book.perps.pop(action.parameters.ticker, None)
        if held is None:
            return False
        price = market.tickers[action.parameters.ticker].prices[minute]
        pnl = held.margin * held.leverage * held.side * (price / held.entry - 1)
        book.cash += held.margin + pnl - held.margin * held.leverage * TRADING_FEE
        return True
    if isinstance(action, BuySharesAction):
        buy = action.parameters
        path = market.predictions.get(buy.market_id)
        if path is None or buy.market_id in book.shares or buy.amount > book.cash:
            return False
        unit = path.prices[minute] if buy.outcome == "YES" else 1 - path.prices[minute]
        book.cash -= buy.amount
        book.shares[buy.market_id] = Shares(outcome=buy.outcome, shares=buy.amount / unit, cost=buy.amount)
        return True
    holding = book.shares.pop(action.parameters.market_id, None)
    if holding is None:
        return False
    yes = market.predictions[action.parameters.market_id].prices[minute]
    book.cash += holding.shares * (yes if holding.outcome == "YES" else 1 - yes)
    return True


class Reply(Frozen):
    text: str
    tokens: int
    seconds: float


# A policy under evaluation: the chat it is shown -> its reply.
Respond = Callable[[Sequence[ChatMessage]], Reply]


class EpisodeResult(Frozen):
    """One policy's play of one market."""

    pnl: float
    decisions: int
    invalid: int  # replies without a valid action, or with one the market could not carry out (held)
    tokens: int
    seconds: float
    first_reply: str


def evaluation_market(seed: int, index: int) -> tuple[datetime, SimulatedMarket]:
    window_id = EVALUATION_EPOCH + timedelta(hours=index)
    return window_id, simulate_market(random.Random(f"evaluation:{seed}:{index}"), window_id)


def decision_minutes(decisions: int) -> list[int]:
    """Evenly spread decision minutes inside the window (the book settles at its end)."""
    return [round((number + 0.5) * (WINDOW_MINUTES - 2) / decisions) + 1 for number in range(decisions)]


def persona(name: StrategyName) -> Strategy:
    return next(strategy for strategy in STRATEGIES if strategy.name == name)


def play_market(
    respond: Respond, market: SimulatedMarket, window_id: datetime, strategy: Strategy, decisions: int
) -> EpisodeResult:
    """The policy, prompted as an agent with `strategy`'s persona, trades `decisions` times; P&L is the
    settled equity at the window's end minus the starting cash."""
    book = Portfolio(cash=STARTING_CASH)
    invalid = tokens = 0
    seconds = 0.0
    first_reply = ""
    for minute in decision_minutes(decisions):
        pnl = book.equity(market, minute) - STARTING_CASH
        prompt = user_prompt(strategy, market, book, window_id, minute, pnl)
        reply = respond(
            [ChatMessage(role="system", content=strategy.system_prompt), ChatMessage(role="user", content=prompt)]
        )
        first_reply = first_reply or reply.text
        tokens += reply.tokens
        seconds += reply.seconds
        action = parse_action(reply.text)
        if action is None or not execute(action, market, book, minute):
            invalid += 1
    return EpisodeResult(
        pnl=book.equity(market, WINDOW_MINUTES, settled=True) - STARTING_CASH,
        decisions=decisions,
        invalid=invalid,
        tokens=tokens,
        seconds=seconds,
        first_reply=first_reply,
    )


def scripted_pnl(strategy_index: int, market: SimulatedMarket, window_id: datetime, seed: int) -> float:
    """P&L of the simulator's scripted agent with STRATEGIES[strategy_index] in the same market: the sum
    of its step rewards (the change of its equity over the session)."""
    row = generate_trajectory(seed=seed, window_id=window_id, market=market, agent_index=strategy_index)
    return row.total_reward
