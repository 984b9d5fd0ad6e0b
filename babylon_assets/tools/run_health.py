"""Whether a run's process is still alive, so a run whose process died never stays STARTED.

Dagster 1.13's DefaultRunLauncher cannot tell (it does not support run worker health checks), so run
monitoring would leave a `kill -9`ed run STARTED, holding its pool slot, for ever. Our launcher
(run_launcher.py) checks here: a run's process is named by the `babylon/pid` tags, which the launcher
sets for the process it forks and `babylon train` for its in-process runs, or else by the run worker's
own "Started process for run (pid: N)" event, and it is dead when no such process exists, it is a
zombie, or the pid now belongs to a process started later. `clean_up_dead_runs` applies the same check
for `babylon train`, which runs without the daemon.
"""

import socket

import dagster as dg
import psutil
from dagster._core.events import DagsterEventType
from dagster._core.launcher.base import CheckRunHealthResult, WorkerStatus
from pydantic import BaseModel, ConfigDict

RUN_PID_TAG = "babylon/pid"
RUN_HOST_TAG = "babylon/host"
# The process's start time (seconds since the epoch), so a reused pid is not mistaken for the run's.
RUN_PROCESS_STARTED_TAG = "babylon/process_started"
# A process start time and an event timestamp come from different clocks reads: allow this much.
CLOCK_SLACK_SECONDS = 2.0


def process_tags(pid: int | None = None, started_by: float | None = None) -> dict[str, str]:
    """Tags naming the process `pid`, started by `started_by` (seconds since the epoch), for a run executed in
    it; by default this process and its start time."""
    this = psutil.Process()
    return {
        RUN_PID_TAG: str(pid if pid is not None else this.pid),
        RUN_HOST_TAG: socket.gethostname(),
        RUN_PROCESS_STARTED_TAG: f"{started_by if started_by is not None else this.create_time():.3f}",
    }


class RunProcess(BaseModel):
    """The process a run executes in, and the latest time it is known to have been running by."""

    model_config = ConfigDict(frozen=True)

    pid: int
    started_by: float


def is_alive(process: RunProcess) -> bool:
    try:
        found = psutil.Process(process.pid)
        return bool(found.status() != psutil.STATUS_ZOMBIE and found.create_time() <= process.started_by)
    except psutil.NoSuchProcess:
        return False


def run_process(instance: dg.DagsterInstance, run: dg.DagsterRun) -> RunProcess | None:
    """The run's process on this host, or None when the run names none here (then nothing can be told)."""
    tags = run.tags
    if RUN_PID_TAG in tags:
        if tags.get(RUN_HOST_TAG) != socket.gethostname():
            return None
        started = float(tags.get(RUN_PROCESS_STARTED_TAG, "inf")) + CLOCK_SLACK_SECONDS
        return RunProcess(pid=int(tags[RUN_PID_TAG]), started_by=started)
    # A run launched through a code server (the daemon's runs): its worker reports its pid as it starts.
    # DefaultRunLauncher starts that worker on the code server's host, which `babylon dev` runs here.
    for record in reversed(instance.all_logs(run.run_id, of_type=DagsterEventType.ENGINE_EVENT)):
        event = record.dagster_event
        data = event.engine_event_data if event is not None else None
        pid = data.metadata.get("pid") if data is not None else None
        if isinstance(pid, dg.TextMetadataValue) and pid.value and pid.value.isdigit():
            return RunProcess(pid=int(pid.value), started_by=record.timestamp + CLOCK_SLACK_SECONDS)
    return None


def worker_health(instance: dg.DagsterInstance, run: dg.DagsterRun) -> CheckRunHealthResult:
    process = run_process(instance, run)
    if process is None:
        # Nothing to check (not started yet, or another host's): monitoring's start timeout covers it.
        return CheckRunHealthResult(WorkerStatus.RUNNING, "no process of this host to check")
    if is_alive(process):
        return CheckRunHealthResult(WorkerStatus.RUNNING, f"process {process.pid} is running")
    return CheckRunHealthResult(WorkerStatus.FAILED, f"the run's process {process.pid} is gone (killed or crashed)")


class DeadRun(BaseModel):
    model_config = ConfigDict(frozen=True)

    run_id: str
    job_name: str
    reason: str


def fail_dead_run(instance: dg.DagsterInstance, run: dg.DagsterRun, reason: str) -> DeadRun:
    """Mark the run failed and give back its pool slots at once."""
    instance.report_run_failed(run, f"{reason}; marked failed and its pool slots freed by babylon")
    instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
    return DeadRun(run_id=run.run_id, job_name=run.job_name, reason=reason)


def clean_up_dead_runs(instance: dg.DagsterInstance) -> list[DeadRun]:
    """Every STARTED run whose process on this host is gone: marked failed, its slots freed."""
    dead: list[DeadRun] = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
        health = worker_health(instance, run)
        if health.status == WorkerStatus.FAILED:
            dead.append(fail_dead_run(instance, run, health.msg or "its process is gone"))
    return dead
