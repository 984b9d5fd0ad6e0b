import threading
from pathlib import Path

import psycopg
import pytest

from babylon_assets.db.connection import DEFAULT_SCHEMA, store_conninfo
from babylon_assets.db.migrate import MigrationError, apply_migrations, migration_files
from tests.conftest import create_game_tables

SCHEMA = DEFAULT_SCHEMA


@pytest.fixture
def store(empty_database_url: str) -> str:
    return store_conninfo(empty_database_url, SCHEMA)


def _copy_migrations(target: Path) -> Path:
    for item in migration_files():
        (target / item.name).write_text(item.sql)
    return target


def test_fresh_database_gets_every_migration_once(store: str) -> None:
    first = apply_migrations(store, SCHEMA)
    assert first.applied == [item.name for item in migration_files()]
    second = apply_migrations(store, SCHEMA)
    assert second.applied == []
    assert second.already_applied == first.applied
    with psycopg.connect(store) as conn:
        rows = conn.execute("SELECT name, length(checksum) FROM schema_migrations ORDER BY name").fetchall()
    assert rows == [(name, 64) for name in first.applied]


def test_edited_applied_migration_is_refused(store: str, tmp_path: Path) -> None:
    folder = _copy_migrations(tmp_path)
    apply_migrations(store, SCHEMA, folder)
    first = sorted(folder.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- edited\n")
    with pytest.raises(MigrationError, match=f"{first.name} was edited after it was applied"):
        apply_migrations(store, SCHEMA, folder)


def test_new_migration_is_applied_alone_and_a_failing_one_leaves_nothing(store: str, tmp_path: Path) -> None:
    folder = _copy_migrations(tmp_path)
    apply_migrations(store, SCHEMA, folder)
    (folder / "9000_extra.sql").write_text("CREATE TABLE extra (id int);")
    assert apply_migrations(store, SCHEMA, folder).applied == ["9000_extra.sql"]
    (folder / "9001_broken.sql").write_text("CREATE TABLE half (id int); SELECT no_such_function();")
    with pytest.raises(MigrationError, match=r"migrations/9001_broken.sql failed and was rolled back \(function"):
        apply_migrations(store, SCHEMA, folder)
    with psycopg.connect(store) as conn:
        assert conn.execute("SELECT to_regclass('half')").fetchone() == (None,)
        names = [row[0] for row in conn.execute("SELECT name FROM schema_migrations")]
    assert "9001_broken.sql" not in names


def test_two_concurrent_runs_apply_each_migration_exactly_once(store: str) -> None:
    reports = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            reports.append(apply_migrations(store, SCHEMA))
        except BaseException as error:  # collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    applied = sorted(name for report in reports for name in report.applied)
    assert applied == [item.name for item in migration_files()]


def test_badly_named_migration_is_refused(tmp_path: Path) -> None:
    (tmp_path / "add_table.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="NNNN_snake_case"):
        migration_files(tmp_path)


def _public_tables(url: str) -> list[tuple[str, str]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT table_name, md5(string_agg(column_name || ':' || data_type, ',' ORDER BY ordinal_position)) "
            "FROM information_schema.columns WHERE table_schema = 'public' GROUP BY table_name ORDER BY table_name"
        ).fetchall()
    return [(str(name), str(digest)) for name, digest in rows]


def test_migrating_the_games_database_creates_only_the_platform_schema(empty_database_url: str) -> None:
    # The game's database already has a table named "trajectories": the platform's migrations used to
    # collide with it ('relation "trajectories" already exists').
    create_game_tables(empty_database_url)
    game_tables = _public_tables(empty_database_url)
    assert ("trajectories", game_tables[[name for name, _ in game_tables].index("trajectories")][1]) in game_tables
    report = apply_migrations(store_conninfo(empty_database_url, SCHEMA), SCHEMA)
    assert report.applied == [item.name for item in migration_files()]
    assert _public_tables(empty_database_url) == game_tables
    with psycopg.connect(empty_database_url) as conn:
        ours = {
            str(row[0])
            for row in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (SCHEMA,)
            )
        }
    assert {"schema_migrations", "window_snapshots", "snapshot_rows", "trajectory_validations"} <= ours
