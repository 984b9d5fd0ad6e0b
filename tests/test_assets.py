"""The window chain on the project's instance (PostgreSQL run and event storage), against real data."""

import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import psycopg
import pytest
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage
from psycopg import sql

from babylon_assets.definitions import defs
from babylon_assets.tools.cli import main
from babylon_assets.tools.instance import storage_target
from babylon_assets.trajectories.assets import ENOUGH_VALID_AGENTS
from babylon_assets.trajectories.models import parse_window_key
from tests.support.dagster_instance import (
    SHORT_EVALUATION,
    drop_dagster_database,
    drop_one_agent,
    simulate_windows,
)
from tests.support.trajectory_rows import insert_rows, row

CHAIN = ["raw_trajectories", "validated_windows", "scored_groups"]


def run_window(instance: dg.DagsterInstance, key: str) -> dg.ExecuteInProcessResult:
    instance.add_dynamic_partitions("windows", [key])
    return defs.resolve_job_def("window_chain_job").execute_in_process(
        partition_key=key, instance=instance, raise_on_error=False
    )


def materialized(instance: dg.DagsterInstance, asset: str, key: str) -> dict[str, dg.MetadataValue]:
    """The asset's latest materialization metadata for the window, from the instance's event log."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[key]), limit=1
    ).records
    assert records, f"{asset} has no materialization for {key}"
    materialization = records[0].asset_materialization
    assert materialization is not None
    return dict(materialization.metadata)


def counts(url: str, key: str) -> dict[str, int]:
    """Rows per window in the platform's tables (`url` is the store)."""
    tables = ["trajectory_validations", "window_validations", "trajectory_scores", "window_scores"]
    with psycopg.connect(url) as conn:
        found: dict[str, int] = {}
        for table in tables:
            query = sql.SQL("SELECT count(*) FROM {} WHERE window_id = %s").format(sql.Identifier(table))
            row = conn.execute(query, (parse_window_key(key),)).fetchone()
            assert row is not None
            found[table] = int(row[0])
    return found


def test_one_window_end_to_end_on_a_postgres_instance(
    database_url: str, store_url: str, instance: dg.DagsterInstance
) -> None:
    assert isinstance(instance.run_storage, PostgresRunStorage)
    assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
    assert isinstance(instance.run_coordinator, dg.QueuedRunCoordinator)
    concurrency = instance.get_concurrency_config()
    assert concurrency.run_queue_config is not None
    assert concurrency.run_queue_config.tag_concurrency_limits == [{"key": "workload", "value": "training", "limit": 1}]
    assert concurrency.pool_config.default_pool_limit == 1
    (key,) = simulate_windows(database_url, windows=1, agents=5)

    result = run_window(instance, key)

    assert result.success
    checks = {evaluation.check_name: evaluation.passed for evaluation in result.get_asset_check_evaluations()}
    # The outcome judge shows each group in one order: its agreement is not measurable, so no warning.
    assert len(checks) == 3 and all(checks.values()) and checks["judge_agreement"]
    raw = materialized(instance, "raw_trajectories", key)
    assert raw["rows_read"] == dg.MetadataValue.int(5)
    assert raw["changed_since_last_snapshot"] == dg.MetadataValue.bool(True)
    assert raw["rows_added"] == dg.MetadataValue.int(5)
    assert raw["snapshot_version"] == dg.MetadataValue.int(1)
    assert raw["outcome_source"] == dg.MetadataValue.text("market_outcomes")
    assert isinstance(raw["bytes"], dg.IntMetadataValue) and (raw["bytes"].value or 0) > 0
    validated = materialized(instance, "validated_windows", key)
    assert validated["accepted"] == dg.MetadataValue.int(5)
    assert validated["rejected"] == dg.MetadataValue.int(0)
    assert validated["distinct_agents"] == dg.MetadataValue.int(5)
    materialized(instance, "scored_groups", key)
    assert counts(store_url, key) == {
        "trajectory_validations": 5,
        "window_validations": 1,
        "trajectory_scores": 5,
        "window_scores": 1,
    }
    run = instance.get_run_by_id(result.run_id)
    assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS


