"""Judge quality per window: Kendall tau of the scores with the realized P&L and across permutations."""

import asyncio
from datetime import datetime

import dagster as dg
import pytest

from babylon_assets.db.connection import DEFAULT_SCHEMA, AsyncConn, connect_async, store_conninfo
from babylon_assets.judging.assets import JudgeAgreementConfig, judge_agreement_check, scored_groups
from babylon_assets.judging.outcome_judge import OutcomeJudge
from babylon_assets.judging.quality import measure_judge_quality
from babylon_assets.judging.scoring import score_window
from babylon_assets.trajectories.models import window_key
from resources.database import DatabaseResource
from resources.judge import JudgeResource
from tests.support.judge_server import JudgeRequest, JudgeServer, Reply, by_content, scores_reply
from tests.test_judge import conn, ruler_judge, seeded_windows  # noqa: F401  (conn: the fixture)


def by_position(request: JudgeRequest) -> Reply:
    """A judge that only looks at where a trajectory is shown: the first gets the best score."""
    return scores_reply({i: 1 - int(i) / 10 for i in request.trajectories})


async def _stored(connection: AsyncConn, window_id: datetime) -> tuple[float | None, float | None]:
    cursor = await connection.execute(
        "SELECT score_pnl_tau, permutation_tau FROM judge_window_quality WHERE window_id = %s", (window_id,)
    )
    row = await cursor.fetchone()
    assert row is not None
    return row[0], row[1]


async def test_a_consistent_judge_agrees_with_itself_and_a_position_biased_one_does_not(
    database_url: str,
    conn: AsyncConn,  # noqa: F811
) -> None:
    [window_id] = await seeded_windows(database_url, conn, agents=5)
    with JudgeServer(by_content) as server:
        await score_window(conn, ruler_judge(server, permutations=2), window_id)
        consistent = await measure_judge_quality(conn, window_id, judge="ruler")
    assert consistent.permutation_tau == pytest.approx(1.0) and consistent.groups == 1
    assert consistent.score_pnl_tau is not None and -1 <= consistent.score_pnl_tau <= 1
    assert await _stored(conn, window_id) == pytest.approx((consistent.score_pnl_tau, 1.0))

    with JudgeServer(by_position) as server:
        await score_window(conn, ruler_judge(server, permutations=2, judge_model="openai/biased"), window_id)
        biased = await measure_judge_quality(conn, window_id, judge="ruler")
    # Every trajectory sits at a different position in the two orders, so a position-only judge contradicts itself.
    assert biased.permutation_tau is not None and biased.permutation_tau < 0.5


async def test_the_outcome_judge_ranks_like_the_market(database_url: str, conn: AsyncConn) -> None:  # noqa: F811
    [window_id] = await seeded_windows(database_url, conn, agents=5)
    await score_window(conn, OutcomeJudge(), window_id)
    quality = await measure_judge_quality(conn, window_id, judge="outcome")
    assert quality.permutation_tau is None  # one order: nothing to agree with
    assert quality.score_pnl_tau is not None and quality.score_pnl_tau > 0.5


def test_scored_groups_shows_the_taus_and_the_agreement_check_is_a_warning(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def seed() -> datetime:
        async with await connect_async(store_conninfo(database_url, DEFAULT_SCHEMA), autocommit=True) as connection:
            [window_id] = await seeded_windows(database_url, connection, agents=5)
            return window_id

    window_id = asyncio.run(seed())
    monkeypatch.setenv("DATABASE_URL", database_url)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("windows", [window_key(window_id)])
        result = dg.materialize(
            [scored_groups, judge_agreement_check],
            resources={"database": DatabaseResource(), "judge": JudgeResource(kind="outcome")},
            partition_key=window_key(window_id),
            instance=instance,
            run_config=dg.RunConfig(
                ops={"scored_groups_judge_agreement": JudgeAgreementConfig(min_permutation_tau=0.9)}
            ),
            raise_on_error=False,
        )
    [materialization] = result.get_asset_materialization_events()
    metadata = materialization.materialization.metadata
    tau = metadata["judge_pnl_kendall_tau"]
    assert isinstance(tau, dg.FloatMetadataValue) and tau.value is not None and tau.value > 0.5
    assert metadata["permutation_kendall_tau"] == dg.MetadataValue.null()
    [check] = result.get_asset_check_evaluations()
    assert check.passed and check.severity == dg.AssetCheckSeverity.WARN
