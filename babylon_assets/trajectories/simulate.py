"""Simulated agents standing in for the game's test-agent script.

Each window gets one simulated market: perp tickers whose price drifts with a hidden sentiment (hinted
at by noisy news) and prediction markets whose mispriced YES price hides a true probability that
resolves at the window's end. Agents follow distinct strategies of different quality, so their P&L,
and the rewards that sum to it, tell a judge who played well.

`generate_window` is pure (no database); `simulate` writes its rows with COPY in one transaction and
replaces earlier simulated rows of the same windows, so re-running it is idempotent.
"""

import json
import math
import random
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from typing import Literal

from psycopg import sql
from pydantic import BaseModel, ConfigDict, JsonValue, TypeAdapter
from tqdm import tqdm

from babylon_assets.db.connection import Conn, connect
from babylon_assets.errors import BabylonError
from babylon_assets.trajectories.models import (
    Action,
    EnvironmentState,
    LLMCall,
    PredictionOutcome,
    ProviderAccess,
    Step,
    StockOutcome,
    WindowId,
    window_key,
)

SIMULATOR_SOURCE = "babylon simulate"
SIMULATED_MODEL = "babylon-sim-policy-1"
StepShape = Literal["recorder", "plugin"]
StrategyName = Literal["conservative", "balanced", "aggressive", "momentum", "contrarian"]

TICKERS = (
    "BABY", "ORCL", "LUNA", "NOVA", "APEX", "BOLT", "CRUX", "DUNE", "ECHO", "FLUX", "GLOW", "HALO",
    "IRIS", "JADE", "KITE", "LYNX", "MESA", "NEON", "OPAL", "PIKE", "QUIX", "RUNE", "SAGE", "TIDE",
    "UMBR", "VOLT", "WAVE", "XENO", "YARN", "ZEST", "ATOM", "BYTE",
)  # fmt: skip
QUESTIONS = (
    "Will the central bank cut rates this week?",
    "Will BABY trade above its opening price at the close?",
    "Will the new social app reach one million users by Friday?",
    "Will the election debate be postponed?",
    "Will the space launch happen on schedule?",
    "Will the merger between ORCL and NOVA be approved?",
    "Will the championship final go to overtime?",
    "Will the heat wave break records this weekend?",
)
TRADING_FEE = 0.002  # of notional per perp open or close; what makes overtrading costly
WINDOW_MINUTES = 60
_STEPS = TypeAdapter(list[Step])


class Strategy(BaseModel):
    """How an agent trades: its persona prompt and the knobs that set its quality."""

    model_config = ConfigDict(frozen=True)

    name: StrategyName
    risk: float  # 0.2-0.8: the share of cash a position may use, and the leverage scale
    trades: tuple[int, int]  # decisions per window
    preferred_tickers: tuple[str, ...]
    probability_noise: float  # error of its estimate of a prediction market's hidden probability
    conviction: float  # minimum edge before it trades
    post_rate: float  # chance that a step is a social post instead of a trade
    persona: str

    @property
    def system_prompt(self) -> str:
        return (
            f"You are a Babylon trading agent with a {self.name} strategy (risk {self.risk:.1f}). {self.persona} "
            f"You prefer the tickers {', '.join(self.preferred_tickers)}. Each turn, choose one action: "
            "OPEN_PERP, CLOSE_PERP, BUY_SHARES, SELL_SHARES, CREATE_POST or HOLD."
        )


STRATEGIES: tuple[Strategy, ...] = (
    Strategy(
        name="conservative",
        risk=0.2,
        trades=(5, 8),
        preferred_tickers=("BABY", "ORCL", "ATOM"),
        probability_noise=0.08,
        conviction=0.15,
        post_rate=0.05,
        persona="You protect capital first: small positions, low leverage, and only trades where news and price agree.",
    ),
    Strategy(
        name="balanced",
        risk=0.5,
        trades=(7, 11),
        preferred_tickers=("NOVA", "APEX", "LUNA", "BABY"),
        probability_noise=0.06,
        conviction=0.08,
        post_rate=0.1,
        persona="You weigh news sentiment against the price trend and size positions to your conviction.",
    ),
    Strategy(
        name="aggressive",
        risk=0.8,
        trades=(11, 15),
        preferred_tickers=("FLUX", "BOLT", "XENO", "ZEST", "NEON"),
        probability_noise=0.35,
        conviction=0.02,
        post_rate=0.15,
        persona="You chase every headline with high leverage and large size; missing a move is worse than a loss.",
    ),
    Strategy(
        name="momentum",
        risk=0.5,
        trades=(8, 12),
        preferred_tickers=("APEX", "NOVA", "WAVE", "TIDE"),
        probability_noise=0.12,
        conviction=0.05,
        post_rate=0.08,
        persona="You follow the trend: buy what has risen since the open, short what has fallen.",
    ),
    Strategy(
        name="contrarian",
        risk=0.6,
        trades=(6, 10),
        preferred_tickers=("LUNA", "ECHO", "SAGE", "RUNE"),
        probability_noise=0.15,
        conviction=0.05,
        post_rate=0.1,
        persona="You fade the crowd: short what has risen and sell the hype in the headlines.",
    ),
)