def instance_sessions(url: str) -> set[int]:
    """The server processes of the sessions open on the instance's database (`url` is the test database)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (storage_target(url).db_name,),
        ).fetchall()
    return {int(row[0]) for row in rows}


def test_the_instance_keeps_its_connections_and_reconnects_after_the_server_ends_them(
    database_url: str, instance: dg.DagsterInstance
) -> None:
    first, second, third = simulate_windows(database_url, windows=3, agents=5)
    assert run_window(instance, first).success
    kept = instance_sessions(database_url)
    # Kept between queries (dagster-postgres alone opens one per query and keeps none), and reused (a
    # storage's second connection, while one is in use, is closed when returned).
    assert 1 <= len(kept) <= 3
    assert run_window(instance, second).success
    assert instance_sessions(database_url) & kept

    # What a server restart does to them; the next run reconnects instead of failing on a dead session.
    with psycopg.connect(database_url) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", (sorted(kept),))
    assert run_window(instance, third).success
    assert instance_sessions(database_url).isdisjoint(kept)


def test_blocking_check_stops_a_window_with_four_valid_agents(
    database_url: str, store_url: str, instance: dg.DagsterInstance
) -> None:
    short, full = simulate_windows(database_url, windows=2, agents=5)
    drop_one_agent(database_url, short)

    stopped = run_window(instance, short)
    through = run_window(instance, full)

    (verdict,) = [e for e in stopped.get_asset_check_evaluations() if e.check_name == ENOUGH_VALID_AGENTS]
    assert not verdict.passed
    assert verdict.description == "4 valid agents < 5"
    # The verdicts are stored and shown, but nothing downstream ran on the window.
    validated = materialized(instance, "validated_windows", short)
    assert validated["rejected"] == dg.MetadataValue.int(1)
    rejected_table = validated["rejected_by_reason"]
    assert isinstance(rejected_table, dg.MarkdownMetadataValue)
    header, _, *rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")] for line in str(rejected_table.value).splitlines()
    ]
    assert header == ["reason", "trajectories"]
    assert len(rows) == 1 and rows[0][0].startswith("stepsJson is not valid JSON") and rows[0][1] == "1"
    assert not instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("scored_groups"), asset_partitions=[short]), limit=1
    ).records
    assert counts(store_url, short)["window_scores"] == 0

    assert through.success
    materialized(instance, "scored_groups", full)
    assert counts(store_url, full)["trajectory_scores"] == 5


def test_rematerializing_a_window_replaces_its_results(
    database_url: str, store_url: str, instance: dg.DagsterInstance
) -> None:
    (key,) = simulate_windows(database_url, windows=1, agents=6)
    assert run_window(instance, key).success
    first = counts(store_url, key)

    assert run_window(instance, key).success

    assert counts(store_url, key) == first
    assert first["trajectory_validations"] == 6
    assert first["trajectory_scores"] == 6


def fail_scoring_of(url: str, key: str) -> None:
    """A real database error while storing this window's scores (a trigger), and for no other window."""
    with psycopg.connect(url) as conn:
        conn.execute(
            """
            CREATE FUNCTION refuse_window_score() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.window_id = TG_ARGV[0]::timestamptz THEN
                    RAISE EXCEPTION 'storage refused the scores of this window';
                END IF;
                RETURN NEW;
            END $$
            """
        )
        conn.execute(
            sql.SQL(
                "CREATE TRIGGER refuse_window_score BEFORE INSERT OR UPDATE ON window_scores "
                "FOR EACH ROW EXECUTE FUNCTION refuse_window_score({})"
            ).format(sql.Literal(parse_window_key(key).isoformat()))
        )


