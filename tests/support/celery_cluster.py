"""A local Celery deployment for the Celery test and bench/bench_scale.py: `babylon worker` processes and the
Dagster daemon on one instance, RabbitMQ on 127.0.0.1:5672 and Redis on 127.0.0.1:6379, and a backfill of
window partitions added the way the UI's "Materialize" adds one."""

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dagster as dg
from dagster._core.execution.backfill import PartitionBackfill

from babylon_assets.jobs import WINDOW_ASSETS
from babylon_assets.partitions import WINDOW_PARTITIONS
from babylon_assets.run_tags import WINDOWS_QUEUE
from babylon_assets.tools.workers import CelerySettings, check_broker

ROOT = Path(__file__).resolve().parents[2]
BROKER = "pyamqp://guest:guest@127.0.0.1:5672//"
BACKEND = "redis://127.0.0.1:6379/13"
BIN = Path(sys.executable).parent


def require_brokers() -> CelerySettings:
    """The brokers, or one line saying which is missing (raises ConfigurationError)."""
    settings = CelerySettings(broker=BROKER, backend=BACKEND)
    check_broker(settings)
    check_broker(CelerySettings(broker=BACKEND, backend=BACKEND))
    return settings


def delete_windows_queue() -> None:
    """Tasks left in the shared broker by an earlier, interrupted run would reach new workers; deleted, not
    purged: the workers declare it again with their own arguments (x-max-priority)."""
    from kombu.connection import Connection

    with Connection(BROKER) as connection:  # type: ignore[no-untyped-call]
        connection.channel().queue_delete(WINDOWS_QUEUE)


def start(command: list[str], environment: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A process of its own session (so that a kill reaches its pool), output to `log`."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            command,
            cwd=ROOT,
            env={**environment, "PYTHONUNBUFFERED": "1"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def start_worker(environment: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return start([str(BIN / "babylon"), "worker", "--queue", WINDOWS_QUEUE], environment, log)


def start_daemon(environment: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return start([str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"], environment, log)


def wait_until_serving(worker: subprocess.Popen[bytes], log: Path, deadline: float) -> None:
    while "serves queue" not in log.read_text():
        if worker.poll() is not None:
            raise AssertionError(f"the worker exited: {log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"the worker never started: {log.read_text()[-3000:]}")
        time.sleep(0.5)


def launch_window_backfill(instance: dg.DagsterInstance, keys: list[str]) -> str:
    """Register the windows and add one backfill of raw -> validated -> scored for them; returns its id."""
    from babylon_assets.definitions import defs

    instance.add_dynamic_partitions(WINDOW_PARTITIONS, keys)
    backfill_id = uuid.uuid4().hex[:8]
    instance.add_backfill(
        PartitionBackfill.from_asset_partitions(
            backfill_id=backfill_id,
            asset_graph=defs.resolve_asset_graph(),
            partition_names=keys,
            asset_selection=[dg.AssetKey(name) for name in WINDOW_ASSETS],
            backfill_timestamp=time.time(),
            tags={},
            dynamic_partitions_store=instance,
            all_partitions=False,
            title=None,
            description=None,
            run_config=None,
        )
    )
    return backfill_id


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def stop(process: subprocess.Popen[bytes], grace_seconds: float = 20) -> None:
    """SIGTERM to the process's group, then SIGKILL to whatever of the group is left after `grace_seconds`.

    The whole group, not only its leader: the daemon's code server shares it and can outlive the daemon
    (bench_runs left four, alive more than an hour after their instance's database was dropped).
    """
    deadline = time.monotonic() + grace_seconds
    if _group_alive(process.pid):
        os.killpg(process.pid, signal.SIGTERM)
    while _group_alive(process.pid) and time.monotonic() < deadline:
        process.poll()  # reaps the leader once it exits, so that it does not keep the group alive
        time.sleep(0.1)
    if _group_alive(process.pid):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
