"""The `scored_groups` asset: one window's accepted trajectories judged and scored in PostgreSQL.

A thin wrapper over `score_window` (tables trajectory_scores, window_scores and the judge's own);
the blocking check `scored_groups_complete` stops training on a window with a trajectory unscored;
the warning check `judge_agreement` flags a judge that disagrees with itself across orders.
"""

import warnings

import dagster as dg
from pydantic import Field

from babylon_assets.db.connection import AsyncConn, run_with_connection
from babylon_assets.errors import BabylonError
from babylon_assets.judging.quality import JudgeQuality, measure_judge_quality
from babylon_assets.judging.scoring import WindowScoring, score_completeness, score_window
from babylon_assets.metadata import markdown_table, score_distribution
from babylon_assets.partitions import window_partitions
from babylon_assets.trajectories.models import parse_window_key
from resources.database import DatabaseResource
from resources.judge import JudgeKind, JudgeResource

OWNERS = ["team:ml-platform"]
# Scores are shown to 3 decimals (the judge's resolution is coarser); costs to a millionth of a dollar.
SCORE_DIGITS = 3
COST_DIGITS = 6
# What each judge kind runs on, as the UI's kind badges.
JUDGE_KINDS: dict[JudgeKind, set[str]] = {
    "ruler": {"openai", "postgres"},
    "outcome": {"python", "postgres"},
    "local-llm": {"llamacpp", "postgres"},
}
SCORED_GROUPS_COMPLETE = "scored_groups_complete"
JUDGE_POOL = "judge"


def scores_table(scoring: WindowScoring) -> str:
    """The window's scores as a markdown table, best first."""
    import pandas as pd  # lazily: see babylon_assets.metadata

    frame = pd.DataFrame(
        {
            "rank": range(1, len(scoring.scores) + 1),
            "agent": [row.agent_id for row in scoring.scores],
            "trajectory": [row.trajectory_id for row in scoring.scores],
            "group": [row.group_index for row in scoring.scores],
            "score": [row.score for row in scoring.scores],
        }
    )
    return markdown_table(frame, floatfmt=".3f")


def score_distribution_table(scoring: WindowScoring) -> str:
    """How the window's scores spread over [0, 1]: trajectories per 0.1 bin."""
    return markdown_table(score_distribution([row.score for row in scoring.scores], count_label="trajectories"))


def scoring_metadata(scoring: WindowScoring) -> dict[str, dg.MetadataValue]:
    return {
        "judge": dg.MetadataValue.text(scoring.judge),
        "rubric_version": dg.MetadataValue.text(scoring.rubric_version),
        "groups": dg.MetadataValue.int(scoring.groups),
        "trajectories": dg.MetadataValue.int(len(scoring.scores)),
        "calls_made": dg.MetadataValue.int(scoring.stats.calls_made),
        "calls_cached": dg.MetadataValue.int(scoring.stats.calls_cached),
        "prompt_tokens": dg.MetadataValue.int(scoring.stats.prompt_tokens),
        "completion_tokens": dg.MetadataValue.int(scoring.stats.completion_tokens),
        "cost_usd": dg.MetadataValue.float(round(scoring.stats.cost_usd, COST_DIGITS)),
        "unpriced_calls": dg.MetadataValue.int(scoring.stats.unpriced_calls),
        "score_min": dg.MetadataValue.float(round(scoring.score_min, SCORE_DIGITS)),
        "score_mean": dg.MetadataValue.float(round(scoring.score_mean, SCORE_DIGITS)),
        "score_max": dg.MetadataValue.float(round(scoring.score_max, SCORE_DIGITS)),
        "top_agent": dg.MetadataValue.text(scoring.top_agent),
        "bottom_agent": dg.MetadataValue.text(scoring.bottom_agent),
        "scores": dg.MetadataValue.md(scores_table(scoring)),
        "score_distribution": dg.MetadataValue.md(score_distribution_table(scoring)),
    }


@dg.asset(
    partitions_def=window_partitions,
    deps=["validated_windows"],
    group_name="judging",
    # The definitions replace these with the configured judge's (see `with_judge_kinds`).
    kinds=JUDGE_KINDS["ruler"],
    owners=OWNERS,
    # Windows judged at once across all runs: the instance's pool limit (1 unless raised with
    # `dagster instance concurrency set judge N`), so a week of queued windows cannot flood the judge.
    pool=JUDGE_POOL,
    description=(
        "Each accepted trajectory of the window scored in [0, 1] by the configured judge, in balanced "
        "groups (tables trajectory_scores, window_scores, judge_*); re-running replaces the window's "
        "scores and costs no judge calls (answers are cached)."
    ),
)
def scored_groups(
    context: dg.AssetExecutionContext, database: DatabaseResource, judge: JudgeResource
) -> dg.MaterializeResult[None]:
    window_id = parse_window_key(context.partition_key)
    built = judge.build_judge()

    async def score_and_measure(conn: AsyncConn) -> tuple[WindowScoring, JudgeQuality]:
        scoring = await score_window(conn, built, window_id, deadline_seconds=judge.window_deadline_seconds)
        return scoring, await measure_judge_quality(conn, window_id, judge=scoring.judge)

    # A sync asset on a loop of its own (asyncio.run), not an async one on Dagster's step loop: LiteLLM
    # starts a background logging task on the loop of its first call, and Dagster closes the step's loop
    # without cancelling what is left on it, so every RULER run ended printing "Task was destroyed but it
    # is pending!" and an "Event loop is closed" traceback.
    scoring, quality = run_with_connection(database.store_url(), score_and_measure, autocommit=True)
    return dg.MaterializeResult(metadata={**scoring_metadata(scoring), **quality_metadata(quality)})


