"""Our own trainer: ART's group-relative math (see grpo.py) on any local causal LM, CPU or GPU."""

import json
import random
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from pydantic import BaseModel, JsonValue
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from babylon_assets.errors import BabylonError, ConfigurationError
from babylon_assets.training import metric_names
from babylon_assets.training.files import write_folder_atomically
from babylon_assets.training.grpo import (
    EncodedChat,
    batch_tensors,
    group_advantages,
    normalize_items,
    pack_batches,
    policy_loss,
    token_logprobs,
)
from babylon_assets.training.hf_policy import (
    encode_chat,
    load_base_model,
    load_lora_model,
    load_tokenizer,
    resolve_base_model,
    save_model,
    undo_art_mask_patch,
)
from babylon_assets.training.types import (
    CheckpointRef,
    Margin,
    MarginPair,
    PolicySpec,
    ScoredGroup,
    StepOutcome,
    TorchSettings,
)

STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.pt"
MODEL_FOLDER = "model"
# ART's trainer arguments (art/dev/get_model_config.py): AdamW with beta2 0.99, constant learning rate.
ADAM_BETAS = (0.9, 0.99)


class TrainerState(BaseModel):
    """Saved next to the weights so a checkpoint says what it is."""

    step: int
    base_model: str
    lora: bool


def checkpoint_folder(checkpoint_root: Path, model_name: str, step: int) -> Path:
    return checkpoint_root / model_name / f"step-{step}"


def require_device(device: str) -> None:
    """The torch trainer's device exists here: for 'cuda', a GPU torch can use."""
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigurationError(
            "trainer device 'cuda' was requested but torch sees no CUDA GPU; set device='cpu' "
            "(BABYLON_TRAINER_DEVICE=cpu) or run on a machine with an NVIDIA GPU"
        )


