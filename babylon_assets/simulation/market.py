"""The market model of one simulated window: perp tickers whose price drifts with a hidden sentiment
(hinted at by noisy news), prediction markets whose mispriced YES price hides a true probability that
resolves at the window's end, and an agent's book marked to them."""

import math
import random
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from babylon_assets.trajectories.models import window_key

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


class Perp(BaseModel):
    side: Literal[1, -1]
    margin: float
    leverage: int
    entry: float


class Shares(BaseModel):
    outcome: Literal["YES", "NO"]
    shares: float
    cost: float


class Portfolio(BaseModel):
    """An agent's book inside one window, marked to the market at any minute."""

    cash: float
    perps: dict[str, Perp] = {}
    shares: dict[str, Shares] = {}

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


def price_trend(path: TickerPath, minute: int) -> float:
    return path.prices[minute] / path.prices[0] - 1