class NewsItem(BaseModel):
    model_config = ConfigDict(frozen=True)

    minute: int
    ticker: str
    headline: str
    bullish: bool


class TickerPath(BaseModel):
    """One perp ticker over the window: a price per minute, drifting with a hidden sentiment."""

    model_config = ConfigDict(frozen=True)

    ticker: str
    prices: list[float]
    sentiment: Literal["BULLISH", "BEARISH", "NEUTRAL"]
    news: list[NewsItem]


class PredictionPath(BaseModel):
    """One prediction market: a YES price per minute and a hidden true probability that resolves."""

    model_config = ConfigDict(frozen=True)

    market_id: str
    question: str
    true_probability: float
    prices: list[float]
    outcome: Literal["YES", "NO", "UNRESOLVED"]

    @property
    def settlement_price(self) -> float:
        """What one YES share is worth at the window's end."""
        return {"YES": 1.0, "NO": 0.0}.get(self.outcome, self.prices[-1])


class SimulatedMarket(BaseModel):
    model_config = ConfigDict(frozen=True)

    tickers: dict[str, TickerPath]
    predictions: dict[str, PredictionPath]
    news: list[NewsItem]  # every ticker's, in publication order

    def news_until(self, minute: int) -> list[NewsItem]:
        return [item for item in self.news if item.minute <= minute]


class TrajectoryRow(BaseModel):
    """One `trajectories` row as the recorder writes it, before insertion."""

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    trajectory_id: str
    agent_id: str
    start_time: datetime
    end_time: datetime
    duration_ms: int
    window_id: WindowId
    episode_id: str
    scenario_id: str
    steps: list[Step]
    step_shape: StepShape
    reward_components: dict[str, JsonValue]
    metrics: dict[str, JsonValue]
    metadata: dict[str, JsonValue]
    total_reward: float
    episode_length: int
    final_status: Literal["completed"]
    final_balance: float
    final_pnl: float
    trades_executed: int
    posts_created: int

    def steps_json(self) -> str:
        """The stepsJson text in this row's step shape."""
        if self.step_shape == "recorder":
            return _STEPS.dump_json(self.steps, by_alias=True, exclude_none=True).decode()
        dumped = [step.model_dump(mode="json", by_alias=True, exclude_none=True) for step in self.steps]
        return json.dumps([_plugin_shape(step) for step in dumped], separators=(",", ":"))


class SimulatedWindow(BaseModel):
    model_config = ConfigDict(frozen=True)

    window_id: WindowId
    trajectories: list[TrajectoryRow]
    stocks: list[StockOutcome]
    predictions: list[PredictionOutcome]


class SimulationSummary(BaseModel):
    model_config = ConfigDict(frozen=True)

    windows: list[str]  # window keys, oldest first
    agents: int
    trajectories: int
    steps: int
    seed: int


def agent_strategy(agent_index: int) -> Strategy:
    return STRATEGIES[agent_index % len(STRATEGIES)]


def agent_id_for(agent_index: int) -> str:
    return f"sim-{agent_strategy(agent_index).name}-{agent_index:02d}"


def default_start(windows: int, now: datetime | None = None) -> datetime:
    """The first window such that the last simulated window ends at the current UTC hour's start."""
    current = (now or datetime.now(UTC)).astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return current - timedelta(hours=windows)


def _plugin_shape(step: dict[str, JsonValue]) -> dict[str, JsonValue]:
    """The plugin logger's step: the action is an attempt named by actionName carrying the reward."""
    action = step["action"]
    assert isinstance(action, dict)  # dumped from Action, so always an object
    attempt: dict[str, JsonValue] = {k: v for k, v in action.items() if k != "actionType"}
    attempt["actionName"] = action["actionType"]
    attempt["immediateReward"] = step["reward"]
    return {**{k: v for k, v in step.items() if k not in ("reward", "action")}, "action": attempt}


