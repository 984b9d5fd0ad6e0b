"""The judge answer cache in PostgreSQL (`judge_cache`, migration 0003)."""

import asyncio
import hashlib
import json

from pydantic import BaseModel, ConfigDict, NonNegativeFloat, NonNegativeInt

from babylon_assets.db.connection import AsyncConn


def answer_cache_key(judge_model: str, rubric_version: str, messages_json: str, permutation: int) -> str:
    """sha256 over the judge model, the rubric version, the exact messages sent (as JSON) and the permutation."""
    payload = json.dumps([judge_model, rubric_version, messages_json, permutation], ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


class CachedAnswer(BaseModel):
    """One validated judge answer: the assistant message as received, and what it cost."""

    model_config = ConfigDict(frozen=True)

    cache_key: str
    judge_model: str
    rubric_version: str
    permutation: NonNegativeInt
    raw_answer: str
    prompt_tokens: NonNegativeInt
    completion_tokens: NonNegativeInt
    cost_usd: NonNegativeFloat | None


class AnswerCache:
    """Reads and writes `judge_cache` on a connection shared with the rest of a scoring run.

    `lock` serialises every use of that connection, so concurrent groups and windows never run a
    statement inside another one's transaction.
    """

    def __init__(self, conn: AsyncConn, lock: asyncio.Lock) -> None:
        self.conn = conn
        self.lock = lock

    async def get(self, cache_key: str) -> CachedAnswer | None:
        async with self.lock:
            cursor = await self.conn.execute(
                """
                SELECT judge_model, rubric_version, permutation, raw_answer, prompt_tokens,
                       completion_tokens, cost_usd
                FROM judge_cache WHERE cache_key = %s
                """,
                (cache_key,),
            )
            row = await cursor.fetchone()
        if row is None:
            return None
        model, version, permutation, raw, prompt_tokens, completion_tokens, cost = row
        return CachedAnswer(
            cache_key=cache_key,
            judge_model=model,
            rubric_version=version,
            permutation=permutation,
            raw_answer=raw,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cost_usd=cost,
        )

    async def put(self, answer: CachedAnswer) -> None:
        """Store an answer as soon as it is validated, so a later failure in its window keeps it."""
        async with self.lock:
            await self.conn.execute(
                """
                INSERT INTO judge_cache (cache_key, judge_model, rubric_version, permutation, raw_answer,
                                         prompt_tokens, completion_tokens, cost_usd)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
                ON CONFLICT (cache_key) DO NOTHING
                """,
                (
                    answer.cache_key,
                    answer.judge_model,
                    answer.rubric_version,
                    answer.permutation,
                    answer.raw_answer,
                    answer.prompt_tokens,
                    answer.completion_tokens,
                    answer.cost_usd,
                ),
            )
