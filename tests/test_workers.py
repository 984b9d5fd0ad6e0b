"""The Celery profile by configuration: what dagster.yaml says with a broker, and what `babylon worker`
refuses to start with (each refusal one line saying what to set)."""

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from dagster._config import process_config
from dagster._core.instance.config import dagster_instance_config
from dagster_celery.launcher import CeleryRunLauncher

from babylon_assets.cli import main
from babylon_assets.instance import instance_config
from tests.support.celery_cluster import BACKEND, BROKER
from tests.support.dagster_instance import drop_dagster_database

URL = "postgresql://postgres@127.0.0.1:5432/babylon"


@pytest.fixture
def celery_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BABYLON_HOME", str(tmp_path))
    monkeypatch.setenv("BABYLON_CELERY_BROKER", BROKER)
    monkeypatch.setenv("BABYLON_CELERY_BACKEND", BACKEND)


@pytest.fixture
def worker_database(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The database a worker prepares its instance next to (the `<db>_dagster` database is dropped after)."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    yield database_url
    drop_dagster_database(database_url)


def test_without_a_broker_runs_stay_next_to_the_daemon(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BABYLON_CELERY_BROKER", raising=False)
    monkeypatch.delenv("BABYLON_CELERY_BACKEND", raising=False)
    # Dagster's default launcher (a process next to the daemon), with the process check run monitoring needs.
    assert instance_config(URL)["run_launcher"] == {
        "module": "babylon_assets.run_health",
        "class": "ProcessCheckingRunLauncher",
    }


def test_a_broker_puts_the_celery_launcher_in_dagster_yaml_without_its_urls(
    celery_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BABYLON_CELERY_BROKER", "pyamqp://babylon:s3cret@mq:5672//")
    config = instance_config(URL)
    text = yaml.safe_dump(config)
    assert "s3cret" not in text and "mq:5672" not in text
    (tmp_path / "dagster.yaml").write_text(text)
    validated, _ = dagster_instance_config(str(tmp_path))
    launcher = validated["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_celery.launcher", "CeleryRunLauncher")
    result = process_config(CeleryRunLauncher.config_type(), launcher["config"])
    assert result.success, result.errors
    assert result.value is not None
    assert result.value["broker"] == "pyamqp://babylon:s3cret@mq:5672//"
    assert result.value["default_queue"] == "windows"
    assert validated["run_retries"] == {"enabled": True, "max_retries": 1, "retry_on_asset_or_op_failure": False}


def test_max_concurrent_runs_follows_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BABYLON_MAX_CONCURRENT_RUNS", "8")
    assert instance_config(URL)["concurrency"]["runs"]["max_concurrent_runs"] == 8  # type: ignore[index,call-overload]
    monkeypatch.setenv("BABYLON_MAX_CONCURRENT_RUNS", "eight")
    with pytest.raises(Exception, match=r"BABYLON_MAX_CONCURRENT_RUNS='eight' is not a whole number"):
        instance_config(URL)


def test_a_worker_needs_a_broker(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("BABYLON_CELERY_BROKER", raising=False)
    monkeypatch.delenv("BABYLON_CELERY_BACKEND", raising=False)
    assert main(["worker"]) == 2
    assert "a worker needs BABYLON_CELERY_BROKER and BABYLON_CELERY_BACKEND" in capsys.readouterr().err


def test_a_broker_needs_a_result_backend(
    celery_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("BABYLON_CELERY_BACKEND")
    assert main(["worker"]) == 2
    assert "BABYLON_CELERY_BROKER is set but BABYLON_CELERY_BACKEND is not" in capsys.readouterr().err


def test_a_worker_refuses_an_unreachable_broker(
    celery_env: None, worker_database: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BABYLON_CELERY_BROKER", "pyamqp://guest:guest@127.0.0.1:1//")
    assert main(["worker"]) == 2
    assert "cannot reach the Celery broker (pyamqp://guest:***@127.0.0.1:1//" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("trainer", "message"),
    [
        ({"BABYLON_TRAINER_DEVICE": "cuda"}, "trainer device 'cuda' was requested but torch sees no CUDA GPU"),
        (
            {"BABYLON_TRAINER_BACKEND": "art-local", "BABYLON_BASE_MODEL": "Qwen/Qwen2.5-0.5B-Instruct"},
            "backend 'art-local' trains on a local NVIDIA GPU, but torch sees none",
        ),
        (
            {"BABYLON_TRAINER_BACKEND": "art-serverless", "BABYLON_BASE_MODEL": "Qwen/Qwen2.5-14B-Instruct"},
            "backend 'art-serverless' trains on W&B Training and needs a W&B API key",
        ),
    ],
)
def test_a_training_worker_without_its_trainers_requirements_stops_at_start(
    celery_env: None,
    worker_database: str,
    trainer: dict[str, str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    for name, value in trainer.items():
        monkeypatch.setenv(name, value)
    assert main(["worker", "--queue", "training"]) == 2
    assert message in capsys.readouterr().err
