"""Scoring many windows in one event loop, for tests and the bench: each window independently, every
failed window reported by name. The platform scores one window per `scored_groups` partition."""

import asyncio
from collections.abc import Sequence
from datetime import datetime

from pydantic import BaseModel, ConfigDict

from babylon_assets.db.connection import AsyncConn
from babylon_assets.errors import BabylonError
from babylon_assets.judging.judge import Judge
from babylon_assets.judging.scoring import WINDOW_DEADLINE_SECONDS, WindowScoring, score_window
from babylon_assets.trajectories.models import window_key

# Windows of one `score_windows` call judged at the same time, at least: as many as the judge takes
# requests at once, so that its limit, not the windows' loading and storing, is what bounds the calls.
MIN_WINDOWS = 2


class WindowFailure(BaseModel):
    model_config = ConfigDict(frozen=True)

    window_id: datetime
    reason: str


class ScoringReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    scored: list[WindowScoring]
    failed: list[WindowFailure]


class WindowsFailedError(BabylonError):
    """Some windows could not be scored; the others were scored and stored. Lists every failure."""

    def __init__(self, report: ScoringReport) -> None:
        self.report = report
        lines = [f"{window_key(failure.window_id)}: {failure.reason}" for failure in report.failed]
        super().__init__(
            f"{len(report.failed)} of {len(report.failed) + len(report.scored)} window(s) could not be scored "
            f"(the other {len(report.scored)} were scored and stored): " + " | ".join(lines)
        )


async def score_windows(
    conn: AsyncConn,
    judge: Judge,
    window_ids: Sequence[datetime],
    *,
    deadline_seconds: float = WINDOW_DEADLINE_SECONDS,
    max_windows: int | None = None,
) -> ScoringReport:
    """Score every window independently, `max_windows` at a time (by default the judge's concurrency, at
    least MIN_WINDOWS); if any failed, raise WindowsFailedError.

    Windows that succeed are stored whatever happens to the others.
    """
    lock = asyncio.Lock()  # one connection: its uses are serialised, the judge calls are not
    slots = asyncio.Semaphore(max_windows or max(MIN_WINDOWS, judge.concurrency))

    async def one(window_id: datetime) -> WindowScoring:
        async with slots:
            return await score_window(conn, judge, window_id, deadline_seconds=deadline_seconds, conn_lock=lock)

    outcomes = await asyncio.gather(*(one(window_id) for window_id in window_ids), return_exceptions=True)
    scored: list[WindowScoring] = []
    failed: list[WindowFailure] = []
    unexpected: BaseException | None = None
    for window_id, outcome in zip(window_ids, outcomes, strict=True):
        if isinstance(outcome, WindowScoring):
            scored.append(outcome)
            continue
        if not isinstance(outcome, Exception):
            raise outcome  # KeyboardInterrupt, cancellation: not a window's failure
        reason = str(outcome) if isinstance(outcome, BabylonError) else f"{type(outcome).__name__}: {outcome}"
        failed.append(WindowFailure(window_id=window_id, reason=reason))
        if not isinstance(outcome, BabylonError) and unexpected is None:
            unexpected = outcome
    report = ScoringReport(scored=scored, failed=failed)
    if failed:
        raise WindowsFailedError(report) from unexpected
    return report