def simulate_market(rng: random.Random, window_id: datetime) -> SimulatedMarket:
    tickers: dict[str, TickerPath] = {}
    for ticker in TICKERS:
        sentiment = rng.choice(("BULLISH", "BEARISH", "NEUTRAL"))
        hourly_drift = {"BULLISH": 0.03, "BEARISH": -0.03, "NEUTRAL": 0.0}[sentiment] + rng.gauss(0, 0.008)
        price = round(rng.uniform(5, 500), 2)
        prices = [price]
        for _ in range(WINDOW_MINUTES):
            price *= math.exp(hourly_drift / WINDOW_MINUTES + rng.gauss(0, 0.0015))
            prices.append(round(price, 4))
        news: list[NewsItem] = []
        for _ in range(rng.randint(1, 3)):
            # Headlines agree with the hidden sentiment three times out of four (a coin flip if neutral).
            truthful = rng.random() < 0.75
            bullish = (sentiment == "BULLISH") == truthful if sentiment != "NEUTRAL" else rng.random() < 0.5
            word = rng.choice(("beats estimates", "wins major contract", "upgraded")) if bullish else None
            word = word or rng.choice(("misses estimates", "faces probe", "downgraded"))
            news.append(
                NewsItem(minute=rng.randint(0, 50), ticker=ticker, headline=f"{ticker} {word}", bullish=bullish)
            )
        tickers[ticker] = TickerPath(ticker=ticker, prices=prices, sentiment=sentiment, news=news)
    predictions: dict[str, PredictionPath] = {}
    for index, question in enumerate(rng.sample(QUESTIONS, 5)):
        truth = rng.uniform(0.05, 0.95)
        opening = min(0.97, max(0.03, truth + rng.gauss(0, 0.15)))
        # The crowd's price drifts halfway toward the truth over the hour.
        path = [
            round(
                min(0.99, max(0.01, opening + (truth - opening) * minute / (2 * WINDOW_MINUTES) + rng.gauss(0, 0.01))),
                4,
            )
            for minute in range(WINDOW_MINUTES + 1)
        ]
        outcome: Literal["YES", "NO", "UNRESOLVED"] = (
            "UNRESOLVED" if rng.random() < 0.2 else ("YES" if rng.random() < truth else "NO")
        )
        market_id = f"pm-{window_key(window_id)[:10]}-{index}"
        predictions[market_id] = PredictionPath(
            market_id=market_id, question=question, true_probability=truth, prices=path, outcome=outcome
        )
    news = sorted(
        (item for path in tickers.values() for item in path.news), key=lambda item: (item.minute, item.ticker)
    )
    return SimulatedMarket(tickers=tickers, predictions=predictions, news=news)


class _Perp(BaseModel):
    side: Literal[1, -1]
    margin: float
    leverage: int
    entry: float


class _Shares(BaseModel):
    outcome: Literal["YES", "NO"]
    shares: float
    cost: float


class _Portfolio(BaseModel):
    """An agent's book inside one window, marked to the market at any minute."""

    cash: float
    perps: dict[str, _Perp] = {}
    shares: dict[str, _Shares] = {}

    def equity(self, market: SimulatedMarket, minute: int, *, settled: bool = False) -> float:
        total = self.cash
        for ticker, perp in self.perps.items():
            move = market.tickers[ticker].prices[minute] / perp.entry - 1
            total += perp.margin + perp.margin * perp.leverage * perp.side * move
        for market_id, holding in self.shares.items():
            path = market.predictions[market_id]
            yes = path.settlement_price if settled else path.prices[minute]
            total += holding.shares * (yes if holding.outcome == "YES" else 1 - yes)
        return total


class _Decision(BaseModel):
    action_type: str
    parameters: dict[str, JsonValue]
    reasoning: str
    result: dict[str, JsonValue]


def _trend(path: TickerPath, minute: int) -> float:
    return path.prices[minute] / path.prices[0] - 1


def _news_score(market: SimulatedMarket, ticker: str, minute: int) -> int:
    return sum(1 if item.bullish else -1 for item in market.tickers[ticker].news if item.minute <= minute)


def _decide(
    rng: random.Random,
    strategy: Strategy,
    market: SimulatedMarket,
    book: _Portfolio,
    minute: int,
    estimates: dict[str, float],
) -> _Decision:
    """One strategy decision, applied to the book (fees included)."""
    if rng.random() < strategy.post_rate:
        ticker = rng.choice(strategy.preferred_tickers)
        view = "bullish" if _news_score(market, ticker, minute) >= 0 else "bearish"
        content = f"Feeling {view} on ${ticker} after today's headlines. #{strategy.name}"
        return _Decision(
            action_type="CREATE_POST",
            parameters={"content": content},
            reasoning=f"Sharing my {view} view on {ticker} builds reputation at no cost.",
            result={"postId": f"post-{rng.getrandbits(32):08x}"},
        )
    if rng.random() < 0.5:
        return _decide_perp(rng, strategy, market, book, minute)
    return _decide_prediction(rng, strategy, market, book, minute, estimates)


