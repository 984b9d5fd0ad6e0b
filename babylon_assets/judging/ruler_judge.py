"""The RULER judge: ART's `art.rewards.ruler` through LiteLLM, made correct, cached and loud.

Guards against art 0.5.18 (see ../shared/reference/art-and-dagster.md, RULER):
- `ruler_score_group` matches scores to trajectories BY POSITION and drops the group's metadata;
  we call the lower-level `ruler` and map every score by the trajectory id the judge returned.
- Scores are not range-checked (1.7 passes through): an answer with a score outside [0, 1] (or not
  finite), a missing, repeated or unknown id is rejected and asked again, never clamped: a judge off
  the scale has not applied the rubric, and clamping 10 and 5 to 1 would invent a tie.
- Its `response_format` (the pydantic `Response`) lets any number of scores and any id through;
  `_JudgeCall` sends `pinned_response_format` instead: exactly the group's size of scores, ids from
  an enum of the ids shown, scores declared in [0, 1]; with `grammar_constrained` (llama.cpp, vLLM:
  the local-llm judge) also each position's id and the score levels, which the grammar enforces.
- `ruler` has no cache (it passes caching=False), no concurrency limit, returns neither the raw
  answer nor its usage, and takes no completion function: see `_ruler_completing_with`.
- `swallow_exceptions=True` makes a failed group vanish: never used; failures raise.
"""

import asyncio
import email.utils
import json
import math
import types
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TypeVar, cast

import litellm
import openai
from art.rewards import ruler
from litellm.exceptions import BadRequestError
from litellm.types.utils import Choices, ModelResponse, Usage
from openai.types.chat import ChatCompletionMessageParam
from pydantic import BaseModel, ConfigDict, TypeAdapter

from babylon_assets.errors import ConfigurationError
from babylon_assets.judging.cache import AnswerCache, CachedAnswer, answer_cache_key
from babylon_assets.judging.groups import permutation_orders
from babylon_assets.judging.judge import (
    CallStats,
    GroupScoring,
    JudgeFailedError,
    JudgeGroup,
    PermutationScore,
    total_stats,
)
from babylon_assets.judging.judge_view import judge_messages
from babylon_assets.judging.rubric import RUBRIC_VERSION, rubric_with_outcomes
from babylon_assets.judging.ruler_settings import RulerSettings
from babylon_assets.trajectories.models import Trajectory, window_key

# LiteLLM prints a "Give Feedback / Get Help" banner to stdout on every failed call; our errors say
# what happened instead.
litellm.suppress_debug_info = True

_CHAT_MESSAGES = TypeAdapter(list[ChatCompletionMessageParam])

# How much of a bad answer an error message quotes.
QUOTE_CHARS = 600
REDACTED_KEY_MIN_CHARS = 8

_Function = TypeVar("_Function", bound=Callable[..., object])


def _ruler_completing_with(function: _Function, complete: Callable[..., object]) -> _Function:
    """A private copy of ART's `ruler` (passed as `function`) whose LiteLLM `acompletion` is `complete`.

    Workaround for art 0.5.18: `ruler` calls the module global `acompletion` and offers no hook, so
    caching, usage, the raw answer and the concurrency limit can only be had by swapping that name.
    The copy gets globals of its own: ART's module is never modified, so other code using RULER is
    unaffected, and concurrent judge calls never see each other's `complete`.
    """
    if not isinstance(function, types.FunctionType) or "acompletion" not in function.__code__.co_names:
        raise RuntimeError(
            "art.rewards.ruler no longer calls a module-level `acompletion` (art != 0.5.18?): "
            "the judge cache and usage records would be bypassed; update _ruler_completing_with"
        )
    private = types.FunctionType(
        function.__code__,
        {**function.__globals__, "acompletion": complete},
        function.__name__,
        function.__defaults__,
        function.__closure__,
    )
    private.__kwdefaults__ = function.__kwdefaults__
    return cast(_Function, private)


# Grammar mode: scores on this many steps of [0, 1], explanations at most this long.
SCORE_STEPS = 20
EXPLANATION_CHARS = 160


