"""The `judge` resource: which judge scores the windows, and how it reaches its model.

`kind` chooses: `outcome` scores from the window's ground truth (no LLM; the local profile),
`ruler` asks an LLM through ART's RULER (production), `local-llm` is that RULER judge against SmolLM2-135M
served by xllamacpp on 127.0.0.1 (the local-llm profile): the resource starts the server for each run
that uses it and stops it afterwards, or uses the one `babylon judge serve` runs when `api_base` names
it. One never stands in for another.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal, Self, get_args

import dagster as dg
from pydantic import Field, PrivateAttr, SecretStr

from babylon_assets.errors import BabylonError, ConfigurationError
from babylon_assets.judging.judge import Judge
from babylon_assets.judging.local_llm import (
    LOCAL_JUDGE_MODEL,
    LocalJudgeServer,
    local_judge_server,
    local_ruler_settings,
)
from babylon_assets.judging.local_settings import LocalJudgeSettings
from babylon_assets.judging.outcome_judge import OutcomeJudge
from babylon_assets.judging.ruler_settings import RulerLimits, RulerSettings
from babylon_assets.judging.scoring import WINDOW_DEADLINE_SECONDS
from babylon_assets.profile import Profile
from babylon_assets.settings import SettingsReader

JudgeKind = Literal["ruler", "outcome", "local-llm"]
JUDGE_ENV = "BABYLON_JUDGE"
JUDGE_MODEL_ENV = "BABYLON_JUDGE_MODEL"
JUDGE_API_BASE_ENV = "BABYLON_JUDGE_API_BASE"
JUDGE_API_KEY_ENV = "BABYLON_JUDGE_API_KEY"
JUDGE_THREADS_ENV = "BABYLON_JUDGE_THREADS"
PROFILE_JUDGES: dict[Profile, JudgeKind] = {"local": "outcome", "local-llm": "local-llm", "production": "ruler"}
LOCAL_WINDOW_DEADLINE_SECONDS = 1800.0
# The RULER judge's model default lives in RulerSettings; the resource shows the same one.
_DEFAULTS = RulerSettings()
_LOCAL_DEFAULTS = LocalJudgeSettings()


class RulerConfig(dg.Config, RulerLimits):
    """How the RULER judge calls its model (RulerLimits) as the judge resource's config."""


class JudgeResource(dg.ConfigurableResource["JudgeResource"]):
    """Judge settings: how the judge reaches its model and calls it; `api_key` comes from
    BABYLON_JUDGE_API_KEY via dg.EnvVar and is never logged."""

    kind: JudgeKind
    ruler: RulerConfig = Field(default_factory=RulerConfig, description="group size (all judges), RULER's limits")
    model: str = _DEFAULTS.judge_model
    api_base: str | None = None
    api_key: str | None = None
    window_deadline_seconds: float = Field(
        default=WINDOW_DEADLINE_SECONDS,
        gt=0,
        description="Judging one window, all its requests and retries, fails after this long.",
    )
    threads: int = Field(
        default=_LOCAL_DEFAULTS.threads, ge=1, description="local-llm: llama.cpp threads of the server it starts."
    )

    _server: LocalJudgeServer | None = PrivateAttr(default=None)

    @contextmanager
    def yield_for_execution(self, context: dg.InitResourceContext) -> Iterator[Self]:
        """local-llm without `api_base`: the xllamacpp server runs while the step uses the resource."""
        if self.kind != "local-llm" or self.api_base:
            yield self
            return
        with local_judge_server(LocalJudgeSettings(threads=self.threads)) as server:
            self._server = server
            try:
                yield self
            finally:
                self._server = None

    def build_judge(self) -> Judge:
        if self.kind == "outcome":
            return OutcomeJudge(group_size=self.ruler.group_size)
        if self.kind == "local-llm":
            return self._local_judge()
        if not self.api_key:
            raise ConfigurationError(f"the RULER judge needs an API key: set {JUDGE_API_KEY_ENV}")
        # ART and LiteLLM take seconds to import: only the process that runs the RULER judge pays it.
        from babylon_assets.judging.ruler_judge import RulerJudge

        return RulerJudge(
            RulerSettings(
                judge_model=self.model,
                api_base=self.api_base,
                api_key=SecretStr(self.api_key),
                **self.ruler.model_dump(),
            )
        )

    def _local_judge(self) -> Judge:
        from babylon_assets.judging.ruler_judge import RulerJudge

        if self.api_base:
            if not self.api_key:
                raise ConfigurationError(
                    f"the local-llm judge at {self.api_base} needs the key `babylon judge serve` checks: "
                    f"set {JUDGE_API_KEY_ENV}"
                )
            server = LocalJudgeServer(api_base=self.api_base, api_key=SecretStr(self.api_key))
        elif self._server is None:
            raise BabylonError(
                "the local-llm judge's server runs only while a Dagster step uses the resource; build the judge "
                "inside the step, or set BABYLON_JUDGE_API_BASE to a server `babylon judge serve` runs"
            )
        else:
            server = self._server
        settings = local_ruler_settings(server, LocalJudgeSettings(threads=self.threads))
        return RulerJudge(
            settings.model_copy(
                update={
                    "permutations": self.ruler.permutations,
                    "max_retries": self.ruler.max_retries,
                    "retry_backoff_seconds": self.ruler.retry_backoff_seconds,
                }
            )
        )


def judge_resource_for(profile: Profile) -> JudgeResource:
    """The profile's judge (local: outcome, local-llm: local-llm, production: ruler); BABYLON_JUDGE overrides
    the choice. local-llm reads BABYLON_JUDGE_THREADS, and BABYLON_JUDGE_API_BASE and BABYLON_JUDGE_API_KEY
    when it uses a server of `babylon judge serve`.

    The RULER judge reads its model (BABYLON_JUDGE_MODEL, default openai/o3), base URL
    (BABYLON_JUDGE_API_BASE) and key (BABYLON_JUDGE_API_KEY) from the environment at run time; every
    missing one is reported at once (ConfigurationProblems).
    """
    settings = SettingsReader()
    kind = settings.choice(JUDGE_ENV, get_args(JudgeKind), PROFILE_JUDGES[profile])
    threads = settings.threads(JUDGE_THREADS_ENV)
    settings.check()
    if kind == "outcome":
        return JudgeResource(kind="outcome")
    if kind == "local-llm":
        # With BABYLON_JUDGE_API_BASE: the server `babylon judge serve` runs (it checks BABYLON_JUDGE_API_KEY);
        # without: each run starts its own.
        served = settings.value(JUDGE_API_BASE_ENV) is not None
        if served:
            settings.required(JUDGE_API_KEY_ENV, "the server of `babylon judge serve` checks it")
            settings.check()
        return JudgeResource(
            kind="local-llm",
            model=LOCAL_JUDGE_MODEL,
            api_base=dg.EnvVar(JUDGE_API_BASE_ENV) if served else None,
            api_key=dg.EnvVar(JUDGE_API_KEY_ENV) if served else None,
            threads=threads or _LOCAL_DEFAULTS.threads,
            # One call of a 5-agent window takes 1-5 minutes on 2 busy cores, and the orders queue.
            window_deadline_seconds=LOCAL_WINDOW_DEADLINE_SECONDS,
        )
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
