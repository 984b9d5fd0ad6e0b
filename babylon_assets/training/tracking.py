"""What `train_policy` needs from an experiment tracker (resources.wandb.WandbResource provides it)."""

from typing import Protocol

from pydantic import JsonValue


def step_alias(step: int) -> str:
    return f"step-{step}"


def checkpoint_artifact(model_name: str, step: int) -> str:
    """name:alias of the artifact `TrackedRun.log_checkpoint` logs for a step's checkpoint."""
    return f"{model_name}:{step_alias(step)}"


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

    def log_checkpoint(self, *, name: str, step: int, location: str, metadata: dict[str, JsonValue]) -> None:
        """Log a checkpoint artifact named `name`, aliased `step_alias(step)` (a local folder is referenced,
        not copied)."""
        ...

    def finish(self, *, failed: bool) -> None: ...


class ExperimentTracker(Protocol):
    def start_run(self, *, name: str, group: str, config: dict[str, JsonValue]) -> TrackedRun: ...
