"""What `train_policy` needs from an experiment tracker (resources.wandb.WandbResource provides it)."""

from typing import Protocol

from pydantic import JsonValue


class TrackedRun(Protocol):
    @property
    def run_id(self) -> str: ...

    @property
    def path(self) -> str:
        """entity/project/run_id (project/run_id offline)."""
        ...

    @property
    def url(self) -> str | None:
        """The run's page; None offline, until `wandb sync` uploads it."""
        ...

    def log(self, metrics: dict[str, float], *, step: int) -> None: ...

    def log_checkpoint(self, *, name: str, location: str, metadata: dict[str, JsonValue]) -> str:
        """Log a checkpoint artifact (a local folder is referenced, not copied); return its name:alias."""
        ...

    def finish(self, *, failed: bool) -> None: ...


class ExperimentTracker(Protocol):
    def start_run(self, *, name: str, group: str, config: dict[str, JsonValue]) -> TrackedRun: ...
