"""The torch trainer's math and behaviour on a tiny model (no database)."""

import math
from pathlib import Path

import pytest
import torch

from babylon_assets.errors import BabylonError, ConfigurationError
from babylon_assets.training import metric_names
from babylon_assets.training.grpo import (
    EncodedChat,
    group_advantages,
    normalize_items,
    policy_loss,
)
from babylon_assets.training.hf_policy import build_tiny_tokenizer, encode_chat
from babylon_assets.training.torch_backend import TorchTrainer
from babylon_assets.training.types import (
    CheckpointRef,
    MarginPair,
    PolicySpec,
    ScoredGroup,
    ScoredTrajectory,
    TorchSettings,
)
from babylon_assets.trajectories.messages import ChatMessage
from tests.support.training import WINDOW, scored_trajectory


def chat(mask: list[bool], cut_assistant_tokens: int = 0) -> EncodedChat:
    """A conversation whose last `cut_assistant_tokens` assistant tokens were truncated away."""
    return EncodedChat(
        token_ids=list(range(len(mask))),
        assistant_mask=mask,
        truncated=cut_assistant_tokens > 0,
        full_trainable_tokens=sum(mask) + cut_assistant_tokens,
    )


def test_advantages_and_token_weights_match_a_hand_computed_example() -> None:
    # Rewards 0.9, 0.1, 0.5: mean 0.5, population std sqrt(0.32 / 3).
    advantages = group_advantages([0.9, 0.1, 0.5])
    std = math.sqrt(0.32 / 3)
    assert advantages == pytest.approx([0.4 / (std + 1e-6), -0.4 / (std + 1e-6), 0.0])

    # Trajectory a has 4 trainable tokens, b has 2, c (advantage 0) is dropped as ART drops it.
    items = normalize_items(
        [
            ("a", chat([False, True, True, True, True]), advantages[0]),
            ("b", chat([False, False, True, True]), advantages[1]),
            ("c", chat([False, True]), advantages[2]),
        ]
    )
    assert [item.trajectory_id for item in items] == ["a", "b"]
    # Raw weights 1/4 and 1/2; their token mean is (4/4 + 2/2) / 6 = 1/3, so weights 0.75 and 1.5.
    assert [item.weight for item in items] == pytest.approx([0.75, 1.5], rel=1e-5)
    # mean(|A| * w) over the 6 tokens = |A| (4 * 0.75 + 2 * 1.5) / 6 = |A|: advantages become +1 and -1.
    assert [item.advantage for item in items] == pytest.approx([1.0, -1.0], rel=1e-5)

    # Loss = -sum(A * w * logp) / (trainable tokens + 1e-6) with rho = 1 (no old logprobs).
    logprobs = torch.tensor([[-1.0, -2.0, -3.0, -4.0], [-0.5, -0.5, -1.0, -1.0]], requires_grad=True)
    adv = torch.tensor([[1.0] * 4, [-1.0] * 4])
    weights = torch.tensor([[0.75] * 4, [1.5] * 4])
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    loss = policy_loss(logprobs, adv, weights, mask)
    expected = -(0.75 * (-1 - 2 - 3 - 4) - 1.5 * (-1 - 1)) / (6 + 1e-6)
    assert loss.item() == pytest.approx(expected)
    # The clip stays in the formula: an old logprob far below the new one is clipped at 1 + 4.
    clipped = policy_loss(logprobs, adv, weights, mask, old_logprobs=logprobs.detach() - 10)
    assert clipped.item() == pytest.approx(5 * expected)


def test_a_truncated_trajectory_keeps_the_token_weight_of_its_full_length() -> None:
    # ART weighs by the assistant tokens before truncation: b had 4, 2 are left after the cut.
    items = normalize_items(
        [
            ("a", chat([False, True, True, True, True]), 0.5),
            ("b", chat([False, False, True, True], cut_assistant_tokens=2), -0.5),
        ]
    )
    # Raw weights 1/4 and 1/4; their mean over the 6 tokens left is 1/4, so both become 1 (by the
    # truncated count they would be 0.75 and 1.5). mean(|A| * w) = 0.5, so advantages become +1 and -1.
    assert [item.weight for item in items] == pytest.approx([1.0, 1.0], rel=1e-5)
    assert [item.advantage for item in items] == pytest.approx([1.0, -1.0], rel=1e-5)


def test_equal_rewards_leave_no_float_residue() -> None:
    # sum([0.1] * 3) / 3 != 0.1 in floating point; ART's `advantage == 0` test would train on noise.
    assert group_advantages([0.1, 0.1, 0.1]) == [0.0, 0.0, 0.0]


