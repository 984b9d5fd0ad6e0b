"""The soak driver: the platform left alone over simulated hours, on the project's real Dagster instance.

It stands in for the Dagster daemon and nothing else: each tick runs the daemon's own run-monitoring
and slot-freeing iterations, evaluates fresh_windows_sensor (its clock is the simulated one) and
training_sensor, and launches what they request the way the daemon's sensor loop does (a run key it
has launched before is dropped). A failed window chain is re-executed up to its dagster/max_retries
tag, as the daemon's run retries do. Runs execute in this process, except the training run that is
killed with SIGKILL mid-step, which gets a process of its own.

Faults: rows written late for past hours (a window that had one agent too few gets its last one
later; windows already scored and trained get another agent), one window whose judge fails every
request of its first run, one window during whose scoring the platform's database connections are
terminated (pg_terminate_backend, the server stays up), and the first training run killed mid-step.

Run by tests/test_soak.py (a few simulated hours) and bench/bench_soak.py (48 hours, 8 agents). As a
module (`python -m tests.soak TAGS_JSON`) it executes one training run: the one the driver kills.
"""

import importlib
import json
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import psycopg
import pytest
from dagster._core.storage.tags import (
    MAX_RETRIES_TAG,
    PARENT_RUN_ID_TAG,
    RETRY_NUMBER_TAG,
    ROOT_RUN_ID_TAG,
    RUN_KEY_TAG,
)
from dagster._core.test_utils import create_test_daemon_workspace_context
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import EmptyWorkspaceTarget
from dagster._daemon.monitoring import concurrency as slot_daemon
from dagster._daemon.monitoring.concurrency import execute_concurrency_slots_iteration
from dagster._daemon.monitoring.run_monitoring import execute_run_monitoring_iteration
from pydantic import BaseModel, ConfigDict

from babylon_assets.db.connection import DEFAULT_SCHEMA, store_conninfo
from babylon_assets.partitions import WINDOW_PARTITIONS
from babylon_assets.tools.instance import FREE_SLOTS_AFTER_SECONDS
from babylon_assets.tools.run_health import process_tags
from babylon_assets.trajectories.discovery import before_lookback, eligible_windows_between
from babylon_assets.trajectories.models import hour_floor, window_key
from resources.database import DatabaseResource
from sensors import fresh_windows
from sensors.fresh_windows import CONTENT_TAG
from sensors.training import ATTEMPT_TAG, FRESH_SET_TAG
from tests.support.dagster_instance import project_instance
from tests.support.judge_server import JudgeRequest, JudgeServer, Reply, by_content
from tests.support.trajectory_rows import insert_rows, row, utc_naive

LOGGER = logging.getLogger("soak")
# One step per training run, and a short closed-loop evaluation, keep training runs short; the model
# still trains on every fresh window and promotion still decides on evidence.
TRAINING_RUN_CONFIG = dg.RunConfig(
    ops={
        "trained_checkpoint": {"config": {"iterations": 1}},
        "policy_evaluation": {"config": {"markets": 2, "decisions": 2, "max_new_tokens": 16}},
    }
)
TICK_MINUTES = (20, 50)
REPO = Path(__file__).resolve().parents[2]


class SoakPlan(BaseModel):
    """What happens over the simulated hours (window numbers count hours from the first window)."""

    model_config = ConfigDict(frozen=True)

    hours: int
    agents: int
    # Recorded with one agent too few in its hour: eligible only once a late row completes it.
    short_window: int = 1
    # (hour, window): another agent's row for the window, written during that later hour.
    late: list[tuple[int, int]]
    judge_fails_window: int = 2
    connection_broken_window: int = 3

    @classmethod
    def regular(cls, hours: int, agents: int) -> "SoakPlan":
        """The short window completed 2 hours late, then every 4 hours a row for the window 4 hours back."""
        return cls(hours=hours, agents=agents, late=[(3, 1), *((hour, hour - 4) for hour in range(5, hours, 4))])


