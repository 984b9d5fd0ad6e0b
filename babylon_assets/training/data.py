"""Which scored windows training may use, the held-out split, window selection, dropout, and loading
the scored groups (accepted trajectories as chat messages, with the judge's scores)."""

import hashlib
import math
import random
from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from babylon_assets.db.connection import AsyncConn, Conn
from babylon_assets.errors import BabylonError
from babylon_assets.training.config import TrainingConfig
from babylon_assets.training.types import MarginPair, ScoredGroup, ScoredTrajectory
from babylon_assets.trajectories.messages import trajectory_messages
from babylon_assets.trajectories.models import lookback_start, window_key
from babylon_assets.trajectories.reader import load_accepted


class EligibleWindow(BaseModel):
    model_config = ConfigDict(frozen=True)

    window_id: datetime
    trajectories: int
    agents: int


class WindowSplit(BaseModel):
    model_config = ConfigDict(frozen=True)

    train: list[EligibleWindow]
    held_out: list[EligibleWindow]


class ScoreRow(BaseModel):
    model_config = ConfigDict(frozen=True)

    trajectory_id: str
    group_index: int
    score: float
    judge: str
    rubric_version: str


def eligible_windows(conn: Conn, config: TrainingConfig, now: datetime) -> list[EligibleWindow]:
    """Scored windows of the lookback before `now` whose scores are those of their validated snapshot, with `min_agents`
    distinct agents among their scored, accepted trajectories of at least `min_actions` steps, oldest first.
    The game's evaluation episodes ("isEvaluation") are never trained on, so they do not count here."""
    rows = conn.execute(
        """
        SELECT w.window_id, count(*), count(DISTINCT v.agent_key)
        FROM window_scores AS w
        -- Scores of the window's validated snapshot only: a window being scored again after its content
        -- changed waits until its new scores supersede the old ones.
        JOIN window_validations AS wv ON wv.window_id = w.window_id AND wv.snapshot_id = w.snapshot_id
        JOIN trajectory_scores AS s ON s.window_id = w.window_id
        JOIN trajectory_validations AS v
          ON v.trajectory_id = s.trajectory_id AND v.window_id = s.window_id AND v.accepted
        WHERE w.window_id >= %s
          AND v.steps >= %s
          AND NOT v.is_evaluation
        GROUP BY w.window_id
        HAVING count(DISTINCT v.agent_key) >= %s
        ORDER BY w.window_id
        """,
        (lookback_start(now, config.lookback_hours), config.min_actions, config.min_agents),
    ).fetchall()
    return [EligibleWindow(window_id=window_id, trajectories=count, agents=agents) for window_id, count, agents in rows]


def _split_order(window_id: datetime) -> str:
    return hashlib.sha256(window_key(window_id).encode()).hexdigest()


def assign_splits(conn: Conn, windows: Sequence[EligibleWindow], held_out_fraction: float) -> WindowSplit:
    """Give every new window its permanent split, inside the caller's transaction.

    New windows are taken in hash order and held out while the held-out share is below
    ceil(fraction * assigned): the first window ever seen is held out (so a margin exists as soon as
    there is data), and a window never moves between splits afterwards.
    """
    # Trainers of different models may assign at the same time; the counts below must see every split.
    conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('babylon-training-window-splits', 0))")
    existing: dict[datetime, bool] = dict(
        conn.execute("SELECT window_id, held_out FROM training_window_splits").fetchall()
    )
    held_count = sum(existing.values())
    assigned = len(existing)
    for window in sorted((w for w in windows if w.window_id not in existing), key=lambda w: _split_order(w.window_id)):
        assigned += 1
        held = held_count < math.ceil(held_out_fraction * assigned)
        held_count += held
        existing[window.window_id] = held
        conn.execute(
            "INSERT INTO training_window_splits (window_id, held_out) VALUES (%s, %s)",
            (window.window_id, held),
        )
    return WindowSplit(
        train=[w for w in windows if not existing[w.window_id]],
        held_out=[w for w in windows if existing[w.window_id]],
    )


def select_windows(conn: Conn, model_name: str, candidates: Sequence[EligibleWindow], count: int) -> list[datetime]:
    """This step's windows: those this model used least often first, newest first among equals."""
    uses: dict[datetime, int] = dict(
        conn.execute(
            """
            SELECT cw.window_id, count(*)
            FROM checkpoint_windows AS cw
            JOIN policy_checkpoints AS pc ON pc.id = cw.checkpoint_id
            WHERE pc.model_name = %s AND cw.window_id = ANY(%s)
            GROUP BY cw.window_id
            """,
            (model_name, [w.window_id for w in candidates]),
        ).fetchall()
    )
    ordered = sorted(candidates, key=lambda w: (uses.get(w.window_id, 0), -w.window_id.timestamp()))
    return sorted(w.window_id for w in ordered[:count])