def pinned_response_format(ids: Sequence[str], *, grammar: bool = False) -> dict[str, object]:
    """The JSON schema of RULER's answer for a call showing trajectories `ids`.

    Always: exactly len(ids) scores, each id one of `ids`, scores declared in [0, 1], strict, in the
    subset OpenAI's structured outputs accept. With `grammar` (servers that decode under the schema:
    llama.cpp, vLLM), also what a grammar can enforce and a weak model gets wrong otherwise: position k
    carries id k (prefixItems; an enum alone lets ids repeat), scores are one of SCORE_STEPS + 1 levels
    (llama.cpp ignores numeric bounds: 100 and -0.8 came back) and explanations are short.
    """

    def entry(allowed: Sequence[str]) -> dict[str, object]:
        explanation: dict[str, object] = {"type": "string"}
        score: dict[str, object] = {"type": "number", "minimum": 0, "maximum": 1}
        if grammar:
            explanation["maxLength"] = EXPLANATION_CHARS
            score["enum"] = [step / SCORE_STEPS for step in range(SCORE_STEPS + 1)]
        return {
            "type": "object",
            "additionalProperties": False,
            "required": ["trajectory_id", "explanation", "score"],
            "properties": {
                "trajectory_id": {"type": "string", "enum": list(allowed)},
                "explanation": explanation,
                "score": score,
            },
        }

    scores: dict[str, object] = {"type": "array", "minItems": len(ids), "maxItems": len(ids), "items": entry(ids)}
    if grammar:
        scores["prefixItems"] = [entry([trajectory_id]) for trajectory_id in ids]
    schema = {"type": "object", "additionalProperties": False, "required": ["scores"], "properties": {"scores": scores}}
    return {"type": "json_schema", "json_schema": {"name": "Response", "strict": True, "schema": schema}}


def shown_ids(message_lists: Sequence[Sequence[ChatCompletionMessageParam]]) -> list[str]:
    """The ids RULER shows the judge: "1".."N", or only "1" when all N trajectories are identical (RULER
    then sends one and copies its score)."""
    identical = all(messages == message_lists[0] for messages in message_lists)
    return ["1"] if identical else [str(position) for position in range(1, len(message_lists) + 1)]


class _JudgeCall:
    """One attempt at one order of one group: `complete` stands in for RULER's `acompletion`."""

    def __init__(self, judge: "RulerJudge", cache: AnswerCache, permutation: int, ids: Sequence[str]) -> None:
        self.judge = judge
        self.cache = cache
        self.permutation = permutation
        self.response_format = pinned_response_format(ids, grammar=judge.settings.grammar_constrained)
        self.cache_key: str | None = None
        self.cached: CachedAnswer | None = None
        # Set only once an answer arrived (from the judge or the cache): an error raised before
        # that is ours, not the judge's.
        self.raw_answer: str | None = None
        self.stats = CallStats()

    async def complete(self, **request: object) -> ModelResponse:
        settings = self.judge.settings
        messages_json = json.dumps(request["messages"], sort_keys=True, ensure_ascii=False)
        self.cache_key = answer_cache_key(settings.judge_model, RUBRIC_VERSION, messages_json, self.permutation)
        self.cached = await self.cache.get(self.cache_key)
        if self.cached is not None:
            self.stats = CallStats(calls_cached=1)
            self.raw_answer = self.cached.raw_answer
            return ModelResponse(
                model=settings.judge_model,
                choices=[{"index": 0, "message": {"role": "assistant", "content": self.raw_answer}}],
            )
        async with self.judge.limiter():
            self.stats = CallStats(calls_made=1)
            response = await litellm.acompletion(**{**request, "response_format": self.response_format})
        usage = getattr(response, "usage", None)
        if not isinstance(response, ModelResponse) or not isinstance(usage, Usage):
            raise TypeError(f"LiteLLM returned {type(response).__name__} without usage for a judge call")
        cost = self.judge.cost_usd(response)
        self.stats = CallStats(
            calls_made=1,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cost_usd=cost or 0.0,
            unpriced_calls=1 if cost is None else 0,
        )
        choice = response.choices[0] if response.choices else None
        content = choice.message.content if isinstance(choice, Choices) else None
        # An answer without text is quoted whole, so an error shows what did arrive.
        self.raw_answer = content if isinstance(content, str) else str(response)
        return response

    def answer(self) -> CachedAnswer:
        assert self.cache_key is not None and self.raw_answer is not None
        return CachedAnswer(
            cache_key=self.cache_key,
            judge_model=self.judge.settings.judge_model,
            rubric_version=RUBRIC_VERSION,
            permutation=self.permutation,
            raw_answer=self.raw_answer,
            prompt_tokens=self.stats.prompt_tokens,
            completion_tokens=self.stats.completion_tokens,
            cost_usd=None if self.stats.unpriced_calls else self.stats.cost_usd,
        )


class _JudgedScore(BaseModel):
    """One entry of RULER's parsed answer, re-read with our own types."""

    model_config = ConfigDict(from_attributes=True)

    trajectory_id: str
    explanation: str
    score: float


