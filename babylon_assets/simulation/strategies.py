"""The strategy table: how each simulated agent trades (persona, risk, conviction), and its decisions,
applied to its book. Agents of different quality make the P&L, and the rewards that sum to it, tell a
judge who played well."""

import random
from typing import Literal

from pydantic import BaseModel, ConfigDict, JsonValue

from babylon_assets.simulation.market import (
    TICKERS,
    TRADING_FEE,
    Perp,
    Portfolio,
    Shares,
    SimulatedMarket,
    price_trend,
)

StrategyName = Literal["conservative", "balanced", "aggressive", "momentum", "contrarian"]


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


def agent_strategy(agent_index: int) -> Strategy:
    return STRATEGIES[agent_index % len(STRATEGIES)]


def agent_id_for(agent_index: int) -> str:
    return f"sim-{agent_strategy(agent_index).name}-{agent_index:02d}"


class Decision(BaseModel):
    action_type: str
    parameters: dict[str, JsonValue]
    reasoning: str
    result: dict[str, JsonValue]


def news_score(market: SimulatedMarket, ticker: str, minute: int) -> int:
    return sum(1 if item.bullish else -1 for item in market.tickers[ticker].news if item.minute <= minute)


def decide(
    rng: random.Random,
    strategy: Strategy,
    market: SimulatedMarket,
    book: Portfolio,
    minute: int,
    estimates: dict[str, float],
) -> Decision:
    """One strategy decision, applied to the book (fees included)."""
    if rng.random() < strategy.post_rate:
        ticker = rng.choice(strategy.preferred_tickers)
        view = "bullish" if news_score(market, ticker, minute) >= 0 else "bearish"
        content = f"Feeling {view} on ${ticker} after today's headlines. #{strategy.name}"
        return Decision(
            action_type="CREATE_POST",
            parameters={"content": content},
            reasoning=f"Sharing my {view} view on {ticker} builds reputation at no cost.",
            result={"postId": f"post-{rng.getrandbits(32):08x}"},
        )
    if rng.random() < 0.5:
        return _decide_perp(rng, strategy, market, book, minute)
    return _decide_prediction(rng, strategy, market, book, minute, estimates)


def _decide_perp(
    rng: random.Random, strategy: Strategy, market: SimulatedMarket, book: Portfolio, minute: int
) -> Decision:
    pool = strategy.preferred_tickers if rng.random() < 0.7 or strategy.name != "aggressive" else TICKERS
    ticker = rng.choice(pool)
    path = market.tickers[ticker]
    trend, news = price_trend(path, minute), news_score(market, ticker, minute)
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
        return Decision(
            action_type="CLOSE_PERP",
            parameters={"ticker": ticker},
            reasoning=f"Closing {ticker}: {why}.",
            result={"exitPrice": price, "realizedPnL": round(pnl - fee, 4)},
        )
    if held is not None or abs(signal) < max(strategy.conviction, 0.3) or book.cash < 10:
        return hold(f"No new {ticker} position: {why}.")
    margin = round(book.cash * strategy.risk * rng.uniform(0.1, 0.3), 2)
    leverage = max(1, round(strategy.risk**2 * rng.uniform(3, 30)))
    book.cash -= margin + margin * leverage * TRADING_FEE
    book.perps[ticker] = Perp(side=side, margin=margin, leverage=leverage, entry=price)
    direction = "long" if side == 1 else "short"
    return Decision(
        action_type="OPEN_PERP",
        parameters={"ticker": ticker, "side": direction, "margin": margin, "leverage": leverage},
        reasoning=f"Going {direction} {ticker} x{leverage}: {why}.",
        result={"entryPrice": price, "fee": round(margin * leverage * TRADING_FEE, 4)},
    )


def _decide_prediction(
    rng: random.Random,
    strategy: Strategy,
    market: SimulatedMarket,
    book: Portfolio,
    minute: int,
    estimates: dict[str, float],
) -> Decision:
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
        return Decision(
            action_type="SELL_SHARES",
            parameters={"marketId": market_id, "outcome": held.outcome, "shares": round(held.shares, 4)},
            reasoning=f"My estimate {estimate:.2f} vs price {price:.2f} no longer supports {held.outcome}; selling.",
            result={"proceeds": round(value, 4), "realizedPnL": round(value - held.cost, 4)},
        )
    if held is not None or abs(edge) < strategy.conviction or book.cash < 10:
        return hold(f"'{path.question}' trades at {price:.2f}, my estimate is {estimate:.2f}: no edge worth taking.")
    outcome: Literal["YES", "NO"] = "YES" if edge > 0 else "NO"
    unit = price if outcome == "YES" else 1 - price
    amount = round(book.cash * strategy.risk * rng.uniform(0.05, 0.2), 2)
    shares = amount / unit
    book.cash -= amount
    book.shares[market_id] = Shares(outcome=outcome, shares=shares, cost=amount)
    return Decision(
        action_type="BUY_SHARES",
        parameters={"marketId": market_id, "outcome": outcome, "amount": amount},
        reasoning=f"'{path.question}' trades at {price:.2f} but I estimate {estimate:.2f}; buying {outcome}.",
        result={"shares": round(shares, 4), "avgPrice": round(unit, 4)},
    )


def hold(reasoning: str) -> Decision:
    return Decision(action_type="HOLD", parameters={}, reasoning=reasoning, result={})
