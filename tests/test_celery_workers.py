"""Windows of one backfill on two real Celery workers (`babylon worker`), launched by the real Dagster daemon
through the CeleryRunLauncher the generated dagster.yaml names; RabbitMQ on 127.0.0.1:5672, Redis on 6379.

One scenario: both workers run a window at the same time; one is killed mid-window; its window is retried
on the other; every window ends scored exactly as an in-process materialization scores it.
"""

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import dagster as dg
import psycopg
import pytest
import yaml
from dagster._core.storage.tags import BACKFILL_ID_TAG, PARENT_RUN_ID_TAG
from psycopg import sql

from babylon_assets.db.connection import DEFAULT_SCHEMA, store_conninfo, with_database
from babylon_assets.errors import ConfigurationError
from babylon_assets.judging.assets import scored_groups
from babylon_assets.partitions import WINDOW_PARTITIONS
from babylon_assets.simulation.writer import simulate
from babylon_assets.tools.instance import YamlValue, ensure_dagster_database, instance_config
from babylon_assets.trajectories.assets import raw_trajectories, validated_windows
from resources.database import DatabaseResource
from resources.judge import JudgeResource
from tests.support.celery_cluster import (
    ROOT,
    delete_windows_queue,
    launch_window_backfill,
    require_brokers,
    start_daemon,
    start_worker,
    stop,
    wait_until_serving,
)
from tests.support.dagster_instance import FIRST_WINDOW, drop_dagster_database
from tests.support.judge_server import JudgeRequest, JudgeServer, Reply, by_content

# The broker's windows queue and Redis database are shared: one Celery test at a time.
pytestmark = [pytest.mark.subprocess, pytest.mark.xdist_group("celery")]

