"""A trajectory as the judge sees it: its messages within a token budget.

Overlong texts are shortened here only, keeping their start and end around a visible marker; the
policy always trains on the full messages (`trajectory_messages`). Tokens are counted with the
cl100k encoding LiteLLM ships (no download), which is close enough for a budget.
"""

from litellm.litellm_core_utils.default_encoding import encoding

from babylon_assets.trajectories.messages import ChatMessage, trajectory_messages
from babylon_assets.trajectories.models import Trajectory


def token_count(text: str) -> int:
    return len(encoding.encode(text, disallowed_special=()))


def _allowances(sizes: list[int], budget: int) -> list[int]:
    """Per-message token allowances summing to at most `budget`: short messages keep all their tokens,
    the longest share what is left equally (water-filling)."""
    allowances = list(sizes)
    order = sorted(range(len(sizes)), key=lambda index: sizes[index])
    left = budget
    for position, index in enumerate(order):
        share = left // (len(order) - position)
        allowances[index] = min(sizes[index], share)
        left -= allowances[index]
    return allowances


def shorten(text: str, tokens: list[int], allowance: int) -> str:
    if len(tokens) <= allowance:
        return text
    half = max(allowance // 2, 1)
    cut = len(tokens) - 2 * half
    head, tail = encoding.decode(tokens[:half]), encoding.decode(tokens[-half:])
    return f"{head}\n[... {cut} tokens cut from the judge's view ...]\n{tail}"


def judge_messages(trajectory: Trajectory, max_tokens: int) -> list[ChatMessage]:
    """`trajectory_messages(trajectory)`, shortened so that together they take at most about `max_tokens`."""
    messages = trajectory_messages(trajectory)
    # A token is at least one UTF-8 byte: texts no longer than the budget in bytes fit without counting.
    if sum(len(message.content.encode()) for message in messages) <= max_tokens:
        return messages
    encoded = [encoding.encode(message.content, disallowed_special=()) for message in messages]
    sizes = [len(tokens) for tokens in encoded]
    if sum(sizes) <= max_tokens:
        return messages
    allowances = _allowances(sizes, max_tokens)
    return [
        message.model_copy(update={"content": shorten(message.content, tokens, allowance)})
        for message, tokens, allowance in zip(messages, encoded, allowances, strict=True)
    ]
