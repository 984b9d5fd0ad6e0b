"""What `train_policy` needs from a trainer: the same calls and results for every backend."""

from collections.abc import Sequence
from typing import Protocol

from pydantic import JsonValue

from babylon_assets.training.types import CheckpointRef, Margin, MarginPair, PolicySpec, ScoredGroup, StepOutcome


class TrainerBackend(Protocol):
    @property
    def policy(self) -> PolicySpec: ...

    def settings(self) -> dict[str, JsonValue]:
        """The backend's configuration for lineage and W&B; never a secret."""
        ...

    def resume(self, checkpoint: CheckpointRef | None) -> None:
        """Load the latest registered checkpoint (None: start from the base model)."""
        ...

    def train_step(self, groups: Sequence[ScoredGroup], *, step: int, learning_rate: float, seed: int) -> StepOutcome:
        """One step on these groups; the checkpoint is complete when this returns, but unregistered."""
        ...

    def eval_margin(self, pairs: Sequence[MarginPair]) -> Margin | None:
        """The policy's margin on the pairs it can measure.

        None when no pair can be measured, or when the backend cannot compute log-probabilities locally.
        """
        ...

    def close(self) -> None: ...
