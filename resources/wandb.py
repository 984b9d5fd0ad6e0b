"""The `wandb` resource: one W&B run per training materialization, talking to wandb directly.

dagster-wandb does not import with wandb >= 0.30, hence this small resource. Offline (the default)
writes the run under babylon_home()/wandb without touching the network; `wandb sync <run dir>`
uploads it later. Online needs an API key: the production profile sets it from WANDB_API_KEY through
dg.EnvVar; `start_wandb_run` takes it as an argument outside Dagster. It never enters a config or a log.
"""

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

import dagster as dg
from pydantic import Field, JsonValue, SecretStr

from babylon_assets.errors import ConfigurationError
from babylon_assets.paths import babylon_home
from babylon_assets.profile import Profile
from babylon_assets.settings import SettingsReader
from babylon_assets.training.tracking import step_alias

if TYPE_CHECKING:
    import wandb

WANDB_API_KEY_ENV = "WANDB_API_KEY"
WANDB_MODE_ENV = "BABYLON_WANDB_MODE"
WandbMode = Literal["offline", "online"]


class WandbRun:
    """A started run (see babylon_assets.training.tracking.TrackedRun)."""

    def __init__(self, run: "wandb.Run", *, online: bool) -> None:
        self._run = run
        self._online = online

    @property
    def run_id(self) -> str:
        return str(self._run.id)

    @property
    def path(self) -> str:
        return "/".join(str(part) for part in self._run.path.split("/") if part)

    @property
    def url(self) -> str | None:
        # Offline runs have no page until `wandb sync`; asking wandb for one only prints a warning.
        return str(self._run.url) if self._online else None

    def log(self, metrics: dict[str, float], *, step: int) -> None:
        self._run.log(metrics, step=step)

    def log_checkpoint(self, *, name: str, step: int, location: str, metadata: dict[str, JsonValue]) -> None:
        """A `model` artifact per step (alias step-N): a local folder is referenced with checksums, not
        copied; a W&B location is recorded in checkpoint.json. Offline it is staged for `wandb sync`."""
        import wandb

        described: dict[str, JsonValue] = {"step": step, "location": location, **metadata}
        artifact = wandb.Artifact(name=name, type="model", metadata=described)
        if Path(location).is_dir():
            artifact.add_reference(Path(location).resolve().as_uri(), name="checkpoint")
        with artifact.new_file("checkpoint.json") as handle:
            json.dump(described, handle, indent=2)
        # log_artifact only stages offline; wait() and use_artifact would fail there, so neither is used.
        self._run.log_artifact(artifact, aliases=[step_alias(step), "latest"])

    def finish(self, *, failed: bool) -> None:
        self._run.finish(exit_code=1 if failed else 0)


def _missing_key_message() -> str:
    return (
        f"W&B mode 'online' needs an API key: set {WANDB_API_KEY_ENV} (https://wandb.ai/authorize) "
        f"or use offline mode ({WANDB_MODE_ENV}=offline) and upload later with `wandb sync`"
    )


def start_wandb_run(
    *,
    mode: WandbMode,
    project: str,
    entity: str | None,
    directory: Path,
    api_key: SecretStr | None,
    name: str,
    group: str,
    config: dict[str, JsonValue],
) -> WandbRun:
    """Start a run; `api_key` is used online only (offline runs never need one)."""
    key = "" if api_key is None else api_key.get_secret_value().strip()
    if mode == "online" and not key:
        raise ConfigurationError(_missing_key_message())
    directory.mkdir(parents=True, exist_ok=True)
    # wandb takes a second to import: only a process that tracks a run pays it.
    import wandb

    # wandb 0.31 prints its Weave hint ("Detected [litellm, openai] in use") despite Settings(silent=True);
    # only the environment variable silences it.
    os.environ["WANDB_SILENT"] = "true"
    settings = wandb.Settings(
        mode=mode,
        api_key=key if mode == "online" else None,
        silent=True,
        console="off",
        save_code=False,
        disable_git=True,
        x_disable_stats=True,
        x_disable_meta=True,
        x_disable_machine_info=True,
        # Listing the installed packages costs seconds per run and is not the run's lineage.
        x_save_requirements=False,
    )
    run = wandb.init(
        project=project,
        entity=entity,
        name=name,
        group=group,
        job_type="train",
        dir=str(directory),
        config=config,
        settings=settings,
        reinit="create_new",
    )
    return WandbRun(run, online=mode == "online")


class WandbResource(dg.ConfigurableResource["WandbResource"]):
    """Experiment tracking on Weights & Biases: offline by default, online when configured."""

    mode: WandbMode = Field(default="offline", description="offline writes locally only")
    project: str = Field(default="babylon", description="W&B project")
    entity: str | None = Field(default=None, description="W&B entity (team or user); the key's default if unset")
    directory: str | None = Field(default=None, description="where runs are written; babylon_home()/wandb if unset")
    api_key: str | None = Field(
        default=None, description=f"online mode: set from dg.EnvVar('{WANDB_API_KEY_ENV}'); never logged"
    )

    def run_directory(self) -> Path:
        return Path(self.directory) if self.directory else babylon_home() / "wandb"

    def start_run(self, *, name: str, group: str, config: dict[str, JsonValue]) -> WandbRun:
        return start_wandb_run(
            mode=self.mode,
            project=self.project,
            entity=self.entity,
            directory=self.run_directory(),
            api_key=None if self.api_key is None else SecretStr(self.api_key),
            name=name,
            group=group,
            config=config,
        )


def wandb_resource_for(profile: Profile) -> WandbResource:
    """Local: offline. Production: online, with WANDB_API_KEY (required now, resolved by Dagster at run
    time). BABYLON_WANDB_MODE overrides either; WANDB_PROJECT and WANDB_ENTITY pick where runs go."""
    settings = SettingsReader()
    mode = settings.choice(WANDB_MODE_ENV, get_args(WandbMode), "offline" if profile != "production" else "online")
    online = mode == "online" and not settings.problems
    if online and settings.value(WANDB_API_KEY_ENV) is None:
        settings.problems.append(_missing_key_message())
    settings.check()
    return WandbResource(
        mode=mode,
        project=settings.value("WANDB_PROJECT") or "babylon",
        entity=settings.value("WANDB_ENTITY"),
        api_key=dg.EnvVar(WANDB_API_KEY_ENV) if online else None,
    )
