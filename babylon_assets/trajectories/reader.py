"""Validating recorded rows, and reading what the platform ingested (window snapshots) back from its store.

Every row of a window comes back either as a `Trajectory` or as a `Rejection` whose reason names the
field that is wrong; one bad row never raises and never disappears. Rows are parsed from their JSON by
pydantic's Rust parser in strict mode.

Rules across the rows of a window, in the order rows were recorded ("createdAt", then id):
- a trajectoryId carried by several rows (possible only where the game's unique index is missing): the
  first row that is valid on its own wins, so a corrected re-write loads even while the broken row
  exists; later valid rows are rejected as duplicates of it, broken ones with their own reason. A
  trajectoryId already accepted in another window is rejected here.
- an episode whose steps are identical to an earlier accepted episode's is a replay under another id
  and is rejected, naming the trajectory it copies.
"""

import hashlib
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from statistics import fmean

from psycopg.rows import class_row
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from babylon_assets.db.connection import AsyncConn
from babylon_assets.errors import BabylonError
from babylon_assets.trajectories.facts import TrajectoryFacts
from babylon_assets.trajectories.game import RecordedRow
from babylon_assets.trajectories.models import (
    MarketOutcomes,
    RecordedTrajectory,
    Rejection,
    Step,
    Trajectory,
    WindowLoad,
    WindowStats,
    window_key,
)

# A row's JSON above this size is rejected unparsed: a real hour of agent steps is far smaller, and one
# runaway recorder row must not exhaust the reader's memory.
MAX_ROW_BYTES = 8 * 1024 * 1024
WINDOW = timedelta(hours=1)
_MAX_REASON_ERRORS = 3
_STEPS = TypeAdapter(list[Step])


def _path(loc: Sequence[int | str], prefix: str = "") -> str:
    path = prefix
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _describe(error: ErrorDetails, prefix: str) -> str:
    kind, value, path = error["type"], error["input"], _path(error["loc"], prefix)
    message = error["msg"].removeprefix("Value error, ")
    if kind == "missing":
        return f"{path} is missing"
    if kind == "json_invalid":
        return f"{path} is not valid JSON: {error.get('ctx', {}).get('error', message)}"
    if not path:
        return message
    if value is None:
        return f"{path} is NULL: {message}"
    if kind == "value_error" or isinstance(value, dict | list):
        return f"{path}: {message}"
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return f"{path}: {message} (got {shown})"


def _reason(error: ValidationError, prefix: str = "") -> str:
    details = error.errors(include_url=False)
    parts = [_describe(detail, prefix) for detail in details[:_MAX_REASON_ERRORS]]
    more = len(details) - _MAX_REASON_ERRORS
    return "; ".join(parts) + (f"; and {more} more error(s)" if more > 0 else "")


def parse_recorded(recorded: str) -> RecordedTrajectory | str:
    """A game row's JSON parsed (its columns, then its steps) and checked against the recorder's own
    invariants; or the reason it cannot be used."""
    if len(recorded) > MAX_ROW_BYTES:  # characters, a lower bound on bytes: good enough for a guard
        return f"row JSON is {len(recorded):,} characters, over the {MAX_ROW_BYTES:,} limit (MAX_ROW_BYTES)"
    try:
        columns = RecordedTrajectory.model_validate_json(recorded)
    except ValidationError as error:
        return _reason(error)
    try:
        steps = _STEPS.validate_json(columns.steps_json)
    except ValidationError as error:
        return _reason(error, prefix="stepsJson")
    if not steps:
        return "stepsJson: List should have at least 1 item: the episode recorded no steps"
    trajectory = columns.model_copy(update={"steps": steps})
    return trajectory.inconsistency() or trajectory


def _steps_fingerprint(steps: list[Step]) -> str:
    return hashlib.sha256(_STEPS.dump_json(steps)).hexdigest()


