"""Backends are chosen by configuration and fail with a clear error when their requirements are missing."""

import importlib.util
import json
from pathlib import Path
from typing import cast

import art
import dagster as dg
import pytest
import torch

from babylon_assets.errors import BabylonError, ConfigurationError
from babylon_assets.training.art_backends import ArtServerlessTrainer, ArtTrainer, to_art_groups
from babylon_assets.training.torch_backend import TorchTrainer
from babylon_assets.training.types import CheckpointRef, PolicySpec, ScoredGroup
from babylon_assets.trajectories.messages import ChatMessage
from resources.trainer import TorchConfig, TrainerResource, trainer_resource_for
from tests.support.training import WINDOW, scored_trajectory

HF_MODEL = "Qwen/Qwen2.5-0.5B-Instruct"
SECRET = "wandb-test-key-not-real-0123456789"


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BABYLON_HOME", str(tmp_path))
    for name in (
        "BABYLON_TRAINER_BACKEND",
        "BABYLON_BASE_MODEL",
        "BABYLON_MODEL_NAME",
        "BABYLON_TRAINER_DEVICE",
        "WANDB_API_KEY",
    ):
        monkeypatch.delenv(name, raising=False)


def test_art_local_without_gpu_fails_with_a_clear_error() -> None:
    assert not torch.cuda.is_available(), "this test describes a machine without a GPU"
    with pytest.raises(ConfigurationError, match=r"NVIDIA GPU.*torch\.cuda\.is_available\(\) is False"):
        TrainerResource(backend="art-local", base_model=HF_MODEL).build()


def test_art_local_without_the_backend_extra_fails_with_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    assert importlib.util.find_spec("unsloth") is None, "this test describes a machine without ART's backend extra"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(ConfigurationError, match=r"openpipe-art\[backend\]==0\.5\.18"):
        TrainerResource(backend="art-local", base_model=HF_MODEL).build()


def test_art_serverless_without_key_fails_with_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # The key is the resource's (set from dg.EnvVar by the profile), never read from the environment behind its back.
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    for key in (None, " "):
        with pytest.raises(ConfigurationError, match="needs a W&B API key: set WANDB_API_KEY"):
            TrainerResource(backend="art-serverless", base_model=HF_MODEL, wandb_api_key=key).build()
    monkeypatch.setenv("BABYLON_TRAINER_BACKEND", "art-serverless")
    monkeypatch.setenv("BABYLON_BASE_MODEL", HF_MODEL)
    monkeypatch.delenv("WANDB_API_KEY")
    with pytest.raises(ConfigurationError, match="needs a W&B API key: set WANDB_API_KEY"):
        trainer_resource_for("production")


def test_art_serverless_is_built_from_configuration_when_its_key_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    monkeypatch.setenv("BABYLON_TRAINER_BACKEND", "art-serverless")
    monkeypatch.setenv("BABYLON_BASE_MODEL", HF_MODEL)
    monkeypatch.setenv("BABYLON_MODEL_NAME", "agent")
    resource = trainer_resource_for("production")
    # Dagster resolves the key when a run starts; the resource holds only the variable's name.
    assert isinstance(resource.wandb_api_key, dg.EnvVar) and SECRET not in repr(resource)

    trainer = TrainerResource(
        backend="art-serverless", base_model=HF_MODEL, model_name="agent", wandb_api_key=SECRET
    ).build()
    assert isinstance(trainer, ArtServerlessTrainer)
    assert trainer.policy.backend == "art-serverless" and trainer.policy.name == "agent"
    assert SECRET not in json.dumps(trainer.settings()) and SECRET not in repr(trainer.__dict__)
    with pytest.raises(ConfigurationError, match="'tiny' exists only for the torch backend"):
        TrainerResource(backend="art-serverless", base_model="tiny", wandb_api_key=SECRET).build()


def test_torch_is_the_local_profile_default_and_production_needs_its_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    local = trainer_resource_for("local")
    assert (local.backend, local.base_model, local.torch.device) == ("torch", "tiny", "cpu")
    assert isinstance(local.build(), TorchTrainer)
    with pytest.raises(ConfigurationError, match="BABYLON_TRAINER_BACKEND"):
        trainer_resource_for("production")
    monkeypatch.setenv("BABYLON_TRAINER_BACKEND", "art-serverless")
    with pytest.raises(ConfigurationError, match="BABYLON_BASE_MODEL"):
        trainer_resource_for("production")
    monkeypatch.setenv("BABYLON_TRAINER_BACKEND", "tinker")
    with pytest.raises(ConfigurationError, match="not one of torch, art-local, art-serverless"):
        trainer_resource_for("local")