class SoakReport(BaseModel):
    """What the platform did, and everything found lost, duplicated or left behind (all empty when sound)."""

    model_config = ConfigDict(frozen=True)

    windows_seen: int
    windows_eligible: int
    windows_scored: int
    content_versions_scored: int
    windows_trained: int
    training_runs: int
    steps: list[int]
    chain_retries: int
    training_retries: int
    faults_survived: dict[str, int]
    lost: list[str]
    duplicated: list[str]
    left_started: list[str]
    slots_claimed: list[str]
    killed_run: str | None
    trained_after_kill: bool
    # Each window that got rows late: "trained" (a checkpoint used its latest content), "held out"
    # (evaluation's, never trained), or "not trained".
    late_windows: dict[str, str]


class ScriptedFaults:
    """The judge's responder: fails while `judge_failing`, terminates the database's connections on the
    first request after `break_connections` is set, and otherwise judges by content."""

    def __init__(self, admin_url: str, database: str) -> None:
        self.admin_url = admin_url
        self.database = database
        self.judge_failing = False
        self.break_connections = False
        self.judge_failures = 0
        self.connections_terminated = 0

    def __call__(self, request: JudgeRequest) -> Reply:
        if self.judge_failing:
            self.judge_failures += 1
            return Reply(status=400)
        if self.break_connections:
            self.break_connections = False
            with psycopg.connect(self.admin_url, autocommit=True) as admin:
                terminated = admin.execute(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()",
                    (self.database,),
                ).fetchone()
            self.connections_terminated += terminated[0] if terminated is not None else 0
        return by_content(request)