def validate_rows(
    rows: Iterable[RecordedRow],
    window_id: datetime,
    *,
    snapshot_id: int | None,
    min_actions: int,
    accepted_elsewhere: dict[str, datetime] | None = None,
) -> WindowLoad:
    """Each row's verdict (see the module's rules). `accepted_elsewhere` maps trajectory ids already
    accepted in other windows to those windows."""
    elsewhere = accepted_elsewhere or {}
    rejected: list[Rejection] = []

    def reject(row: RecordedRow, reason: str) -> None:
        rejected.append(
            Rejection(
                source_id=row.source_id,
                snapshot_id=snapshot_id,
                trajectory_id=row.trajectory_id,
                agent_id=row.agent_id,
                window_id=window_id,
                reason=reason,
            )
        )

    valid: list[tuple[RecordedRow, RecordedTrajectory]] = []
    for row in rows:
        parsed = parse_recorded(row.recorded)
        if isinstance(parsed, str):
            reject(row, parsed)
        elif not parsed.is_training_data:
            reject(row, "isTrainingData is false: the game marked this episode as not for training")
        elif len(parsed.steps) < min_actions:
            reject(row, f"only {len(parsed.steps)} step(s), fewer than min_actions={min_actions}")
        elif parsed.recorded_window is not None and parsed.recorded_window != window_key(window_id):
            reject(row, f"windowId {parsed.recorded_window!r} is not this window ({window_key(window_id)})")
        else:
            valid.append((row, parsed))
    accepted: list[Trajectory] = []
    winners: dict[str, str] = {}
    episodes: dict[str, RecordedTrajectory] = {}
    for row, parsed in sorted(valid, key=lambda pair: (pair[1].created_at, pair[1].source_id)):
        first = winners.get(parsed.trajectory_id)
        other_window = elsewhere.get(parsed.trajectory_id)
        copied = episodes.get(fingerprint := _steps_fingerprint(parsed.steps))
        if first is not None:
            reject(row, f"duplicate trajectoryId {parsed.trajectory_id!r}: row {first!r} has it first and is valid")
        elif other_window is not None:
            reject(
                row,
                f"duplicate trajectoryId {parsed.trajectory_id!r}: "
                f"already accepted in window {window_key(other_window)}",
            )
        elif copied is not None:
            reject(
                row,
                f"duplicate episode: its steps are identical to trajectory {copied.trajectory_id!r} "
                f"(agent {copied.agent_id!r}); a replay under another id is not another agent",
            )
        else:
            winners[parsed.trajectory_id] = parsed.source_id
            episodes[fingerprint] = parsed
            accepted.append(Trajectory(window_id=window_id, snapshot_id=snapshot_id, row=parsed))
    return WindowLoad(window_id=window_id, snapshot_id=snapshot_id, accepted=accepted, rejected=rejected)


async def latest_snapshot_id(conn: AsyncConn, window_id: datetime) -> int:
    """The window's newest ingested snapshot; a window never ingested is an error saying what to run."""
    async with conn.cursor() as cur:
        await cur.execute(
            "SELECT id FROM window_snapshots WHERE window_id = %s ORDER BY version DESC LIMIT 1", (window_id,)
        )
        found = await cur.fetchone()
    if found is None:
        raise BabylonError(
            f"window {window_key(window_id)} has never been ingested; materialize raw_trajectories for it first"
        )
    snapshot_id: int = found[0]
    return snapshot_id


async def snapshot_rows(
    conn: AsyncConn, snapshot_id: int, source_ids: Sequence[str] | None = None
) -> list[RecordedRow]:
    """A snapshot's rows (or only `source_ids` of them), in source-id order."""
    # Rows by column name (class_row): a column moved in the SELECT still lands in its field.
    async with conn.cursor(row_factory=class_row(RecordedRow)) as cur:
        await cur.execute(
            """
            SELECT source_id, trajectory_id, agent_id, content_hash, recorded::text AS recorded FROM snapshot_rows
            WHERE snapshot_id = %s AND (%s::text[] IS NULL OR source_id = ANY(%s::text[]))
            ORDER BY source_id
            """,
            (snapshot_id, source_ids, source_ids),
        )
        return await cur.fetchall()


async def accepted_in_other_windows(
    conn: AsyncConn, window_id: datetime, trajectory_ids: list[str]
) -> dict[str, datetime]:
    async with conn.cursor() as cur:
        await cur.execute(
            "SELECT trajectory_id, window_id FROM trajectory_validations "
            "WHERE accepted AND trajectory_id = ANY(%s) AND window_id <> %s",
            (trajectory_ids, window_id),
        )
        return {trajectory_id: other for trajectory_id, other in await cur.fetchall()}


async def load_window(conn: AsyncConn, window_id: datetime, *, min_actions: int) -> WindowLoad:
    """Every row of the window's newest snapshot, accepted as a model or rejected with a reason."""
    snapshot_id = await latest_snapshot_id(conn, window_id)
    rows = await snapshot_rows(conn, snapshot_id)
    ids = [row.trajectory_id for row in rows if row.trajectory_id is not None]
    elsewhere = await accepted_in_other_windows(conn, window_id, ids)
    return validate_rows(
        rows, window_id, snapshot_id=snapshot_id, min_actions=min_actions, accepted_elsewhere=elsewhere
    )


def _never_validated(window_id: datetime) -> BabylonError:
    return BabylonError(
        f"window {window_key(window_id)} has never been validated; validate it first "
        "(materialize validated_windows for it, or call validate_window)"
    )


# The accepted rows of a window's last stored validation, from the snapshot it used, in source-id order:
# `load_accepted` reads them whole, `validated_content` by content hash and facts only.
_ACCEPTED_ROWS = """
    FROM window_validations v
    JOIN trajectory_validations t ON t.snapshot_id = v.snapshot_id AND t.accepted
    JOIN snapshot_rows r ON r.snapshot_id = t.snapshot_id AND r.source_id = t.source_id
    WHERE v.window_id = %s ORDER BY r.source_id
"""