def _decide_perp(
    rng: random.Random, strategy: Strategy, market: SimulatedMarket, book: _Portfolio, minute: int
) -> _Decision:
    pool = strategy.preferred_tickers if rng.random() < 0.7 or strategy.name != "aggressive" else TICKERS
    ticker = rng.choice(pool)
    path = market.tickers[ticker]
    trend, news = _trend(path, minute), _news_score(market, ticker, minute)
    if strategy.name == "momentum":
        signal, why = trend * 50, f"{ticker} moved {trend:+.2%} since the open; I follow the trend"
    elif strategy.name == "contrarian":
        signal, why = -trend * 50 - 0.5 * news, f"{ticker} moved {trend:+.2%} with news score {news:+d}; I fade it"
    elif strategy.name == "aggressive":
        latest = [item for item in path.news if item.minute <= minute]
        signal = (1.0 if latest[-1].bullish else -1.0) if latest else rng.choice((1.0, -1.0))
        why = f"latest {ticker} headline: {latest[-1].headline}" if latest else f"no news on {ticker}; I take a punt"
    else:  # conservative and balanced read news and trend together
        signal = 0.5 * news + trend * 40
        why = f"{ticker} news score {news:+d} and trend {trend:+.2%} point the same way"
        if strategy.name == "conservative" and (news == 0 or (news > 0) != (trend > 0)):
            signal = 0.0
            why = f"{ticker} news score {news:+d} and trend {trend:+.2%} disagree; not worth the risk"
    price = path.prices[minute]
    held = book.perps.get(ticker)
    side: Literal[1, -1] = 1 if signal > 0 else -1
    if held is not None and (held.side != side or abs(signal) < strategy.conviction):
        pnl = held.margin * held.leverage * held.side * (price / held.entry - 1)
        fee = held.margin * held.leverage * TRADING_FEE
        book.cash += held.margin + pnl - fee
        del book.perps[ticker]
        return _Decision(
            action_type="CLOSE_PERP",
            parameters={"ticker": ticker},
            reasoning=f"Closing {ticker}: {why}.",
            result={"exitPrice": price, "realizedPnL": round(pnl - fee, 4)},
        )
    if held is not None or abs(signal) < max(strategy.conviction, 0.3) or book.cash < 10:
        return _hold(f"No new {ticker} position: {why}.")
    margin = round(book.cash * strategy.risk * rng.uniform(0.1, 0.3), 2)
    leverage = max(1, round(strategy.risk**2 * rng.uniform(3, 30)))
    book.cash -= margin + margin * leverage * TRADING_FEE
    book.perps[ticker] = _Perp(side=side, margin=margin, leverage=leverage, entry=price)
    direction = "long" if side == 1 else "short"
    return _Decision(
        action_type="OPEN_PERP",
        parameters={"ticker": ticker, "side": direction, "margin": margin, "leverage": leverage},
        reasoning=f"Going {direction} {ticker} x{leverage}: {why}.",
        result={"entryPrice": price, "fee": round(margin * leverage * TRADING_FEE, 4)},
    )


def _decide_prediction(
    rng: random.Random,
    strategy: Strategy,
    market: SimulatedMarket,
    book: _Portfolio,
    minute: int,
    estimates: dict[str, float],
) -> _Decision:
    market_id = rng.choice(sorted(market.predictions))
    path = market.predictions[market_id]
    price = path.prices[minute]
    if strategy.name == "momentum":
        estimate = min(0.99, max(0.01, price + 3 * (price - path.prices[0])))
    elif strategy.name == "contrarian":
        estimate = min(0.99, max(0.01, price - 3 * (price - path.prices[0])))
    else:
        estimate = estimates[market_id]
    edge = estimate - price
    held = book.shares.get(market_id)
    if held is not None and (edge > 0) != (held.outcome == "YES"):
        value = held.shares * (price if held.outcome == "YES" else 1 - price)
        book.cash += value
        del book.shares[market_id]
        return _Decision(
            action_type="SELL_SHARES",
            parameters={"marketId": market_id, "outcome": held.outcome, "shares": round(held.shares, 4)},
            reasoning=f"My estimate {estimate:.2f} vs price {price:.2f} no longer supports {held.outcome}; selling.",
            result={"proceeds": round(value, 4), "realizedPnL": round(value - held.cost, 4)},
        )
    if held is not None or abs(edge) < strategy.conviction or book.cash < 10:
        return _hold(f"'{path.question}' trades at {price:.2f}, my estimate is {estimate:.2f}: no edge worth taking.")
    outcome: Literal["YES", "NO"] = "YES" if edge > 0 else "NO"
    unit = price if outcome == "YES" else 1 - price
    amount = round(book.cash * strategy.risk * rng.uniform(0.05, 0.2), 2)
    shares = amount / unit
    book.cash -= amount
    book.shares[market_id] = _Shares(outcome=outcome, shares=shares, cost=amount)
    return _Decision(
        action_type="BUY_SHARES",
        parameters={"marketId": market_id, "outcome": outcome, "amount": amount},
        reasoning=f"'{path.question}' trades at {price:.2f} but I estimate {estimate:.2f}; buying {outcome}.",
        result={"shares": round(shares, 4), "avgPrice": round(unit, 4)},
    )