def _tau_value(value: float | None) -> dg.MetadataValue:
    return dg.MetadataValue.null() if value is None else dg.MetadataValue.float(round(value, SCORE_DIGITS))


def quality_metadata(quality: JudgeQuality) -> dict[str, dg.MetadataValue]:
    return {
        "judge_pnl_kendall_tau": _tau_value(quality.score_pnl_tau),
        "permutation_kendall_tau": _tau_value(quality.permutation_tau),
    }


class JudgeAgreementConfig(dg.Config):
    min_permutation_tau: float = Field(
        default=0.5, ge=-1, le=1, description="warn when the judge agrees with itself across orders less than this"
    )


async def _stored_quality(conn: AsyncConn, partition_key: str) -> tuple[float | None, float | None] | None:
    cursor = await conn.execute(
        "SELECT score_pnl_tau, permutation_tau FROM judge_window_quality WHERE window_id = %s",
        (parse_window_key(partition_key),),
    )
    row = await cursor.fetchone()
    return None if row is None else (row[0], row[1])


def with_judge_kinds(asset: dg.AssetsDefinition, kind: JudgeKind) -> dg.AssetsDefinition:
    """scored_groups with the kind badges of the judge that runs it (outcome: no LLM)."""
    return asset.map_asset_specs(lambda spec: spec.replace_attributes(kinds=JUDGE_KINDS[kind]))


with warnings.catch_warnings():
    # Partitioned asset checks are marked preview in Dagster 1.13; without a partitions_def the UI
    # would show one verdict for all windows instead of one per window.
    warnings.simplefilter("ignore", dg.PreviewWarning)

    @dg.asset_check(
        asset=scored_groups,
        name=SCORED_GROUPS_COMPLETE,
        blocking=True,
        partitions_def=window_partitions,
        description="Every accepted trajectory of the window has exactly one score in [0, 1].",
    )
    def scored_groups_check(context: dg.AssetCheckExecutionContext, database: DatabaseResource) -> dg.AssetCheckResult:
        # Sync: dg.asset_check is typed for plain functions in Dagster 1.13.
        window_id = parse_window_key(context.partition_key)
        verdict = run_with_connection(
            database.store_url(), lambda conn: score_completeness(conn, window_id), autocommit=True
        )
        return dg.AssetCheckResult(
            passed=verdict.passed,
            severity=dg.AssetCheckSeverity.ERROR,
            description=(
                f"{verdict.accepted} accepted; {len(verdict.missing)} without a score, "
                f"{len(verdict.unexpected)} scores for trajectories not accepted, "
                f"{len(verdict.out_of_range)} outside [0, 1]"
            ),
            metadata={
                "accepted": verdict.accepted,
                "missing": dg.MetadataValue.json(verdict.missing[:50]),
                "unexpected": dg.MetadataValue.json(verdict.unexpected[:50]),
                "out_of_range": dg.MetadataValue.json(verdict.out_of_range[:50]),
            },
        )

    @dg.asset_check(
        asset=scored_groups,
        name="judge_agreement",
        blocking=False,
        partitions_def=window_partitions,
        description="Warns when the judge's scores of the same group in different orders agree (Kendall tau) "
        "less than the configured threshold; also shows the scores' Kendall tau with the realized P&L.",
    )
    def judge_agreement_check(
        context: dg.AssetCheckExecutionContext, config: JudgeAgreementConfig, database: DatabaseResource
    ) -> dg.AssetCheckResult:
        stored = run_with_connection(database.store_url(), lambda conn: _stored_quality(conn, context.partition_key))
        if stored is None:
            raise BabylonError(f"window {context.partition_key} has no judge quality; materialize scored_groups")
        score_pnl, agreement = stored
        # One order (the outcome judge) has nothing to disagree with.
        passed = agreement is None or agreement >= config.min_permutation_tau
        return dg.AssetCheckResult(
            passed=passed,
            severity=dg.AssetCheckSeverity.WARN,
            description=(
                "one order per group, agreement not measurable"
                if agreement is None
                else f"permutation Kendall tau {agreement:.2f} (threshold {config.min_permutation_tau:.2f})"
            ),
            metadata={"permutation_kendall_tau": _tau_value(agreement), "judge_pnl_kendall_tau": _tau_value(score_pnl)},
        )
