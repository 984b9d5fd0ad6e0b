"""`babylon verify`: is there enough valid data in the game's database to train on?

It reads the game's tables only (nothing is ingested or written) and counts agents after validation, in
memory, so a window that is "ready" here does not fall apart when the pipeline validates it.
"""

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from babylon_assets.db.connection import AsyncConn, redact_url, resolve_database_url, run_with_connection
from babylon_assets.trajectories.game import (
    UnwindowedRow,
    discover_windows,
    read_window_rows,
    unwindowed_rows,
)
from babylon_assets.trajectories.models import Rejection, WindowStats, window_key
from babylon_assets.trajectories.reader import stats_of, validate_rows

AGENT_THRESHOLDS = (2, 3, 5, 8)
SHOWN_WINDOWS = 5
SHOWN_REJECTIONS = 3


class ThresholdCount(BaseModel):
    model_config = ConfigDict(frozen=True)

    agents: int
    windows_before_validation: int
    windows_valid: int


class VerifyReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    lookback_hours: int
    min_agents: int
    min_actions: int
    min_windows: int
    thresholds: list[ThresholdCount]
    ready_windows: list[WindowStats]  # newest first
    # Windows that had min_agents agents before validation but not after: what rejections cost.
    lost_windows: list[WindowStats]
    rejections: list[Rejection]  # a sample from the lookback's windows
    rejected_rows: int
    # Rows whose windowId is not a window key belong to no window: a sample, and how many there are.
    unwindowed: list[UnwindowedRow]
    unwindowed_rows: int

    @property
    def ready(self) -> bool:
        return len(self.ready_windows) >= self.min_windows

    @property
    def simulate_command(self) -> str:
        return f"babylon simulate --agents {self.min_agents} --windows {self.min_windows}"


async def build_report(
    conn: AsyncConn,
    *,
    lookback_hours: int,
    min_agents: int,
    min_actions: int,
    min_windows: int,
    now: datetime,
) -> VerifyReport:
    floor = min(min_agents, *AGENT_THRESHOLDS)
    candidates = await discover_windows(
        conn, lookback_hours=lookback_hours, min_agents=floor, min_actions=min_actions, now=now
    )
    valid_agents: dict[datetime, int] = {}
    ready: list[WindowStats] = []
    lost: list[WindowStats] = []
    rejections: list[Rejection] = []
    rejected_rows = 0
    for candidate in candidates:
        rows = await read_window_rows(conn, candidate.window_id)
        load = validate_rows(rows, candidate.window_id, snapshot_id=None, min_actions=min_actions)
        valid_agents[candidate.window_id] = load.distinct_agents
        rejected_rows += len(load.rejected)
        rejections.extend(load.rejected[: SHOWN_REJECTIONS - len(rejections)])
        if load.distinct_agents >= min_agents:
            ready.append(stats_of(load))
        elif candidate.agents >= min_agents:
            lost.append(stats_of(load))
    unwindowed, unwindowed_count = await unwindowed_rows(conn, SHOWN_REJECTIONS)
    thresholds = [
        ThresholdCount(
            agents=threshold,
            windows_before_validation=sum(1 for candidate in candidates if candidate.agents >= threshold),
            windows_valid=sum(1 for count in valid_agents.values() if count >= threshold),
        )
        for threshold in AGENT_THRESHOLDS
    ]
    return VerifyReport(
        lookback_hours=lookback_hours,
        min_agents=min_agents,
        min_actions=min_actions,
        min_windows=min_windows,
        thresholds=thresholds,
        ready_windows=ready,
        lost_windows=lost,
        rejections=rejections,
        rejected_rows=rejected_rows,
        unwindowed=unwindowed,
        unwindowed_rows=unwindowed_count,
    )


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    # First column left-aligned (labels), the numbers right-aligned.
    return [
        "  "
        + "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in (header, *rows)
    ]


def _pnl(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}"


def render_report(report: VerifyReport) -> str:
    lines = [
        f"windows in the last {report.lookback_hours} h, counting agents with >= {report.min_actions} steps:",
        *_table(
            ("agents", "windows (raw)", "windows (valid)"),
            [
                (
                    f"{count.agents}+",
                    str(count.windows_before_validation),
                    str(count.windows_valid),
                )
                for count in report.thresholds
            ],
        ),
    ]
    if report.ready_windows:
        lines.append(f"most recent windows with >= {report.min_agents} valid agents:")
        lines.extend(
            _table(
                ("window (UTC)", "agents", "trajectories", "rejected", "steps", "pnl min", "pnl mean", "pnl max"),
                [
                    (
                        window_key(stats.window_id),
                        str(stats.agents),
                        str(stats.trajectories),
                        str(stats.rejected),
                        str(stats.actions),
                        _pnl(stats.pnl_min),
                        _pnl(stats.pnl_mean),
                        _pnl(stats.pnl_max),
                    )
                    for stats in report.ready_windows[:SHOWN_WINDOWS]
                ],
            )
        )
    if report.rejected_rows:
        lines.append(f"{report.rejected_rows} row(s) in these windows were rejected, e.g.:")
        lines.extend(
            f"  row {rejection.source_id} ({rejection.trajectory_id}): {rejection.reason}"
            for rejection in report.rejections
        )
    if report.unwindowed_rows:
        lines.append(
            f"{report.unwindowed_rows} row(s) have a windowId that is not a window key (YYYY-MM-DDTHH:00, UTC) and "
            "belong to no window; set it to the UTC hour of the row's startTime, or to NULL (the hour of startTime "
            "is then used), e.g.:"
        )
        lines.extend(
            f"  row {row.source_id} ({row.trajectory_id}): windowId {row.window_id!r}" for row in report.unwindowed
        )
    count = len(report.ready_windows)
    if report.ready:
        lines.append(
            f"READY FOR TRAINING: {count} window(s) have >= {report.min_agents} valid agents "
            f"({report.min_windows} required)"
        )
        return "\n".join(lines)
    lines.append(
        f"NOT READY: {count} of the {report.min_windows} required window(s) have >= {report.min_agents} valid agents "
        f"with >= {report.min_actions} steps in the last {report.lookback_hours} h"
    )
    if report.lost_windows:
        keys = ", ".join(window_key(stats.window_id) for stats in report.lost_windows[:SHOWN_WINDOWS])
        lines.append(
            f"{len(report.lost_windows)} window(s) had enough agents before validation but not after ({keys}): "
            "fix the rejected rows above"
        )
    lines.append(f"generate simulated data with: {report.simulate_command}")
    return "\n".join(lines)


def run_verify(*, lookback_hours: int, min_agents: int, min_actions: int, min_windows: int, now: datetime) -> int:
    """Print the report for the game's database at `now`; 0 when ready for training, else 1."""
    url = resolve_database_url()
    report = run_with_connection(
        url,
        lambda conn: build_report(
            conn,
            lookback_hours=lookback_hours,
            min_agents=min_agents,
            min_actions=min_actions,
            min_windows=min_windows,
            now=now,
        ),
    )
    print(f"database: {redact_url(url)}")
    print(render_report(report))
    return 0 if report.ready else 1