def _hold(reasoning: str) -> _Decision:
    return _Decision(action_type="HOLD", parameters={}, reasoning=reasoning, result={})


# The reply format the prompt states: exactly what evaluation/market_play.parse_action accepts, and the
# shape of the recorded responses the policy is trained on.
ACTION_FORMAT = (
    "Choose your next action. Reply with one JSON object and nothing else: "
    '{"action": ..., "parameters": {...}, "reasoning": "<one sentence>"}. Parameters by action: '
    'OPEN_PERP {"ticker", "side": "long" or "short", "margin", "leverage": 1-20}; CLOSE_PERP {"ticker"}; '
    'BUY_SHARES {"marketId", "outcome": "YES" or "NO", "amount"}; SELL_SHARES {"marketId"}; '
    'CREATE_POST {"content"}; HOLD {}.',
    'Example: {"action": "OPEN_PERP", "parameters": {"ticker": "BABY", "side": "long", "margin": 50, '
    '"leverage": 2}, "reasoning": "BABY news and trend agree."}',
)


def _user_prompt(
    strategy: Strategy, market: SimulatedMarket, book: _Portfolio, window_id: datetime, minute: int, pnl: float
) -> str:
    lines = [
        f"Window {window_key(window_id)} UTC, minute {minute}.",
        f"Cash: {book.cash:.2f} points. Session P&L: {pnl:+.2f}.",
        "Open positions:",
    ]
    for ticker, perp in book.perps.items():
        side = "long" if perp.side == 1 else "short"
        now = market.tickers[ticker].prices[minute]
        lines.append(f"- PERP {ticker} {side} {perp.margin:.2f} x{perp.leverage} @ {perp.entry:.4f} (now {now:.4f})")
    for market_id, holding in book.shares.items():
        lines.append(f"- SHARES {holding.outcome} x{holding.shares:.2f} in {market_id} (cost {holding.cost:.2f})")
    if not book.perps and not book.shares:
        lines.append("- none")
    lines.append("Perp prices:")
    for ticker in strategy.preferred_tickers:
        prices = market.tickers[ticker]
        lines.append(f"- {ticker} {prices.prices[minute]:.4f} ({_trend(prices, minute):+.2%} since the open)")
    lines.append("Prediction markets (YES price):")
    for market_id, path in sorted(market.predictions.items()):
        lines.append(f"- {market_id} '{path.question}' {path.prices[minute]:.2f}")
    lines.append("Latest news:")
    lines.extend(f"- [minute {item.minute}] {item.headline}" for item in market.news_until(minute)[-4:])
    lines.extend(ACTION_FORMAT)
    return "\n".join(lines)


def _market_data(strategy: Strategy, market: SimulatedMarket, minute: int) -> dict[str, JsonValue]:
    return {
        "perps": {ticker: market.tickers[ticker].prices[minute] for ticker in strategy.preferred_tickers},
        "predictions": {market_id: path.prices[minute] for market_id, path in sorted(market.predictions.items())},
        "news": [item.headline for item in market.news_until(minute)[-4:]],
    }


