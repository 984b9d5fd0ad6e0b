"""How a closed-loop evaluation is played, as a plain model without Dagster or torch: `babylon evaluate`'s
flags and policy_evaluation's run config are built from these fields, so each default is written once."""

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
