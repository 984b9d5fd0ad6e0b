"""The Celery profile by configuration: what dagster.yaml says with a broker, and what `babylon worker`
refuses to start with (each refusal one line saying what to set)."""

import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._config import process_config
from dagster._core.instance.config import dagster_instance_config
from dagster._core.launcher.base import WorkerStatus
from dagster_celery.tags import DAGSTER_CELERY_TASK_ID_TAG

from babylon_assets.errors import ConfigurationError
from babylon_assets.tools import celery_launcher
from babylon_assets.tools.celery_launcher import WorkerCheckingCeleryRunLauncher
from babylon_assets.tools.cli import main
from babylon_assets.tools.instance import instance_config
from tests.support.celery_cluster import BACKEND, BROKER, require_brokers
from tests.support.dagster_instance import drop_dagster_database, project_instance

URL = "postgresql://postgres@127.0.0.1:5432/babylon"
STARTED = dg.DagsterRunStatus.STARTED


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
        "module": "babylon_assets.tools.run_launcher",
        "class": "ForkingRunLauncher",
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
    assert launcher["module"] == "babylon_assets.tools.celery_launcher"
    assert launcher["class"] == WorkerCheckingCeleryRunLauncher.__name__
    result = process_config(WorkerCheckingCeleryRunLauncher.config_type(), launcher["config"])
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


def test_the_launcher_takes_a_task_of_a_dead_worker_for_a_dead_run(
    celery_env: None, database_url: str, instance_database: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Task states as the real Redis result backend holds them after a worker's death; dagster-celery's own
    check calls both runs healthy, and they would stay STARTED for ever."""
    try:
        require_brokers()
    except ConfigurationError as error:
        pytest.fail(f"this test needs RabbitMQ on 127.0.0.1:5672 and Redis on 127.0.0.1:6379: {error}")
    monkeypatch.setattr(celery_launcher, "WORKER_REPLY_TIMEOUT_SECONDS", 0.5)
    with project_instance(database_url, tmp_path / "dagster_home", monkeypatch) as instance:
        launcher = instance.run_launcher
        assert isinstance(launcher, WorkerCheckingCeleryRunLauncher)
        backend = launcher.celery.backend

        def run_with_task(state: str, meta: dict[str, str | int] | None, status: dg.DagsterRunStatus) -> dg.DagsterRun:
            task_id = uuid.uuid4().hex
            backend.store_result(task_id, meta, state)
            run = dg.DagsterRun(job_name="window_chain_job", status=status, tags={DAGSTER_CELERY_TASK_ID_TAG: task_id})
            return instance.add_run(run)

        # Killed: the task stays STARTED, naming a worker that no longer answers.
        killed = run_with_task("STARTED", {"pid": 1, "hostname": "babylon-windows-gone@nowhere"}, STARTED)
        health = launcher.check_run_worker_health(killed)
        assert health.status == WorkerStatus.FAILED and health.msg is not None and "gone@nowhere" in health.msg
        # Redelivered: another worker ignored the started run, and the task ended SUCCESS.
        ignored = run_with_task("SUCCESS", None, STARTED)
        assert launcher.check_run_worker_health(ignored).status == WorkerStatus.FAILED
        # A run that ended with its task is left alone.
        finished = run_with_task("SUCCESS", None, dg.DagsterRunStatus.SUCCESS)
        assert launcher.check_run_worker_health(finished).status == WorkerStatus.SUCCESS
