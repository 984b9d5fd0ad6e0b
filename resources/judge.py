"""The `judge` resource: which judge scores the windows, and how it reaches its model.

`kind` chooses: `outcome` scores from the window's ground truth (no LLM; the local profile),
`ruler` asks an LLM through ART's RULER (production). One never stands in for the other.
"""

from typing import Literal, get_args

import dagster as dg
from pydantic import Field, SecretStr

from babylon_assets.errors import ConfigurationError
from babylon_assets.judging.judge import Judge
from babylon_assets.judging.outcome_judge import OutcomeJudge
from babylon_assets.judging.ruler_settings import RulerSettings
from babylon_assets.judging.scoring import WINDOW_DEADLINE_SECONDS
from babylon_assets.profile import Profile
from babylon_assets.settings import SettingsReader

JudgeKind = Literal["ruler", "outcome"]
JUDGE_ENV = "BABYLON_JUDGE"
JUDGE_MODEL_ENV = "BABYLON_JUDGE_MODEL"
JUDGE_API_BASE_ENV = "BABYLON_JUDGE_API_BASE"
JUDGE_API_KEY_ENV = "BABYLON_JUDGE_API_KEY"
# The RULER judge's defaults live in RulerSettings; the resource shows the same ones.
_DEFAULTS = RulerSettings()


class JudgeResource(dg.ConfigurableResource["JudgeResource"]):
    """Judge settings; `api_key` comes from BABYLON_JUDGE_API_KEY via dg.EnvVar and is never logged."""

    kind: JudgeKind
    model: str = _DEFAULTS.judge_model
    api_base: str | None = None
    api_key: str | None = None
    permutations: int = Field(
        default=_DEFAULTS.permutations, ge=1, description="Orders each group is judged in; scores are averaged."
    )
    group_size: int = Field(
        default=_DEFAULTS.group_size, ge=1, description="Larger windows are split into balanced groups."
    )
    max_concurrency: int = Field(default=_DEFAULTS.max_concurrency, ge=1, description="Judge requests in flight.")
    max_retries: int = Field(
        default=_DEFAULTS.max_retries, ge=0, description="Retries on 429, 5xx, timeouts and unusable answers."
    )
    timeout_seconds: float = Field(default=_DEFAULTS.timeout_seconds, gt=0, description="One request's limit.")
    window_deadline_seconds: float = Field(
        default=WINDOW_DEADLINE_SECONDS,
        gt=0,
        description="Judging one window, all its requests and retries, fails after this long.",
    )
    retry_backoff_seconds: float = Field(
        default=_DEFAULTS.retry_backoff_seconds, ge=0, description="First retry's wait; doubles each retry."
    )

    max_trajectory_tokens: int = Field(
        default=_DEFAULTS.max_trajectory_tokens,
        ge=100,
        description="A trajectory's share of a judge call; longer step texts are shortened in the judge's view only.",
    )
    max_group_tokens: int = Field(
        default=_DEFAULTS.max_group_tokens, ge=100, description="What one judge call's trajectories may take."
    )

    def build_judge(self) -> Judge:
        if self.kind == "outcome":
            return OutcomeJudge(group_size=self.group_size)
        if not self.api_key:
            raise ConfigurationError(f"the RULER judge needs an API key: set {JUDGE_API_KEY_ENV}")
        # ART and LiteLLM take seconds to import: only the process that runs the RULER judge pays it.
        from babylon_assets.judging.ruler_judge import RulerJudge

        return RulerJudge(
            RulerSettings(
                judge_model=self.model,
                api_base=self.api_base,
                api_key=SecretStr(self.api_key),
                permutations=self.permutations,
                group_size=self.group_size,
                max_concurrency=self.max_concurrency,
                max_retries=self.max_retries,
                timeout_seconds=self.timeout_seconds,
                retry_backoff_seconds=self.retry_backoff_seconds,
                max_trajectory_tokens=self.max_trajectory_tokens,
                max_group_tokens=self.max_group_tokens,
            )
        )


def judge_resource_for(profile: Profile) -> JudgeResource:
    """The profile's judge (local: outcome, production: ruler); BABYLON_JUDGE overrides the choice.

    The RULER judge reads its model (BABYLON_JUDGE_MODEL, default openai/o3), base URL
    (BABYLON_JUDGE_API_BASE) and key (BABYLON_JUDGE_API_KEY) from the environment at run time; every
    missing one is reported at once (ConfigurationProblems).
    """
    settings = SettingsReader()
    kind = settings.choice(JUDGE_ENV, get_args(JudgeKind), "outcome" if profile == "local" else "ruler")
    settings.check()
    if kind == "outcome":
        return JudgeResource(kind="outcome")
    why = "the RULER judge needs it (or set BABYLON_JUDGE=outcome to score from market outcomes without an LLM)"
    settings.required(JUDGE_API_BASE_ENV, f"{why}; e.g. https://api.openai.com/v1 or http://127.0.0.1:8000/v1")
    settings.required(JUDGE_API_KEY_ENV, why)
    settings.check()
    return JudgeResource(
        kind="ruler",
        model=settings.value(JUDGE_MODEL_ENV) or _DEFAULTS.judge_model,
        api_base=dg.EnvVar(JUDGE_API_BASE_ENV),
        api_key=dg.EnvVar(JUDGE_API_KEY_ENV),
    )
