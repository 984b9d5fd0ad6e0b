"""Episodes: one trajectory per simulated agent and window, as the game's recorder (or plugin logger)
writes it. Pure and deterministic for (seed, window, agents); writer.py puts them in the game's tables."""

import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, JsonValue, TypeAdapter

from babylon_assets.simulation.market import WINDOW_MINUTES, Portfolio, SimulatedMarket, price_trend, simulate_market
from babylon_assets.simulation.strategies import Strategy, agent_id_for, agent_strategy, decide, hold
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
_STEPS = TypeAdapter(list[Step])


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


def user_prompt(
    strategy: Strategy, market: SimulatedMarket, book: Portfolio, window_id: datetime, minute: int, pnl: float
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
        lines.append(f"- {ticker} {prices.prices[minute]:.4f} ({price_trend(prices, minute):+.2%} since the open)")
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
    book = Portfolio(cash=1000.0 + lifetime_pnl)
    start_equity = book.cash
    trajectory_id = f"sim-{seed}-{key}-{agent_id}"
    window_ms = int(window_id.timestamp() * 1000)
    steps: list[Step] = []
    for number, minute in enumerate(minutes):
        last = number == len(minutes) - 1
        equity = book.equity(market, minute, settled=last)
        pnl = equity - start_equity
        timestamp = window_ms + minute * 60_000 - (1 if last else rng.randint(0, 59_000))
        prompt = user_prompt(strategy, market, book, window_id, minute, pnl)
        # What the agent observed, recorded before its decision changes the book.
        balance, open_positions = round(book.cash, 4), len(book.perps) + len(book.shares)
        decision = hold("The window is closing; positions are settled.") if last else None
        decision = decision or decide(rng, strategy, market, book, minute, estimates)
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