def generate_trajectory(
    *,
    seed: int,
    window_id: datetime,
    market: SimulatedMarket,
    agent_index: int,
    steps_range: tuple[int, int] | None = None,
    step_shape: StepShape = "recorder",
) -> TrajectoryRow:
    """One agent's episode in one window; `steps_range` overrides the strategy's decision count."""
    strategy = agent_strategy(agent_index)
    agent_id = agent_id_for(agent_index)
    key = window_key(window_id)
    rng = random.Random(f"{seed}:{key}:{agent_index}")
    low, high = steps_range or strategy.trades
    minutes = [*sorted(rng.sample(range(1, WINDOW_MINUTES - 1), rng.randint(low, high) - 1)), WINDOW_MINUTES]
    estimates = {
        market_id: min(0.99, max(0.01, path.true_probability + rng.gauss(0, strategy.probability_noise)))
        for market_id, path in market.predictions.items()
    }
    lifetime_pnl = round(rng.uniform(-200, 600), 2)
    book = _Portfolio(cash=1000.0 + lifetime_pnl)
    start_equity = book.cash
    trajectory_id = f"sim-{seed}-{key}-{agent_id}"
    window_ms = int(window_id.timestamp() * 1000)
    steps: list[Step] = []
    for number, minute in enumerate(minutes):
        last = number == len(minutes) - 1
        equity = book.equity(market, minute, settled=last)
        pnl = equity - start_equity
        timestamp = window_ms + minute * 60_000 - (1 if last else rng.randint(0, 59_000))
        prompt = _user_prompt(strategy, market, book, window_id, minute, pnl)
        # What the agent observed, recorded before its decision changes the book.
        balance, open_positions = round(book.cash, 4), len(book.perps) + len(book.shares)
        decision = _hold("The window is closing; positions are settled.") if last else None
        decision = decision or _decide(rng, strategy, market, book, minute, estimates)
        response = json.dumps(
            {"action": decision.action_type, "parameters": decision.parameters, "reasoning": decision.reasoning}
        )
        next_minute = minutes[number + 1] if not last else minute
        reward = 0.0 if last else book.equity(market, next_minute, settled=next_minute == WINDOW_MINUTES) - equity
        plugin = step_shape == "plugin"
        call_id = f"{trajectory_id}-call-{number}" if plugin else None
        steps.append(
            Step(
                step_number=number,
                timestamp=timestamp,
                environment_state=EnvironmentState(
                    agent_balance=balance,
                    agent_pnl=round(lifetime_pnl + pnl, 4),
                    open_positions=open_positions,
                    active_markets=len(market.predictions),
                    agent_points=round(equity, 4) if plugin else None,
                    portfolio_value=round(equity, 4) if plugin else None,
                    unread_messages=rng.randint(0, 5) if plugin else None,
                    recent_engagement=round(rng.random(), 4) if plugin else None,
                    custom={"strategy": strategy.name} if plugin else None,
                ),
                provider_accesses=[
                    ProviderAccess(
                        provider_name="MARKET_DATA", data=_market_data(strategy, market, minute), purpose="market data"
                    )
                ],
                llm_calls=[
                    LLMCall(
                        model=SIMULATED_MODEL,
                        system_prompt=strategy.system_prompt,
                        user_prompt=prompt,
                        response=response,
                        reasoning=decision.reasoning,
                        temperature=round(0.3 + 0.5 * strategy.risk, 2),
                        max_tokens=512,
                        latency_ms=rng.randint(300, 2000),
                        purpose="action",
                        action_type=decision.action_type,
                        call_id=call_id,
                        timestamp=timestamp - 500 if plugin else None,
                        messages=[
                            {"role": "system", "content": strategy.system_prompt},
                            {"role": "user", "content": prompt},
                        ]
                        if plugin
                        else None,
                        top_p=0.95 if plugin else None,
                        prompt_tokens=len(prompt) // 4 if plugin else None,
                        completion_tokens=len(response) // 4 if plugin else None,
                    )
                ],
                action=Action(
                    action_type=decision.action_type,
                    parameters=decision.parameters,
                    success=True,
                    result=decision.result,
                    reasoning=decision.reasoning,
                    attempt_id=f"{trajectory_id}-attempt-{number}" if plugin else None,
                    llm_call_id=call_id,
                ),
                reward=round(reward, 6),
                step_id=f"{trajectory_id}-step-{number}" if plugin else None,
                observation={"minute": minute} if plugin else None,
                reasoning=decision.reasoning if plugin else None,
                done=last if plugin else None,
                metadata={"strategy": strategy.name} if plugin else None,
            )
        )
    final_equity = book.equity(market, WINDOW_MINUTES, settled=True)
    types = [step.action.action_type for step in steps]
    start_time = datetime.fromtimestamp(steps[0].timestamp / 1000, UTC)
    end_time = window_id + timedelta(minutes=WINDOW_MINUTES)
    return TrajectoryRow(
        trajectory_id=trajectory_id,
        agent_id=agent_id,
        start_time=start_time,
        end_time=end_time,
        duration_ms=int((end_time - start_time).total_seconds() * 1000),
        window_id=window_id,
        episode_id=f"{trajectory_id}-episode",
        scenario_id=key,
        steps=steps,
        step_shape=step_shape,
        reward_components={"pnl": round(sum(step.reward for step in steps), 6)},
        metrics={"strategy": strategy.name, "risk": strategy.risk},
        metadata={
            "isTrainingData": True,
            "source": SIMULATOR_SOURCE,
            "seed": seed,
            "strategy": strategy.name,
            # What the game's recorder keeps as hindsight: judge context at most, never training text.
            "gameKnowledge": {
                "trueProbabilities": {
                    market_id: path.true_probability for market_id, path in market.predictions.items()
                },
                "actualOutcomes": {market_id: path.outcome for market_id, path in market.predictions.items()},
            },
        },
        total_reward=round(sum(step.reward for step in steps), 6),
        episode_length=len(steps),
        final_status="completed",
        final_balance=round(final_equity, 4),
        final_pnl=round(lifetime_pnl + final_equity - start_equity, 4),
        trades_executed=sum(1 for kind in types if "BUY" in kind or "SELL" in kind),
        posts_created=sum(1 for kind in types if "POST" in kind),
    )


