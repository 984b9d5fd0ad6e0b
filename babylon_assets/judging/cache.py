"""The judge answer cache in PostgreSQL (`judge_cache`, migration 0003)."""

import asyncio
import hashlib
import json

from psycopg.rows import class_row
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
    statement inside another one's transaction. Lookups are batched: every `get` issued while the
    connection is busy (or in the same turn of the event loop) is answered by one query, so a window's
    cache hits cost one round trip, not one per group and permutation.
    """

    def __init__(self, conn: AsyncConn, lock: asyncio.Lock) -> None:
        self.conn = conn
        self.lock = lock
        self._pending: dict[str, asyncio.Future[CachedAnswer | None]] = {}
        self._fetching: asyncio.Task[None] | None = None

    async def get(self, cache_key: str) -> CachedAnswer | None:
        pending = self._pending.get(cache_key)
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self._pending[cache_key] = pending
            if self._fetching is None:
                self._fetching = asyncio.create_task(self._fetch_pending())
        # Shielded: one caller's cancellation must not cancel the answer other callers of the key await.
        return await asyncio.shield(pending)

    async def _fetch_pending(self) -> None:
        """Answer every lookup gathered until the connection is free with one query."""
        async with self.lock:
            pending, self._pending, self._fetching = self._pending, {}, None
            try:
                answers = await self._select(list(pending))
            except Exception as error:
                # Each waiting `get` raises it: the failure reaches every caller, none is answered "absent".
                for waiting in pending.values():
                    waiting.set_exception(error)
                return
        for key, waiting in pending.items():
            waiting.set_result(answers.get(key))

    async def _select(self, cache_keys: list[str]) -> dict[str, CachedAnswer]:
        # Rows by column name: a column moved in the SELECT still lands in its field.
        async with self.conn.cursor(row_factory=class_row(CachedAnswer)) as cursor:
            await cursor.execute(
                """
                SELECT cache_key, judge_model, rubric_version, permutation, raw_answer, prompt_tokens,
                       completion_tokens, cost_usd
                FROM judge_cache WHERE cache_key = ANY(%s)
                """,
                (cache_keys,),
            )
            return {answer.cache_key: answer for answer in await cursor.fetchall()}

    async def put(self, answer: CachedAnswer) -> None:
        """Store an answer as soon as it is validated, so a later failure in its window keeps it."""
        async with self.lock:
            await self.conn.execute(
                """
                INSERT INTO judge_cache (cache_key, judge_model, rubric_version, permutation, raw_answer,
                                         prompt_tokens, completion_tokens, cost_usd)
                VALUES (%(cache_key)s, %(judge_model)s, %(rubric_version)s, %(permutation)s, %(raw_answer)s,
                        %(prompt_tokens)s, %(completion_tokens)s, %(cost_usd)s)
                ON CONFLICT (cache_key) DO NOTHING
                """,
                answer.model_dump(),
            )