async def load_accepted(conn: AsyncConn, window_id: datetime) -> list[Trajectory]:
    """The rows the window's last stored validation accepted (see `validation.validate_window`), read from
    the snapshot that validation used: two statements in one round trip."""
    async with conn.pipeline(), conn.cursor() as snapshot, conn.cursor() as accepted:
        await snapshot.execute("SELECT snapshot_id FROM window_validations WHERE window_id = %s", (window_id,))
        await accepted.execute("SELECT r.source_id, r.recorded::text " + _ACCEPTED_ROWS, (window_id,))
        found = await snapshot.fetchone()
        rows = await accepted.fetchall()
    if found is None:
        raise _never_validated(window_id)
    snapshot_id: int = found[0]
    trajectories: list[Trajectory] = []
    # Snapshots are immutable, so the accepted rows parse again; the rules across rows need not run.
    for source_id, recorded in rows:
        parsed = parse_recorded(recorded)
        if isinstance(parsed, str):
            raise BabylonError(
                f"row {source_id} of window {window_key(window_id)} was accepted but no longer validates "
                f"({parsed}); validate the window again"
            )
        trajectories.append(Trajectory(window_id=window_id, snapshot_id=snapshot_id, row=parsed))
    return trajectories


class AcceptedRow(BaseModel):
    """An accepted row of a window's validated snapshot by what identifies its content, unparsed."""

    model_config = ConfigDict(frozen=True)

    source_id: str
    trajectory_id: str
    agent_id: str
    content_hash: str
    # None for a row validated before facts were recorded (migration 0012).
    facts: TrajectoryFacts | None


class ValidatedContent(BaseModel):
    """What a window's last validation accepted, by content hash: enough to look its results up."""

    model_config = ConfigDict(frozen=True)

    snapshot_id: int
    # The ground truth ingested with the snapshot, and the sha256 of its canonical jsonb text.
    outcomes: MarketOutcomes
    outcomes_hash: str
    rows: list[AcceptedRow]


async def validated_content(conn: AsyncConn, window_id: datetime) -> ValidatedContent:
    """The window's accepted rows (source-id order) by their hashes and facts, and its ground truth, without
    reading the rows themselves: two statements in one round trip."""
    async with conn.pipeline(), conn.cursor() as snapshot, conn.cursor(row_factory=class_row(AcceptedRow)) as rows:
        await snapshot.execute(
            """
            SELECT v.snapshot_id, s.outcomes::text, encode(sha256(convert_to(s.outcomes::text, 'UTF8')), 'hex')
            FROM window_validations v JOIN window_snapshots s ON s.id = v.snapshot_id WHERE v.window_id = %s
            """,
            (window_id,),
        )
        await rows.execute(
            "SELECT r.source_id, t.trajectory_id, t.agent_id, r.content_hash, t.facts " + _ACCEPTED_ROWS, (window_id,)
        )
        found = await snapshot.fetchone()
        accepted = await rows.fetchall()
    if found is None:
        raise _never_validated(window_id)
    return ValidatedContent(
        snapshot_id=found[0],
        outcomes=MarketOutcomes.model_validate_json(found[1]),
        outcomes_hash=found[2],
        rows=accepted,
    )


async def load_market_outcomes(conn: AsyncConn, window_id: datetime) -> MarketOutcomes:
    """The ground truth ingested with the window's validated snapshot (its newest one before validation)."""
    async with conn.cursor() as cur:
        await cur.execute(
            """
            SELECT s.outcomes::text FROM window_snapshots s
            WHERE s.id = coalesce(
                (SELECT snapshot_id FROM window_validations WHERE window_id = %(window)s),
                (SELECT id FROM window_snapshots WHERE window_id = %(window)s ORDER BY version DESC LIMIT 1))
            """,
            {"window": window_id},
        )
        found = await cur.fetchone()
    if found is None:
        raise BabylonError(
            f"window {window_key(window_id)} has never been ingested; materialize raw_trajectories for it first"
        )
    return MarketOutcomes.model_validate_json(found[0])


def stats_of(load: WindowLoad) -> WindowStats:
    """Statistics of a validated window: accepted trajectories only."""
    pnls = [trajectory.window_pnl for trajectory in load.accepted]
    return WindowStats(
        window_id=load.window_id,
        agents=load.distinct_agents,
        trajectories=len(load.accepted),
        rejected=len(load.rejected),
        actions=sum(trajectory.action_count for trajectory in load.accepted),
        pnl_min=min(pnls) if pnls else None,
        pnl_mean=fmean(pnls) if pnls else None,
        pnl_max=max(pnls) if pnls else None,
    )
