"""The Babylon rubric for the LLM judge: the one versioned place for what a good trajectory is.

Bump RUBRIC_VERSION whenever the text (or the way outcomes are shown) changes: the version is part
of every cached judge answer's key and is stored with every score.
"""

from babylon_assets.trajectories.models import MarketOutcomes, OutcomeSource

RUBRIC_VERSION = "babylon-2026-11-24.1"

RUBRIC = """\
Each trajectory is one trading agent's hour (one window) in Babylon, a continuous game of prediction
markets (YES/NO shares on an AMM) and perpetual futures on stock tickers, with a social feed. Every
agent started the window with the information shown in its own prompts, and nothing more.

Score each trajectory between 0 and 1, relative to the others in this group:
- Decision quality given what the agent knew at the time counts most. Judge whether each trade or
  hold followed from the prices, news and positions in its prompt. A lucky trade against the
  evidence deserves little credit; a well-reasoned trade that lost to an unforeseeable event
  deserves some.
- Realised profit and loss over the window: agents that made money by sound decisions rank above
  agents that lost it.
- Timing: acting promptly on new information beats acting late or churning in and out.
- Risk management: position sizes and leverage proportionate to the balance and the conviction;
  no ruinous concentration; cutting clearly losing positions.
- Missed opportunities: clear signals in the prompts that the agent ignored count against it.
- Posts and comments count only insofar as they are coherent with the agent's trades.
If one trajectory is only slightly better than another the scores should differ slightly; if it is
much better they should differ a lot. Use the whole range when the group warrants it.

Answer with one score per trajectory, using exactly the trajectory ids given (never renumbered,
never repeated, none left out), each score a number from 0 to 1.
"""


OUTCOME_SOURCES: dict[OutcomeSource, str] = {
    "market_outcomes": "the game's market_outcomes table",
    "price_history": "derived from the game's price history (first and last price in the window, last YES price)",
    "none": "none: the game recorded no outcomes and no prices for this window",
}


def _number(value: float | None) -> str:
    return "unknown" if value is None else f"{value:g}"


def rubric_with_outcomes(outcomes: MarketOutcomes) -> str:
    """The rubric plus the window's market outcomes as hindsight context for the judge only.

    The outcomes go to the judge through its prompt and never into the trajectories' messages,
    which are what the policy is trained on.
    """
    lines = [
        RUBRIC,
        "<market_outcomes>",
        "What actually happened in this window. The agents did NOT know this while acting: use it to",
        "tell sound decisions from lucky ones, not to expect foresight.",
    ]
    lines.append(f"Source: {OUTCOME_SOURCES[outcomes.source]}.")
    for stock in outcomes.stocks:
        news = "; ".join(str(item) for item in stock.news_events) if stock.news_events else "no news"
        change = "change unknown" if stock.change_percent is None else f"{stock.change_percent:+.2f}%"
        lines.append(
            f"- {stock.ticker}: {_number(stock.start_price)} -> {_number(stock.end_price)} "
            f"({change}, {stock.sentiment or 'sentiment not recorded'}); news: {news}"
        )
    for market in outcomes.predictions:
        lines.append(
            f"- market {market.market_id} ({market.question or 'question not recorded'}): resolved {market.outcome}, "
            f"final probability {_number(market.final_probability)}"
        )
    if not outcomes.stocks and not outcomes.predictions:
        lines.append("- no ground truth exists for this window: judge the trajectories on their own merits")
    lines.append("</market_outcomes>")
    return "\n".join(lines)
