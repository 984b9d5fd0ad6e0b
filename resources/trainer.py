"""The `trainer` resource: which backend trains which persistent model, chosen by configuration.

`torch` is our own trainer (CPU or GPU, any local Hugging Face causal LM or the built-in `tiny`);
`art-local` is ART's LocalBackend on a local NVIDIA GPU; `art-serverless` is ART on W&B Training.
A backend whose requirements are missing raises ConfigurationError; nothing falls back to another.
"""

import os
from pathlib import Path
from typing import Literal, get_args

import dagster as dg
from pydantic import Field

from babylon_assets.db.connection import babylon_home
from babylon_assets.errors import ConfigurationError
from babylon_assets.profile import Profile
from babylon_assets.training.backend import TrainerBackend
from babylon_assets.training.types import BackendName, PolicySpec

BACKEND_ENV = "BABYLON_TRAINER_BACKEND"
BASE_MODEL_ENV = "BABYLON_BASE_MODEL"
MODEL_NAME_ENV = "BABYLON_MODEL_NAME"
DEVICE_ENV = "BABYLON_TRAINER_DEVICE"
DEFAULT_MODEL_NAME = "babylon-policy"


class TrainerResource(dg.ConfigurableResource["TrainerResource"]):
    """The persistent policy (model_name, base_model, project) and the backend that trains it."""

    backend: Literal["torch", "art-local", "art-serverless"] = Field(default="torch")
    model_name: str = Field(default=DEFAULT_MODEL_NAME, description="the one persistent model's name")
    base_model: str = Field(
        default="tiny", description="local model folder (torch), Hugging Face id (ART), or 'tiny' (torch only)"
    )
    project: str = Field(default="babylon", description="project the model belongs to (ART/W&B)")
    device: Literal["cpu", "cuda"] = Field(default="cpu", description="torch backend only")
    lora: bool = Field(default=False, description="torch backend: train LoRA adapters (peft) instead of all weights")
    lora_rank: int = 8
    lora_alpha: int = 16
    max_seq_len: int = Field(default=2048, description="longer trajectories keep their first tokens")
    max_grad_norm: float = 0.1
    weight_decay: float = 0.1
    tokens_per_batch: int = Field(default=8192, description="tokens per optimizer step (torch)")
    checkpoint_root: str | None = Field(
        default=None, description="torch checkpoints go to <root>/<model>/step-N; babylon_home()/checkpoints if unset"
    )

    def policy(self) -> PolicySpec:
        return PolicySpec(name=self.model_name, base_model=self.base_model, project=self.project, backend=self.backend)

    def build(self) -> TrainerBackend:
        """The configured backend, after checking its requirements (GPU, extra, API key)."""
        if self.backend == "torch":
            from babylon_assets.training.torch_backend import TorchSettings, TorchTrainer

            settings = TorchSettings(
                device=self.device,
                lora=self.lora,
                lora_rank=self.lora_rank,
                lora_alpha=self.lora_alpha,
                max_seq_len=self.max_seq_len,
                max_grad_norm=self.max_grad_norm,
                weight_decay=self.weight_decay,
                tokens_per_batch=self.tokens_per_batch,
            )
            root = Path(self.checkpoint_root) if self.checkpoint_root else babylon_home() / "checkpoints"
            return TorchTrainer(self.policy(), settings, checkpoint_root=root, models_root=babylon_home() / "models")
        from babylon_assets.training.art_backends import ArtLocalTrainer, ArtServerlessTrainer

        if self.backend == "art-local":
            return ArtLocalTrainer(self.policy(), art_path=str(babylon_home() / "art"))
        return ArtServerlessTrainer(self.policy())


def _env_choice(name: str, default: str | None) -> str:
    value = os.environ.get(name, "").strip() or default
    if value is None:
        raise ConfigurationError(f"the production profile needs {name}; set it")
    return value


def trainer_resource_for(profile: Profile) -> TrainerResource:
    """Local: torch on CPU with the tiny model. Production: BABYLON_TRAINER_BACKEND and BABYLON_BASE_MODEL
    are required. Either profile reads BABYLON_TRAINER_BACKEND, BABYLON_BASE_MODEL, BABYLON_MODEL_NAME and
    BABYLON_TRAINER_DEVICE when set."""
    local = profile == "local"
    backend = _env_choice(BACKEND_ENV, "torch" if local else None)
    choices: tuple[BackendName, ...] = get_args(BackendName)
    chosen = next((choice for choice in choices if choice == backend), None)
    if chosen is None:
        raise ConfigurationError(f"{BACKEND_ENV}={backend!r} is not one of {', '.join(choices)}")
    device = _env_choice(DEVICE_ENV, "cpu" if local or chosen != "torch" else "cuda")
    if device not in ("cpu", "cuda"):
        raise ConfigurationError(f"{DEVICE_ENV}={device!r} is not 'cpu' or 'cuda'")
    return TrainerResource(
        backend=chosen,
        model_name=_env_choice(MODEL_NAME_ENV, DEFAULT_MODEL_NAME),
        base_model=_env_choice(BASE_MODEL_ENV, "tiny" if local else None),
        device="cpu" if device == "cpu" else "cuda",
    )