# One window per worker: both busy at once, and the killed one's window retried on the survivor.
WINDOWS = 2
# Long enough to kill a worker while its window waits on the judge; RULER asks twice per window.
JUDGE_SECONDS = 1.5
# Four Python processes import the whole code (about 12 s of CPU each) before the first window runs.
DEADLINE_SECONDS = 300
# The daemon's checks in the test instance: a dead run is found and its pool slots freed within a second
# or two, instead of the generated 15 s each.
TEST_MONITORING = {"poll_interval_seconds": 1, "free_slots_after_run_end_seconds": 1}
IN_FLIGHT = [
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def new_database(admin_url: str, template: str) -> str:
    name = f"babylon_celery_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template)))
    return with_database(admin_url, name)


def drop_database(url: str) -> None:
    name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    with psycopg.connect(with_database(url, "postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(str(name))))


def scores(url: str) -> list[tuple[str, str, float]]:
    """The stored scores in the platform's schema of the game database `url`."""
    with psycopg.connect(store_conninfo(url, DEFAULT_SCHEMA)) as conn:
        rows = conn.execute(
            "SELECT trajectory_id, window_id::text, score FROM trajectory_scores ORDER BY trajectory_id"
        ).fetchall()
    return [(str(row[0]), str(row[1]), float(row[2])) for row in rows]


def pool_children(worker: subprocess.Popen[bytes]) -> set[int]:
    """The prefork pool's processes of a worker: the processes its runs execute in."""
    children = Path(f"/proc/{worker.pid}/task/{worker.pid}/children").read_text().split()
    return {int(pid) for pid in children}


def run_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The process that executed the run's steps (the in-process executor's "Executing steps in process")."""
    prefix = "Executing steps in process (pid: "
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        if record.user_message.startswith(prefix):
            return int(record.user_message.removeprefix(prefix).rstrip(")."))
    return None


@pytest.fixture
def slow_judge() -> Iterator[JudgeServer]:
    def answer(request: JudgeRequest) -> Reply:
        return by_content(request).model_copy(update={"delay_seconds": JUDGE_SECONDS})

    with JudgeServer(answer) as server:
        yield server


def test_two_workers_share_a_backfill_and_a_killed_workers_window_is_retried_on_the_other(
    admin_url: str,
    migrated_template: str,
    slow_judge: JudgeServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    try:
        settings = require_brokers()
    except ConfigurationError as error:
        pytest.fail(f"the Celery test needs RabbitMQ on 127.0.0.1:5672 and Redis on 127.0.0.1:6379: {error}")
    delete_windows_queue()
    url = new_database(admin_url, migrated_template)
    baseline_url = new_database(admin_url, migrated_template)
    keys = simulate(url, agents=5, windows=WINDOWS, seed=11, start=FIRST_WINDOW).windows
    simulate(baseline_url, agents=5, windows=WINDOWS, seed=11, start=FIRST_WINDOW)
    environment = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
        "BABYLON_HOME": str(tmp_path / "home"),
        "DAGSTER_HOME": str(tmp_path / "home" / "dagster_home"),
        "DATABASE_URL": url,
        "BABYLON_PROFILE": "local",
        "BABYLON_CELERY_BROKER": settings.broker,
        "BABYLON_CELERY_BACKEND": settings.backend,
        "BABYLON_JUDGE": "ruler",
        "BABYLON_JUDGE_API_BASE": slow_judge.api_base,
        "BABYLON_JUDGE_API_KEY": "test-key",
    }
    for name in ("BABYLON_HOME", "DATABASE_URL", "BABYLON_CELERY_BROKER", "BABYLON_CELERY_BACKEND"):
        monkeypatch.setenv(name, environment[name])
    # The workers prepare their instance (dagster.yaml, its database) from the same environment; the daemon,
    # as on a machine of its own, has the same dagster.yaml with quicker monitoring.
    daemon_home = tmp_path / "daemon_home"
    daemon_home.mkdir()
    config = instance_config(url)
    config["run_monitoring"] = {**cast(dict[str, YamlValue], config["run_monitoring"]), **TEST_MONITORING}
    (daemon_home / "dagster.yaml").write_text(yaml.safe_dump(config))
    ensure_dagster_database(url)
    first = start_worker(environment, tmp_path / "worker-a.log")
    second = start_worker(environment, tmp_path / "worker-b.log")
    # Its run retries look for failed runs every second instead of every 5 s (Dagster's variable).
    daemon_environment = {
        **environment,
        "DAGSTER_HOME": str(daemon_home),
        "DAGSTER_EVENT_LOG_CONSUMER_DAEMON_INTERVAL_SECONDS": "1",
    }
    monkeypatch.setenv("DAGSTER_HOME", str(daemon_home))
    daemon: subprocess.Popen[bytes] | None = None
    try:
        deadline = time.monotonic() + DEADLINE_SECONDS
        for worker, log in ((first, "worker-a.log"), (second, "worker-b.log")):
            wait_until_serving(worker, tmp_path / log, deadline)
        with dg.DagsterInstance.get() as instance:
            backfill_id = launch_window_backfill(instance, keys)
            # Started after the backfill exists: the backfill daemon looks for new backfills every 30 s
            # (Dagster's fixed interval), and its first look is at start.
            daemon = start_daemon(daemon_environment, tmp_path / "daemon.log")

            def started_pids() -> dict[str, int]:
                runs = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
                pids = {run.run_id: run_pid(instance, run.run_id) for run in runs}
                return {run_id: pid for run_id, pid in pids.items() if pid is not None}

            # Both workers busy with a window each, at the same time.
            pools = {"a": pool_children(first), "b": pool_children(second)}
            busy: dict[str, int] = {}
            while {pid for pid in busy.values()} & pools["a"] == set() or not (
                {pid for pid in busy.values()} & pools["b"]
            ):
                for name, worker, log in (
                    ("worker a", first, "worker-a.log"),
                    ("worker b", second, "worker-b.log"),
                    ("the daemon", daemon, "daemon.log"),
                ):
                    assert worker.poll() is None, f"{name} exited: {(tmp_path / f'{log}').read_text()[-3000:]}"
                assert time.monotonic() < deadline, f"the workers never ran two windows at once: {busy}"
                busy = started_pids()
                pools = {"a": pool_children(first), "b": pool_children(second)}
                time.sleep(0.3)
            killed_run = next(run_id for run_id, pid in busy.items() if pid in pools["a"])
            os.killpg(first.pid, signal.SIGKILL)  # the worker and its pool, mid-window
            first.wait()

            def scored() -> set[str]:
                return instance.get_materialized_partitions(dg.AssetKey("scored_groups"))

            def in_flight() -> int:
                return len(instance.get_run_ids(dg.RunsFilter(statuses=IN_FLIGHT)))

            def killed_runs_story() -> str:
                """The killed run's status, tags and engine events: whether a retry was decided and tried."""
                run = instance.get_run_by_id(killed_run)
                events = instance.all_logs(killed_run, of_type=dg.DagsterEventType.ENGINE_EVENT)
                told = [event.user_message for event in events][-8:]
                return f"killed run {killed_run}: {run.status if run else None}, tags {run.tags if run else {}}; {told}"

            while scored() != set(keys) or in_flight():
                assert second.poll() is None, (tmp_path / "worker-b.log").read_text()[-3000:]
                # Seen once in a full suite (not reproduced in 5 runs alone under load): the killed run failed,
                # the backfill daemon waited for its retry, and none was launched.
                assert time.monotonic() < deadline, (
                    f"only {sorted(scored())} of {keys} were scored; {killed_runs_story()}; daemon log: "
                    f"{(tmp_path / 'daemon.log').read_text()[-3000:]}"
                )
                time.sleep(0.5)

            killed = instance.get_run_by_id(killed_run)
            assert killed is not None and killed.status == dg.DagsterRunStatus.FAILURE
            retries = instance.get_runs(dg.RunsFilter(tags={PARENT_RUN_ID_TAG: killed_run}))
            assert [retry.status for retry in retries] == [dg.DagsterRunStatus.SUCCESS]
            assert run_pid(instance, retries[0].run_id) in pool_children(second)
            assert all(run.tags.get(BACKFILL_ID_TAG) == backfill_id for run in [killed, *retries])

        # The same windows scored in this process, by the same judge, on a copy of the data.
        judge = JudgeResource(kind="ruler", api_base=slow_judge.api_base, api_key="test-key")
        monkeypatch.setenv("DATABASE_URL", baseline_url)
        baseline_instance = dg.DagsterInstance.ephemeral()
        baseline_instance.add_dynamic_partitions(WINDOW_PARTITIONS, keys)
        for key in keys:
            result = dg.materialize(
                [raw_trajectories, validated_windows, scored_groups],
                partition_key=key,
                resources={"database": DatabaseResource(), "judge": judge},
                instance=baseline_instance,
            )
            assert result.success
        assert scores(url) == scores(baseline_url)
        assert len(scores(url)) == WINDOWS * 5
    finally:
        for process in (daemon, first, second):
            if process is not None:
                stop(process)
        drop_dagster_database(url)
        drop_database(url)
        drop_database(baseline_url)
