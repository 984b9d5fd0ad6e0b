"""Scoring windows: split each into groups, judge the groups, store the scores.

`score_window` is what the `scored_groups` asset runs per partition. Re-scoring a window replaces its
previous results in one transaction; a failed attempt leaves them in place and records its reason in
`judge_failures`.
"""

import asyncio
import hashlib
import json
from collections.abc import Sequence
from datetime import datetime
from statistics import fmean

from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, NonNegativeInt

from babylon_assets.db.connection import AsyncConn
from babylon_assets.db.locks import WindowLock, lock_window
from babylon_assets.errors import BabylonError
from babylon_assets.judging.cache import AnswerCache
from babylon_assets.judging.groups import Member, split_groups
from babylon_assets.judging.judge import (
    CallStats,
    GroupScoring,
    Judge,
    JudgeFailedError,
    JudgeGroup,
    UnitScore,
    total_stats,
)
from babylon_assets.trajectories.models import Trajectory, window_key
from babylon_assets.trajectories.reader import AcceptedRow, ValidatedContent, load_accepted, validated_content

# How long judging one window may take, all its groups, orders and retries together (a judge that
# never answers would otherwise hold the window for attempts x timeout per order).
WINDOW_DEADLINE_SECONDS = 600.0


class TrajectoryScore(BaseModel):
    model_config = ConfigDict(frozen=True)

    trajectory_id: str
    agent_id: str
    group_index: NonNegativeInt
    score: UnitScore


class WindowScoring(BaseModel):
    """What scoring one window did and found; the asset's metadata."""

    model_config = ConfigDict(frozen=True)

    window_id: datetime
    judge: str
    rubric_version: str
    groups: NonNegativeInt
    stats: CallStats
    score_min: UnitScore
    score_mean: UnitScore
    score_max: UnitScore
    top_agent: str
    bottom_agent: str
    # Best first.
    scores: list[TrajectoryScore]


class NothingToScoreError(BabylonError):
    """A window with no accepted trajectory has nothing to score."""


def _require_autocommit(conn: AsyncConn) -> None:
    if not conn.autocommit:
        raise ValueError(
            "scoring needs an autocommit connection (connect_async(url, autocommit=True)): judge answers "
            "are committed to the cache as they arrive, and results in transactions of their own"
        )


async def score_window(
    conn: AsyncConn,
    judge: Judge,
    window_id: datetime,
    *,
    deadline_seconds: float = WINDOW_DEADLINE_SECONDS,
    conn_lock: asyncio.Lock | None = None,
) -> WindowScoring:
    """Score the window's accepted trajectories and store the scores; raises BabylonError on failure.

    Windows scored concurrently over one connection pass the same `conn_lock`: it serialises the
    connection's uses, not the judge's calls."""
    _require_autocommit(conn)
    return await _score_window(conn, conn_lock or asyncio.Lock(), judge, window_id, deadline_seconds)