def _answer_problem(answer: list[_JudgedScore], count: int) -> str | None:
    """Why an answer cannot be used (ids not exactly "1".."count", a score outside [0, 1]), or None."""
    expected = [str(position) for position in range(1, count + 1)]
    returned = [item.trajectory_id for item in answer]
    if sorted(returned, key=lambda value: (len(value), value)) != expected:
        return f"expected one score for each trajectory id {', '.join(expected)}, got ids {returned}"
    for item in answer:
        if not (math.isfinite(item.score) and 0.0 <= item.score <= 1.0):
            return f"score {item.score} for trajectory {item.trajectory_id} is outside [0, 1]"
    return None


def _quote(text: str) -> str:
    return text if len(text) <= QUOTE_CHARS else text[:QUOTE_CHARS] + f"... ({len(text)} characters)"


def _retry_after_seconds(error: openai.APIError) -> float:
    """The wait a rate-limited (429) or unavailable (503) answer asks for in Retry-After, else 0.

    LiteLLM 1.82 rebuilds the error's `response` without the server's headers; it keeps them in
    `litellm_response_headers`.
    """
    headers = getattr(error, "litellm_response_headers", None)
    value = headers.get("retry-after") if isinstance(headers, Mapping) else None
    if not isinstance(value, str):
        return 0.0
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)  # the header's other form, an HTTP date
        except (TypeError, ValueError):
            return 0.0
        return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _is_retryable(error: openai.APIError) -> bool:
    if isinstance(error, openai.APIConnectionError):  # includes timeouts
        return True
    status = getattr(error, "status_code", None)
    return isinstance(status, int) and (status in (408, 429) or status >= 500)


