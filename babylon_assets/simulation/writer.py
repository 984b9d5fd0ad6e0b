"""The simulator's writer: `simulate` writes simulated windows into the game's tables with COPY in one
transaction and replaces earlier simulated rows of the same windows, so re-running it is idempotent."""

import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib.resources import files

from psycopg import sql
from pydantic import BaseModel, ConfigDict
from tqdm import tqdm

from babylon_assets.db.connection import Conn, connect
from babylon_assets.errors import BabylonError
from babylon_assets.simulation.episodes import SimulatedWindow, default_start, generate_windows, window_ids
from babylon_assets.trajectories.models import window_key


class SimulationSummary(BaseModel):
    model_config = ConfigDict(frozen=True)

    windows: list[str]  # window keys, oldest first
    agents: int
    trajectories: int
    steps: int
    seed: int


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
    conn.execute(files("babylon_assets.simulation").joinpath("game_schema.sql").read_text().encode())
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
