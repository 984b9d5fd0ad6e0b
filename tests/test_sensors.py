"""Sensor ticks through `build_sensor_context`, against real PostgreSQL rows."""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import dagster as dg
import psycopg
import pytest

from babylon_assets.trajectories.models import hour_floor, window_key
from resources.database import DatabaseResource
from sensors import fresh_windows, training
from sensors.fresh_windows import fresh_windows_sensor
from sensors.training import training_sensor
from tests.support.trajectory_rows import insert_rows, row, utc_naive

NOW = hour_floor(datetime.now(UTC)) + timedelta(minutes=30)


def add_window(
    url: str, window_id: datetime, *, agents: int, actions: int = 6, written: datetime | None = None, first: int = 0
) -> None:
    """Rows as the recorder stores them in the game's table, written at `written` (default: the fixture's
    clock); the sensor only counts agents with enough actions."""
    rows = [row(window_id, f"agent-{agent}", steps=actions) for agent in range(first, first + agents)]
    if written is not None:
        rows = [{**columns, "createdAt": utc_naive(written), "updatedAt": utc_naive(written)} for columns in rows]
    insert_rows(url, rows)


def hours_ago(hours: int) -> datetime:
    return hour_floor(NOW) - timedelta(hours=hours)


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as test_instance:
        yield test_instance


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[datetime]:
    """The fresh-windows sensor's time, settable by the test (index 0)."""
    moment = [NOW]
    monkeypatch.setattr(fresh_windows, "current_time", lambda: moment[0])
    return moment


@pytest.fixture
def use_database(database_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("DATABASE_URL", database_url)
    return database_url


def tick_fresh(instance: dg.DagsterInstance, cursor: str | None) -> dg.SensorResult:
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"database": DatabaseResource()})
    result = fresh_windows_sensor(context)
    assert isinstance(result, dg.SensorResult)
    return result


def requests(result: dg.SensorResult) -> list[dg.RunRequest]:
    return [request for request in result.run_requests or [] if isinstance(request, dg.RunRequest)]


def requested_keys(result: dg.SensorResult) -> list[str | None]:
    return [request.partition_key for request in requests(result)]


def run_keys(result: dg.SensorResult) -> list[str | None]:
    return [request.run_key for request in requests(result)]


def skip_message(result: dg.SensorResult) -> str:
    assert result.skip_reason is not None, f"the tick requested {requested_keys(result)}"
    return str(result.skip_reason.skip_message)


def added_partitions(result: dg.SensorResult) -> list[str]:
    keys: list[str] = []
    for request in result.dynamic_partitions_requests or []:
        assert isinstance(request, dg.AddDynamicPartitionsRequest)
        assert request.partitions_def_name == "windows"
        keys.extend(request.partition_keys)
    return keys


def test_fresh_windows_first_tick_requests_second_nothing_then_only_new(
    use_database: str, instance: dg.DagsterInstance, clock: list[datetime]
) -> None:
    url = use_database
    add_window(url, hours_ago(4), agents=5)
    add_window(url, hours_ago(3), agents=4)  # too few agents: never a partition
    add_window(url, hours_ago(2), agents=5, actions=3)  # agents without enough actions do not count
    add_window(url, hours_ago(1), agents=6)
    add_window(url, hours_ago(0), agents=5)  # still running at NOW: not yet

    first = tick_fresh(instance, cursor=None)
    expected = [window_key(hours_ago(4)), window_key(hours_ago(1))]
    assert requested_keys(first) == expected
    assert added_partitions(first) == expected
    # The run key carries the window's content version: the hash of the snapshot its ingest makes.
    assert [key.split("@")[0] if key else key for key in run_keys(first)] == expected
    assert all(len(str(key).split("@")[1]) == 12 for key in run_keys(first))

    second = tick_fresh(instance, cursor=first.cursor)
    assert requested_keys(second) == []
    assert added_partitions(second) == []
    settles = hours_ago(-1) + timedelta(minutes=10)
    assert skip_message(second).endswith(
        f"1 window(s) ({window_key(hours_ago(0))}) still settling until {settles:%Y-%m-%d %H:%M} UTC"
    )

    # Two hours later the running window and a new one are over; only they are requested.
    add_window(url, hours_ago(-1), agents=7)
    clock[0] = NOW + timedelta(hours=2)
    third = tick_fresh(instance, cursor=second.cursor)
    assert requested_keys(third) == [window_key(hours_ago(0)), window_key(hours_ago(-1))]
    assert added_partitions(third) == [window_key(hours_ago(0)), window_key(hours_ago(-1))]


