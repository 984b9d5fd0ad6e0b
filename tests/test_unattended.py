"""Nothing stays claimed by the dead: run monitoring on the project's instance fails a run whose
process is gone and frees its pool slots; `babylon train` cleans up its own dead runs."""

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import dagster as dg
import psutil
import pytest
from dagster._core.test_utils import create_test_daemon_workspace_context
from dagster._core.workspace.load_target import EmptyWorkspaceTarget
from dagster._daemon.monitoring import concurrency as slot_daemon
from dagster._daemon.monitoring.concurrency import execute_concurrency_slots_iteration
from dagster._daemon.monitoring.run_monitoring import execute_run_monitoring_iteration
from dagster._time import get_current_datetime
from dagster_shared.error import SerializableErrorInfo

from babylon_assets.tools.instance import FREE_SLOTS_AFTER_SECONDS
from babylon_assets.tools.run_health import (
    RUN_HOST_TAG,
    RUN_PID_TAG,
    RUN_PROCESS_STARTED_TAG,
    clean_up_dead_runs,
)
from babylon_assets.tools.run_launcher import ForkingRunLauncher
from tests.support.dagster_instance import SHORT_EVALUATION, simulate_windows

LOGGER = logging.getLogger("test_unattended")


@pytest.fixture
def worker() -> Iterator[subprocess.Popen[bytes]]:
    """A process standing in for a run's worker; the test kills it."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield process
    process.kill()
    process.wait()


def started_run(instance: dg.DagsterInstance, process: subprocess.Popen[bytes]) -> dg.DagsterRun:
    """A STARTED training run executing in `process`, holding the `training` pool's one slot."""
    import socket

    run = instance.add_run(
        dg.DagsterRun(
            job_name="training_job",
            status=dg.DagsterRunStatus.STARTED,
            tags={
                "workload": "training",
                RUN_PID_TAG: str(process.pid),
                RUN_HOST_TAG: socket.gethostname(),
                RUN_PROCESS_STARTED_TAG: f"{psutil.Process(process.pid).create_time():.3f}",
            },
        )
    )
    instance.event_log_storage.set_concurrency_slots("training", 1)
    claim = instance.event_log_storage.claim_concurrency_slot("training", run.run_id, "trained_checkpoint")
    assert claim.is_claimed
    return run


def status(instance: dg.DagsterInstance, run: dg.DagsterRun) -> dg.DagsterRunStatus:
    found = instance.get_run_by_id(run.run_id)
    assert found is not None
    return found.status


def assert_no_errors(iteration: Iterator[SerializableErrorInfo | None]) -> None:
    """Run one daemon iteration; the daemon catches what fails in it and yields it, which must not happen."""
    errors = [error.to_string() for error in iteration if error is not None]
    assert errors == [], "\n".join(errors)


