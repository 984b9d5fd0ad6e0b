"""dagster-celery's CeleryRunLauncher with a worker health check that sees a run whose worker died.

dagster-celery's check reads only the task's state in the result backend, which a killed worker never
updates, so run monitoring (instance.py) takes the run for running:
- the task stays STARTED, naming the dead worker; here the worker is asked whether it still holds the task,
  and a worker that does not answer or does not hold it means the run's process is gone;
- a window task is acknowledged late (workers.py), so the broker hands it to another worker, where Dagster,
  seeing run monitoring enabled, logs "Ignoring a duplicate run that was started from somewhere other than
  the run monitor daemon" and returns: the task ends SUCCESS while its run is still STARTED. Here a task
  that ended before its run did is a dead worker too.
Either way the check says FAILED, the monitoring daemon fails the run and frees its pool slots (a dead
run holding the `judge` slot would otherwise block every other window), and run retries re-execute it.
"""

from collections.abc import Mapping

import dagster as dg
from dagster._core.launcher.base import CheckRunHealthResult, WorkerStatus
from dagster_celery.launcher import CeleryRunLauncher
from dagster_celery.tags import DAGSTER_CELERY_TASK_ID_TAG

# Celery's states of a task that has returned or raised.
ENDED_TASK_STATES = ("SUCCESS", "FAILURE")
# How long a worker has to answer whether it holds a task; a busy worker's main process answers at once,
# the pool does the work.
WORKER_REPLY_TIMEOUT_SECONDS = 5.0


class WorkerCheckingCeleryRunLauncher(CeleryRunLauncher):
    """CeleryRunLauncher whose health check fails a run whose worker is gone (see the module docstring)."""

    def _task(self, task_id: str) -> tuple[str, str]:
        """The task's state and, while it is STARTED, the worker that started it."""
        result = self.celery.AsyncResult(task_id)
        state = str(result.state)
        info = result.info
        worker = str(info.get("hostname", "")) if state == "STARTED" and isinstance(info, Mapping) else ""
        return state, worker

    def _worker_holds(self, worker: str, task_id: str) -> bool:
        inspect = self.celery.control.inspect(destination=[worker], timeout=WORKER_REPLY_TIMEOUT_SECONDS)
        replies = inspect.query_task(task_id) or {}
        return task_id in replies.get(worker, {})

    def _unfinished(self, run: dg.DagsterRun) -> bool:
        current = self._instance.get_run_by_id(run.run_id)
        return current is not None and not current.is_finished

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        task_id = run.tags[DAGSTER_CELERY_TASK_ID_TAG]
        state, worker = self._task(task_id)
        # A task ends only after its run's last event is stored: the run is read after the task.
        if state in ENDED_TASK_STATES and self._unfinished(run):
            return CheckRunHealthResult(
                WorkerStatus.FAILED,
                f"Celery task {task_id} ended ({state}) before its run did: the worker that ran it died, and "
                "the task redelivered to another worker did not run it again",
            )
        # The task may end between the two reads: only the same worker, still STARTED, still unfinished, counts.
        if worker and not self._worker_holds(worker, task_id) and self._task(task_id) == (state, worker):
            if self._unfinished(run):
                return CheckRunHealthResult(
                    WorkerStatus.FAILED,
                    f"Celery worker {worker} does not answer or no longer holds task {task_id}: it died",
                )
        health: CheckRunHealthResult = super().check_run_worker_health(run)
        return health