def generate_window(
    *,
    seed: int,
    window_id: datetime,
    agents: int,
    steps_range: tuple[int, int] | None = None,
    plugin_agents: frozenset[int] = frozenset(),
) -> SimulatedWindow:
    """A window's market outcomes and one trajectory per agent; the agents in `plugin_agents` are
    written in the plugin logger's step shape. Pure and deterministic for (seed, window, agents)."""
    market = simulate_market(random.Random(f"{seed}:{window_key(window_id)}:market"), window_id)
    trajectories = [
        generate_trajectory(
            seed=seed,
            window_id=window_id,
            market=market,
            agent_index=index,
            steps_range=steps_range,
            step_shape="plugin" if index in plugin_agents else "recorder",
        )
        for index in range(agents)
    ]
    stocks = [
        StockOutcome(
            ticker=path.ticker,
            start_price=path.prices[0],
            end_price=path.prices[-1],
            change_percent=round((path.prices[-1] / path.prices[0] - 1) * 100, 4),
            sentiment=path.sentiment,
            news_events=[item.headline for item in path.news],
        )
        for path in market.tickers.values()
    ]
    predictions = [
        PredictionOutcome(
            market_id=path.market_id,
            question=path.question,
            outcome=path.outcome,
            final_probability=path.settlement_price,
        )
        for path in market.predictions.values()
    ]
    return SimulatedWindow(window_id=window_id, trajectories=trajectories, stocks=stocks, predictions=predictions)


def window_ids(start: datetime, windows: int) -> list[datetime]:
    return [start + timedelta(hours=offset) for offset in range(windows)]


def generate_windows(
    *, seed: int, start: datetime, windows: int, agents: int, steps_range: tuple[int, int] | None = None
) -> Iterator[SimulatedWindow]:
    for window_id in window_ids(start, windows):
        yield generate_window(seed=seed, window_id=window_id, agents=agents, steps_range=steps_range)


# The game's columns that the simulator writes; the rest take the game's defaults.
TRAJECTORY_COLUMNS = (
    "id", "trajectoryId", "agentId", "startTime", "endTime", "durationMs", "windowId", "windowHours", "episodeId",
    "scenarioId", "stepsJson", "rewardComponentsJson", "metricsJson", "metadataJson", "totalReward",
    "episodeLength", "finalStatus", "finalBalance", "finalPnL", "tradesExecuted", "postsCreated", "isTrainingData",
    "createdAt", "updatedAt",
)  # fmt: skip
OUTCOME_COLUMNS = (
    "id", "windowId", "stockTicker", "startPrice", "endPrice", "changePercent", "sentiment", "newsEvents",
    "predictionMarketId", "question", "outcome", "finalProbability", "createdAt",
)  # fmt: skip
# Simulated rows carry this id prefix, so re-simulating replaces them and never touches the game's own rows.
SIMULATED_ID_PREFIX = "babylon-sim:"


def _copy_statement(table: str, columns: tuple[str, ...]) -> sql.Composed:
    return sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(column) for column in columns)
    )


def create_game_tables(conn: Conn) -> bool:
    """Create the game's tables (game_schema.sql) when the database has no "trajectories"; True if it did.

    A database that has the game's tables is never altered.
    """
    found = conn.execute("""SELECT to_regclass('"trajectories"') IS NOT NULL""").fetchone()
    if found is not None and found[0]:
        return False
    conn.execute(files("babylon_assets.trajectories").joinpath("game_schema.sql").read_text().encode())
    return True


