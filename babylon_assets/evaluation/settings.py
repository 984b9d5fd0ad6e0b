"""How a closed-loop evaluation is played, as a plain model without Dagster or torch: `babylon evaluate`'s
flags and policy_evaluation's run config are built from these fields, so each default is written once."""

from typing import Literal

from pydantic import BaseModel, Field

from babylon_assets.simulation.strategies import StrategyName


class EvaluationSettings(BaseModel):
    # 4 keeps the evaluation after every training run short; `babylon evaluate --markets` plays more.
    markets: int = Field(default=4, ge=1, description="simulated markets every policy plays")
    seed: int = Field(default=0, description="seed of the markets (and of the scripted agents)")
    decisions: int = Field(default=6, ge=1, description="decisions per market")
    persona: StrategyName = Field(default="balanced", description="the agent persona the policy is prompted as")
    # Fits a complete action: the simulator's recorded replies, which the policy learns, take up to ~92
    # SmolLM2 tokens; a reply cut short is unparseable.
    max_new_tokens: int = Field(default=128, ge=1, description="reply length limit")
    # Agents in the game answer through structured outputs; "free" measures whether a model follows the
    # format on its own (SmolLM2-135M never did: docs in the README's learning benchmark).
    decoding: Literal["json-schema", "free"] = Field(
        default="json-schema",
        description="json-schema: replies are decoded under the action format's JSON schema, so every reply "
        "is an action and the policy is judged on which; free: unconstrained decoding",
    )
