"""Runs on Celery workers: dagster-celery's CeleryRunLauncher sends each run to a queue, and
`babylon worker` serves one queue with the project's code and configuration.

Setting BABYLON_CELERY_BROKER (`pyamqp://guest@127.0.0.1:5672//` or `redis://127.0.0.1:6379/0`) is the
choice: the generated dagster.yaml then names the CeleryRunLauncher, and every run the daemon dequeues
executes on a worker instead of in a process next to the daemon. BABYLON_CELERY_BACKEND (e.g.
`redis://127.0.0.1:6379/1`) is required with it: the launcher reads task states there.

Queues: `windows` takes ingest, validate and judge (window_chain_job, asset backfills, anything untagged);
`training` takes training_job, so a GPU machine can serve only that queue.
"""

import importlib
import os
import socket
import sys
import uuid
from typing import get_args

from pydantic import BaseModel, ConfigDict

from babylon_assets.db.connection import DATABASE_URL_ENV, redact_url, resolve_store_base_url
from babylon_assets.errors import ConfigurationError
from babylon_assets.run_tags import TRAINING_QUEUE, WINDOWS_QUEUE, Queue
from babylon_assets.tools.instance import YamlValue, instance_environment, prepare_instance

BROKER_ENV = "BABYLON_CELERY_BROKER"
BACKEND_ENV = "BABYLON_CELERY_BACKEND"
# A window run that dies with its worker is failed by run monitoring once the redelivered task has ended
# (celery_launcher.py) and then retried by the daemon once; a failing asset is a real failure and is not retried.
RUN_RETRIES = 1
# What a window run imports on first use (the RULER judge's litellm, pandas for metadata tables, scipy for
# the judge's quality figures): about 5 s of CPU that every pool process paid in its first run.
WINDOW_RUN_IMPORTS = ("babylon_assets.judging.ruler_judge", "pandas", "scipy.stats")


def preload_window_run_imports() -> None:
    """Import what window runs import lazily, so that a worker's pool processes, forked afterwards, have it."""
    for name in WINDOW_RUN_IMPORTS:
        importlib.import_module(name)


class CelerySettings(BaseModel):
    """Where the workers' broker and result backend are; both are secrets-bearing URLs, never logged whole."""

    model_config = ConfigDict(frozen=True)

    broker: str
    backend: str

    def describe(self) -> str:
        return f"broker {redact_url(self.broker)}, result backend {redact_url(self.backend)}"


def celery_settings() -> CelerySettings | None:
    """BABYLON_CELERY_BROKER and BABYLON_CELERY_BACKEND; None when no broker is configured (runs stay local)."""
    broker = os.environ.get(BROKER_ENV, "").strip()
    backend = os.environ.get(BACKEND_ENV, "").strip()
    if not broker:
        if backend:
            raise ConfigurationError(
                f"{BACKEND_ENV} is set but {BROKER_ENV} is not; set the broker too "
                "(e.g. pyamqp://guest@127.0.0.1:5672//), or unset both to run everything locally"
            )
        return None
    if not backend:
        raise ConfigurationError(
            f"{BROKER_ENV} is set but {BACKEND_ENV} is not: the run launcher reads task states from the result "
            "backend; set it, e.g. redis://127.0.0.1:6379/1"
        )
    return CelerySettings(broker=broker, backend=backend)


def required_celery_settings() -> CelerySettings:
    settings = celery_settings()
    if settings is None:
        raise ConfigurationError(
            f"a worker needs {BROKER_ENV} and {BACKEND_ENV}, e.g. pyamqp://guest@127.0.0.1:5672// and "
            "redis://127.0.0.1:6379/1, the same values as the machine running `babylon dev`"
        )
    return settings


