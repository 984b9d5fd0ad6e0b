"""Judge quality per window: does the judge rank like the market did, and does it agree with itself
across the orders it was shown? Kendall tau within each group, averaged over the window's groups."""

import itertools
import math
from collections.abc import Sequence
from datetime import datetime

from pydantic import BaseModel, ConfigDict

from babylon_assets.db.connection import AsyncConn
from babylon_assets.trajectories.reader import load_accepted


class JudgeQuality(BaseModel):
    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    window_id: datetime
    judge: str
    # Mean over groups of tau(final scores, realized P&L); None when no group has varying values.
    score_pnl_tau: float | None
    # Mean over groups and pairs of permutations of tau(scores in one order, in the other); None with one order.
    permutation_tau: float | None
    groups: int


def _tau(first: Sequence[float], second: Sequence[float]) -> float | None:
    if len(first) < 2 or len(set(first)) < 2 or len(set(second)) < 2:
        return None
    from scipy import stats  # imported where it is used: the definitions load this module

    value = float(stats.kendalltau(first, second).statistic)
    return None if math.isnan(value) else value


def _mean(values: Sequence[float | None]) -> float | None:
    measured = [value for value in values if value is not None]
    return sum(measured) / len(measured) if measured else None


async def measure_judge_quality(conn: AsyncConn, window_id: datetime, *, judge: str) -> JudgeQuality:
    """Measure from the window's stored scores and store the result in judge_window_quality."""
    # The window's validated trajectories: the ones its scores are for, with their realized P&L.
    pnl = {t.trajectory_id: t.row.total_reward for t in await load_accepted(conn, window_id)}
    cursor = await conn.execute(
        "SELECT group_index, trajectory_id, score FROM trajectory_scores WHERE window_id = %s ORDER BY 1, 2",
        (window_id,),
    )
    final: dict[int, list[tuple[str, float]]] = {}
    for group_index, trajectory_id, score in await cursor.fetchall():
        final.setdefault(group_index, []).append((trajectory_id, score))
    cursor = await conn.execute(
        "SELECT group_index, permutation, trajectory_id, score FROM judge_permutation_scores "
        "WHERE window_id = %s ORDER BY 1, 2, 3",
        (window_id,),
    )
    orders: dict[int, dict[int, dict[str, float]]] = {}
    for group_index, permutation, trajectory_id, score in await cursor.fetchall():
        orders.setdefault(group_index, {}).setdefault(permutation, {})[trajectory_id] = score
    score_pnl: list[float | None] = []
    agreement: list[float | None] = []
    for group_index, members in final.items():
        score_pnl.append(_tau([score for _, score in members], [pnl[trajectory_id] for trajectory_id, _ in members]))
        by_order = list(orders.get(group_index, {}).values())
        for one, other in itertools.combinations(by_order, 2):
            ids = sorted(one)
            agreement.append(_tau([one[i] for i in ids], [other[i] for i in ids]))
    quality = JudgeQuality(
        window_id=window_id,
        judge=judge,
        score_pnl_tau=_mean(score_pnl),
        permutation_tau=_mean(agreement),
        groups=len(final),
    )
    await conn.execute(
        "INSERT INTO judge_window_quality (window_id, judge, score_pnl_tau, permutation_tau, groups) "
        "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (window_id) DO UPDATE SET judge = EXCLUDED.judge, "
        "score_pnl_tau = EXCLUDED.score_pnl_tau, permutation_tau = EXCLUDED.permutation_tau, "
        "groups = EXCLUDED.groups, measured_at = now()",
        (window_id, judge, quality.score_pnl_tau, quality.permutation_tau, quality.groups),
    )
    return quality