def test_smollm2_trains_lora_adapters_with_the_configured_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BABYLON_BASE_MODEL", "smollm2-135m")
    monkeypatch.setenv("BABYLON_TORCH_THREADS", "1")
    resource = trainer_resource_for("local")
    assert (resource.base_model, resource.torch.lora, resource.torch.threads) == ("smollm2-135m", True, 1)
    assert resource.torch.tokens_per_batch == 1024
    assert trainer_resource_for("local").torch.lora and not TrainerResource().torch.lora
    monkeypatch.setenv("BABYLON_TORCH_THREADS", "two")
    with pytest.raises(ConfigurationError, match="BABYLON_TORCH_THREADS='two'"):
        trainer_resource_for("local")


def test_torch_on_cuda_without_a_gpu_fails_instead_of_using_the_cpu() -> None:
    with pytest.raises(ConfigurationError, match="no CUDA GPU"):
        TrainerResource(torch=TorchConfig(device="cuda")).build()


def test_torch_refuses_a_base_model_that_is_not_a_local_folder() -> None:
    with pytest.raises(ConfigurationError, match="never downloaded"):
        TrainerResource(base_model=HF_MODEL).build()


def two_groups() -> list[ScoredGroup]:
    messages = [ChatMessage(role="system", content="s"), ChatMessage(role="user", content="u")]
    return [
        ScoredGroup(
            window_id=WINDOW,
            group_index=index,
            trajectories=[
                scored_trajectory(
                    f"t{index}-{n}",
                    n / 4,
                    [*messages, ChatMessage(role="assistant", content=f"answer {n}")],
                    group_index=index,
                )
                for n in range(3)
            ],
        )
        for index in range(2)
    ]


def test_groups_convert_to_art_trajectory_groups_item_by_item() -> None:
    groups = two_groups()
    converted = to_art_groups(groups)
    assert len(converted) == 2
    for group, art_group in zip(groups, converted, strict=True):
        assert [t.reward for t in art_group.trajectories] == [t.score for t in group.trajectories]
        assert [t.metadata["trajectory_id"] for t in art_group.trajectories] == [
            t.trajectory_id for t in group.trajectories
        ]
        assert art_group.trajectories[2].messages_and_choices[-1] == {"role": "assistant", "content": "answer 2"}


class FakeArtBackend:
    """Stands in for ART's backends (they need a GPU or W&B): holds a step and counts what it trains."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.rewards: list[list[float]] = []
        self.closed = False

    async def register(self, model: object) -> None:
        return None

    async def _prepare_backend_for_training(self, model: object, config: object) -> tuple[str, str]:
        return "http://127.0.0.1:9/v1", "unused"

    async def _get_step(self, model: object) -> int:
        return self.step

    async def train(self, model: object, groups: list[art.TrajectoryGroup], *, learning_rate: float) -> art.TrainResult:
        self.step += 1
        self.rewards.append([trajectory.reward for group in groups for trajectory in group.trajectories])
        return art.TrainResult(step=self.step, metrics={"loss/train": 0.5, "data/step_trainer_tokens": 12})

    async def close(self) -> None:
        self.closed = True


class FakeArtTrainer(ArtTrainer):
    def __init__(self, policy: PolicySpec, backend: FakeArtBackend) -> None:
        self.fake = backend
        super().__init__(policy)

    def _make_backend(self) -> art.Backend:
        return cast("art.Backend", self.fake)

    def _location(self, result: art.TrainResult) -> str:
        return f"fake:{result.step}"

    def _where(self) -> str:
        return "in the fake backend"


def test_art_backends_train_from_the_registered_step_only_and_keep_arts_metric_names() -> None:
    policy = PolicySpec(name="agent", base_model=HF_MODEL, project="test", backend="art-serverless")
    registered = CheckpointRef(backend="art-serverless", step=3, location="fake:3")
    trainer = FakeArtTrainer(policy, FakeArtBackend(step=3))
    trainer.resume(registered)
    outcome = trainer.train_step(two_groups(), step=4, learning_rate=1e-5, seed=0)
    trainer.close()
    assert (outcome.step, outcome.checkpoint.location) == (4, "fake:4")
    assert outcome.metrics == {"loss/train": 0.5, "data/step_trainer_tokens": 12.0}
    assert trainer.fake.rewards == [[0.0, 0.25, 0.5, 0.0, 0.25, 0.5]] and trainer.fake.closed

    # ART went on to step 4 but the run died before registering it: training on would hide step 4's data.
    ahead = FakeArtTrainer(policy, FakeArtBackend(step=4))
    with pytest.raises(
        BabylonError, match="ART holds model 'agent' at step 4, but its last registered checkpoint is step 3"
    ):
        ahead.resume(registered)
    ahead.close()
