"""Closed-loop evaluation: replies parsed into actions, executed in the simulated market, stored per checkpoint."""

import json
import random
import re
import typing
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

from babylon_assets.db.connection import connect
from babylon_assets.evaluation.evaluate import paired_comparison
from babylon_assets.evaluation.market_play import (
    AgentAction,
    BuySharesAction,
    HoldAction,
    OpenPerpAction,
    Reply,
    decision_minutes,
    evaluation_market,
    execute,
    parse_action,
    persona,
    play_market,
    reply_schema,
)
from babylon_assets.simulation.episodes import generate_trajectory
from babylon_assets.simulation.market import TRADING_FEE, Portfolio, simulate_market
from babylon_assets.tools.cli import main
from babylon_assets.training import registry
from babylon_assets.training.hf_policy import (
    JsonSchemaDecoding,
    generate_reply,
    load_base_model,
    load_tokenizer,
    resolve_base_model,
)
from babylon_assets.training.torch_backend import TorchTrainer
from babylon_assets.training.types import PolicySpec, ScoredGroup, TorchSettings
from babylon_assets.trajectories.messages import ChatMessage
from tests.support.training import WINDOW, register_without_lineage, scored_trajectory


def test_replies_parse_into_actions_and_anything_else_is_none() -> None:
    opened = parse_action(
        'Sure! {"action": "OPEN_PERP", "parameters": {"ticker": "NOVA", "side": "long", "margin": 50, '
        '"leverage": 3}, "reasoning": "up"} and more text'
    )
    assert isinstance(opened, OpenPerpAction) and opened.parameters.ticker == "NOVA"
    bought = parse_action('{"action": "BUY_SHARES", "parameters": {"marketId": "pm-1", "outcome": "NO", "amount": 5}}')
    assert isinstance(bought, BuySharesAction) and bought.parameters.market_id == "pm-1"
    assert isinstance(parse_action('{"action": "HOLD", "parameters": {}, "reasoning": "wait"}'), HoldAction)
    for reply in (
        "I would buy BABY.",
        '{"action": "OPEN_PERP", "parameters": {"ticker": "NOVA", "side": "up", "margin": 50, "leverage": 3}}',
        '{"action": "OPEN_PERP", "parameters": {"ticker": "NOVA", "side": "long", "margin": 50, "leverage": 500}}',
        '{"action": "OPEN_PERP", "parameters": {"ticker": "NOVA", "side": "long", "margin": Infinity, "leverage": 2}}',
        '{"action": "TELEPORT"}',
        '{"action": "HOLD"',
        "[1, 2]",
    ):
        assert parse_action(reply) is None, reply


@pytest.mark.parametrize("agent_index", range(5))
def test_replaying_a_scripted_agents_replies_reproduces_its_pnl(agent_index: int) -> None:
    # execute() applies the simulator's trading rules: the scripted agent's own replies, executed at its
    # own minutes, earn exactly the P&L the simulator gave it.
    market = simulate_market(random.Random("replay"), WINDOW)
    row = generate_trajectory(seed=3, window_id=WINDOW, market=market, agent_index=agent_index)
    start = row.steps[0].environment_state.agent_balance
    book = Portfolio(cash=start)
    for step in row.steps:
        call = step.llm_calls[0]
        minute = int(re.search(r"minute (\d+)\.", call.user_prompt).group(1))  # type: ignore[union-attr]
        action = parse_action(call.response)
        assert action is not None, call.response
        assert execute(action, market, book, minute)
    assert book.equity(market, 60, settled=True) - start == pytest.approx(row.total_reward, abs=1e-3)


def test_the_prompt_an_agent_sees_states_the_action_format_the_parser_accepts() -> None:
    # A policy can only act if it is told how: every action with its parameters, and an example that parses.
    window_id, market = evaluation_market(seed=0, index=0)
    shown: list[str] = []

    def respond(messages: Sequence[ChatMessage]) -> Reply:
        shown.append("\n".join(message.content for message in messages))
        return Reply(text="HOLD", tokens=1, seconds=0.1)

    play_market(respond, market, window_id, persona("balanced"), 1)
    (prompt,) = shown
    examples = [line.removeprefix("Example: ") for line in prompt.splitlines() if line.startswith("Example: ")]
    assert len(examples) == 1 and parse_action(examples[0]) is not None, prompt
    for variant in typing.get_args(typing.get_args(AgentAction)[0]):
        for action in typing.get_args(variant.model_fields["action"].annotation):
            assert action in prompt
        parameters = variant.model_fields.get("parameters")
        if parameters is not None:
            for name, field in parameters.annotation.model_fields.items():
                assert f'"{field.alias or name}"' in prompt, (name, prompt)
    # The simulated agents' recorded trajectories were prompted the same way.
    row = generate_trajectory(seed=0, window_id=WINDOW, market=simulate_market(random.Random(0), WINDOW), agent_index=1)
    assert examples[0] in row.steps[0].llm_calls[0].user_prompt