class Soak:
    """The driver; `run()` plays the plan and returns the report."""

    def __init__(
        self,
        url: str,
        instance: dg.DagsterInstance,
        daemon: WorkspaceProcessContext,
        faults: ScriptedFaults,
        clock: list[datetime],
        plan: SoakPlan,
        home: Path,
    ) -> None:
        self.url = url
        self.home = home
        self.store_url = store_conninfo(url, DEFAULT_SCHEMA)
        self.instance = instance
        self.daemon = daemon
        self.faults = faults
        self.clock = clock
        self.plan = plan
        self.first = hour_floor(clock[0])
        self.cursor: str | None = None
        self.killed_run: str | None = None
        self.late_rows = 0
        self.chain_retries = 0
        self.agents_written: dict[int, int] = {}
        self.late_windows: set[str] = set()
        from babylon_assets.definitions import defs

        self.window_job = defs.resolve_job_def("window_chain_job")
        self.training_job = defs.resolve_job_def("training_job")

    def window(self, number: int) -> datetime:
        return self.first + timedelta(hours=number)

    def write_agents(self, number: int, count: int, written: datetime) -> None:
        """`count` more agents' rows for window `number`, written at `written`."""
        start = self.agents_written.get(number, 0)
        rows = [row(self.window(number), f"agent-{agent}", steps=5) for agent in range(start, start + count)]
        insert_rows(self.url, [{**r, "createdAt": utc_naive(written), "updatedAt": utc_naive(written)} for r in rows])
        self.agents_written[number] = start + count

    def record_hour(self, hour: int) -> None:
        """The rows the game records during simulated hour `hour`: that window's, and late ones."""
        at = self.window(hour) + timedelta(minutes=5)
        if hour < self.plan.hours:
            self.write_agents(hour, self.plan.agents - (hour == self.plan.short_window), at)
        for number in (window for late_hour, window in self.plan.late if late_hour == hour):
            self.write_agents(number, 1, at)
            self.late_rows += 1
            self.late_windows.add(window_key(self.window(number)))

    def tick(self) -> None:
        list(execute_run_monitoring_iteration(self.daemon, LOGGER))
        list(execute_concurrency_slots_iteration(self.daemon, LOGGER))
        self.discover()
        self.retry_failed_chains()
        self.train()

    def launched(self, run_key: str) -> bool:
        return bool(self.instance.get_runs(filters=dg.RunsFilter(tags={RUN_KEY_TAG: run_key}), limit=1))

    def discover(self) -> None:
        context = dg.build_sensor_context(
            instance=self.instance, cursor=self.cursor, resources={"database": DatabaseResource()}
        )
        result = fresh_windows.fresh_windows_sensor(context)
        assert isinstance(result, dg.SensorResult)
        for partitions in result.dynamic_partitions_requests or []:
            assert isinstance(partitions, dg.AddDynamicPartitionsRequest)
            self.instance.add_dynamic_partitions(partitions.partitions_def_name, list(partitions.partition_keys))
        self.cursor = result.cursor
        for request in result.run_requests or []:
            assert isinstance(request, dg.RunRequest) and request.run_key is not None
            if not self.launched(request.run_key):
                self.run_chain(str(request.partition_key), {**request.tags, RUN_KEY_TAG: request.run_key})

    def run_chain(self, key: str, tags: dict[str, str]) -> None:
        """The window's chain; the window's first run ever meets its fault, if the plan gives it one."""
        first = not self.instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": key}), limit=1)
        self.faults.judge_failing = first and key == window_key(self.window(self.plan.judge_fails_window))
        self.faults.break_connections = first and key == window_key(self.window(self.plan.connection_broken_window))
        try:
            self.window_job.execute_in_process(
                partition_key=key, instance=self.instance, tags={**tags, **process_tags()}, raise_on_error=False
            )
        finally:
            self.faults.judge_failing = False
            self.faults.break_connections = False

    def retry_failed_chains(self) -> None:
        """The daemon's run retries: a failed chain is re-executed until its dagster/max_retries."""
        failed = self.instance.get_runs(
            filters=dg.RunsFilter(job_name="window_chain_job", statuses=[dg.DagsterRunStatus.FAILURE])
        )
        for run in failed:
            retried = self.instance.get_runs(filters=dg.RunsFilter(tags={PARENT_RUN_ID_TAG: run.run_id}), limit=1)
            number = int(run.tags.get(RETRY_NUMBER_TAG, "0"))
            if retried or number >= int(run.tags.get(MAX_RETRIES_TAG, "0")):
                continue
            self.chain_retries += 1
            kept = {name: value for name, value in run.tags.items() if name in (CONTENT_TAG, RUN_KEY_TAG)}
            self.run_chain(
                str(run.tags["dagster/partition"]),
                {
                    **kept,
                    PARENT_RUN_ID_TAG: run.run_id,
                    ROOT_RUN_ID_TAG: run.tags.get(ROOT_RUN_ID_TAG, run.run_id),
                    RETRY_NUMBER_TAG: str(number + 1),
                },
            )

    def train(self) -> None:
        from sensors.training import training_sensor

        context = dg.build_sensor_context(instance=self.instance, resources={"database": DatabaseResource()})
        request = training_sensor(context)
        if not isinstance(request, dg.RunRequest) or request.run_key is None or self.launched(request.run_key):
            return
        tags = {**request.tags, RUN_KEY_TAG: request.run_key}
        if self.killed_run is None:
            self.kill_mid_step(tags)
            return
        self.training_job.execute_in_process(
            instance=self.instance,
            run_config=TRAINING_RUN_CONFIG,
            tags={**tags, **process_tags()},
            raise_on_error=False,
        )

    def kill_mid_step(self, tags: dict[str, str]) -> None:
        """The training run in a process of its own, killed with SIGKILL once its step holds the slot."""
        with (self.home / "killed_training.log").open("w") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "tests.support.soak", json.dumps(tags)], cwd=REPO, stdout=log, stderr=log
            )
        deadline = time.monotonic() + 120
        while not self.instance.event_log_storage.get_concurrency_run_ids():
            assert worker.poll() is None, (
                f"the training run to be killed ended before its step started: {self.home / 'killed_training.log'}"
            )
            assert time.monotonic() < deadline, "the training run's step took no slot within 120 s"
            time.sleep(0.1)
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        (run,) = self.instance.get_runs(filters=dg.RunsFilter(tags={RUN_KEY_TAG: tags[RUN_KEY_TAG]}))
        self.killed_run = run.run_id

    def run(self) -> SoakReport:
        # Two hours more than the plan: every window, late or not, settles and runs.
        for hour in range(self.plan.hours + 2):
            self.record_hour(hour)
            for minute in TICK_MINUTES:
                self.clock[0] = self.window(hour) + timedelta(minutes=minute)
                self.tick()
        for _ in range(3):  # the training that the last windows' scores ask for, and its retry if any
            self.tick()
        return self.report()

    def report(self) -> SoakReport:
        import asyncio

        from babylon_assets.db.connection import connect_async

        async def eligible() -> list[str]:
            async with await connect_async(self.url) as conn:
                found = await eligible_windows_between(
                    conn,
                    after=before_lookback(datetime.now(UTC), 168),
                    until=self.window(self.plan.hours),
                    min_agents=5,
                    min_actions=5,
                )
            return [window_key(window.window_id) for window in found]

        eligible_keys = asyncio.run(eligible())
        runs = self.instance.get_runs()
        chains = [run for run in runs if run.job_name == "window_chain_job"]
        scored_versions: dict[tuple[str, str], int] = {}
        for run in chains:
            if run.status == dg.DagsterRunStatus.SUCCESS:
                version = (run.tags["dagster/partition"], run.tags[CONTENT_TAG])
                scored_versions[version] = scored_versions.get(version, 0) + 1
        duplicated = [f"{key}@{digest[:12]} scored {n} times" for (key, digest), n in scored_versions.items() if n > 1]
        with psycopg.connect(self.store_url) as conn:
            current: dict[datetime, str] = dict(
                conn.execute(
                    """
                    SELECT s.window_id, sn.content_hash FROM window_scores s
                    JOIN window_validations v ON v.window_id = s.window_id AND v.snapshot_id = s.snapshot_id
                    JOIN window_snapshots sn ON sn.id = s.snapshot_id
                    WHERE sn.version = (SELECT max(version) FROM window_snapshots l WHERE l.window_id = s.window_id)
                    """
                ).fetchall()
            )
            steps = [step for (step,) in conn.execute("SELECT step FROM policy_checkpoints ORDER BY step").fetchall()]
            taken_up: dict[datetime, str] = dict(
                conn.execute(
                    """
                    SELECT s.window_id,
                           CASE WHEN EXISTS (SELECT 1 FROM checkpoint_windows c
                                             WHERE c.window_id = s.window_id AND c.snapshot_id = s.snapshot_id)
                                THEN 'trained'
                                WHEN EXISTS (SELECT 1 FROM training_window_splits h
                                             WHERE h.window_id = s.window_id AND h.held_out)
                                THEN 'held out'
                                ELSE 'not trained' END
                    FROM window_scores s
                    """
                ).fetchall()
            )
            trained = conn.execute("SELECT count(DISTINCT window_id) FROM checkpoint_windows").fetchone()
        latest = {window_key(window_id): digest for window_id, digest in current.items()}
        lost = [
            f"{key} not scored at its latest content"
            for key in eligible_keys
            if key not in latest or (key, latest[key]) not in scored_versions
        ]
        training = [run for run in runs if run.job_name == "training_job"]
        materialized = [run for run in training if self.checkpointed(run.run_id)]
        sets = [run.tags[FRESH_SET_TAG] for run in materialized]
        duplicated += [
            f"fresh set {name} trained {sets.count(name)} times" for name in set(sets) if sets.count(name) > 1
        ]
        if steps != list(range(1, len(steps) + 1)):
            duplicated.append(f"steps {steps} are not 1..{len(steps)}")
        killed_at = next((run for run in training if run.run_id == self.killed_run), None)
        return SoakReport(
            windows_seen=len(self.instance.get_dynamic_partitions(WINDOW_PARTITIONS)),
            windows_eligible=len(eligible_keys),
            windows_scored=len(current),
            content_versions_scored=len(scored_versions),
            windows_trained=trained[0] if trained is not None else 0,
            training_runs=len(materialized),
            steps=steps,
            chain_retries=self.chain_retries,
            training_retries=sum(1 for run in training if int(run.tags.get(ATTEMPT_TAG, "1")) > 1),
            faults_survived={
                "late rows": self.late_rows,
                "judge failures": 1 if self.faults.judge_failures else 0,
                "connections terminated": self.faults.connections_terminated,
                "training run killed": 1 if self.killed_run else 0,
            },
            lost=lost,
            duplicated=duplicated,
            left_started=[run.run_id for run in runs if run.status == dg.DagsterRunStatus.STARTED],
            slots_claimed=sorted(self.instance.event_log_storage.get_concurrency_run_ids()),
            killed_run=self.killed_run,
            # The killed run was the first training run: any checkpoint after it came without a manual step.
            trained_after_kill=killed_at is not None
            and killed_at.status == dg.DagsterRunStatus.FAILURE
            and any(run.run_id != self.killed_run for run in materialized),
            late_windows={
                window_key(window_id): state
                for window_id, state in taken_up.items()
                if window_key(window_id) in self.late_windows
            },
        )

    def checkpointed(self, run_id: str) -> bool:
        """Whether the run materialized trained_checkpoint (its promotion check may still fail the run)."""
        entries = self.instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
        return any(
            entry.dagster_event is not None
            and entry.dagster_event.asset_key is not None
            and entry.dagster_event.asset_key.to_user_string() == "trained_checkpoint"
            for entry in entries
        )


