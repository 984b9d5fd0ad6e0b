"""Register each settled, eligible window as a partition and request its ingest-validate-score run.

Discovery follows what the game recorded, not the clock. The cursor is a watermark over the rows'
"createdAt"/"updatedAt": a tick reads the rows written since the watermark less an overlap (a row
whose transaction commits late carries a write time before its commit), skips the ones it already
saw, and marks their windows as settling. A window settles once it is over and has had no new row
for the settle delay; then, if eligible, its chain is requested with the run key
`<window>@<content hash prefix>`, the hash being that of the snapshot its ingest will make. The same
content never runs twice (Dagster drops a run key it has seen) and changed content always runs
again, replacing the window's scores. A tick's work follows the rows written since the last one.
"""

from datetime import UTC, datetime, timedelta

import dagster as dg
from pydantic import BaseModel, ConfigDict, Field

from babylon_assets.db.connection import AsyncConn, run_with_connection
from babylon_assets.jobs import window_chain_job
from babylon_assets.partitions import WINDOW_PARTITIONS, window_partitions
from babylon_assets.trajectories.discovery import HOUR, eligible_windows_between
from babylon_assets.trajectories.game import rows_written_since
from babylon_assets.trajectories.ingest import window_content
from babylon_assets.trajectories.models import lookback_start, parse_window_key
from babylon_assets.trajectories.rules import WindowDiscovery
from resources.database import DatabaseResource

CONTENT_TAG = "babylon/content_hash"
# The run key's share of the window's content hash: 48 bits, no collision among a window's versions.
HASH_PREFIX = 12


def current_time() -> datetime:
    """The sensor's clock, a function of its own so tests can move time forward."""
    return datetime.now(UTC)


class DiscoveryCursor(BaseModel):
    """What the sensor knows between ticks (stored as JSON)."""

    model_config = ConfigDict(frozen=True)

    # The latest write time seen among the game's rows.
    watermark: datetime
    # Rows written within the overlap before the watermark, by id: read again next tick, not new then.
    seen: dict[str, datetime] = Field(default_factory=dict)
    # Windows with rows not yet taken up: window key -> the latest write time among their new rows.
    settling: dict[str, datetime] = Field(default_factory=dict)

    @classmethod
    def parse(cls, cursor: str | None) -> "DiscoveryCursor | None":
        """The stored cursor; None before the first tick or after the clock-based cursor of earlier
        versions (a window key): discovery then reads the whole lookback once. Anything else is an error."""
        if not cursor:
            return None
        try:
            parse_window_key(cursor)
        except ValueError:
            return cls.model_validate_json(cursor)
        return None


class WindowRun(BaseModel):
    model_config = ConfigDict(frozen=True)

    key: str
    content_hash: str

    @property
    def run_key(self) -> str:
        return f"{self.key}@{self.content_hash[:HASH_PREFIX]}"


class FreshWindows(BaseModel):
    """What one tick found: the settled eligible windows, the next cursor, and why nothing else runs."""

    model_config = ConfigDict(frozen=True)

    windows: list[WindowRun]
    cursor: DiscoveryCursor
    skip_reason: str


def _minute(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC"


def _settles_at(key: str, written: datetime, settle: timedelta) -> datetime:
    return max(parse_window_key(key) + HOUR, written) + settle


async def find_fresh_windows(
    conn: AsyncConn, *, cursor: DiscoveryCursor | None, now: datetime, config: WindowDiscovery
) -> FreshWindows:
    """The windows to run now (see the module), and the cursor to store next."""
    settle, overlap = timedelta(minutes=config.settle_minutes), timedelta(minutes=config.overlap_minutes)
    earliest = lookback_start(now, config.lookback_hours)
    since = cursor.watermark - overlap if cursor is not None else earliest
    seen = cursor.seen if cursor is not None else {}
    rows = await rows_written_since(conn, since)
    new = [row for row in rows if seen.get(row.source_id) != row.written]
    settling = dict(cursor.settling) if cursor is not None else {}
    windows_written: set[str] = set()
    for row in new:
        try:
            window_id = parse_window_key(row.window)
        except ValueError:
            continue  # no window can hold it: `babylon verify` lists such rows with the fix
        if window_id < earliest:
            continue
        windows_written.add(row.window)
        settling[row.window] = max(settling.get(row.window, row.written), row.written)
    watermark = max([row.written for row in rows] + ([cursor.watermark] if cursor is not None else [since]))
    still = {key: written for key, written in settling.items() if now < _settles_at(key, written, settle)}
    settled = sorted(key for key in settling if key not in still and parse_window_key(key) >= earliest)
    runs: list[WindowRun] = []
    ineligible: list[str] = []
    for key in settled:
        window_id = parse_window_key(key)
        eligible = await eligible_windows_between(
            conn,
            after=window_id - HOUR,
            until=window_id,
            min_agents=config.rule.min_agents,
            min_actions=config.rule.min_actions,
        )
        if eligible:
            runs.append(WindowRun(key=key, content_hash=(await window_content(conn, window_id)).content_hash))
        else:
            ineligible.append(key)
    next_cursor = DiscoveryCursor(
        watermark=watermark,
        seen={row.source_id: row.written for row in rows if row.written >= watermark - overlap},
        settling=still,
    )
    written = (
        f"{len(new)} row(s) written since {_minute(since)} in {len(windows_written)} window(s)"
        if new
        else f"no row written since {_minute(since)}"
    )
    parts = [written]
    if ineligible:
        parts.append(
            f"{', '.join(ineligible)} settled without {config.rule.min_agents}+ agents having "
            f"{config.rule.min_actions}+ actions"
        )
    if still:
        until = max(_settles_at(key, at, settle) for key, at in still.items())
        parts.append(f"{len(still)} window(s) ({', '.join(sorted(still))}) still settling until {_minute(until)}")
    return FreshWindows(windows=runs, cursor=next_cursor, skip_reason="; ".join(parts))


@dg.sensor(
    job=window_chain_job,
    minimum_interval_seconds=60,
    description=(
        "Registers each settled window with enough agents as a partition and runs ingest, validate and "
        "score for it again whenever its content changes (run key = window@content hash)."
    ),
)
def fresh_windows_sensor(context: dg.SensorEvaluationContext, database: DatabaseResource) -> dg.SensorResult:
    config = WindowDiscovery()
    cursor_before, now = DiscoveryCursor.parse(context.cursor), current_time()
    fresh = run_with_connection(
        database.game_url(), lambda conn: find_fresh_windows(conn, cursor=cursor_before, now=now, config=config)
    )
    cursor = fresh.cursor.model_dump_json()
    if not fresh.windows:
        return dg.SensorResult(skip_reason=fresh.skip_reason, cursor=cursor)
    context.log.info(fresh.skip_reason)
    registered = context.instance.has_dynamic_partition
    new_keys = [window.key for window in fresh.windows if not registered(WINDOW_PARTITIONS, window.key)]
    # The cursor moves only together with these requests: the tick stores both or neither.
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(run_key=window.run_key, partition_key=window.key, tags={CONTENT_TAG: window.content_hash})
            for window in fresh.windows
        ],
        dynamic_partitions_requests=[window_partitions.build_add_request(new_keys)] if new_keys else [],
        cursor=cursor,
    )