def test_fresh_windows_waits_for_the_settle_delay(
    use_database: str, instance: dg.DagsterInstance, clock: list[datetime]
) -> None:
    add_window(use_database, hours_ago(0), agents=5)
    # Five minutes after the window ended: inside the default 10-minute settle delay.
    clock[0] = hour_floor(NOW) + timedelta(hours=1, minutes=5)
    early = tick_fresh(instance, cursor=None)
    assert requested_keys(early) == []
    assert "still settling until" in skip_message(early)

    clock[0] = hour_floor(NOW) + timedelta(hours=1, minutes=10)
    settled = tick_fresh(instance, cursor=early.cursor)
    assert requested_keys(settled) == [window_key(hours_ago(0))]


def test_fresh_windows_ignores_windows_before_the_lookback(
    use_database: str, instance: dg.DagsterInstance, clock: list[datetime]
) -> None:
    add_window(use_database, hours_ago(200), agents=5)
    add_window(use_database, hours_ago(100), agents=5)
    result = tick_fresh(instance, cursor=None)
    assert requested_keys(result) == [window_key(hours_ago(100))]


def test_late_rows_for_a_past_window_rerun_it_once_settled_and_the_same_content_never_again(
    use_database: str, instance: dg.DagsterInstance, clock: list[datetime]
) -> None:
    """The game's test-agent script or a recorder that was down writes rows for an hour long over."""
    url, past = use_database, hours_ago(5)
    add_window(url, past, agents=5, written=past + timedelta(minutes=59))
    first = tick_fresh(instance, cursor=None)
    assert requested_keys(first) == [window_key(past)]
    instance.add_dynamic_partitions("windows", added_partitions(first))  # as the daemon does with the tick

    # Three rows for two past windows arrive at NOW: both settle 10 minutes later.
    add_window(url, past, agents=2, first=5, written=NOW)
    add_window(url, hours_ago(7), agents=1, written=NOW)
    clock[0] = NOW + timedelta(minutes=1)
    waiting = tick_fresh(instance, cursor=first.cursor)
    assert requested_keys(waiting) == []
    assert skip_message(waiting).startswith("3 row(s) written since ")
    assert skip_message(waiting).endswith(
        f"in 2 window(s); 2 window(s) ({window_key(hours_ago(7))}, {window_key(past)}) "
        f"still settling until {NOW + timedelta(minutes=10):%Y-%m-%d %H:%M} UTC"
    )

    clock[0] = NOW + timedelta(minutes=10)
    late = tick_fresh(instance, cursor=waiting.cursor)
    assert requested_keys(late) == [window_key(past)]  # the other has 1 agent: not eligible
    assert run_keys(late) != run_keys(first)  # new content, new run
    assert added_partitions(late) == []  # registered already

    # A write that leaves the episode as it was (publishing marks usage) brings back the same key.
    with psycopg.connect(url) as conn:
        conn.execute(
            """UPDATE "trajectories" SET "usedInTraining" = true, "updatedAt" = %s WHERE "windowId" = %s""",
            (utc_naive(NOW + timedelta(minutes=20)), window_key(past)),
        )
    clock[0] = NOW + timedelta(minutes=31)
    touched = tick_fresh(instance, cursor=late.cursor)
    assert run_keys(touched) == run_keys(late)


def test_fresh_windows_reads_again_the_overlap_for_rows_committed_late(
    use_database: str, instance: dg.DagsterInstance, clock: list[datetime]
) -> None:
    """A row whose transaction committed after a tick carries a write time before that tick's watermark."""
    url, window = use_database, hours_ago(3)
    add_window(url, window, agents=4, written=NOW - timedelta(minutes=2))
    clock[0] = NOW + timedelta(minutes=30)
    first = tick_fresh(instance, cursor=None)
    assert requested_keys(first) == []
    assert skip_message(first).endswith(f"{window_key(window)} settled without 5+ agents having 5+ actions")
    add_window(url, window, agents=1, first=4, written=NOW - timedelta(minutes=5))  # committed just now
    # Written before the watermark, yet inside the overlap: found, and settled 10 minutes after it was written.
    assert requested_keys(tick_fresh(instance, cursor=first.cursor)) == [window_key(window)]


