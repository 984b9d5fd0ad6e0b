"""The RULER judge's settings, apart from the judge so that reading them imports neither ART nor LiteLLM."""

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class RulerLimits(BaseModel):
    """How the RULER judge calls its model; the `judge` resource's fields of the same names are these."""

    model_config = ConfigDict(frozen=True)

    permutations: int = Field(default=2, ge=1, description="Orders each group is judged in; scores are averaged.")
    group_size: int = Field(default=8, ge=1, description="Larger windows are split into balanced groups.")
    max_concurrency: int = Field(default=4, ge=1, description="Judge requests in flight.")
    max_retries: int = Field(default=3, ge=0, description="Retries on 429, 5xx, timeouts and unusable answers.")
    timeout_seconds: float = Field(default=120.0, gt=0, description="One request's limit.")
    # Wait before retry k (1-based) is retry_backoff_seconds * 2**(k-1), or longer when a 429 says Retry-After.
    retry_backoff_seconds: float = Field(default=2.0, ge=0, description="First retry's wait; doubles each retry.")
    # Each trajectory's share of a judge call (longer ones are shortened in the judge's view only), and
    # what a call's trajectories may take together: groups are made small enough to fit it.
    max_trajectory_tokens: int = Field(
        default=12_000,
        ge=100,
        description="A trajectory's share of a judge call; longer step texts are shortened in the judge's view only.",
    )
    max_group_tokens: int = Field(default=100_000, ge=100, description="What one judge call's trajectories may take.")


class RulerSettings(RulerLimits):
    judge_model: str = "openai/o3"
    api_base: str | None = None
    api_key: SecretStr | None = None
    # The judge server decodes under the answer's JSON schema (llama.cpp, vLLM): the schema then also pins
    # each position's id, 21 score levels and short explanations (see ruler_judge.pinned_response_format).
    grammar_constrained: bool = False
