"""The judge answer cache in PostgreSQL (`judge_cache`, migration 0003)."""

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from psycopg.rows import class_row
from psycopg.types.json import Jsonb
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


_Item = TypeVar("_Item")
_Result = TypeVar("_Result")


class _Batched(Generic[_Item, _Result]):
    """Requests gathered while a shared connection is busy (or in the same turn of the event loop), then
    served together by one call of `serve`, which returns one result per item, in order."""

    def __init__(self, lock: asyncio.Lock, serve: Callable[[list[_Item]], Awaitable[list[_Result]]]) -> None:
        self.lock = lock
        self.serve = serve
        self._pending: list[tuple[_Item, asyncio.Future[_Result]]] = []
        self._serving: asyncio.Task[None] | None = None

    async def submit(self, item: _Item) -> _Result:
        pending: asyncio.Future[_Result] = asyncio.get_running_loop().create_future()
        self._pending.append((item, pending))
        if self._serving is None:
            self._serving = asyncio.create_task(self._serve_pending())
        # Shielded: one caller's cancellation must not cancel the batch the others await.
        return await asyncio.shield(pending)

    async def _serve_pending(self) -> None:
        async with self.lock:
            pending, self._pending, self._serving = self._pending, [], None
            try:
                results = await self.serve([item for item, _ in pending])
            except Exception as error:
                # Each waiting caller raises it: the failure reaches every one, none is answered.
                for _, waiting in pending:
                    waiting.set_exception(error)
                return
        for (_, waiting), result in zip(pending, results, strict=True):
            waiting.set_result(result)


class AnswerCache:
    """Reads and writes `judge_cache` on a connection shared with the rest of a scoring run.

    `lock` serialises every use of that connection, so concurrent groups and windows never run a
    statement inside another one's transaction. Lookups and writes are batched: every `get` (or `put`)
    issued while the connection is busy (or in the same turn of the event loop) is served by one
    statement, so a window's cache hits cost one round trip, not one per group and permutation, and
    answers arriving together are stored together.
    """

    def __init__(self, conn: AsyncConn, lock: asyncio.Lock) -> None:
        self.conn = conn
        self.lock = lock
        self._gets = _Batched(lock, self._select)
        self._puts = _Batched(lock, self._insert)

    async def get(self, cache_key: str) -> CachedAnswer | None:
        return await self._gets.submit(cache_key)

    async def put(self, answer: CachedAnswer) -> None:
        """Store an answer as soon as it is validated, so a later failure in its window keeps it."""
        await self._puts.submit(answer)

    async def _select(self, cache_keys: list[str]) -> list[CachedAnswer | None]:
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
            found = {answer.cache_key: answer for answer in await cursor.fetchall()}
        return [found.get(key) for key in cache_keys]

    async def _insert(self, answers: list[CachedAnswer]) -> list[None]:
        await self.conn.execute(
            """
            INSERT INTO judge_cache (cache_key, judge_model, rubric_version, permutation, raw_answer,
                                     prompt_tokens, completion_tokens, cost_usd)
            SELECT * FROM jsonb_to_recordset(%s::jsonb) AS a(
                cache_key text, judge_model text, rubric_version text, permutation integer, raw_answer text,
                prompt_tokens integer, completion_tokens integer, cost_usd double precision)
            ON CONFLICT (cache_key) DO NOTHING
            """,
            (Jsonb([answer.model_dump() for answer in answers]),),
        )
        return [None for _ in answers]
