"""The `wandb` resource: one W&B run per training materialization, talking to wandb directly.

dagster-wandb does not import with wandb >= 0.30, hence this small resource. Offline (the default)
writes the run under babylon_home()/wandb without touching the network; `wandb sync <run dir>`
uploads it later. Online needs WANDB_API_KEY, read from the environment and never put in a config.
"""

import json
import os
from pathlib import Path
from typing import Literal

import dagster as dg
import wandb
from pydantic import Field, JsonValue

from babylon_assets.db.connection import babylon_home
from babylon_assets.errors import ConfigurationError
from babylon_assets.profile import Profile

WANDB_API_KEY_ENV = "WANDB_API_KEY"
WANDB_MODE_ENV = "BABYLON_WANDB_MODE"


class WandbRun:
    """A started run (see babylon_assets.training.tracking.TrackedRun)."""

    def __init__(self, run: wandb.Run, *, online: bool) -> None:
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

    def log_checkpoint(self, *, name: str, location: str, metadata: dict[str, JsonValue]) -> str:
        """A `model` artifact per step (alias step-N): a local folder is referenced with checksums, not
        copied; a W&B location is recorded in checkpoint.json. Offline it is staged for `wandb sync`."""
        step = metadata.get("step")
        artifact = wandb.Artifact(name=name, type="model", metadata=metadata)
        if Path(location).is_dir():
            artifact.add_reference(Path(location).resolve().as_uri(), name="checkpoint")
        with artifact.new_file("checkpoint.json") as handle:
            json.dump({"location": location, **metadata}, handle, indent=2)
        alias = f"step-{step}"
        # log_artifact only stages offline; wait() and use_artifact would fail there, so neither is used.
        self._run.log_artifact(artifact, aliases=[alias, "latest"])
        return f"{name}:{alias}"

    def finish(self, *, failed: bool) -> None:
        self._run.finish(exit_code=1 if failed else 0)


class WandbResource(dg.ConfigurableResource["WandbResource"]):
    """Experiment tracking on Weights & Biases: offline by default, online when configured."""

    mode: Literal["offline", "online"] = Field(default="offline", description="offline writes locally only")
    project: str = Field(default="babylon", description="W&B project")
    entity: str | None = Field(default=None, description="W&B entity (team or user); the key's default if unset")
    directory: str | None = Field(default=None, description="where runs are written; babylon_home()/wandb if unset")

    def _api_key(self) -> str | None:
        if self.mode == "offline":
            return None
        key = os.environ.get(WANDB_API_KEY_ENV, "").strip()
        if not key:
            raise ConfigurationError(
                f"W&B mode 'online' needs {WANDB_API_KEY_ENV}; set it (https://wandb.ai/authorize) "
                f"or use offline mode ({WANDB_MODE_ENV}=offline) and upload later with `wandb sync`"
            )
        return key

    def run_directory(self) -> Path:
        return Path(self.directory) if self.directory else babylon_home() / "wandb"

    def start_run(self, *, name: str, group: str, config: dict[str, JsonValue]) -> WandbRun:
        key = self._api_key()
        directory = self.run_directory()
        directory.mkdir(parents=True, exist_ok=True)
        os.environ["WANDB_SILENT"] = "true"
        settings = wandb.Settings(
            mode=self.mode,
            api_key=key,
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
            project=self.project,
            entity=self.entity,
            name=name,
            group=group,
            job_type="train",
            dir=str(directory),
            config=config,
            settings=settings,
            reinit="create_new",
        )
        return WandbRun(run, online=self.mode == "online")


def wandb_resource_for(profile: Profile) -> WandbResource:
    """Local: offline. Production: online (WANDB_API_KEY required when a run starts).
    BABYLON_WANDB_MODE overrides either; WANDB_PROJECT and WANDB_ENTITY pick where runs go."""
    default_mode: Literal["offline", "online"] = "offline" if profile == "local" else "online"
    raw = os.environ.get(WANDB_MODE_ENV, "").strip() or default_mode
    if raw not in ("offline", "online"):
        raise ConfigurationError(f"{WANDB_MODE_ENV}={raw!r} is not 'offline' or 'online'")
    mode: Literal["offline", "online"] = "offline" if raw == "offline" else "online"
    return WandbResource(
        mode=mode,
        project=os.environ.get("WANDB_PROJECT", "").strip() or "babylon",
        entity=os.environ.get("WANDB_ENTITY", "").strip() or None,
    )
