"""`babylon dev`: the Dagster webserver and daemon on 127.0.0.1 against the project's instance.

This process holds the database (the embedded server lives as long as it does), prepares the
instance, and runs `dagster dev` in a process group of its own so that Ctrl-C stops all of it.
"""

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from types import FrameType

from babylon_assets.db.connection import (
    platform_schema,
    redact_url,
    resolve_database_url,
    resolve_store_base_url,
    resolve_store_url,
)
from babylon_assets.db.migrate import apply_migrations
from babylon_assets.errors import ConfigurationError
from babylon_assets.instance import instance_environment, prepare_instance
from babylon_assets.workers import celery_settings, check_broker

HOST = "127.0.0.1"
SHUTDOWN_GRACE_SECONDS = 30


def require_free_port(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((HOST, port))
        except OSError as error:
            raise ConfigurationError(f"port {port} on {HOST} is in use ({error.strerror}); pass --port N") from error


def workspace_file() -> Path:
    path = Path.cwd() / "workspace.yaml"
    if not path.is_file():
        raise ConfigurationError(f"no workspace.yaml in {Path.cwd()}; run `babylon dev` from the project root")
    return path


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def stop_process_group(process: subprocess.Popen[bytes]) -> None:
    """SIGINT lets `dagster dev` stop its webserver, daemon and code server; SIGKILL whatever is left."""
    try:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=SHUTDOWN_GRACE_SECONDS)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        print(f"babylon dev: still running after {SHUTDOWN_GRACE_SECONDS}s; killing it", file=sys.stderr)
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    process.wait()


def run_dev_server(port: int) -> int:
    """Migrate, prepare the instance, run `dagster dev` until it exits or Ctrl-C; returns its exit code."""
    workspace = workspace_file()
    require_free_port(port)
    url = resolve_database_url()
    apply_migrations(resolve_store_url(url), platform_schema())
    celery = celery_settings()
    if celery is not None:
        check_broker(celery)
    home = prepare_instance(resolve_store_base_url(url))
    environment = {**os.environ, **instance_environment(url)}
    dagster = Path(sys.executable).with_name("dagster")
    command = [str(dagster), "dev", "-w", str(workspace), "-h", HOST, "-p", str(port)]
    # Explicit handlers, installed before the child starts: a SIGINT that a launching shell set to
    # "ignore" would otherwise be ignored here and, inherited across exec, in every Dagster process.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    # Its own session: the terminal's Ctrl-C reaches only this process, which then stops the group.
    process = subprocess.Popen(command, env=environment, start_new_session=True)
    print(f"babylon dev: Dagster UI at http://{HOST}:{port}  (Ctrl-C stops it)")
    print(f"babylon dev: DAGSTER_HOME={home}, game data in {redact_url(url)}")
    if celery is not None:
        print(f"babylon dev: runs execute on Celery workers ({celery.describe()}); start them with `babylon worker`")
    try:
        return process.wait()
    except KeyboardInterrupt:
        print("babylon dev: stopping the webserver and the daemon", file=sys.stderr)
        stop_process_group(process)
        return 0
