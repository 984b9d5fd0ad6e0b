"""ART's LocalBackend (local NVIDIA GPU) and ServerlessBackend (W&B Training) behind TrainerBackend.

Requirements are checked when the trainer is built, so a missing GPU, backend extra or API key is a
ConfigurationError before any work starts, never a silent switch to another backend. ART keeps the
weights itself (its checkpoint folder, or a W&B artifact), so these backends cannot measure the
held-out log-likelihood margin here: `eval_margin` returns None and the margin stays unrecorded.
"""

import asyncio
import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from pydantic import JsonValue, SecretStr

from babylon_assets.errors import BabylonError, ConfigurationError
from babylon_assets.training.hf_policy import BUILT_MODELS
from babylon_assets.training.types import CheckpointRef, Margin, MarginPair, PolicySpec, ScoredGroup, StepOutcome
from babylon_assets.trajectories.models import window_key

if TYPE_CHECKING:
    # `import art` takes seconds; only the ART backends import it, when they are used.
    import art

LOCAL_EXTRA_MODULES = ("unsloth", "vllm")


def to_art_groups(groups: Sequence[ScoredGroup]) -> list["art.TrajectoryGroup"]:
    """art.TrajectoryGroup per group, each built from art.Trajectory items.

    Built item by item: in ART 0.5.18 `TrajectoryGroup.model_validate(dump)` silently returns an
    empty group.
    """
    import art

    return [
        art.TrajectoryGroup(
            [
                art.Trajectory(
                    messages_and_choices=[message.model_dump() for message in trajectory.messages],
                    reward=trajectory.score,
                    metadata={
                        "trajectory_id": trajectory.trajectory_id,
                        "window": window_key(trajectory.window_id),
                        "judge": f"{trajectory.judge}@{trajectory.rubric_version}",
                    },
                )
                for trajectory in group.trajectories
            ]
        )
        for group in groups
    ]


class ArtTrainer(ABC):
    """Shared driving of an ART backend: one event loop, one registered TrainableModel."""

    def __init__(self, policy: PolicySpec) -> None:
        if policy.base_model in BUILT_MODELS:
            raise ConfigurationError(
                f"backend {policy.backend!r} trains a real Hugging Face model; set base_model to its id "
                f"(e.g. Qwen/Qwen2.5-0.5B-Instruct), {policy.base_model!r} exists only for the torch backend"
            )
        self._policy = policy
        self._loop = asyncio.new_event_loop()
        self._backend: art.Backend | None = None
        self._model: art.TrainableModel[None] | None = None

    @property
    def policy(self) -> PolicySpec:
        return self._policy

    def settings(self) -> dict[str, JsonValue]:
        return {"backend": self._policy.backend}

    @abstractmethod
    def _make_backend(self) -> "art.Backend": ...

    def _train_options(self) -> dict[str, JsonValue]:
        return {}

    @abstractmethod
    def _location(self, result: "art.TrainResult") -> str: ...

    @abstractmethod
    def _where(self) -> str:
        """Where ART keeps this model's checkpoints, for a person to look."""

    def resume(self, checkpoint: CheckpointRef | None) -> None:
        """ART resumes from its own latest checkpoint of the model (its folder or W&B), which must be the
        registered one: a later step of ART's was never registered, and training on from it would put
        its unrecorded data into every following checkpoint."""
        import art

        self._backend = self._make_backend()
        self._model = art.TrainableModel(
            name=self._policy.name, project=self._policy.project, base_model=self._policy.base_model
        )
        self._loop.run_until_complete(self._model.register(self._backend))
        held = self._loop.run_until_complete(self._model.get_step())
        registered = 0 if checkpoint is None else checkpoint.step
        if held != registered:
            raise BabylonError(
                f"ART holds model {self._policy.name!r} at step {held}, but its last registered checkpoint is "
                f"step {registered}: a run stopped between ART's checkpoint and its registration, or something "
                f"else trained the model. Delete ART's checkpoints after step {registered} ({self._where()}), "
                "or train under a new model_name"
            )

    def train_step(self, groups: Sequence[ScoredGroup], *, step: int, learning_rate: float, seed: int) -> StepOutcome:
        if self._backend is None or self._model is None:
            raise BabylonError("resume() must be called before train_step()")
        result = self._loop.run_until_complete(
            self._backend.train(
                self._model, to_art_groups(groups), learning_rate=learning_rate, **self._train_options()
            )
        )
        return StepOutcome(
            step=result.step,
            # ART's names are the platform's (see metric_names).
            metrics={key: float(value) for key, value in result.metrics.items()},
            checkpoint=CheckpointRef(backend=self._policy.backend, step=result.step, location=self._location(result)),
        )

    def eval_margin(self, pairs: Sequence[MarginPair]) -> Margin | None:
        return None

    def close(self) -> None:
        if self._backend is not None:
            self._loop.run_until_complete(self._backend.close())
        self._loop.close()


class ArtLocalTrainer(ArtTrainer):
    def __init__(self, policy: PolicySpec, *, art_path: str) -> None:
        self._art_path = art_path
        if not torch.cuda.is_available():
            raise ConfigurationError(
                "backend 'art-local' trains on a local NVIDIA GPU, but torch sees none "
                "(torch.cuda.is_available() is False); use backend 'torch' on this machine, "
                "or 'art-serverless' with WANDB_API_KEY"
            )
        missing = [name for name in LOCAL_EXTRA_MODULES if importlib.util.find_spec(name) is None]
        if missing:
            raise ConfigurationError(
                f"backend 'art-local' needs ART's backend extra ({', '.join(missing)} not installed); "
                "install it with: pip install 'openpipe-art[backend]==0.5.18'"
            )
        super().__init__(policy)

    def settings(self) -> dict[str, JsonValue]:
        return {"backend": "art-local", "art_path": self._art_path, **self._train_options()}

    def _make_backend(self) -> "art.Backend":
        from art.local import LocalBackend

        return LocalBackend(path=self._art_path)

    def _train_options(self) -> dict[str, JsonValue]:
        # Recorded assistant turns carry no logprobs; ART then takes rho = 1 (token-weighted REINFORCE).
        return {"allow_training_without_logprobs": True}

    def _where(self) -> str:
        return f"under {self._art_path}/{self._policy.project}/models/{self._policy.name}/checkpoints"

    def _location(self, result: "art.TrainResult") -> str:
        from art.types import LocalTrainResult

        if not isinstance(result, LocalTrainResult) or result.checkpoint_path is None:
            raise BabylonError("ART's LocalBackend saved no checkpoint for this step; check its log under art_path")
        return result.checkpoint_path


class ArtServerlessTrainer(ArtTrainer):
    """ART on W&B Training; the caller supplies the W&B API key (resources.trainer reads WANDB_API_KEY)."""

    def __init__(self, policy: PolicySpec, *, api_key: SecretStr) -> None:
        self._api_key = api_key
        super().__init__(policy)

    def _make_backend(self) -> "art.Backend":
        import art

        return art.ServerlessBackend(api_key=self._api_key.get_secret_value())

    def _where(self) -> str:
        return f"the W&B artifacts of model {self._policy.name!r} in project {self._policy.project!r}"

    def _location(self, result: "art.TrainResult") -> str:
        from art.types import ServerlessTrainResult

        if not isinstance(result, ServerlessTrainResult) or result.artifact_name is None:
            raise BabylonError("ART's ServerlessBackend returned no checkpoint artifact for this step")
        return result.artifact_name