def test_run_monitoring_fails_a_run_whose_process_died_and_frees_its_slot(
    instance: dg.DagsterInstance, worker: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert instance.run_monitoring_enabled
    assert isinstance(instance.run_launcher, ForkingRunLauncher)
    assert instance.run_retries_enabled
    run = started_run(instance, worker)

    with create_test_daemon_workspace_context(EmptyWorkspaceTarget(), instance) as daemon:
        assert_no_errors(execute_run_monitoring_iteration(daemon, LOGGER))
        assert status(instance, run) == dg.DagsterRunStatus.STARTED  # alive: left alone

        worker.kill()  # kill -9; not reaped yet, so a zombie, which is dead too
        # The signal is delivered when the kernel next schedules the process, which on a busy machine can
        # be after the check below: wait until it is a zombie.
        deadline = time.monotonic() + 10
        while psutil.Process(worker.pid).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline, "the killed process did not end within 10 s"
            time.sleep(0.01)
        assert_no_errors(execute_run_monitoring_iteration(daemon, LOGGER))
        assert status(instance, run) == dg.DagsterRunStatus.FAILURE
        assert instance.event_log_storage.get_concurrency_run_ids() == {run.run_id}

        # The slot daemon frees a finished run's slots FREE_SLOTS_AFTER_SECONDS after it ended.
        later = get_current_datetime() + timedelta(seconds=FREE_SLOTS_AFTER_SECONDS + 1)
        monkeypatch.setattr(slot_daemon, "get_current_datetime", lambda: later)
        assert_no_errors(execute_concurrency_slots_iteration(daemon, LOGGER))
    assert instance.event_log_storage.get_concurrency_run_ids() == set()
    assert instance.event_log_storage.get_concurrency_info("training").active_slot_count == 0


def test_babylon_train_cleans_up_the_runs_of_a_dead_process_of_its_own(
    instance: dg.DagsterInstance, worker: subprocess.Popen[bytes]
) -> None:
    run = started_run(instance, worker)
    assert clean_up_dead_runs(instance) == []
    worker.kill()
    worker.wait()

    (dead,) = clean_up_dead_runs(instance)

    assert dead.run_id == run.run_id
    assert f"process {worker.pid} is gone" in dead.reason
    assert status(instance, run) == dg.DagsterRunStatus.FAILURE
    assert instance.event_log_storage.get_concurrency_info("training").active_slot_count == 0


@pytest.fixture
def start_train(database_url: str, tmp_path: Path) -> Iterator[Callable[[bool], subprocess.Popen[str]]]:
    """Starts `babylon train` in a process of its own, as a person does; with `sigint_ignored`, as a script's
    `babylon train &` does (a non-interactive shell starts background jobs with SIGINT ignored). A process
    a failed test leaves behind is killed."""
    started: list[subprocess.Popen[str]] = []

    def start(sigint_ignored: bool = False) -> subprocess.Popen[str]:
        command = [sys.executable, "-m", "babylon_assets.tools.cli", "train", "--iterations", "1", *SHORT_EVALUATION]
        if sigint_ignored:
            command = ["sh", "-c", 'trap "" INT; exec "$@"', "sh", *command]
        environment = {**os.environ, "BABYLON_HOME": str(tmp_path), "DATABASE_URL": database_url}
        process = subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.communicate()


def wait_for_training_run(process: subprocess.Popen[str], instance: dg.DagsterInstance) -> None:
    """Until `babylon train` has created its training run (its progress lines go to a terminal only)."""
    deadline = time.monotonic() + 300
    while not instance.get_runs(filters=dg.RunsFilter(job_name="training_job", tags={"babylon/command": "train"})):
        assert process.poll() is None, f"babylon train ended early: {process.communicate()[1]}"
        assert time.monotonic() < deadline, "babylon train created no training run within 300 s"
        time.sleep(0.2)


@pytest.mark.subprocess
# Ctrl-C's case starts with SIGINT ignored, as `babylon train &` in a script does: the signal still stops it
# (and a Ctrl-C at a terminal, which starts it with the default handler, goes the same way).
@pytest.mark.parametrize(
    ("stop", "code", "name", "sigint_ignored"),
    [(signal.SIGTERM, 143, "SIGTERM", False), (signal.SIGINT, 130, "Ctrl-C", True)],
)
def test_a_signal_while_babylon_train_waits_for_the_training_slot_cancels_the_run_and_frees_it(
    database_url: str,
    instance: dg.DagsterInstance,
    start_train: Callable[[bool], subprocess.Popen[str]],
    worker: subprocess.Popen[bytes],
    stop: signal.Signals,
    code: int,
    name: str,
    sigint_ignored: bool,
) -> None:
    simulate_windows(database_url, windows=3, agents=5)
    holder = started_run(instance, worker)  # a live run of another process holds the one training slot
    train = start_train(sigint_ignored)
    wait_for_training_run(train, instance)
    time.sleep(3)  # waiting for the slot now

    train.send_signal(stop)
    started = time.monotonic()
    _out, err = train.communicate(timeout=60)

    assert time.monotonic() - started < 10
    assert train.returncode == code
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"babylon train: stopped by {name}; training run ")
    assert "canceled" in last and "Traceback" not in err
    (run,) = instance.get_runs(filters=dg.RunsFilter(job_name="training_job", tags={"babylon/command": "train"}))
    assert run.status == dg.DagsterRunStatus.CANCELED
    assert instance.event_log_storage.get_concurrency_run_ids() == {holder.run_id}


@pytest.mark.subprocess
def test_a_killed_babylon_train_is_followed_by_one_that_finishes_without_manual_help(
    database_url: str, instance: dg.DagsterInstance, start_train: Callable[[bool], subprocess.Popen[str]]
) -> None:
    simulate_windows(database_url, windows=3, agents=5)
    killed = start_train(False)
    wait_for_training_run(killed, instance)
    deadline = time.monotonic() + 30
    while not instance.event_log_storage.get_concurrency_run_ids() and time.monotonic() < deadline:
        time.sleep(0.1)  # until the training step holds its slot
    killed.kill()  # kill -9: no handler runs
    killed.communicate(timeout=30)
    (left,) = instance.get_runs(filters=dg.RunsFilter(job_name="training_job"))
    assert left.status == dg.DagsterRunStatus.STARTED

    again = start_train(False)
    out, err = again.communicate(timeout=300)

    assert again.returncode == 0, err
    assert f"run {left.run_id} (training_job) was left STARTED: the run's process {killed.pid} is gone" in err
    assert "step:         1 (1 new)" in out
    # Progress lines are for a terminal (test_progress); a pipe gets none.
    assert "training step" not in err and "scored (" not in err
    assert not instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
    assert instance.event_log_storage.get_concurrency_run_ids() == set()
