"""The window assets: a window's rows as recorded, then validated with a stored verdict per row.

Both are thin wrappers: the reader and the validator in this package do the work and write
PostgreSQL; the assets only report what happened as metadata and gate the window downstream.
"""

import asyncio
import warnings
from datetime import datetime, timedelta

import dagster as dg
from pydantic import BaseModel, ConfigDict, NonNegativeInt

from babylon_assets.db.connection import Conn, connect, connect_async
from babylon_assets.errors import BabylonError
from babylon_assets.metadata import counts_by, markdown_table
from babylon_assets.partitions import window_partitions
from babylon_assets.trajectories.config import WindowConfig
from babylon_assets.trajectories.models import Rejection, WindowLoad, parse_window_key
from babylon_assets.trajectories.validation import validate_window
from resources.database import DatabaseResource

OWNERS = ["team:data-platform"]
ENOUGH_VALID_AGENTS = "enough_valid_agents"


class EmptyWindowError(BabylonError):
    """A registered window has no stored rows: someone deleted them, or the partition is wrong."""


class RawWindowSummary(BaseModel):
    model_config = ConfigDict(frozen=True)

    rows: NonNegativeInt
    agents: NonNegativeInt
    steps: NonNegativeInt
    bytes: NonNegativeInt


def raw_window_summary(conn: Conn, window_id: datetime) -> RawWindowSummary:
    """Counts over a window's rows exactly as stored, before any validation."""
    row = conn.execute(
        """
        SELECT count(*),
               count(DISTINCT agent_id),
               -- A steps value that is not an array is recorder text the validator will reject.
               coalesce(sum(CASE WHEN jsonb_typeof(steps) = 'array' THEN jsonb_array_length(steps) END), 0),
               coalesce(sum(pg_column_size(t.*)), 0)
        FROM trajectories AS t
        WHERE window_id >= %s AND window_id < %s
        """,
        # The reader's rule: a row belongs to the UTC hour its window id falls in, on the hour or not.
        (window_id, window_id + timedelta(hours=1)),
    ).fetchone()
    assert row is not None  # an aggregate without GROUP BY always returns one row
    return RawWindowSummary(rows=row[0], agents=row[1], steps=row[2], bytes=row[3])


def rejections_table(rejected: list[Rejection]) -> str:
    """Rejected rows counted by reason, as a markdown table (most frequent first)."""
    if not rejected:
        return "No rejected trajectories."
    return markdown_table(
        counts_by([rejection.reason for rejection in rejected], label="reason", count_label="trajectories")
    )


def enough_agents_verdict(load: WindowLoad, min_agents: int) -> dg.AssetCheckResult:
    """Passes when at least `min_agents` distinct agents still have a valid trajectory."""
    agents = load.distinct_agents
    passed = agents >= min_agents
    comparison = ">=" if passed else "<"
    return dg.AssetCheckResult(
        check_name=ENOUGH_VALID_AGENTS,
        passed=passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=f"{agents} valid agents {comparison} {min_agents}",
        metadata={"distinct_agents": agents, "min_agents": min_agents},
    )


async def _validate(url: str, window_id: datetime, min_actions: int) -> WindowLoad:
    async with await connect_async(url) as conn:
        return await validate_window(conn, window_id, min_actions=min_actions)


@dg.asset(
    partitions_def=window_partitions,
    group_name="trajectories",
    kinds={"postgres"},
    owners=OWNERS,
    description="One window's trajectories as the game recorded them (table `trajectories`), unvalidated.",
)
def raw_trajectories(context: dg.AssetExecutionContext, database: DatabaseResource) -> dg.MaterializeResult[None]:
    window_id = parse_window_key(context.partition_key)
    with connect(database.url()) as conn:
        summary = raw_window_summary(conn, window_id)
    if summary.rows == 0:
        raise EmptyWindowError(
            f"window {context.partition_key} has no stored trajectories; record or simulate data for it, "
            "or delete the partition"
        )
    return dg.MaterializeResult(
        metadata={
            "rows": summary.rows,
            "agents": summary.agents,
            "steps": summary.steps,
            "bytes": dg.MetadataValue.int(summary.bytes),
        }
    )


with warnings.catch_warnings():
    # Partitioned check specs are marked preview in Dagster 1.13; without a partitions_def the UI
    # would show one verdict for all windows instead of one per window.
    warnings.simplefilter("ignore", dg.PreviewWarning)
    _enough_valid_agents = dg.AssetCheckSpec(
        ENOUGH_VALID_AGENTS,
        asset="validated_windows",
        blocking=True,
        partitions_def=window_partitions,
        description="At least min_agents distinct agents keep a valid trajectory; otherwise nothing downstream runs.",
    )


@dg.asset(
    partitions_def=window_partitions,
    deps=[raw_trajectories],
    check_specs=[_enough_valid_agents],
    group_name="trajectories",
    kinds={"postgres"},
    owners=OWNERS,
    description=(
        "Each trajectory of the window accepted or rejected with its reason "
        "(tables `trajectory_validations`, `window_validations`); re-running replaces the verdicts."
    ),
)
def validated_windows(
    context: dg.AssetExecutionContext, config: WindowConfig, database: DatabaseResource
) -> dg.MaterializeResult:  # type: ignore[type-arg]
    # Bare MaterializeResult: with check outputs, Dagster 1.13.27 recognises only the unparametrised
    # class as a result annotation (MaterializeResult[None] raises "Expected Tuple annotation").
    window_id = parse_window_key(context.partition_key)
    load = asyncio.run(_validate(database.url(), window_id, config.min_actions))
    return dg.MaterializeResult(
        metadata={
            "accepted": len(load.accepted),
            "rejected": len(load.rejected),
            "rejected_by_reason": dg.MetadataValue.md(rejections_table(load.rejected)),
            "distinct_agents": load.distinct_agents,
        },
        check_results=[enough_agents_verdict(load, config.min_agents)],
    )