@contextmanager
def soak(url: str, admin_url: str, home: Path, plan: SoakPlan) -> Iterator[Soak]:
    """A driver on the project's instance for the game database `url`, with the scripted judge; the
    first window starts `plan.hours + 2` hours before the current hour, so every window is in the past.

    The environment (the RULER judge at the scripted server) is set for the driver's time only, and the
    platform's definitions are loaded again with it and again after it.
    """
    import babylon_assets.definitions

    faults = ScriptedFaults(admin_url, str(psycopg.conninfo.conninfo_to_dict(url)["dbname"]))
    try:
        with (
            pytest.MonkeyPatch.context() as patch,
            JudgeServer(faults) as judge,
            project_instance(url, home / "dagster_home", patch) as instance,
        ):
            for name, value in {
                "BABYLON_PROFILE": "local",
                "BABYLON_HOME": str(home),
                "BABYLON_JUDGE": "ruler",
                "BABYLON_JUDGE_API_BASE": judge.api_base,
                "BABYLON_JUDGE_API_KEY": "soak-key",
                "BABYLON_TRAINING_RETRY_SECONDS": "0",
            }.items():
                patch.setenv(name, value)
            importlib.reload(babylon_assets.definitions)
            clock = [hour_floor(datetime.now(UTC)) - timedelta(hours=plan.hours + 2)]
            patch.setattr(fresh_windows, "current_time", lambda: clock[0])
            # The slot daemon frees a finished run's slots FREE_SLOTS_AFTER_SECONDS after it ended.
            patch.setattr(
                slot_daemon,
                "get_current_datetime",
                lambda: datetime.now(UTC) + timedelta(seconds=FREE_SLOTS_AFTER_SECONDS + 1),
            )
            with create_test_daemon_workspace_context(EmptyWorkspaceTarget(), instance) as daemon:
                yield Soak(url, instance, daemon, faults, clock, plan, home)
    finally:
        importlib.reload(babylon_assets.definitions)


def _run_training(tags: dict[str, str]) -> int:
    """One training run in this process, on the instance DAGSTER_HOME names (the run the driver kills)."""
    from babylon_assets.definitions import defs

    with dg.DagsterInstance.get() as instance:
        result = defs.resolve_job_def("training_job").execute_in_process(
            instance=instance, run_config=TRAINING_RUN_CONFIG, tags={**tags, **process_tags()}, raise_on_error=False
        )
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(_run_training(json.loads(sys.argv[1])))