def test_encode_chat_marks_exactly_the_assistant_contents() -> None:
    tokenizer = build_tiny_tokenizer()
    messages = [
        ChatMessage(role="system", content="You trade."),
        ChatMessage(role="user", content="Price <|end|> is 10"),
        ChatMessage(role="assistant", content="BUY 5 <|user|>"),
        ChatMessage(role="user", content="Now?"),
        ChatMessage(role="assistant", content="HOLD"),
    ]
    encoded = encode_chat(tokenizer, messages, max_seq_len=10_000)
    marked = [token for token, trained in zip(encoded.token_ids, encoded.assistant_mask, strict=True) if trained]
    assert tokenizer.decode(marked) == "BUY 5 <|user|>HOLD"
    # Text inside a message is never read as a special token.
    assert tokenizer.convert_tokens_to_ids("<|user|>") not in marked
    assert not encoded.truncated

    short = encode_chat(tokenizer, messages, max_seq_len=40)
    assert short.truncated and len(short.token_ids) == 40
    assert short.token_ids == encoded.token_ids[:40]
    # The cut keeps only part of the answers, but the weight counts all of them (as ART's does).
    assert 0 < short.trainable_tokens < encoded.trainable_tokens == short.full_trainable_tokens


def trajectory(trajectory_id: str, score: float, answer: str) -> ScoredTrajectory:
    chat = [
        ChatMessage(role="system", content="You trade."),
        ChatMessage(role="user", content="BABY is at 10. Act."),
        ChatMessage(role="assistant", content=answer),
    ]
    return scored_trajectory(trajectory_id, score, chat)


def make_trainer(tmp_path: Path, **settings: bool | float) -> TorchTrainer:
    return TorchTrainer(
        PolicySpec(name="test-policy", base_model="tiny", project="test", backend="torch"),
        TorchSettings(max_seq_len=256, **settings),
        checkpoint_root=tmp_path / "checkpoints",
        models_root=tmp_path / "models",
    )


def weights_of(trainer: TorchTrainer) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in trainer.model.state_dict().items()}


def test_torch_trainer_changes_weights_and_lowers_the_loss_on_a_fixed_batch(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path)
    group = ScoredGroup(
        window_id=WINDOW,
        group_index=0,
        trajectories=[
            trajectory("good", 0.9, "BUY 5 BABY"),
            trajectory("bad", 0.1, "SELL everything now"),
            trajectory("meh", 0.4, "HOLD"),
        ],
    )
    before = weights_of(trainer)
    losses = []
    for step in range(1, 5):
        outcome = trainer.train_step([group], step=step, learning_rate=1e-3, seed=0)
        losses.append(outcome.metrics[metric_names.LOSS])
        assert outcome.metrics[metric_names.TRAINABLE_GROUPS] == 1
        assert Path(outcome.checkpoint.location) == tmp_path / "checkpoints" / "test-policy" / f"step-{step}"
    after = weights_of(trainer)
    assert any(not torch.equal(before[name], after[name]) for name in before)
    assert losses == sorted(losses, reverse=True) and losses[-1] < losses[0]
    # The policy now prefers the high-scored answer over the low-scored one.
    pair = MarginPair(window_id=WINDOW, top=group.trajectories[0].messages, bottom=group.trajectories[1].messages)
    margin = trainer.eval_margin([pair])
    assert margin is not None and margin.value > 0 and margin.pairs == 1
    # A pair whose answers lie beyond max_seq_len cannot be measured, and is not counted as measured.
    long_prompt = [ChatMessage(role="user", content="BABY is at 10. " * 20)]
    cut = MarginPair(
        window_id=WINDOW,
        top=[*long_prompt, ChatMessage(role="assistant", content="BUY")],
        bottom=[*long_prompt, ChatMessage(role="assistant", content="SELL")],
    )
    assert trainer.eval_margin([cut]) is None
    assert trainer.eval_margin([pair, cut]) == margin


