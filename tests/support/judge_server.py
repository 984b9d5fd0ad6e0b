"""A local OpenAI-compatible judge for tests and the bench: a real HTTP server on 127.0.0.1.

It serves `POST /v1/chat/completions` from a background thread, counts requests, and answers
each one through a scriptable `Responder` that sees the trajectories RULER put in the prompt.
"""

import asyncio
import hashlib
import json
import re
import threading
from collections.abc import Callable
from types import TracebackType

from aiohttp import web
from pydantic import BaseModel, ConfigDict, JsonValue

_TRAJECTORY = re.compile(r'<trajectory id="(\d+)">\n(.*?)\n</trajectory>', re.DOTALL)


def content_score(assistant_replies: str) -> float:
    """A deterministic score in [0, 0.8] from a trajectory's assistant replies, joined by newlines."""
    return round(int(hashlib.sha256(assistant_replies.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF * 0.8, 4)


class JudgeRequest(BaseModel):
    """One chat completion request as the server received it."""

    model_config = ConfigDict(frozen=True)

    number: int
    authorization: str
    body: dict[str, JsonValue]
    system_prompt: str
    # RULER's trajectory id ("1".."N", the position shown) -> that trajectory's serialized messages.
    trajectories: dict[str, str]

    def assistant_replies(self, trajectory_id: str) -> str:
        """The trajectory's assistant turns joined by newlines (RULER sends each one whole, unless
        the group shares a common prefix reaching into the replies, which distinct agents never do)."""
        messages = json.loads(self.trajectories[trajectory_id])
        return "\n".join(str(message["content"]) for message in messages if message["role"] == "assistant")

    def content_score(self, trajectory_id: str) -> float:
        return content_score(self.assistant_replies(trajectory_id))


class Reply(BaseModel):
    """What to answer: an assistant message `content` (status 200), or an error status, after a delay."""

    model_config = ConfigDict(frozen=True)

    content: str = ""
    status: int = 200
    delay_seconds: float = 0.0
    headers: dict[str, str] = {}


Responder = Callable[[JudgeRequest], Reply]


def scores_reply(scores: dict[str, float], *, reverse: bool = True) -> Reply:
    """A well-formed RULER answer; listed in reverse id order by default, to catch position mapping."""
    ids = sorted(scores, key=int, reverse=reverse)
    answer = {"scores": [{"trajectory_id": i, "explanation": f"judged {i}", "score": scores[i]} for i in ids]}
    return Reply(content=json.dumps(answer))


def by_content(request: JudgeRequest) -> Reply:
    """A content-aware judge: each trajectory's score depends on what it said, never on its position."""
    return scores_reply({i: request.content_score(i) for i in request.trajectories})


def _completion_body(content: str, model: str) -> dict[str, JsonValue]:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [
            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}},
        ],
        "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
    }


class JudgeServer:
    """Start with `with JudgeServer(responder) as server:`; `server.api_base` is the OpenAI base URL."""

    def __init__(self, responder: Responder = by_content) -> None:
        self.responder = responder
        self.requests: list[JudgeRequest] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="judge-server", daemon=True)
        self._port = 0
        self._in_flight = 0
        self.max_in_flight = 0

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self._port}/v1"

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self.requests)

    async def _handle(self, request: web.Request) -> web.Response:
        body: dict[str, JsonValue] = await request.json()
        messages = body["messages"]
        assert isinstance(messages, list)
        system, user = messages[0], messages[-1]
        assert isinstance(system, dict) and isinstance(user, dict)
        system_text, user_text = str(system["content"]), str(user["content"])
        with self._lock:
            judged = JudgeRequest(
                number=len(self.requests) + 1,
                authorization=request.headers.get("Authorization", ""),
                body=body,
                system_prompt=system_text,
                trajectories=dict(_TRAJECTORY.findall(user_text)),
            )
            self.requests.append(judged)
        reply = self.responder(judged)
        self._in_flight += 1  # handlers all run on the server's own loop
        self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            if reply.delay_seconds:
                await asyncio.sleep(reply.delay_seconds)
        finally:
            self._in_flight -= 1
        if reply.status != 200:
            return web.json_response(
                {"error": {"message": f"scripted status {reply.status}"}}, status=reply.status, headers=reply.headers
            )
        return web.json_response(_completion_body(reply.content, str(body.get("model", "judge"))))

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        address = self._runner.addresses[0]
        self._port = int(address[1])

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        # Handlers still sleeping (scripted timeouts) would otherwise be destroyed while pending.
        pending = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def __enter__(self) -> "JudgeServer":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