async def _score_window(
    conn: AsyncConn, lock: asyncio.Lock, judge: Judge, window_id: datetime, deadline_seconds: float
) -> WindowScoring:
    key = window_key(window_id)
    try:
        async with lock:
            content = await validated_content(conn, window_id)
        if not content.rows:
            raise NothingToScoreError(f"window {key} has no accepted trajectories to score; validate it again")
        row_groups = split_groups(content.rows, judge.group_size)
        group_keys = _group_keys(judge, content.outcomes_hash, row_groups)
        hits: dict[int, GroupScoring] = {}
        if group_keys:
            async with lock:
                hits = await _cached_groups(conn, group_keys)
        if group_keys and len(hits) == len(group_keys):
            # Every group judged before from the same content: nothing to load, parse or show.
            scorings = [hits[index] for index in range(len(row_groups))]
            scoring = _summarize(judge, window_id, row_groups, scorings)
            async with lock:
                await _store(conn, window_id, content.snapshot_id, row_groups, scorings, scoring, {})
            return scoring

        groups = await _parsed_groups(conn, lock, judge, window_id, content, row_groups)
        cache = AnswerCache(conn, lock)
        try:
            async with asyncio.timeout(deadline_seconds):
                results = await asyncio.gather(
                    *(
                        _known(hits[index])
                        if index in hits
                        else judge.score_group(
                            JudgeGroup(
                                window_id=window_id,
                                group_index=index,
                                rows=rows,
                                trajectories=trajectories,
                                outcomes=content.outcomes,
                            ),
                            cache,
                        )
                        for index, (rows, trajectories) in enumerate(zip(row_groups, groups, strict=True))
                    ),
                    return_exceptions=True,
                )
        except TimeoutError:
            raise JudgeFailedError(
                f"window {key}: the judge did not finish within {deadline_seconds:g} s (window_deadline_seconds); "
                "answers obtained are cached. Check that the judge answers, or raise the deadline, and score again"
            ) from None

        failures = [result for result in results if isinstance(result, BaseException)]
        if failures:
            first = failures[0]
            if len(failures) == 1 or not isinstance(first, BabylonError):
                raise first
            raise JudgeFailedError(f"{first} (and {len(failures) - 1} more group(s) of window {key} failed)")
        scorings = [result for result in results if isinstance(result, GroupScoring)]
        scoring = _summarize(judge, window_id, row_groups, scorings)
        fresh = {group_keys[index]: result for index, result in enumerate(scorings) if group_keys and index not in hits}
        async with lock:
            await _store(conn, window_id, content.snapshot_id, row_groups, scorings, scoring, fresh)
        return scoring
    except BabylonError as error:
        async with lock:
            await conn.execute(
                """
                INSERT INTO judge_failures (window_id, judge, reason) VALUES (%s, %s, %s)
                ON CONFLICT (window_id) DO UPDATE
                SET judge = EXCLUDED.judge, reason = EXCLUDED.reason, failed_at = now()
                """,
                (window_id, judge.name, str(error)),
            )
        raise


async def _parsed_groups(
    conn: AsyncConn,
    lock: asyncio.Lock,
    judge: Judge,
    window_id: datetime,
    content: ValidatedContent,
    row_groups: list[list[AcceptedRow]],
) -> list[list[Trajectory]]:
    """The groups' rows loaded and parsed, for a judge that reads steps; empty groups for one that does not."""
    if not judge.reads_steps:
        return [[] for _ in row_groups]
    async with lock:
        trajectories = await load_accepted(conn, window_id)
    groups = split_groups(trajectories, judge.group_size)
    if _members(groups) != _members(row_groups) or trajectories[0].snapshot_id != content.snapshot_id:
        raise BabylonError(
            f"window {window_key(window_id)} was validated again while it was being scored; score it again"
        )
    return groups


async def _known(scoring: GroupScoring) -> GroupScoring:
    return scoring


def _members(groups: Sequence[Sequence[Member]]) -> list[list[str]]:
    return [[member.trajectory_id for member in group] for group in groups]


def _group_keys(judge: Judge, outcomes_hash: str, groups: list[list[AcceptedRow]]) -> list[str]:
    """Each group's key in judge_group_cache (see migration 0011); none for a judge without a settings key."""
    settings_key = judge.settings_key
    if settings_key is None:
        return []
    return [
        hashlib.sha256(
            json.dumps(
                [
                    judge.name,
                    judge.rubric_version,
                    settings_key,
                    outcomes_hash,
                    [[row.trajectory_id, row.content_hash] for row in group],
                ]
            ).encode()
        ).hexdigest()
        for group in groups
    ]


async def _cached_groups(conn: AsyncConn, group_keys: list[str]) -> dict[int, GroupScoring]:
    """The groups (by index) judged before whose answers are all still in judge_cache as they were: one query."""
    async with conn.cursor() as cur:
        await cur.execute(
            """
            SELECT k.ordinality - 1, g.scoring::text
            FROM unnest(%s::text[]) WITH ORDINALITY AS k(group_key, ordinality)
            JOIN judge_group_cache g ON g.group_key = k.group_key
            WHERE g.answers_hash = judge_answers_hash(g.cache_keys)
            """,
            (group_keys,),
        )
        found = await cur.fetchall()
    hits: dict[int, GroupScoring] = {}
    for index, text in found:
        stored = GroupScoring.model_validate_json(text)
        # Reused, each of its answers counts as served from the cache, as when its calls hit one by one.
        calls = len({p.cache_key for p in stored.permutations})
        hits[index] = stored.model_copy(update={"group_index": index, "stats": CallStats(calls_cached=calls)})
    return hits


