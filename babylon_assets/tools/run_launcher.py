"""The default profile's run launcher: each run is a process forked from a warm one, not a new interpreter.

Dagster's DefaultRunLauncher has the code server start every run with multiprocessing's "spawn"
(hard-coded in dagster/_grpc/server.py): a window chain that takes 0.3 s in process took 3 s as a run,
most of it Python starting and importing Dagster, and a RULER window paid ART's import of torch on top.
Here a forkserver (Python's multiprocessing) imports the libraries and the code location once, and each run
is forked from it:
- a run whose project modules (those outside the interpreter's library folders) changed on disk since the
  forkserver imported them drops them all and imports them anew, so a run started after an edit (or a
  reload of the code location) runs the new code, as a run of Dagster's own launcher does;
- the run executes as `dagster api execute_run` does (Dagster's run worker body, as dagster-celery's
  task does), so its events, failure reports and interrupts are Dagster's own;
- the run's process is tagged at launch (run_health's pid, host and start-time tags): run monitoring's
  health check and `terminate` act on that process.
The forkserver starts with the first run launched in a process (the daemon) and ends with it.
"""

import gc
import multiprocessing
import os
import signal
import sys
import sysconfig
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Self

import dagster as dg
import yaml
from dagster._cli.api import _execute_run_command_body
from dagster._config.config_schema import UserConfigSchema
from dagster._core.events import DagsterEvent
from dagster._core.instance.ref import InstanceRef
from dagster._core.launcher.base import CheckRunHealthResult, LaunchRunContext, RunLauncher
from dagster._serdes import ConfigurableClass, deserialize_value, serialize_value
from dagster._serdes.config_class import ConfigurableClassData
from dagster._utils.interrupts import capture_interrupts, setup_interrupt_handlers

from babylon_assets.errors import BabylonError, ConfigurationError
from babylon_assets.tools.pooled_storage import PooledPostgresStorage
from babylon_assets.tools.run_health import is_alive, process_tags, run_process, worker_health

# What a run imports, loaded once in the forkserver: Dagster's run worker and instance storage, what Dagster
# imports on a run's first use (its compute log manager, upath, fsspec, tabulate), the code location, the
# outcome judge's pandas and scipy.stats, RULER's LiteLLM, OpenAI client and ART (which imports torch).
# - `babylon_assets` comes first for its environment defaults (LiteLLM then reads its cost map locally).
# - `dagster._daemon.cli`: a child forked for `dagster-daemon run` runs that script again (multiprocessing
#   re-runs the parent's main), which would import it in each run (0.4 s). Python 3.11's forkserver ignores a
#   `__main__` preload (it reads the script's path under a key spawn does not set) and the parent's sys.path:
#   these are imported from its working directory, PYTHONPATH and site-packages.
# - This module is always loaded last (see ForkingRunLauncher), to see what the others loaded.
PRELOAD_MODULES = (
    "babylon_assets",
    "dagster._cli.api",
    "dagster._daemon.cli",
    "dagster_postgres",
    "psycopg2",
    "dagster._core.storage.local_compute_log_manager",
    "upath.registry",
    "fsspec",
    "tabulate",
    "pandas",
    "scipy.stats",
    "litellm",
    "openai",
    "art.rewards",
    "babylon_assets.definitions",
)
LIBRARY_FOLDERS = tuple(sorted({Path(folder) for folder in sysconfig.get_paths().values()}))


def _project_files() -> dict[str, tuple[Path, int]]:
    """Every loaded module of the project (a file outside the interpreter's folders): its file and mtime."""
    files: dict[str, tuple[Path, int]] = {}
    for name, module in list(sys.modules.items()):
        location = getattr(module, "__file__", None)
        if not isinstance(location, str):
            continue
        path = Path(location)
        # A script's `__main__` is not the project's to reload; some modules name no real file (torch's
        # `_ops.py`, `python -`'s `<stdin>`).
        if name in ("__main__", "__mp_main__") or not path.is_absolute() or not path.is_file():
            continue
        if not any(path.is_relative_to(folder) for folder in LIBRARY_FOLDERS):
            files[name] = (path, path.stat().st_mtime_ns)
    return files


# In the forkserver, what its preload imported; in a run, what the run starts with.
PRELOADED_PROJECT_FILES = _project_files()
# What is loaded so far stays for the life of the process: keeping the collector off it means a forked run does
# not copy the forkserver's pages by touching every object's header (CPython's advice for forking servers).
gc.freeze()


