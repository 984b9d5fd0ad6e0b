"""`babylon doctor`: the active profile's whole configuration checked at once.

Each part (database, judge, trainer, W&B) is read exactly as the commands and Dagster processes read
it; every missing or invalid setting is listed with its allowed values, instead of one per failed run.
"""

from collections.abc import Callable

from pydantic import BaseModel, ConfigDict

from babylon_assets.errors import BabylonError, ConfigurationError
from babylon_assets.profile import PROFILE_ENV, active_profile
from babylon_assets.settings import ConfigurationProblems


class PartReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    part: str
    summary: str | None
    problems: list[str]


class DoctorReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    profile: str
    parts: list[PartReport]

    @property
    def problems(self) -> list[str]:
        return [problem for part in self.parts for problem in part.problems]


def _check(part: str, read: Callable[[], str]) -> PartReport:
    """Run one part's own reading of its settings; its errors are this report's content."""
    try:
        return PartReport(part=part, summary=read(), problems=[])
    except ConfigurationProblems as error:
        return PartReport(part=part, summary=None, problems=error.problems)
    except BabylonError as error:
        return PartReport(part=part, summary=None, problems=[str(error)])


def _database() -> str:
    from babylon_assets.db.connection import (
        platform_schema,
        redact_url,
        resolve_database_url,
        resolve_store_base_url,
        resolve_store_url,
    )
    from babylon_assets.db.migrate import require_migrated
    from babylon_assets.tools.instance import storage_target
    from babylon_assets.training.publish import publish_target

    url = resolve_database_url()
    require_migrated(resolve_store_url(url))
    storage_target(resolve_store_base_url(url))
    publishing = "publishing to the game" if publish_target(url) is not None else "not publishing"
    return (
        f"game {redact_url(url)}, platform schema {platform_schema()} of "
        f"{redact_url(resolve_store_base_url(url))}: reachable and migrated; {publishing}"
    )


def _judge() -> str:
    from resources.judge import judge_resource_for

    judge = judge_resource_for(active_profile())
    if judge.kind == "outcome":
        return "outcome (scores from market outcomes, no LLM)"
    if judge.kind == "ruler":
        return f"ruler, model {judge.model}"
    import importlib.util

    from babylon_assets.training.gguf import smollm2_gguf

    gguf = smollm2_gguf()
    if judge.api_base is None and importlib.util.find_spec("xllamacpp") is None:
        raise ConfigurationError(
            "the local-llm judge serves SmolLM2 with xllamacpp, which is not installed: "
            "`pip install xllamacpp==2026.10.11549` (make install does it)"
        )
    where = "the server at BABYLON_JUDGE_API_BASE" if judge.api_base else "xllamacpp on 127.0.0.1, started per run"
    return f"local-llm, RULER with {judge.model} ({gguf.name}) on {where}, {judge.threads} thread(s)"


def _trainer() -> str:
    from resources.trainer import trainer_resource_for

    trainer = trainer_resource_for(active_profile())
    return f"{trainer.backend} on {trainer.torch.device}: model {trainer.model_name} from {trainer.base_model}"


def _wandb() -> str:
    from resources.wandb import wandb_resource_for

    wandb = wandb_resource_for(active_profile())
    return f"{wandb.mode}, project {wandb.project}"


def diagnose() -> DoctorReport:
    """Every part's settings under the active profile; an invalid profile is the one problem then."""
    profile = _check("profile", active_profile)
    if profile.problems:
        return DoctorReport(profile="invalid", parts=[profile])
    parts = [
        _check("database", _database),
        _check("judge", _judge),
        _check("trainer", _trainer),
        _check("wandb", _wandb),
    ]
    return DoctorReport(profile=active_profile(), parts=parts)


def render_doctor(report: DoctorReport) -> str:
    lines = [f"profile:  {report.profile} ({PROFILE_ENV})"]
    lines += [f"{part.part + ':':9} {part.summary}" for part in report.parts if part.summary is not None]
    problems = report.problems
    if problems:
        lines.append(f"{len(problems)} setting(s) to fix:")
        lines += [f"  - {problem}" for problem in problems]
    else:
        lines.append("configuration OK")
    return "\n".join(lines)