class TorchTrainer:
    def __init__(
        self, policy: PolicySpec, settings: TorchSettings, *, checkpoint_root: Path, models_root: Path
    ) -> None:
        if policy.backend != "torch":
            raise ConfigurationError(f"TorchTrainer got a policy for backend {policy.backend!r}")
        require_device(settings.device)
        if settings.threads is not None:
            torch.set_num_threads(settings.threads)
        self._policy = policy
        self._settings = settings
        self._checkpoint_root = checkpoint_root
        self._base_path = resolve_base_model(policy.base_model, models_root)
        self._device = torch.device(settings.device)
        self.tokenizer: PreTrainedTokenizerBase = load_tokenizer(self._base_path)
        self.model: torch.nn.Module = self._fresh_model()
        self._optimizer = self._new_optimizer()
        # The step the weights in memory belong to (0: the base model as loaded).
        self._step = 0

    @property
    def policy(self) -> PolicySpec:
        return self._policy

    def settings(self) -> dict[str, JsonValue]:
        return {"backend": "torch", "base_path": str(self._base_path), **self._settings.model_dump()}

    def _on_device(self, module: torch.nn.Module) -> torch.nn.Module:
        # Typed as a plain Module: transformers annotates PreTrainedModel.to with its own decorator.
        return module.to(self._device)

    def _fresh_model(self) -> torch.nn.Module:
        base = load_base_model(self._base_path)
        if self._settings.lora:
            lora = LoraConfig(
                r=self._settings.lora_rank,
                lora_alpha=self._settings.lora_alpha,
                target_modules="all-linear",
                lora_dropout=0.0,
                task_type="CAUSAL_LM",
            )
            peft_model: torch.nn.Module = get_peft_model(base, lora)
            return self._on_device(peft_model)
        return self._on_device(base)

    def _trainable(self) -> list[torch.nn.Parameter]:
        return [parameter for parameter in self.model.parameters() if parameter.requires_grad]

    def _new_optimizer(self) -> torch.optim.AdamW:
        return torch.optim.AdamW(self._trainable(), lr=0.0, betas=ADAM_BETAS, weight_decay=self._settings.weight_decay)

    def resume(self, checkpoint: CheckpointRef | None) -> None:
        if checkpoint is None:
            if self._step != 0:
                self.model = self._fresh_model()
                self._optimizer = self._new_optimizer()
                self._step = 0
            return
        folder = Path(checkpoint.location)
        if not (folder / STATE_FILE).is_file():
            raise BabylonError(
                f"registered checkpoint step {checkpoint.step} is missing from {folder}; restore that folder "
                "(checkpoints are never deleted by the platform) or train under a new model_name"
            )
        state = TrainerState.model_validate_json((folder / STATE_FILE).read_text())
        if state.step != checkpoint.step:
            raise BabylonError(f"{folder} holds step {state.step}, but it is registered as step {checkpoint.step}")
        if state.lora != self._settings.lora:
            raise ConfigurationError(
                f"checkpoint {folder} was trained with lora={state.lora} but the trainer is configured with "
                f"lora={self._settings.lora}; keep the setting or train a new model_name"
            )
        if self._settings.lora:
            self.model = self._on_device(load_lora_model(self._base_path, folder / MODEL_FOLDER))
        else:
            self.model = self._on_device(load_base_model(folder / MODEL_FOLDER))
        self._optimizer = self._new_optimizer()
        self._optimizer.load_state_dict(torch.load(folder / OPTIMIZER_FILE, map_location=self._device))
        self._step = checkpoint.step

    def train_step(self, groups: Sequence[ScoredGroup], *, step: int, learning_rate: float, seed: int) -> StepOutcome:
        started = time.perf_counter()
        undo_art_mask_patch()
        candidates: list[tuple[str, EncodedChat, float]] = []
        trainable_groups = 0
        for group in groups:
            advantages = group_advantages([trajectory.score for trajectory in group.trajectories])
            trainable_groups += any(advantage != 0 for advantage in advantages)
            for trajectory, advantage in zip(group.trajectories, advantages, strict=True):
                chat = encode_chat(self.tokenizer, trajectory.messages, self._settings.max_seq_len)
                candidates.append((trajectory.trajectory_id, chat, advantage))
        if candidates and not any(any(chat.assistant_mask) for _, chat, _ in candidates):
            # Otherwise the step would "succeed" and register a checkpoint that learned nothing.
            raise ConfigurationError(
                f"step {step}: max_seq_len {self._settings.max_seq_len} cuts every one of the "
                f"{len(candidates)} trajectories before its first reply token, so nothing can be trained; "
                "raise the trainer's max_seq_len (TrainerResource torch.max_seq_len) above the length of "
                "a prompt"
            )
        items = normalize_items(candidates)
        # ART shuffles what it packs; a seeded shuffle keeps runs reproducible.
        random.Random(f"{seed}:{step}").shuffle(items)
        for group_param in self._optimizer.param_groups:
            group_param["lr"] = learning_rate

        losses: list[float] = []
        grad_norms: list[float] = []
        self.model.train()
        for batch in pack_batches(items, self._settings.tokens_per_batch):
            tensors = batch_tensors(batch, self.pad_token_id())
            logits = self.model(
                input_ids=tensors.token_ids.to(self._device),
                attention_mask=tensors.attention_mask.to(self._device),
            ).logits
            new_logprobs = token_logprobs(logits, tensors.token_ids.to(self._device))
            loss = policy_loss(
                new_logprobs,
                tensors.advantages.to(self._device),
                tensors.weights.to(self._device),
                tensors.mask.to(self._device),
            )
            self._optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            grad_norm = torch.nn.utils.clip_grad_norm_(self._trainable(), self._settings.max_grad_norm)
            if not torch.isfinite(grad_norm):
                raise BabylonError(
                    f"step {step}: the gradient norm is {grad_norm.item()}; lower learning_rate or max_seq_len"
                )
            self._optimizer.step()
            losses.append(loss.item())
            grad_norms.append(grad_norm.item())

        # A step without any trainable group still becomes a checkpoint (unchanged weights), as in ART.
        self._step = step
        location = self._save(step)
        metrics: dict[str, float] = {
            metric_names.GROUPS: float(len(groups)),
            metric_names.TRAINABLE_GROUPS: float(trainable_groups),
            metric_names.TRAJECTORIES: float(len(candidates)),
            metric_names.TRAINED_TRAJECTORIES: float(len(items)),
            metric_names.TRUNCATED_TRAJECTORIES: float(sum(chat.truncated for _, chat, _ in candidates)),
            metric_names.TOKENS: float(sum(len(item.chat.token_ids) for item in items)),
            metric_names.TRAINER_TOKENS: float(sum(item.chat.trainable_tokens for item in items)),
            metric_names.GRADIENT_STEPS: float(len(losses)),
            metric_names.LEARNING_RATE: learning_rate,
        }
        if losses:
            metrics[metric_names.LOSS] = sum(losses) / len(losses)
            metrics[metric_names.GRAD_NORM] = sum(grad_norms) / len(grad_norms)
        metrics[metric_names.STEP_TIME] = time.perf_counter() - started
        return StepOutcome(
            step=step,
            metrics=metrics,
            checkpoint=CheckpointRef(backend="torch", step=step, location=str(location)),
        )

    def pad_token_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        if not isinstance(pad, int):
            raise ConfigurationError("the tokenizer has no pad token id")
        return pad

    def _save(self, step: int) -> Path:
        state = TrainerState(step=step, base_model=self._policy.base_model, lora=self._settings.lora)

        def write(folder: Path) -> None:
            model: PreTrainedModel | PeftModel = self.model  # type: ignore[assignment]
            save_model(model, folder / MODEL_FOLDER)
            torch.save(self._optimizer.state_dict(), folder / OPTIMIZER_FILE)
            (folder / STATE_FILE).write_text(json.dumps(state.model_dump()))

        return write_folder_atomically(checkpoint_folder(self._checkpoint_root, self._policy.name, step), write)

    def mean_assistant_logprob(self, chat: EncodedChat) -> float | None:
        """Per-token mean log-prob of the assistant tokens; None when truncation left none."""
        if chat.trainable_tokens == 0:
            return None
        undo_art_mask_patch()
        ids = torch.tensor([chat.token_ids], dtype=torch.long, device=self._device)
        mask = torch.tensor([chat.assistant_mask], dtype=torch.float32, device=self._device)[:, 1:]
        self.model.eval()
        with torch.no_grad():
            logprobs = token_logprobs(self.model(input_ids=ids).logits, ids)
        return float((logprobs * mask).sum() / mask.sum())

    def eval_margin(self, pairs: Sequence[MarginPair]) -> Margin | None:
        margins: list[float] = []
        for pair in pairs:
            top = self.mean_assistant_logprob(encode_chat(self.tokenizer, pair.top, self._settings.max_seq_len))
            bottom = self.mean_assistant_logprob(encode_chat(self.tokenizer, pair.bottom, self._settings.max_seq_len))
            if top is not None and bottom is not None:
                margins.append(top - bottom)
        return Margin(value=sum(margins) / len(margins), pairs=len(margins)) if margins else None

    def close(self) -> None:
        return None
