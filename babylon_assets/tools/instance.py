"""The project's Dagster instance: a DAGSTER_HOME inside the project whose runs, events and schedules
live in PostgreSQL, on the same server as the data but in a database of their own.

`prepare_instance(url)` writes `dagster.yaml` and creates that database next to the platform's store
(`url` is the store's database); `instance_environment(game_url)` is what every Dagster process
(webserver, daemon, code server, `babylon train`) needs in its
environment. The password never enters the yaml: it is an `{env: ...}` reference.
"""

import os
from pathlib import Path

import psycopg
import yaml
from psycopg import sql
from pydantic import BaseModel, ConfigDict

from babylon_assets.db.connection import DATABASE_URL_ENV, connect, resolve_store_base_url
from babylon_assets.errors import ConfigurationError
from babylon_assets.paths import babylon_home
from babylon_assets.run_tags import TRAINING_WORKLOAD, TRAINING_WORKLOAD_TAG

DAGSTER_HOME_ENV = "DAGSTER_HOME"
DAGSTER_PASSWORD_ENV = "BABYLON_DAGSTER_PG_PASSWORD"
MAX_CONCURRENT_RUNS = 4
MAX_CONCURRENT_RUNS_ENV = "BABYLON_MAX_CONCURRENT_RUNS"
# How often the daemon checks that each started run's process is alive; a dead one is marked failed
# within about this long, and its pool slots are freed FREE_SLOTS_AFTER_SECONDS after that.
MONITOR_INTERVAL_SECONDS = 15
FREE_SLOTS_AFTER_SECONDS = 15
# How often the daemon launches queued runs.
DEQUEUE_INTERVAL_SECONDS = 1
# A run that has not started its process this long after launch is marked failed.
START_TIMEOUT_SECONDS = 180

YamlValue = str | int | bool | list["YamlValue"] | dict[str, "YamlValue"]


class DagsterStorageTarget(BaseModel):
    """Where the instance's own database is, split into what dagster-postgres' `postgres_db` takes."""

    model_config = ConfigDict(frozen=True)

    username: str
    has_password: bool
    hostname: str
    port: int
    db_name: str
    params: dict[str, str]

    def postgres_db(self) -> dict[str, YamlValue]:
        config: dict[str, YamlValue] = {
            "username": self.username,
            "hostname": self.hostname,
            "port": self.port,
            "db_name": self.db_name,
            # SQLAlchemy 2.1 resolves a bare `postgresql://` to psycopg 3, which dagster-postgres
            # does not drive (ModuleNotFoundError: psycopg): name the psycopg2 dialect explicitly.
            "scheme": "postgresql+psycopg2",
        }
        if self.has_password:
            config["password"] = {"env": DAGSTER_PASSWORD_ENV}
        if self.params:
            config["params"] = dict(self.params)
        return config


def dagster_home() -> Path:
    return babylon_home() / "dagster_home"


def storage_target(url: str) -> DagsterStorageTarget:
    """The Dagster database next to the data database `url`: same server, name `<db>_dagster`."""
    info = psycopg.conninfo.conninfo_to_dict(url)
    host = str(info.pop("host", "") or "")
    port = str(info.pop("port", "") or "5432")
    username = str(info.pop("user", "") or "")
    database = str(info.pop("dbname", "") or "")
    password = str(info.pop("password", "") or "")
    if not username or not database:
        raise ConfigurationError(f"{DATABASE_URL_ENV} must name a user and a database (postgresql://USER@HOST:PORT/DB)")
    params = {key: str(value) for key, value in info.items() if value is not None}
    # Params are written to dagster.yaml as they are; only the password has an `{env: ...}` route.
    secret = sorted(key for key in params if "password" in key)
    if secret:
        raise ConfigurationError(
            f"{DATABASE_URL_ENV} carries {', '.join(secret)}, which would be written into dagster.yaml in clear; "
            "remove it from the URL (e.g. use an unencrypted client key file)"
        )
    hostname = host
    if host.startswith("/"):
        # A Unix socket (the embedded server): psycopg2 takes its folder as the `host` parameter.
        params["host"] = host
        hostname = ""
    return DagsterStorageTarget(
        username=username,
        has_password=bool(password),
        hostname=hostname,
        port=int(port),
        db_name=f"{database}_dagster",
        params=params,
    )


def max_concurrent_runs() -> int:
    """BABYLON_MAX_CONCURRENT_RUNS, or 4; on Celery workers, about four times their processes in all (README)."""
    raw = os.environ.get(MAX_CONCURRENT_RUNS_ENV, "").strip()
    if not raw:
        return MAX_CONCURRENT_RUNS
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigurationError(f"{MAX_CONCURRENT_RUNS_ENV}={raw!r} is not a whole number of at least 1")
    return int(raw)