def add_scored_window(url: str, window_id: datetime, version: int = 1) -> int:
    """A window ingested (snapshot `version`), validated and scored; returns the snapshot's id."""
    with psycopg.connect(url) as conn:
        snapshot = conn.execute(
            "INSERT INTO window_snapshots (window_id, version, content_hash, rows, rows_added, rows_changed, "
            "rows_gone, outcome_source, outcomes) VALUES (%s, %s, repeat('0', 64), 0, 0, 0, 0, 'none', '{}') "
            "RETURNING id",
            (window_id, version),
        ).fetchone()
        assert snapshot is not None
        conn.execute(
            "INSERT INTO window_validations (window_id, snapshot_id, accepted, rejected, distinct_agents) "
            "VALUES (%s, %s, 5, 0, 5) ON CONFLICT (window_id) DO UPDATE SET snapshot_id = excluded.snapshot_id",
            (window_id, snapshot[0]),
        )
        conn.execute("DELETE FROM window_scores WHERE window_id = %s", (window_id,))
        conn.execute(
            "INSERT INTO window_scores (window_id, judge, rubric_version, groups, trajectories, snapshot_id) "
            "VALUES (%s, 'outcome', 'v1', 1, 5, %s)",
            (window_id, snapshot[0]),
        )
        return int(snapshot[0])


def mark_trained(url: str, window_ids: list[datetime], step: int = 1) -> None:
    """A checkpoint trained on the windows' current scores."""
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO policy_models (name, base_model, project, backend) "
            "VALUES ('policy', 'tiny', 'test', 'torch') ON CONFLICT DO NOTHING"
        )
        row = conn.execute(
            "INSERT INTO policy_checkpoints (model_name, step, backend, location, score_versions, config, metrics) "
            "VALUES ('policy', %s, 'torch', '/tmp/ckpt', ARRAY['outcome@v1'], '{}', '{}') RETURNING id",
            (step,),
        ).fetchone()
        assert row is not None
        for window_id in window_ids:
            conn.execute(
                "INSERT INTO checkpoint_windows (checkpoint_id, window_id, snapshot_id) "
                "SELECT %s, window_id, snapshot_id FROM window_scores WHERE window_id = %s",
                (row[0], window_id),
            )


def tick_training(instance: dg.DagsterInstance) -> dg.SkipReason | dg.RunRequest:
    context = dg.build_sensor_context(instance=instance, resources={"database": DatabaseResource()})
    result = training_sensor(context)
    assert isinstance(result, dg.SkipReason | dg.RunRequest)
    return result


def test_training_sensor_waits_for_three_fresh_windows(
    use_database: str, store_url: str, instance: dg.DagsterInstance
) -> None:
    url = store_url
    add_scored_window(url, hours_ago(5))
    add_scored_window(url, hours_ago(4))
    waiting = tick_training(instance)
    assert isinstance(waiting, dg.SkipReason)
    assert waiting.skip_message == "2 fresh windows < 3"

    add_scored_window(url, hours_ago(3))
    request = tick_training(instance)
    assert isinstance(request, dg.RunRequest)
    assert request.tags["babylon/first_window"] == window_key(hours_ago(5))
    assert request.tags["babylon/last_window"] == window_key(hours_ago(3))
    # Same fresh set, same run key: Dagster launches it once.
    again = tick_training(instance)
    assert isinstance(again, dg.RunRequest)
    assert again.run_key == request.run_key

    # While a training run is in progress, no second one is requested.
    running = instance.add_run(
        dg.DagsterRun(job_name="training_job", tags={"workload": "training"}, status=dg.DagsterRunStatus.STARTED)
    )
    busy = tick_training(instance)
    assert isinstance(busy, dg.SkipReason)
    assert f"training run {running.run_id} (STARTED) has not finished" in str(busy.skip_message)
    instance.delete_run(running.run_id)

    # A checkpoint trained on them: they are no longer fresh.
    mark_trained(url, [hours_ago(5), hours_ago(4), hours_ago(3)])
    add_scored_window(url, hours_ago(2))
    after = tick_training(instance)
    assert isinstance(after, dg.SkipReason)
    assert after.skip_message == "1 fresh windows < 3"