def run_launcher_config() -> dict[str, YamlValue]:
    """dagster.yaml's run_launcher and run_retries for the Celery profile; the URLs stay `{env: ...}` references."""
    return {
        "run_launcher": {
            # dagster-celery's launcher with a health check that sees a dead worker's run (celery_launcher.py).
            "module": "babylon_assets.tools.celery_launcher",
            "class": "WorkerCheckingCeleryRunLauncher",
            "config": {
                "broker": {"env": BROKER_ENV},
                "backend": {"env": BACKEND_ENV},
                "default_queue": WINDOWS_QUEUE,
            },
        },
        "run_retries": {"enabled": True, "max_retries": RUN_RETRIES, "retry_on_asset_or_op_failure": False},
    }


def worker_app_config(queue: Queue) -> dict[str, YamlValue]:
    """Celery settings of a worker of `queue`, on top of dagster-celery's defaults (prefetch of one)."""
    if queue == WINDOWS_QUEUE:
        # Acknowledged only when done: a worker that dies mid-window leaves its task to the broker, which
        # hands it to another worker (RabbitMQ at once; Redis after its visibility timeout, one hour).
        return {"task_acks_late": True, "task_reject_on_worker_lost": True}
    # Training runs can outlast RabbitMQ's consumer timeout (30 min) for unacknowledged tasks, and a
    # training step is not safe to repeat behind the registry's back: acknowledged on receipt.
    return {"task_acks_late": False}


def check_broker(settings: CelerySettings) -> None:
    """Connect to the broker once, so that a wrong URL fails at start and not at the first run."""
    from kombu.connection import Connection
    from kombu.exceptions import OperationalError

    try:
        # kombu and dagster-celery ship without annotations.
        with Connection(settings.broker, connect_timeout=5) as connection:  # type: ignore[no-untyped-call]
            connection.ensure_connection(max_retries=1)
    except (OSError, OperationalError) as error:
        raise ConfigurationError(
            f"cannot reach the Celery broker ({redact_url(settings.broker)}: {error}); start RabbitMQ or Redis "
            f"there, or fix {BROKER_ENV}"
        ) from error


def run_worker(queue: Queue, concurrency: int) -> int:
    """Serve `queue` until stopped: each task executes one Dagster run of the project's code."""
    from dagster_celery.config import DEFAULT_CONFIG
    from dagster_celery.make_app import make_app
    from dagster_celery.tasks import create_execute_job_task, create_resume_job_task

    if queue not in get_args(Queue):
        raise ConfigurationError(f"queue {queue!r} is not one of {', '.join(get_args(Queue))}")
    settings = required_celery_settings()
    url = os.environ.get(DATABASE_URL_ENV, "").strip()
    if not url:
        raise ConfigurationError(
            f"a worker needs {DATABASE_URL_ENV}: the runs it executes read and write the shared PostgreSQL "
            "(the embedded server belongs to the `babylon dev` process); set it to that server"
        )
    check_broker(settings)
    home = prepare_instance(resolve_store_base_url(url))
    os.environ.update(instance_environment(url, home))
    # Loading the code now fails a misconfigured worker at start (profile, judge, trainer choice), and the
    # pool's processes, forked afterwards, start every run with it already imported.
    import babylon_assets.definitions  # noqa: F401

    if queue == WINDOWS_QUEUE:
        preload_window_run_imports()
    if queue == TRAINING_QUEUE:
        from babylon_assets.profile import active_profile
        from resources.trainer import trainer_resource_for

        # A GPU, ART's extra or a key that is missing stops the worker now, not its first training run.
        trainer_resource_for(active_profile()).check_requirements()

    app = make_app(  # type: ignore[no-untyped-call]
        {
            "broker": settings.broker,
            "backend": settings.backend,
            "include": [],
            "config_source": {**DEFAULT_CONFIG, **worker_app_config(queue)},
        }
    )
    create_execute_job_task(app)
    create_resume_job_task(app)
    name = f"babylon-{queue}-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
    print(f"babylon worker: {name} serves queue {queue!r} with {concurrency} process(es); {settings.describe()}")
    sys.stdout.flush()
    app.worker_main(
        ["worker", "--queues", queue, "--concurrency", str(concurrency), "--hostname", name, "--loglevel", "INFO"]
    )
    return 0