def test_train_command_fails_naming_the_failed_window_and_trains_nothing(
    database_url: str,
    store_url: str,
    instance: dg.DagsterInstance,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("BABYLON_HOME", str(tmp_path))  # the instance fixture's home is tmp_path/dagster_home
    failing, short, good = simulate_windows(database_url, windows=3, agents=5)
    fail_scoring_of(store_url, failing)
    drop_one_agent(database_url, short)

    code = main(["train", "--iterations", "1"])

    captured = capsys.readouterr()
    assert code == 1
    # One line per failed or skipped window, then the hint: no Dagster traceback without --debug.
    lines = captured.err.strip().splitlines()
    assert lines[0].startswith(f"babylon train: window {failing} failed: scored_groups: ")
    assert lines[0].endswith("storage refused the scores of this window")
    assert lines[1:] == [
        f"babylon train: window {short} skipped: 4 valid agents < 5",
        "babylon train: error: 1 of 3 window(s) failed (listed above), so nothing was trained; the other "
        "windows' results are stored: fix the cause and run `babylon train` again "
        "(`babylon train --debug` shows the tracebacks)",
    ]
    assert "windows:" not in captured.out  # no summary: partial success is not success
    # The window after the failing one still went through; nothing was trained.
    assert counts(store_url, good)["window_scores"] == 1
    with psycopg.connect(store_url) as conn:
        row = conn.execute("SELECT count(*) FROM policy_checkpoints").fetchone()
    assert row is not None and row[0] == 0


def game_checksums(url: str) -> dict[str, str]:
    """A checksum of every row of every game table: equal means byte-for-byte the same content."""
    with psycopg.connect(url) as conn:
        tables = [
            str(name)
            for (name,) in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1"
            )
        ]
        sums: dict[str, str] = {}
        for table in tables:
            query = sql.SQL(
                "SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM {} t"
            )
            found = conn.execute(query.format(sql.Identifier(table))).fetchone()
            assert found is not None
            sums[table] = str(found[0])
    return sums


@pytest.fixture
def reader_role(database_url: str, admin_url: str) -> Iterator[str]:
    """The game's database as a role that may only SELECT its tables."""
    role = f"babylon_reader_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    with psycopg.connect(database_url, autocommit=True) as game:
        game.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(sql.Identifier(role)))
    try:
        yield psycopg.conninfo.make_conninfo(database_url, user=role)
    finally:
        with psycopg.connect(database_url, autocommit=True) as game:
            game.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_an_operator_runs_the_platform_on_the_games_database_with_only_select_on_it(
    database_url: str,
    empty_database_url: str,
    reader_role: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The game recorded three windows in both step shapes; the platform's store is another database.
    keys = simulate_windows(database_url, windows=3, agents=5)
    plugin = [{**row(parse_window_key(key), "plugin-agent", shape="plugin"), "windowId": None} for key in keys]
    insert_rows(database_url, plugin)
    before = game_checksums(database_url)
    monkeypatch.setenv("DATABASE_URL", reader_role)
    monkeypatch.setenv("BABYLON_STORE_URL", empty_database_url)
    monkeypatch.setenv("BABYLON_HOME", str(tmp_path))
    with psycopg.connect(reader_role) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute('UPDATE "trajectories" SET "usedInTraining" = true')
    try:
        assert main(["migrate"]) == 0
        assert "schema babylon of user=postgres dbname=babylon_empty_" in capsys.readouterr().out
        assert main(["verify"]) == 0
        assert "READY FOR TRAINING: 3 window(s) have >= 5 valid agents" in capsys.readouterr().out
        assert main(["train", "--iterations", "1", "--windows-per-iteration", "3", *SHORT_EVALUATION]) == 0
        assert "windows:      3 scored, 0 skipped of 3 eligible" in capsys.readouterr().out
        assert main(["lineage"]) == 0
        printed = capsys.readouterr().out
    finally:
        drop_dagster_database(empty_database_url)
    with psycopg.connect(database_url) as conn:
        game_ids = {
            str(trajectory_id) for (trajectory_id,) in conn.execute('SELECT "trajectoryId" FROM "trajectories"')
        }
    listed = {
        trajectory_id
        for line in printed.splitlines()
        if line.strip().startswith("trajectoryIds:")
        for trajectory_id in line.split(":", 1)[1].strip().split(", ")
    }
    # The lineage names the game's own trajectoryIds, the plugin logger's rows (no windowId) among them.
    assert listed and listed <= game_ids
    assert any(str(r["trajectoryId"]) in listed for r in plugin)
    # Nothing the platform did changed a byte of the game's tables.
    assert game_checksums(database_url) == before