def test_new_scores_of_changed_content_make_a_trained_window_fresh_again_and_old_ones_count_for_nothing(
    use_database: str, store_url: str, instance: dg.DagsterInstance
) -> None:
    """A window whose rows changed after training used it is trained on again, with its new scores only."""
    windows = [hours_ago(h) for h in (5, 4, 3)]
    for window_id in windows:
        add_scored_window(store_url, window_id)
    first = tick_training(instance)
    assert isinstance(first, dg.RunRequest)
    mark_trained(store_url, windows)
    assert isinstance(tick_training(instance), dg.SkipReason)

    # Late rows: all three windows get a new snapshot, validated and scored again.
    for window_id in windows:
        add_scored_window(store_url, window_id, version=2)
    again = tick_training(instance)
    assert isinstance(again, dg.RunRequest)
    assert again.run_key != first.run_key  # the same windows, new content: a new training run

    # Validated again (a third version) but not yet scored: its old scores are not offered to training.
    with psycopg.connect(store_url) as conn:
        conn.execute(
            "INSERT INTO window_snapshots (window_id, version, content_hash, rows, rows_added, rows_changed, "
            "rows_gone, outcome_source, outcomes) VALUES (%s, 3, repeat('1', 64), 0, 0, 0, 0, 'none', '{}')",
            (windows[0],),
        )
        conn.execute(
            "UPDATE window_validations SET snapshot_id = (SELECT max(id) FROM window_snapshots) WHERE window_id = %s",
            (windows[0],),
        )
    waiting = tick_training(instance)
    assert isinstance(waiting, dg.SkipReason)
    assert waiting.skip_message == "2 fresh windows < 3"


def fail_requested_run(instance: dg.DagsterInstance, request: dg.RunRequest, reason: str) -> dg.DagsterRun:
    """The run the daemon would launch for `request`, ended in failure."""
    run = instance.add_run(
        dg.DagsterRun(
            job_name="training_job",
            status=dg.DagsterRunStatus.STARTED,
            tags={"workload": "training", **request.tags, "dagster/run_key": request.run_key or ""},
        )
    )
    instance.report_run_failed(run, reason)
    return run


def test_a_failed_training_run_is_retried_with_backoff_then_stops_loudly(
    use_database: str, store_url: str, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    moment = [datetime.now(UTC)]
    monkeypatch.setattr(training, "current_time", lambda: moment[0])
    monkeypatch.setenv("BABYLON_TRAINING_ATTEMPTS", "3")
    monkeypatch.setenv("BABYLON_TRAINING_RETRY_SECONDS", "60")
    for hours in (5, 4, 3):
        add_scored_window(store_url, hours_ago(hours))

    first = tick_training(instance)
    assert isinstance(first, dg.RunRequest)
    failed = fail_requested_run(instance, first, "no space left on /data/checkpoints (0 B free of 1.0 GiB)")

    # The failure does not make the same windows a duplicate for ever: a retry, after the backoff.
    waiting = tick_training(instance)
    assert isinstance(waiting, dg.SkipReason)
    message = str(waiting.skip_message)
    assert f"training run {failed.run_id} failed (no space left on /data/checkpoints" in message
    assert "attempt 2 of 3 at " in message
    moment[0] += timedelta(seconds=61)
    second = tick_training(instance)
    assert isinstance(second, dg.RunRequest)
    assert second.run_key != first.run_key
    fail_requested_run(instance, second, "still full")

    # The runs end in real time, about when the test started: the second wait (120 s) ends at about +120 s.
    moment[0] += timedelta(seconds=30)
    assert isinstance(tick_training(instance), dg.SkipReason)
    moment[0] += timedelta(seconds=32)
    third = tick_training(instance)
    assert isinstance(third, dg.RunRequest)
    last = fail_requested_run(instance, third, "still full")

    moment[0] += timedelta(hours=1)
    stopped = tick_training(instance)
    assert isinstance(stopped, dg.SkipReason)
    message = str(stopped.skip_message)
    assert "stopped after 3 failed attempts" in message and "still full" in message
    assert "`babylon train`" in message
    run = instance.get_run_by_id(last.run_id)
    assert run is not None and "`babylon train`" in run.tags["babylon/stopped"]


def test_the_clock_cursor_of_earlier_versions_restarts_discovery_and_a_corrupt_cursor_fails() -> None:
    assert fresh_windows.DiscoveryCursor.parse("2026-11-24T13:00") is None
    assert fresh_windows.DiscoveryCursor.parse(None) is None
    stored = fresh_windows.DiscoveryCursor(watermark=datetime(2026, 11, 24, 13, 5, tzinfo=UTC))
    assert fresh_windows.DiscoveryCursor.parse(stored.model_dump_json()) == stored
    # A cursor that is neither must not silently send discovery back over the whole lookback.
    with pytest.raises(ValueError, match="watermark"):
        fresh_windows.DiscoveryCursor.parse('{"seen": {}}')
