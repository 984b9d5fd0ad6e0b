"""The default profile's run launcher (tools/run_launcher.py) on the project's instance: a run is a process forked
from the warm forkserver, runs code edited after the forkserver loaded it, stops when terminated, and a killed
one is seen as dead by run monitoring.

The forkserver is one per process and keeps its first preload list, so every test here shares one code
location (a module folder made once) and runs in one worker.
"""

import os
import signal
import socket
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import psutil
import pytest
from dagster._core.launcher.base import WorkerStatus
from dagster._core.test_utils import create_run_for_test, create_test_daemon_workspace_context
from dagster._core.workspace.load_target import EmptyWorkspaceTarget

from babylon_assets.tools.instance import YamlValue
from babylon_assets.tools.run_health import RUN_HOST_TAG, RUN_PID_TAG
from babylon_assets.tools.run_launcher import ForkingRunLauncher
from tests.support.dagster_instance import project_instance

pytestmark = [pytest.mark.subprocess, pytest.mark.xdist_group("forkserver")]

LOCATION_MODULE = "forked_run_location"
LOCATION_SOURCE = """
import os
import time

import dagster as dg

VALUE = {value}
IMPORTED_IN = os.getpid()


@dg.op
def report(context: dg.OpExecutionContext) -> None:
    context.add_output_metadata(
        {{"value": VALUE, "imported_in_the_run": IMPORTED_IN == os.getpid()}}, output_name="result"
    )


@dg.op
def wait(context: dg.OpExecutionContext) -> None:
    time.sleep(120)


@dg.job
def report_job() -> None:
    report()


@dg.job
def wait_job() -> None:
    wait()


# As the project's: steps in the run's process (the multiprocess default would spawn one per step).
defs = dg.Definitions(jobs=[report_job, wait_job], executor=dg.in_process_executor)
"""
DEADLINE_SECONDS = 60


def write_location(folder: Path, value: int) -> None:
    path = folder / f"{LOCATION_MODULE}.py"
    path.write_text(textwrap.dedent(LOCATION_SOURCE.format(value=value)))
    # A later mtime than any write before it, even on a file system with coarse timestamps.
    later = time.time_ns() + 2_000_000_000
    os.utime(path, ns=(later, later))


@pytest.fixture(scope="module")
def location(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("forked_run_location")
    write_location(folder, 1)
    return folder


@pytest.fixture
def forking_instance(
    database_url: str,
    instance_database: None,
    location: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[dg.DagsterInstance]:
    """The project's instance, its launcher preloading the test's code location instead of the project's."""
    # Where the forkserver finds the module: Python 3.11's forkserver imports its preload with the interpreter's
    # default path, not this process's sys.path (see run_launcher.py).
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(location), os.environ.get("PYTHONPATH", "")]))
    launcher_config: dict[str, YamlValue] = {"preload_modules": [LOCATION_MODULE]}
    with project_instance(database_url, tmp_path / "dagster_home", monkeypatch, launcher_config) as instance:
        yield instance


def launch(instance: dg.DagsterInstance, location: Path, job_name: str) -> dg.DagsterRun:
    """What the daemon does with a queued run of `job_name`: create it, then launch it on the instance."""
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    job = ReconstructableRepository.for_module(LOCATION_MODULE, "defs", str(location)).get_reconstructable_job(job_name)
    run = create_run_for_test(instance, job_name=job_name, job_code_origin=job.get_python_origin())
    with create_test_daemon_workspace_context(EmptyWorkspaceTarget(), instance) as workspace:
        return instance.launch_run(run.run_id, workspace.create_request_context())


def wait_for(instance: dg.DagsterInstance, run: dg.DagsterRun, statuses: set[dg.DagsterRunStatus]) -> dg.DagsterRun:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        current = instance.get_run_by_id(run.run_id)
        assert current is not None
        if current.status in statuses:
            return current
        assert time.monotonic() < deadline, f"run {run.run_id} is {current.status}, not {statuses}, after 60 s"
        time.sleep(0.1)


def reported(instance: dg.DagsterInstance, run: dg.DagsterRun) -> dict[str, object]:
    (output,) = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_OUTPUT)
    assert output.dagster_event is not None
    metadata = output.dagster_event.step_output_data.metadata
    return {key: value.value for key, value in metadata.items()}


def run_pid(run: dg.DagsterRun) -> int:
    assert run.tags[RUN_HOST_TAG] == socket.gethostname()
    return int(run.tags[RUN_PID_TAG])


def gone(pid: int) -> bool:
    """The process ended and was reaped (the forkserver reaps its children): no zombie is left behind."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline:
        try:
            psutil.Process(pid)
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def test_a_run_is_forked_with_the_code_preloaded_and_imports_it_again_once_it_changed(
    forking_instance: dg.DagsterInstance, location: Path
) -> None:
    assert isinstance(forking_instance.run_launcher, ForkingRunLauncher)

    first = wait_for(forking_instance, launch(forking_instance, location, "report_job"), {dg.DagsterRunStatus.SUCCESS})
    # The module came with the fork: it was imported in the forkserver, not in the run's process.
    assert reported(forking_instance, first) == {"value": 1, "imported_in_the_run": False}
    (started,) = [
        record
        for record in forking_instance.all_logs(first.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
        if record.message.startswith("Started process for run")
    ]
    assert f"(pid: {first.tags[RUN_PID_TAG]})" in started.message  # the tagged process ran it
    assert int(first.tags[RUN_PID_TAG]) != os.getpid()
    assert gone(run_pid(first))

    write_location(location, 2)  # an edit, as between two runs in `babylon dev`
    second = wait_for(forking_instance, launch(forking_instance, location, "report_job"), {dg.DagsterRunStatus.SUCCESS})
    assert reported(forking_instance, second) == {"value": 2, "imported_in_the_run": True}


def test_terminate_cancels_a_running_run_and_a_killed_one_is_seen_dead(
    forking_instance: dg.DagsterInstance, location: Path
) -> None:
    launcher = forking_instance.run_launcher
    waiting = wait_for(forking_instance, launch(forking_instance, location, "wait_job"), {dg.DagsterRunStatus.STARTED})
    killed = wait_for(forking_instance, launch(forking_instance, location, "wait_job"), {dg.DagsterRunStatus.STARTED})
    assert launcher.check_run_worker_health(waiting).status == WorkerStatus.RUNNING

    assert launcher.terminate(waiting.run_id)
    assert wait_for(forking_instance, waiting, {dg.DagsterRunStatus.CANCELED, dg.DagsterRunStatus.FAILURE}).status == (
        dg.DagsterRunStatus.CANCELED
    )
    assert gone(run_pid(waiting))
    assert not launcher.terminate(waiting.run_id)  # finished: nothing to stop

    os.kill(run_pid(killed), signal.SIGKILL)
    assert gone(run_pid(killed))
    health = launcher.check_run_worker_health(killed)
    assert health.status == WorkerStatus.FAILED
    assert f"process {run_pid(killed)} is gone" in (health.msg or "")