def test_each_step_clips_the_gradient_norm_with_arts_adamw_at_a_constant_learning_rate(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, max_grad_norm=1e-3, weight_decay=0.0)
    group = ScoredGroup(
        window_id=WINDOW,
        group_index=0,
        trajectories=[trajectory("good", 1.0, "BUY 5 BABY"), trajectory("bad", 0.0, "SELL everything now")],
    )
    for step in (1, 2):
        outcome = trainer.train_step([group], step=step, learning_rate=2e-3, seed=0)
        # As ART (and Hugging Face) report it: the norm before clipping.
        assert outcome.metrics[metric_names.GRAD_NORM] > 1e-3
        assert outcome.metrics[metric_names.LEARNING_RATE] == 2e-3
        saved = torch.load(Path(outcome.checkpoint.location) / "optimizer.pt")
        [param_group] = saved["param_groups"]
        assert (param_group["lr"], param_group["betas"]) == (2e-3, (0.9, 0.99))
        if step == 1:
            # After AdamW's first step exp_avg = (1 - beta1) g and exp_avg_sq = (1 - beta2) g^2 of the
            # clipped gradient g, whose norm is max_grad_norm.
            states = saved["state"].values()
            first = math.sqrt(sum(float(state["exp_avg"].pow(2).sum()) for state in states)) / (1 - 0.9)
            second = math.sqrt(sum(float(state["exp_avg_sq"].sum()) for state in states) / (1 - 0.99))
            assert first == pytest.approx(1e-3, rel=1e-3)
            assert second == pytest.approx(1e-3, rel=1e-3)


def test_equal_reward_groups_produce_no_update(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path)
    group = ScoredGroup(
        window_id=WINDOW,
        group_index=0,
        trajectories=[trajectory("a", 0.1, "BUY"), trajectory("b", 0.1, "SELL"), trajectory("c", 0.1, "HOLD")],
    )
    before = weights_of(trainer)
    outcome = trainer.train_step([group], step=1, learning_rate=1e-2, seed=0)
    after = weights_of(trainer)
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert outcome.metrics[metric_names.GRADIENT_STEPS] == 0
    assert outcome.metrics[metric_names.TRAINABLE_GROUPS] == 0
    assert metric_names.LOSS not in outcome.metrics


def test_a_max_seq_len_that_cuts_every_reply_fails_the_step_instead_of_training_nothing(tmp_path: Path) -> None:
    trainer = TorchTrainer(
        PolicySpec(name="test-policy", base_model="tiny", project="test", backend="torch"),
        TorchSettings(max_seq_len=8),
        checkpoint_root=tmp_path / "checkpoints",
        models_root=tmp_path / "models",
    )
    group = ScoredGroup(
        window_id=WINDOW, group_index=0, trajectories=[trajectory("good", 0.9, "BUY"), trajectory("bad", 0.1, "SELL")]
    )
    with pytest.raises(ConfigurationError, match="max_seq_len 8 cuts every one of the 2 trajectories"):
        trainer.train_step([group], step=1, learning_rate=1e-3, seed=0)
    assert not (tmp_path / "checkpoints" / "test-policy" / "step-1").exists()


def test_lora_trains_adapters_only_and_its_checkpoint_resumes(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, lora=True)
    group = ScoredGroup(
        window_id=WINDOW,
        group_index=0,
        trajectories=[trajectory("good", 1.0, "BUY 5 BABY"), trajectory("bad", 0.0, "SELL everything now")],
    )
    before = weights_of(trainer)
    outcome = trainer.train_step([group], step=1, learning_rate=1e-2, seed=0)
    after = weights_of(trainer)
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed and all("lora_" in name for name in changed)
    pair = MarginPair(window_id=WINDOW, top=group.trajectories[0].messages, bottom=group.trajectories[1].messages)
    margin = trainer.eval_margin([pair])

    resumed = make_trainer(tmp_path, lora=True)
    resumed.resume(outcome.checkpoint)
    again = resumed.eval_margin([pair])
    assert margin is not None and again is not None and again.value == pytest.approx(margin.value)


def test_the_trainer_runs_although_art_patched_transformers(tmp_path: Path) -> None:
    # `import art` applies this patch, which breaks every transformers 5 forward pass (see hf_policy).
    from art.transformers.patches import patch_preprocess_mask_arguments

    patch_preprocess_mask_arguments()
    trainer = make_trainer(tmp_path)
    group = ScoredGroup(
        window_id=WINDOW,
        group_index=0,
        trajectories=[trajectory("good", 1.0, "BUY"), trajectory("bad", 0.0, "SELL")],
    )
    outcome = trainer.train_step([group], step=1, learning_rate=1e-3, seed=0)
    assert outcome.metrics[metric_names.GRADIENT_STEPS] == 1


def test_resuming_from_a_missing_checkpoint_folder_fails_loudly(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path)
    missing = CheckpointRef(backend="torch", step=7, location=str(tmp_path / "gone" / "step-7"))
    with pytest.raises(BabylonError, match="registered checkpoint step 7 is missing"):
        trainer.resume(missing)