def instance_config(url: str) -> dict[str, YamlValue]:
    """The content of dagster.yaml for the data database `url`; with BABYLON_CELERY_BROKER set, runs go to
    Celery workers (see workers.py)."""
    from babylon_assets.tools.workers import celery_settings, run_launcher_config

    return {
        # dagster-postgres' storage with its connections kept open between queries (pooled_storage.py).
        "storage": {
            "custom": {
                "module": "babylon_assets.tools.pooled_storage",
                "class": "PooledPostgresStorage",
                "config": {"postgres_db": storage_target(url).postgres_db()},
            }
        },
        # The queue the daemon works through; its limits live under `concurrency` below. Dequeued every
        # second, not every 5 s: a window run takes seconds, and on workers the wait was most of a run's cost.
        "run_coordinator": {
            "module": "dagster.core.run_coordinator",
            "class": "QueuedRunCoordinator",
            "config": {"dequeue_interval_seconds": DEQUEUE_INTERVAL_SECONDS},
        },
        "concurrency": {
            "runs": {
                # Each run is a process with the whole import tree (torch included); a first sensor tick
                # may request a week of windows, which then wait in the queue instead of thrashing.
                "max_concurrent_runs": max_concurrent_runs(),
                # Training runs hold the whole machine: one at a time, the rest wait in the queue.
                "tag_concurrency_limits": [
                    {"key": TRAINING_WORKLOAD_TAG, "value": TRAINING_WORKLOAD, "limit": 1},
                ],
            },
            # Two pools: trained_checkpoint's "training" (one training step at a time even for a run
            # without the workload tag, e.g. a materialization picked by hand in the UI) and
            # scored_groups' "judge" (windows judged at once across runs; raise it per pool with
            # `dagster instance concurrency set judge N`).
            "pools": {"default_limit": 1},
        },
        # The level of every run's console output (default DEBUG: a dozen engine lines per step in the
        # terminal of `babylon dev`). Dagster's events are stored whatever this says; log lines below it are not.
        "python_logs": {"python_log_level": "INFO"},
        # Each run forked from a warm process, with the process check run monitoring needs (run_launcher.py).
        "run_launcher": {"module": "babylon_assets.tools.run_launcher", "class": "ForkingRunLauncher"},
        "run_monitoring": {
            "enabled": True,
            "poll_interval_seconds": MONITOR_INTERVAL_SECONDS,
            "start_timeout_seconds": START_TIMEOUT_SECONDS,
            # The launcher cannot resume a run in a new process: a dead run is failed (and retried).
            "max_resume_run_attempts": 0,
            "free_slots_after_run_end_seconds": FREE_SLOTS_AFTER_SECONDS,
        },
        # Re-executes failed runs whose job carries a `dagster/max_retries` tag (the window chain);
        # training is retried by its sensor instead, which waits between attempts (Dagster's retries do not).
        "run_retries": {"enabled": True, "max_retries": 0},
        "telemetry": {"enabled": False},
        **(run_launcher_config() if celery_settings() is not None else {}),
    }


def ensure_dagster_database(url: str) -> None:
    """Create the instance's database on the data server when it does not exist yet."""
    name = storage_target(url).db_name
    with connect(url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists is None:
            try:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            except (psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
                # Another process (a second `babylon worker` starting) created it in between: it exists.
                pass


def instance_environment(game_url: str, home: Path | None = None) -> dict[str, str]:
    """The variables a Dagster process needs to use this instance and reach the game's database (the
    instance's own database is next to the platform's store)."""
    password = psycopg.conninfo.conninfo_to_dict(resolve_store_base_url(game_url)).get("password")
    environment = {
        DAGSTER_HOME_ENV: str(home if home is not None else dagster_home()),
        DATABASE_URL_ENV: game_url,
    }
    if password:
        environment[DAGSTER_PASSWORD_ENV] = str(password)
    return environment


def prepare_instance(url: str, home: Path | None = None) -> Path:
    """Write dagster.yaml into the instance folder and create its database; returns the folder."""
    folder = home if home is not None else dagster_home()
    folder.mkdir(parents=True, exist_ok=True)
    ensure_dagster_database(url)
    (folder / "dagster.yaml").write_text(
        "# Generated by babylon from DATABASE_URL (or the embedded server); edits are overwritten.\n"
        + yaml.safe_dump(instance_config(url), sort_keys=False)
    )
    return folder