def dropout_rate(total: int, target: int, max_dropout: float) -> float:
    """min(max_dropout, 1 - target / total) when there are more trajectories than the target, else 0."""
    return min(max_dropout, 1 - target / total) if total > target else 0.0


def apply_dropout(groups: Sequence[ScoredGroup], rate: float, rng: random.Random) -> list[ScoredGroup]:
    """Drop round(rate * N) trajectories (never all) drawn without replacement; emptied groups disappear."""
    ids = sorted(trajectory.trajectory_id for group in groups for trajectory in group.trajectories)
    dropped = min(round(rate * len(ids)), len(ids) - 1)
    kept = set(rng.sample(ids, len(ids) - dropped))
    thinned = [
        group.model_copy(update={"trajectories": [t for t in group.trajectories if t.trajectory_id in kept]})
        for group in groups
    ]
    return [group for group in thinned if group.trajectories]


async def _score_rows(conn: AsyncConn, window_ids: Sequence[datetime]) -> dict[str, ScoreRow]:
    cursor = await conn.execute(
        "SELECT trajectory_id, group_index, score, judge, rubric_version FROM trajectory_scores "
        "WHERE window_id = ANY(%s)",
        (list(window_ids),),
    )
    rows = await cursor.fetchall()
    return {
        row[0]: ScoreRow(trajectory_id=row[0], group_index=row[1], score=row[2], judge=row[3], rubric_version=row[4])
        for row in rows
    }


EpisodeUse = Literal["training", "evaluation", "all"]


async def load_scored_trajectories(
    conn: AsyncConn, window_ids: Sequence[datetime], min_actions: int, use: EpisodeUse = "training"
) -> dict[datetime, list[ScoredTrajectory]]:
    """Each window's accepted, scored trajectories of at least `min_actions` steps, in id order: those the
    game did not mark "isEvaluation" (training), only those (evaluation), or all (held-out windows).
    Windows with none are left out for evaluation; for training they are an error."""
    scores = await _score_rows(conn, window_ids)
    loaded = {window_id: await load_accepted(conn, window_id) for window_id in window_ids}
    result: dict[datetime, list[ScoredTrajectory]] = {}
    for window_id, trajectories in loaded.items():
        scored: list[ScoredTrajectory] = []
        for trajectory in sorted(trajectories, key=lambda t: t.trajectory_id):
            row = scores.get(trajectory.trajectory_id)
            wanted = use == "all" or (use == "evaluation") == trajectory.is_evaluation
            if row is None or trajectory.action_count < min_actions or not wanted:
                continue
            if trajectory.snapshot_id is None:
                raise BabylonError(f"trajectory {trajectory.trajectory_id} was loaded without its snapshot")
            scored.append(
                ScoredTrajectory(
                    trajectory_id=trajectory.trajectory_id,
                    window_id=window_id,
                    snapshot_id=trajectory.snapshot_id,
                    source_id=trajectory.source_id,
                    group_index=row.group_index,
                    score=row.score,
                    judge=row.judge,
                    rubric_version=row.rubric_version,
                    messages=trajectory_messages(trajectory),
                )
            )
        if not scored and use == "evaluation":
            continue
        if not scored:
            raise BabylonError(
                f"window {window_key(window_id)} has scores but none of its accepted trajectories is scored; "
                "re-materialize scored_groups for it"
            )
        result[window_id] = scored
    return result


def group_trajectories(trajectories: Sequence[ScoredTrajectory]) -> list[ScoredGroup]:
    """The judge's groups of one or more windows: advantages are relative within a group."""
    keyed: dict[tuple[datetime, int], list[ScoredTrajectory]] = {}
    for trajectory in trajectories:
        keyed.setdefault((trajectory.window_id, trajectory.group_index), []).append(trajectory)
    return [
        ScoredGroup(window_id=window_id, group_index=index, trajectories=members)
        for (window_id, index), members in sorted(keyed.items())
    ]


def margin_pairs(windows: dict[datetime, list[ScoredTrajectory]]) -> list[MarginPair]:
    """Per window, the judge's top- and bottom-ranked trajectories (ties broken by id); windows whose
    scores are all equal say nothing about preference and are left out."""
    pairs: list[MarginPair] = []
    for window_id, trajectories in sorted(windows.items()):
        ranked = sorted(trajectories, key=lambda t: (-t.score, t.trajectory_id))
        top, bottom = ranked[0], ranked[-1]
        if top.score > bottom.score:
            pairs.append(MarginPair(window_id=window_id, top=top.messages, bottom=bottom.messages))
    return pairs