class RulerJudge:
    """Scores each group under several orders through RULER and averages per trajectory."""

    def __init__(self, settings: RulerSettings) -> None:
        try:
            model_name, _provider, _key, _base = litellm.get_llm_provider(settings.judge_model)
        except BadRequestError as error:
            raise ConfigurationError(
                f"judge model {settings.judge_model!r} is not a LiteLLM model name; use provider/name, "
                "e.g. openai/o3 (or openai/<served name> for any OpenAI-compatible server)"
            ) from error
        self.settings = settings
        self._priced = model_name in litellm.model_cost
        self._semaphore: asyncio.Semaphore | None = None
        self._semaphore_loop: asyncio.AbstractEventLoop | None = None

    @property
    def name(self) -> str:
        return f"ruler:{self.settings.judge_model}"

    @property
    def rubric_version(self) -> str:
        return RUBRIC_VERSION

    @property
    def group_size(self) -> int:
        """At most `group_size`, and few enough that a group's views fit `max_group_tokens`."""
        fitting = self.settings.max_group_tokens // self.settings.max_trajectory_tokens
        return max(1, min(self.settings.group_size, fitting))

    @property
    def concurrency(self) -> int:
        return self.settings.max_concurrency

    @property
    def settings_key(self) -> str:
        """The settings that shape the prompts and the answers; the server (api_base) does not, as in the
        answer cache's key."""
        return self.settings.model_dump_json(
            include={"judge_model", "permutations", "max_trajectory_tokens", "grammar_constrained"}
        )

    @property
    def reads_steps(self) -> bool:
        return True

    def limiter(self) -> asyncio.Semaphore:
        """The concurrency limit on judge requests, across all groups and windows of this event loop."""
        loop = asyncio.get_running_loop()
        if self._semaphore is None or self._semaphore_loop is not loop:
            self._semaphore = asyncio.Semaphore(self.settings.max_concurrency)
            self._semaphore_loop = loop
        return self._semaphore

    def cost_usd(self, response: ModelResponse) -> float | None:
        """LiteLLM's price for the call, or None for a model it has no price for."""
        if not self._priced:
            return None
        return float(litellm.completion_cost(completion_response=response, model=self.settings.judge_model))

    def _litellm_params(self) -> dict[str, object]:
        params: dict[str, object] = {
            "timeout": self.settings.timeout_seconds,
            # The openai SDK retries 429/5xx twice on its own; ours is the only retry loop, so
            # attempts, backoff and request counts are what the settings say.
            "max_retries": 0,
        }
        if self.settings.api_base is not None:
            params["api_base"] = self.settings.api_base
        if self.settings.api_key is not None:
            params["api_key"] = self.settings.api_key.get_secret_value()
        return params

    def _views(self, trajectories: Sequence[Trajectory]) -> list[list[ChatCompletionMessageParam]]:
        """Each trajectory's messages as the judge is shown them, within the token budget."""
        return [
            _CHAT_MESSAGES.validate_python(
                [message.model_dump() for message in judge_messages(trajectory, self.settings.max_trajectory_tokens)]
            )
            for trajectory in trajectories
        ]

    async def score_group(self, group: JudgeGroup, cache: AnswerCache) -> GroupScoring:
        ids = [trajectory.trajectory_id for trajectory in group.trajectories]
        # In a worker thread: counting tokens releases the GIL, so the event loop goes on sending and
        # receiving the other groups' calls meanwhile instead of holding them for each window's views.
        message_lists = await asyncio.to_thread(self._views, group.trajectories)
        rubric = rubric_with_outcomes(group.outcomes)
        orders = permutation_orders(ids, self.settings.permutations)
        # Every order runs to its end (answers obtained are cached) before a failure is raised.
        outcomes = await asyncio.gather(
            *(
                self._score_order(group, cache, ids, [message_lists[i] for i in order], rubric, permutation, order)
                for permutation, order in enumerate(orders)
            ),
            return_exceptions=True,
        )
        failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        if failures:
            raise failures[0]
        results = [outcome for outcome in outcomes if not isinstance(outcome, BaseException)]
        permutations = [score for scores, _stats in results for score in scores]
        return GroupScoring(
            group_index=group.group_index,
            scores={
                trajectory_id: math.fsum(p.score for p in permutations if p.trajectory_id == trajectory_id)
                / len(orders)
                for trajectory_id in ids
            },
            permutations=permutations,
            stats=total_stats([stats for _scores, stats in results]),
        )

    async def _score_order(
        self,
        group: JudgeGroup,
        cache: AnswerCache,
        ids: list[str],
        shown: list[list[ChatCompletionMessageParam]],
        rubric: str,
        permutation: int,
        order: list[int],
    ) -> tuple[list[PermutationScore], CallStats]:
        """One order of one group, with bounded retries; the validated answer is cached at once."""
        settings = self.settings
        attempts = settings.max_retries + 1
        stats = CallStats()
        problem = "no attempt was made"
        last_answer = "none"
        retry_after = 0.0
        ids_shown = shown_ids(shown)
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(max(settings.retry_backoff_seconds * 2 ** (attempt - 1), retry_after))
            call = _JudgeCall(self, cache, permutation, ids_shown)
            judge_through_call = _ruler_completing_with(ruler, call.complete)
            try:
                raw_scores = await judge_through_call(
                    shown, judge_model=settings.judge_model, extra_litellm_params=self._litellm_params(), rubric=rubric
                )
                answer = [_JudgedScore.model_validate(item) for item in raw_scores]
                found = _answer_problem(answer, len(order))
            except openai.APIError as error:
                if not _is_retryable(error):
                    raise self._failure(
                        group,
                        f"judge {settings.judge_model} refused group {group.group_index} (not retried): "
                        f"{_quote(str(error))}. Check the judge model, BABYLON_JUDGE_API_BASE and "
                        "BABYLON_JUDGE_API_KEY",
                    ) from None  # quoted above with the key cut out; the raw error may carry it
                found = f"{type(error).__name__}: {error}"
                answer = []
                retry_after = _retry_after_seconds(error)
            except ValueError as error:  # RULER's malformed JSON (pydantic) and wrong-count errors
                if call.raw_answer is None:
                    raise  # raised before any answer arrived: a defect of ours, not the judge's
                found = f"{type(error).__name__}: {error}"
                answer = []
            stats = stats + call.stats
            last_answer = call.raw_answer if call.raw_answer is not None else "none, the request failed"
            if found is None:
                if call.cached is None:
                    await cache.put(call.answer())
                by_position = {int(item.trajectory_id): item for item in answer}
                scores = [
                    PermutationScore(
                        permutation=permutation,
                        trajectory_id=ids[order[position - 1]],
                        position=position,
                        score=item.score,
                        explanation=item.explanation,
                        cache_key=call.cache_key,
                    )
                    for position, item in sorted(by_position.items())
                ]
                return scores, stats
            if call.cached is not None:
                raise self._failure(
                    group,
                    f"the cached judge answer {call.cache_key} no longer validates ({_quote(found)}); "
                    "delete it from judge_cache and re-score",
                )
            problem = found
        raise self._failure(
            group,
            f"judge {settings.judge_model} failed on group {group.group_index} (order {permutation}) after "
            f"{attempts} attempts: {_quote(problem)}. Last answer: {_quote(last_answer)}",
        )

    def _failure(self, group: JudgeGroup, what: str) -> JudgeFailedError:
        """The error for a group, naming its window; the API key is cut out of anything quoted."""
        message = f"window {window_key(group.window_id)}: {what}"
        key = self.settings.api_key.get_secret_value() if self.settings.api_key is not None else ""
        # Shorter values are placeholders for keyless local servers ("x", "ollama"); cutting them
        # out would garble the message.
        if len(key) >= REDACTED_KEY_MIN_CHARS:
            message = message.replace(key, "**********")
        return JudgeFailedError(message)