def _summarize(
    judge: Judge, window_id: datetime, groups: Sequence[Sequence[Member]], scorings: list[GroupScoring]
) -> WindowScoring:
    rows: list[TrajectoryScore] = []
    for group, result in zip(groups, scorings, strict=True):
        expected = sorted(trajectory.trajectory_id for trajectory in group)
        if sorted(result.scores) != expected:
            # The judge contract: every trajectory of the group scored exactly once.
            raise JudgeFailedError(
                f"window {window_key(window_id)}: judge {judge.name} scored {sorted(result.scores)} "
                f"for group {result.group_index} of {expected}"
            )
        rows.extend(
            TrajectoryScore(
                trajectory_id=trajectory.trajectory_id,
                agent_id=trajectory.agent_id,
                group_index=result.group_index,
                score=result.scores[trajectory.trajectory_id],
            )
            for trajectory in group
        )
    rows.sort(key=lambda row: (-row.score, row.trajectory_id))
    stats: CallStats = total_stats([result.stats for result in scorings])
    values = [row.score for row in rows]
    return WindowScoring(
        window_id=window_id,
        judge=judge.name,
        rubric_version=judge.rubric_version,
        groups=len(groups),
        stats=stats,
        score_min=min(values),
        score_mean=fmean(values),
        score_max=max(values),
        top_agent=rows[0].agent_id,
        bottom_agent=rows[-1].agent_id,
        scores=rows,
    )


async def _store(
    conn: AsyncConn,
    window_id: datetime,
    snapshot_id: int,
    groups: Sequence[Sequence[Member]],
    scorings: list[GroupScoring],
    scoring: WindowScoring,
    fresh: dict[str, GroupScoring],
) -> None:
    """Replace the window's scores, split, permutation scores and stats, and add the groups judged `fresh`
    to the group cache, in one transaction sent as one pipeline: the statements go out together instead of
    one round trip each."""
    ids = [row.trajectory_id for row in scoring.scores]
    cacheable = {
        group_key: (sorted(keys), result)
        for group_key, result in fresh.items()
        if (keys := {p.cache_key for p in result.permutations if p.cache_key is not None})
        and len(keys) == len({p.permutation for p in result.permutations})
    }
    permutation_rows = [
        (group.group_index, p.permutation, p.trajectory_id, p.position, p.score, p.explanation, p.cache_key)
        for group in scorings
        for p in group.permutations
    ]
    async with conn.pipeline(), conn.transaction(), conn.cursor() as cur:
        # Two runs storing the same window at once would collide on trajectory_scores' key.
        await lock_window(cur, WindowLock.SCORES, window_id)
        # The window's earlier results in one statement (judge_groups' deletion cascades to the
        # permutation scores at its end).
        await cur.execute(
            """
            WITH groups AS (DELETE FROM judge_groups WHERE window_id = %(window)s),
                 scores AS (DELETE FROM trajectory_scores WHERE window_id = %(window)s OR trajectory_id = ANY(%(ids)s)),
                 summary AS (DELETE FROM window_scores WHERE window_id = %(window)s),
                 stats AS (DELETE FROM judge_window_stats WHERE window_id = %(window)s)
            DELETE FROM judge_failures WHERE window_id = %(window)s
            """,
            {"window": window_id, "ids": ids},
        )
        # Each table's rows go in one statement, as arrays (judge_groups' trajectory_ids as JSON: unnest
        # would flatten an array of arrays).
        await cur.execute(
            """
            INSERT INTO judge_groups (window_id, group_index, trajectory_ids)
            SELECT %s, g.ordinality - 1, ARRAY(SELECT jsonb_array_elements_text(g.ids))
            FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS g(ids, ordinality)
            """,
            (window_id, Jsonb([[t.trajectory_id for t in group] for group in groups])),
        )
        await cur.execute(
            """
            INSERT INTO judge_permutation_scores
                (window_id, group_index, permutation, trajectory_id, position, score, explanation, cache_key)
            SELECT %s, * FROM unnest(%s::int[], %s::int[], %s::text[], %s::int[], %s::float8[], %s::text[], %s::text[])
            """,
            (window_id, *_columns(permutation_rows, 7)),
        )
        await cur.execute(
            """
            INSERT INTO trajectory_scores (trajectory_id, window_id, group_index, score, judge, rubric_version)
            SELECT t.trajectory_id, %s, t.group_index, t.score, %s, %s
            FROM unnest(%s::text[], %s::int[], %s::float8[]) AS t(trajectory_id, group_index, score)
            """,
            (
                window_id,
                scoring.judge,
                scoring.rubric_version,
                *_columns([(row.trajectory_id, row.group_index, row.score) for row in scoring.scores], 3),
            ),
        )
        await cur.execute(
            """
            INSERT INTO window_scores (window_id, judge, rubric_version, groups, trajectories, snapshot_id)
            VALUES (%s, %s, %s, %s, %s, %s)
            """,
            (window_id, scoring.judge, scoring.rubric_version, scoring.groups, len(scoring.scores), snapshot_id),
        )
        if cacheable:
            await cur.execute(
                """
                INSERT INTO judge_group_cache (group_key, cache_keys, answers_hash, scoring)
                SELECT g.group_key, g.cache_keys, judge_answers_hash(g.cache_keys), g.scoring
                FROM (
                    SELECT r.group_key, ARRAY(SELECT jsonb_array_elements_text(r.cache_keys)) AS cache_keys, r.scoring
                    FROM jsonb_to_recordset(%s::jsonb) AS r(group_key text, cache_keys jsonb, scoring jsonb)
                ) AS g
                WHERE judge_answers_hash(g.cache_keys) IS NOT NULL  -- an answer deleted since: not reusable
                ON CONFLICT (group_key) DO UPDATE
                SET cache_keys = EXCLUDED.cache_keys, answers_hash = EXCLUDED.answers_hash, scoring = EXCLUDED.scoring
                """,
                (
                    Jsonb(
                        [
                            {"group_key": group_key, "cache_keys": keys, "scoring": result.model_dump(mode="json")}
                            for group_key, (keys, result) in cacheable.items()
                        ]
                    ),
                ),
            )
        await cur.execute(
            """
            INSERT INTO judge_window_stats (window_id, judge, rubric_version, calls_made, calls_cached,
                                            prompt_tokens, completion_tokens, cost_usd, unpriced_calls)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
            """,
            (
                window_id,
                scoring.judge,
                scoring.rubric_version,
                scoring.stats.calls_made,
                scoring.stats.calls_cached,
                scoring.stats.prompt_tokens,
                scoring.stats.completion_tokens,
                scoring.stats.cost_usd,
                scoring.stats.unpriced_calls,
            ),
        )