def insert_windows(url: str, simulated: Iterator[SimulatedWindow], *, start: datetime, windows: int) -> int:
    """Replace the simulated rows and market outcomes of [start, start + windows h) with `simulated`, in one
    transaction, the way the game's recorder writes them; returns the number of steps written. The game's
    tables are created first if the database has none; rows the game wrote are left alone."""
    keys = [window_key(window_id) for window_id in window_ids(start, windows)]
    steps = 0
    written = datetime.now(UTC).replace(tzinfo=None)
    with connect(url) as conn, conn.transaction(), conn.cursor() as cur:
        create_game_tables(conn)
        for table in ("trajectories", "market_outcomes"):
            cur.execute(
                sql.SQL('DELETE FROM {} WHERE "windowId" = ANY(%s) AND "id" LIKE %s').format(sql.Identifier(table)),
                (keys, f"{SIMULATED_ID_PREFIX}%"),
            )
        outcome_rows: list[tuple[object, ...]] = []
        with cur.copy(_copy_statement("trajectories", TRAJECTORY_COLUMNS)) as copy:
            for window in simulated:
                key = window_key(window.window_id)
                outcome_rows.extend(
                    (f"{SIMULATED_ID_PREFIX}{key}:{stock.ticker}", key, stock.ticker, stock.start_price,
                     stock.end_price, stock.change_percent, stock.sentiment, json.dumps(stock.news_events),
                     None, None, None, None, written)
                    for stock in window.stocks
                )  # fmt: skip
                outcome_rows.extend(
                    (f"{SIMULATED_ID_PREFIX}{key}:{market.market_id}", key, None, None, None, None, None, None,
                     market.market_id, market.question, market.outcome, market.final_probability, written)
                    for market in window.predictions
                )  # fmt: skip
                for row in window.trajectories:
                    steps += len(row.steps)
                    copy.write_row(
                        (
                            f"{SIMULATED_ID_PREFIX}{row.trajectory_id}",
                            row.trajectory_id,
                            row.agent_id,
                            row.start_time.astimezone(UTC).replace(tzinfo=None),
                            row.end_time.astimezone(UTC).replace(tzinfo=None),
                            row.duration_ms,
                            key,
                            1,
                            row.episode_id,
                            row.scenario_id,
                            row.steps_json(),
                            json.dumps(row.reward_components),
                            json.dumps(row.metrics),
                            json.dumps(row.metadata),
                            row.total_reward,
                            row.episode_length,
                            row.final_status,
                            row.final_balance,
                            row.final_pnl,
                            row.trades_executed,
                            row.posts_created,
                            True,
                            written,
                            written,
                        )
                    )
        with cur.copy(_copy_statement("market_outcomes", OUTCOME_COLUMNS)) as copy:
            for outcome in outcome_rows:
                copy.write_row(outcome)
    return steps


def simulate(
    url: str,
    *,
    agents: int,
    windows: int,
    seed: int,
    start: datetime | None = None,
    steps_range: tuple[int, int] | None = None,
) -> SimulationSummary:
    """Write `windows` consecutive hourly windows of `agents` simulated agents, plus their market outcomes.

    `start` is the first window's UTC hour start; by default the last window ends at the current hour's start.
    """
    if agents < 1 or windows < 1:
        raise BabylonError(f"--agents and --windows must be at least 1 (got {agents} and {windows})")
    first = default_start(windows) if start is None else start
    if first.tzinfo is None or first.astimezone(UTC).replace(minute=0, second=0, microsecond=0) != first:
        raise BabylonError(
            f"start {first.isoformat()} is not a UTC hour start; windows are whole hours, e.g. 2026-11-24T13:00"
        )
    first = first.astimezone(UTC)
    progress = tqdm(
        generate_windows(seed=seed, start=first, windows=windows, agents=agents, steps_range=steps_range),
        total=windows,
        desc="simulating windows",
        unit="window",
        file=sys.stderr,
        # Only for a person watching a long run: in logs and pipes a redrawn bar is noise.
        disable=not (sys.stderr.isatty() and windows * agents >= 5000),
    )
    steps = insert_windows(url, iter(progress), start=first, windows=windows)
    return SimulationSummary(
        windows=[window_key(window_id) for window_id in window_ids(first, windows)],
        agents=agents,
        trajectories=agents * windows,
        steps=steps,
        seed=seed,
    )
