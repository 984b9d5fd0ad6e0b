"""The window assets: a window's rows ingested from the game as a snapshot, then validated with a stored
verdict per row.

Both are thin wrappers: the ingest and the validator in this package do the work and write the
platform's store; the assets only report what happened as metadata and gate the window downstream.
"""

import warnings
from datetime import datetime

import dagster as dg

from babylon_assets.db.connection import AsyncConn, connect_async, run_with_connection
from babylon_assets.errors import BabylonError
from babylon_assets.metadata import counts_by, markdown_table
from babylon_assets.partitions import window_partitions
from babylon_assets.trajectories.config import WindowConfig
from babylon_assets.trajectories.ingest import IngestReport, ingest_window
from babylon_assets.trajectories.models import Rejection, WindowLoad, parse_window_key
from babylon_assets.trajectories.validation import validate_window
from resources.database import DatabaseResource

OWNERS = ["team:data-platform"]
ENOUGH_VALID_AGENTS = "enough_valid_agents"


class EmptyWindowError(BabylonError):
    """A registered window has no rows in the game's table: someone deleted them, or the partition is wrong."""


async def _ingest(game: AsyncConn, store_url: str, window_id: datetime) -> IngestReport:
    async with await connect_async(store_url) as store:
        return await ingest_window(game, store, window_id)


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


@dg.asset(
    partitions_def=window_partitions,
    group_name="trajectories",
    kinds={"postgres"},
    owners=OWNERS,
    description=(
        "One window's rows of the game's `trajectories` and its market outcomes, landed as an immutable "
        "snapshot in the platform's schema (tables `window_snapshots`, `snapshot_rows`); a new snapshot "
        "only when the content changed."
    ),
)
def raw_trajectories(context: dg.AssetExecutionContext, database: DatabaseResource) -> dg.MaterializeResult[None]:
    window_id = parse_window_key(context.partition_key)
    store_url = database.store_url()
    report = run_with_connection(database.game_url(), lambda game: _ingest(game, store_url, window_id))
    if report.rows == 0:
        gone = f" ({report.rows_gone} ingested before are gone; the empty snapshot is stored)" if report.changed else ""
        raise EmptyWindowError(
            f"window {context.partition_key} has no rows in the game's trajectories{gone}; record or simulate "
            "data for it, or delete the partition"
        )
    return dg.MaterializeResult(
        metadata={
            "rows_read": report.rows,
            "changed_since_last_snapshot": report.changed,
            "rows_added": report.rows_added,
            "rows_changed": report.rows_changed,
            "rows_gone": report.rows_gone,
            "snapshot_version": report.version,
            "outcome_source": report.outcome_source,
            "bytes": dg.MetadataValue.int(report.bytes),
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
    load = run_with_connection(
        database.store_url(), lambda conn: validate_window(conn, window_id, min_actions=config.min_actions)
    )
    return dg.MaterializeResult(
        metadata={
            "accepted": len(load.accepted),
            "rejected": len(load.rejected),
            "rejected_by_reason": dg.MetadataValue.md(rejections_table(load.rejected)),
            "distinct_agents": load.distinct_agents,
        },
        check_results=[enough_agents_verdict(load, config.min_agents)],
    )