def _columns(rows: Sequence[tuple[object, ...]], width: int) -> list[list[object]]:
    """Rows as `width` column lists, the parameters of an INSERT ... SELECT FROM unnest(...)."""
    return [[row[index] for row in rows] for index in range(width)]


class ScoreCompleteness(BaseModel):
    """The `scored_groups_complete` check: every accepted trajectory has exactly one score in [0, 1]."""

    model_config = ConfigDict(frozen=True)

    accepted: NonNegativeInt
    missing: list[str]
    unexpected: list[str]
    out_of_range: list[str]

    @property
    def passed(self) -> bool:
        return self.accepted > 0 and not (self.missing or self.unexpected or self.out_of_range)


async def score_completeness(conn: AsyncConn, window_id: datetime) -> ScoreCompleteness:
    async with conn.cursor() as cur:
        await cur.execute(
            """
            SELECT v.trajectory_id, count(s.trajectory_id), bool_or(s.score < 0 OR s.score > 1)
            FROM trajectory_validations v
            LEFT JOIN trajectory_scores s ON s.trajectory_id = v.trajectory_id AND s.window_id = v.window_id
            WHERE v.window_id = %s AND v.accepted
            GROUP BY v.trajectory_id
            ORDER BY v.trajectory_id
            """,
            (window_id,),
        )
        accepted = await cur.fetchall()
        await cur.execute(
            """
            SELECT s.trajectory_id FROM trajectory_scores s
            WHERE s.window_id = %s AND NOT EXISTS (
                SELECT 1 FROM trajectory_validations v
                WHERE v.window_id = s.window_id AND v.accepted AND v.trajectory_id = s.trajectory_id
            )
            ORDER BY s.trajectory_id
            """,
            (window_id,),
        )
        unexpected = [str(row[0]) for row in await cur.fetchall()]
    return ScoreCompleteness(
        accepted=len(accepted),
        # trajectory_scores is keyed by trajectory id, so a trajectory has at most one score.
        missing=[str(trajectory_id) for trajectory_id, count, _bad in accepted if count == 0],
        unexpected=unexpected,
        out_of_range=[str(trajectory_id) for trajectory_id, _count, bad in accepted if bad],
    )
