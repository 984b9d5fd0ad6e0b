"""ART 0.5.18's group-relative policy math, reproduced term by term for our torch trainer.

Sources (art/preprocessing/tokenize.py, art/preprocessing/pack.py, art/loss.py):
- advantage A_i = (r_i - mean r) / (population std r + 1e-6); zero-advantage trajectories are dropped,
  so a group whose rewards are all equal contributes nothing;
- raw token weight of trajectory i: 1 / (its assistant tokens + 1e-6), counted before truncation, as
  ART's packer weighs a result it truncates (ART's LocalBackend sizes its sequences to fit, up to the
  model's maximum, and drops longer trajectories; we keep their first max_seq_len tokens instead);
- over the whole step, weights are divided by their mean over the trainable tokens left after
  truncation, and advantages by mean(|A| * w) over the same tokens;
- per token, loss = -clip(sg(rho), 1 - eps, 1 + eps_high) * A * w * log pi(token), summed over
  trainable tokens and divided by (trainable tokens of the optimizer batch + 1e-6) (CISPO, eps=1,
  eps_high=4). Without old log-probabilities rho = 1, as ART assumes for recorded turns.
"""

import math
from collections.abc import Sequence

import torch
from pydantic import BaseModel, ConfigDict

EPSILON = 1.0
EPSILON_HIGH = 4.0
STD_EPSILON = 1e-6


class EncodedChat(BaseModel):
    """A tokenized conversation, cut to the trainer's max_seq_len; `assistant_mask[t]` marks tokens the
    policy said."""

    model_config = ConfigDict(frozen=True)

    token_ids: list[int]
    assistant_mask: list[bool]
    truncated: bool
    # Assistant tokens of the whole conversation, including any cut off: ART weighs trajectories by these.
    full_trainable_tokens: int

    @property
    def trainable_tokens(self) -> int:
        return sum(self.assistant_mask)


class TrainItem(BaseModel):
    """One trajectory ready for the loss: tokens, mask, its normalised advantage and token weight."""

    model_config = ConfigDict(frozen=True)

    trajectory_id: str
    chat: EncodedChat
    advantage: float
    weight: float


def group_advantages(rewards: Sequence[float]) -> list[float]:
    """(r - mean) / (population std + 1e-6); all zeros when the rewards are equal."""
    if len(set(rewards)) == 1:
        # ART tests `advantage == 0`, but a float mean of equal rewards (e.g. three 0.1s) leaves a
        # ~1e-11 residue that the per-step normalisation would blow up into a full update.
        return [0.0] * len(rewards)
    mean = sum(rewards) / len(rewards)
    std = math.sqrt(sum((reward - mean) ** 2 for reward in rewards) / len(rewards))
    return [(reward - mean) / (std + STD_EPSILON) for reward in rewards]


def raw_token_weight(trainable_tokens: int) -> float:
    return 1 / (trainable_tokens + STD_EPSILON)


def normalize_items(items: Sequence[tuple[str, EncodedChat, float]]) -> list[TrainItem]:
    """Per-step normalisation of (id, chat, advantage) as ART packs them.

    Raw weights come from each conversation's full assistant token count; they become
    w_i / mean_tokens(w) and advantages A_i / mean_tokens(|A| * w), both means taken over every
    trainable token left in the step. Items with a zero advantage or no trainable token left are
    dropped first: ART drops the former and packs the latter fully masked, which changes nothing.
    """
    kept = [(tid, chat, adv) for tid, chat, adv in items if adv != 0 and chat.trainable_tokens > 0]
    if not kept:
        return []
    tokens = [chat.trainable_tokens for _, chat, _ in kept]
    raw = [raw_token_weight(chat.full_trainable_tokens) for _, chat, _ in kept]
    total_tokens = sum(tokens)
    mean_weight = sum(n * w for n, w in zip(tokens, raw, strict=True)) / total_tokens
    weights = [w / mean_weight for w in raw]
    mean_abs = sum(n * abs(adv) * w for n, (_, _, adv), w in zip(tokens, kept, weights, strict=True)) / total_tokens
    return [
        TrainItem(trajectory_id=tid, chat=chat, advantage=adv / mean_abs, weight=weight)
        for (tid, chat, adv), weight in zip(kept, weights, strict=True)
    ]


def token_logprobs(logits: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """log pi(token_t | tokens_<t) at every position t >= 1, shape [batch, length - 1]."""
    logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    return torch.gather(logprobs, 2, token_ids[:, 1:].unsqueeze(-1)).squeeze(-1)


def policy_loss(
    new_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    weights: torch.Tensor,
    mask: torch.Tensor,
    old_logprobs: torch.Tensor | None = None,
) -> torch.Tensor:
    """CISPO loss of ART (art/loss.py), reduced by the batch's trainable tokens.

    All tensors are aligned to target tokens ([batch, length - 1]); `mask` is 1.0 on trainable tokens.
    """
    reference = new_logprobs.detach() if old_logprobs is None else old_logprobs
    ratio = torch.exp(new_logprobs - reference)
    per_token = -(torch.clip(ratio.detach(), 1 - EPSILON, 1 + EPSILON_HIGH) * advantages * new_logprobs)
    return (per_token * weights * mask).sum() / (mask.sum() + STD_EPSILON)


def pack_batches(items: Sequence[TrainItem], tokens_per_batch: int) -> list[list[TrainItem]]:
    """Consecutive items up to `tokens_per_batch` tokens each: one optimizer step per batch, as ART
    takes one step per packed sequence."""
    batches: list[list[TrainItem]] = []
    current: list[TrainItem] = []
    used = 0
    for item in items:
        length = len(item.chat.token_ids)
        if current and used + length > tokens_per_batch:
            batches.append(current)
            current, used = [], 0
        current.append(item)
        used += length
    if current:
        batches.append(current)
    return batches


class BatchTensors(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    token_ids: torch.Tensor
    attention_mask: torch.Tensor
    # Aligned to target tokens (positions 1..L-1).
    mask: torch.Tensor
    advantages: torch.Tensor
    weights: torch.Tensor


def batch_tensors(batch: Sequence[TrainItem], pad_token_id: int) -> BatchTensors:
    """Right-padded tensors of a batch; padding is neither attended to nor trained."""
    length = max(len(item.chat.token_ids) for item in batch)
    ids = torch.full((len(batch), length), pad_token_id, dtype=torch.long)
    attention = torch.zeros((len(batch), length), dtype=torch.long)
    mask = torch.zeros((len(batch), length), dtype=torch.float32)
    advantages = torch.zeros((len(batch), length), dtype=torch.float32)
    weights = torch.zeros((len(batch), length), dtype=torch.float32)
    for row, item in enumerate(batch):
        n = len(item.chat.token_ids)
        ids[row, :n] = torch.tensor(item.chat.token_ids, dtype=torch.long)
        attention[row, :n] = 1
        mask[row, :n] = torch.tensor(item.chat.assistant_mask, dtype=torch.float32)
        advantages[row, :n] = item.advantage
        weights[row, :n] = item.weight
    return BatchTensors(
        token_ids=ids,
        attention_mask=attention,
        mask=mask[:, 1:],
        advantages=advantages[:, 1:],
        weights=weights[:, 1:],
    )
