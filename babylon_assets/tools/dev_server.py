"""`babylon dev` and `babylon dagster`: Dagster's own commands against the project's instance.

This process holds the database (the embedded server lives as long as it does), prepares the
instance (absolute DAGSTER_HOME, generated dagster.yaml) and runs the Dagster command from the project
root, where it finds the code location in pyproject.toml's [tool.dagster] or in workspace.yaml.
`dagster dev` runs in a process group of its own so that Ctrl-C stops all of it.

Not `dg dev`, which Dagster 1.13 suggests: dg needs the project converted to a dg project
(`[tool.dg]`, the dagster-dg-cli package, definitions autoloaded from a `defs` folder); `dagster dev`
serves the same webserver and daemon.
"""

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from babylon_assets.db.connection import (
    platform_schema,
    redact_url,
    resolve_database_url,
    resolve_store_base_url,
    resolve_store_url,
)
from babylon_assets.db.migrate import apply_migrations, require_migrated
from babylon_assets.errors import BabylonError, ConfigurationError
from babylon_assets.profile import PROFILE_ENV, active_profile
from babylon_assets.tools.instance import instance_environment, prepare_instance
from babylon_assets.tools.workers import celery_settings, check_broker

HOST = "127.0.0.1"
SHUTDOWN_GRACE_SECONDS = 30
# Dagster 1.13's CLI warns on each command that `dg` supersedes it (see above for why we stay). The
# category (dagster_shared's SupersessionWarning, a FutureWarning) cannot be named in PYTHONWARNINGS since
# Python resolves it before dagster is importable, so the filter matches its message's start instead.
SUPERSESSION_FILTER = "ignore:Function `:FutureWarning"


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


def dagster_environment(url: str) -> dict[str, str]:
    """What every Dagster process of a command gets: the instance, the database, and the profile, which
    this command announced already (so its subprocesses do not announce it again)."""
    warning_filters = [os.environ.get("PYTHONWARNINGS", ""), SUPERSESSION_FILTER]
    return {
        **os.environ,
        **instance_environment(url),
        PROFILE_ENV: active_profile(),
        "PYTHONWARNINGS": ",".join(part for part in warning_filters if part),
    }


def dagster_executable() -> str:
    return str(Path(sys.executable).with_name("dagster"))


def mark_first_visit_seen(home: Path) -> None:
    """The UI's first-visit modal (Dagster's "NUX") would cover the lineage: record it as seen, in the file
    the webserver checks (`dagster._core.nux`: DAGSTER_HOME/.nux/nux.yaml)."""
    folder = home / ".nux"
    folder.mkdir(exist_ok=True)
    (folder / "nux.yaml").write_text("seen: 1\n")


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
    mark_first_visit_seen(home)
    environment = dagster_environment(url)
    command = [dagster_executable(), "dev", "-w", str(workspace), "-h", HOST, "-p", str(port)]
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


def _partition_arguments(arguments: Sequence[str]) -> list[str]:
    """The values of every `--partition X` / `--partition=X` in a Dagster command line."""
    values: list[str] = []
    for index, argument in enumerate(arguments):
        if argument == "--partition" and index + 1 < len(arguments):
            values.append(arguments[index + 1])
        elif argument.startswith("--partition="):
            values.append(argument.removeprefix("--partition="))
    return values


def require_registered_windows(home: Path, keys: Sequence[str]) -> None:
    """Dagster answers an unregistered partition with a DagsterInvalidSubsetError traceback; say it in one line."""
    if not keys:
        return
    import dagster as dg

    from babylon_assets.partitions import WINDOW_PARTITIONS

    with dg.DagsterInstance.from_config(str(home)) as instance:
        registered = instance.get_dynamic_partitions(WINDOW_PARTITIONS)
    missing = [key for key in keys if key not in registered]
    if missing:
        known = f"{len(registered)} are, {registered[0]} .. {registered[-1]}" if registered else "none is yet"
        raise BabylonError(
            f"window {', '.join(missing)} is not a registered partition ({known}); windows are registered by "
            "`babylon train` and by fresh_windows_sensor once they are over and have 5+ valid agents"
        )


def run_dagster(arguments: Sequence[str]) -> int:
    """Any `dagster ...` command against the project's instance, from the project root; returns its exit code."""
    if not arguments:
        raise ConfigurationError(
            "name a Dagster command, e.g. `babylon dagster asset list` (`dagster --help` lists them)"
        )
    root = workspace_file().parent
    url = resolve_database_url()
    require_migrated(resolve_store_url(url))
    home = prepare_instance(resolve_store_base_url(url))
    require_registered_windows(home, _partition_arguments(arguments))
    return subprocess.run([dagster_executable(), *arguments], env=dagster_environment(url), cwd=root).returncode