def _unchanged(path: Path, mtime_ns: int) -> bool:
    try:
        return path.stat().st_mtime_ns == mtime_ns
    except FileNotFoundError:
        return False


def drop_changed_project_modules() -> bool:
    """If a preloaded project file changed since, forget every preloaded project module but this one, so that
    the run imports the current code; whether it did."""
    if all(_unchanged(path, mtime) for path, mtime in PRELOADED_PROJECT_FILES.values()):
        return False
    for name in PRELOADED_PROJECT_FILES:
        if name != __name__:
            sys.modules.pop(name, None)
    return True


def run_worker_ref(ref: InstanceRef) -> InstanceRef:
    """The instance a run's process opens: the daemon's, without the check for missing tables that dagster-postgres
    makes on opening its storage (a new connection and an inspection per storage, 0.06 s a run). The daemon's
    own storage made them before it launched anything."""
    data = ref.storage_data
    ours = (PooledPostgresStorage.__module__, PooledPostgresStorage.__name__)
    if data is None or (data.module_name, data.class_name) != ours:
        return ref
    config = yaml.safe_load(data.config_yaml)
    assert isinstance(config, dict)  # the storage's config, a mapping by its schema
    config["should_autocreate_tables"] = False
    return ref._replace(storage_data=data._replace(config_yaml=yaml.safe_dump(config)))


def _ignore_event(_event: DagsterEvent) -> None:
    """The run worker's event stream: every event is in the instance already."""


def execute_run(instance_ref: str, run_id: str) -> None:
    """The run's process: Dagster's run worker body, with SIGTERM handled as SIGINT, as in its CLI."""
    drop_changed_project_modules()
    setup_interrupt_handlers()
    with capture_interrupts():
        with dg.DagsterInstance.from_ref(deserialize_value(instance_ref, InstanceRef)) as instance:
            exit_code = _execute_run_command_body(run_id, instance, _ignore_event, set_exit_code_on_failure=True)
    sys.exit(exit_code)


class ForkingRunLauncher(RunLauncher, ConfigurableClass):
    """Launches each run in a process forked from a forkserver that preloaded `preload_modules`."""

    def __init__(self, preload_modules: Sequence[str], inst_data: ConfigurableClassData | None = None) -> None:
        self._preload_modules = [*preload_modules, __name__]
        self._inst_data = inst_data
        super().__init__()  # type: ignore[no-untyped-call]

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._inst_data

    @classmethod
    def config_type(cls) -> UserConfigSchema:
        return {"preload_modules": dg.Field([str], is_required=False, default_value=list(PRELOAD_MODULES))}

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: Mapping[str, object]) -> Self:
        modules = config_value.get("preload_modules", PRELOAD_MODULES)
        assert isinstance(modules, list | tuple)
        return cls(preload_modules=[str(module) for module in modules], inst_data=inst_data)

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        origin = run.job_code_origin
        if origin is None:
            raise BabylonError(
                f"run {run.run_id} names no code to run (no job_code_origin); launch it from the UI or a sensor"
            )
        if origin.executable_path != sys.executable:
            # The forkserver is this interpreter: a code location under another one cannot be forked from it.
            raise ConfigurationError(
                f"the code location runs under {origin.executable_path}, the daemon under {sys.executable}; "
                "start both from the project's environment (`babylon dev`)"
            )
        forkserver = multiprocessing.get_context("forkserver")
        forkserver.set_forkserver_preload(self._preload_modules)
        process = forkserver.Process(
            target=execute_run,
            args=(serialize_value(run_worker_ref(self._instance.get_ref())), run.run_id),
            name=f"dagster-run-{run.run_id}",
        )
        try:
            process.start()
        except EOFError as error:
            raise BabylonError(
                "the run launcher's forkserver ended while starting the run: its traceback (an import in "
                "preload_modules that failed) is in the daemon's output; fix it and restart the daemon"
            ) from error
        assert process.pid is not None  # set by start()
        # Started by now: an upper bound on its start time, known even if the run has ended already.
        self._instance.add_run_tags(run.run_id, process_tags(process.pid, started_by=time.time()))

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            return False
        process = run_process(self._instance, run)
        if process is None or not is_alive(process):
            self._instance.report_engine_event(
                "Not terminated: no live process of this run on this host", run, cls=self.__class__
            )
            return False
        self._instance.report_run_canceling(run)
        # What Dagster's own run worker gets on termination: an interrupt, raised in the step that runs.
        os.kill(process.pid, signal.SIGINT)
        return True

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        return worker_health(self._instance, run)