def test_an_invalid_or_infeasible_reply_is_held_and_counted() -> None:
    window_id, market = evaluation_market(seed=0, index=0)
    ticker = persona("balanced").preferred_tickers[0]
    replies = iter(
        [
            "no idea",
            json.dumps(
                {"action": "OPEN_PERP", "parameters": {"ticker": ticker, "side": "long", "margin": 5e6, "leverage": 2}}
            ),
            json.dumps(
                {"action": "OPEN_PERP", "parameters": {"ticker": ticker, "side": "long", "margin": 100, "leverage": 2}}
            ),
            json.dumps({"action": "CLOSE_PERP", "parameters": {"ticker": "ZZZZ"}}),
        ]
    )
    result = play_market(
        lambda messages: Reply(text=next(replies), tokens=3, seconds=0.5), market, window_id, persona("balanced"), 4
    )
    assert (result.decisions, result.invalid, result.tokens, result.seconds) == (4, 3, 12, 2.0)
    # The one valid trade determines the P&L: long 100 x2 from the third decision, settled at the end.
    prices = market.tickers[ticker].prices
    third_minute = decision_minutes(4)[2]
    assert result.pnl == pytest.approx(100 * 2 * (prices[60] / prices[third_minute] - 1) - 100 * 2 * TRADING_FEE)
    hold = play_market(
        lambda messages: Reply(text="HOLD", tokens=1, seconds=0.1), market, window_id, persona("balanced"), 3
    )
    assert hold.pnl == 0 and hold.invalid == 3


@pytest.mark.usefixtures("one_torch_thread")
def test_replies_decoded_under_the_reply_schema_are_actions_whatever_the_weights(tmp_path: Path) -> None:
    # What `--decoding json-schema` promises: every reply is an action the parser accepts (the market may
    # still refuse it), even from a random tiny model whose free replies are bytes.
    folder = resolve_base_model("tiny", tmp_path / "models")
    tokenizer = load_tokenizer(folder)
    model = load_base_model(folder)
    decoding = JsonSchemaDecoding(tokenizer, reply_schema())
    for prompt in ("Act.", "Trade now."):
        chat = [ChatMessage(role="user", content=prompt)]
        constrained = generate_reply(model, tokenizer, chat, 512, decoding)
        assert parse_action(constrained.text) is not None, constrained.text
        assert parse_action(generate_reply(model, tokenizer, chat, 64).text) is None


def test_paired_comparison_over_the_same_markets() -> None:
    better = paired_comparison([3.0, 5.0, 4.0, 6.0], [1.0, 2.0, 2.0, 3.0])
    assert better.mean_difference == pytest.approx(2.5) and better.win_rate == 1.0
    assert better.ci_low is not None and better.ci_high is not None and 0 < better.ci_low < 2.5 < better.ci_high
    assert better.p_value < 0.01
    worse = paired_comparison([1.0, 2.0, 2.0, 3.0], [3.0, 5.0, 4.0, 6.0])
    assert worse.p_value > 0.99 and worse.win_rate == 0.0
    single = paired_comparison([1.0], [0.0])
    assert single.ci_low is None and single.win_rate == 1.0


def register_tiny_checkpoint(url: str, tmp_path: Path, home: Path) -> None:
    torch.manual_seed(0)
    policy = PolicySpec(name="policy", base_model="tiny", project="test", backend="torch")
    trainer = TorchTrainer(
        policy,
        TorchSettings(max_seq_len=64, threads=1),
        checkpoint_root=tmp_path / "checkpoints",
        models_root=home / "models",
    )
    messages = [ChatMessage(role="user", content="Act."), ChatMessage(role="assistant", content="HOLD")]
    group = ScoredGroup(
        window_id=WINDOW,
        group_index=0,
        trajectories=[scored_trajectory(name, score, messages) for name, score in (("a", 1.0), ("b", 0.0))],
    )
    outcome = trainer.train_step([group], step=1, learning_rate=1e-3, seed=0)
    with connect(url, autocommit=True) as conn:
        registry.ensure_policy_model(conn, policy)
        register_without_lineage(conn, policy, outcome, registry.lock_model(conn, policy.name))


def test_babylon_evaluate_plays_the_tiny_model_and_stores_the_result(
    database_url: str,
    store_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("BABYLON_HOME", str(home))
    monkeypatch.setenv("DATABASE_URL", database_url)
    register_tiny_checkpoint(store_url, tmp_path, home)
    flags = ["--markets", "1", "--decisions", "2", "--max-new-tokens", "8", "--decoding", "free"]
    assert main(["evaluate", "--model", "policy", *flags]) == 0
    printed = capsys.readouterr().out
    assert "model policy step 1" in printed and "scripted:balanced" in printed
    with connect(store_url) as conn:
        rows = conn.execute(
            "SELECT r.policy, r.invalid_rate, r.tokens_per_second, array_length(r.market_pnls, 1), e.markets, "
            "e.decoding "
            "FROM policy_evaluation_results AS r JOIN policy_evaluations AS e ON e.id = r.evaluation_id "
            "ORDER BY r.policy"
        ).fetchall()
    policies = {row[0]: row for row in rows}
    assert set(policies) == {"base", "checkpoint"} | {
        f"scripted:{name}" for name in ("conservative", "balanced", "aggressive", "momentum", "contrarian")
    }
    # A random tiny model never writes a valid action: every reply is counted invalid and held.
    assert policies["base"][1] == 1.0 and policies["checkpoint"][1] == 1.0
    assert policies["base"][2] > 0 and policies["scripted:balanced"][1] is None
    assert all(row[3] == 1 and row[4] == 1 and row[5] == "free" for row in rows)
