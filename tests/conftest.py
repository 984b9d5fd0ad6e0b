"""Real PostgreSQL for every test: the server named by BABYLON_TEST_ADMIN_URL, or an embedded one.

Each test that asks for `database_url` gets its own database, shaped like a Babylon deployment: the
game's tables (tests/fixtures/game_schema.sql) and the platform's migrated `babylon` schema, cloned
from a template made once per session, and dropped afterwards. `database_url` is the game's database
(what DATABASE_URL names); `store_url` reaches the platform's schema in it.
"""

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import pytest
from psycopg import sql

from babylon_assets.db.connection import DEFAULT_SCHEMA, start_embedded_server, store_conninfo, with_database
from babylon_assets.db.migrate import apply_migrations
from babylon_assets.tools.instance import prepare_instance, storage_target

if TYPE_CHECKING:
    from dagster import DagsterInstance

GAME_SCHEMA_SQL = Path(__file__).parent / "fixtures" / "game_schema.sql"

ADMIN_URL_ENV = "BABYLON_TEST_ADMIN_URL"

# The suite runs one worker per core (pytest-xdist): torch in a worker, and in the `babylon` processes the
# tests start, takes one thread instead of every core, so the workers do not spin against each other
# (an evaluation in a subprocess took 160 s with torch's default threads on a busy 2-core machine, 60 s with 1).
os.environ.setdefault("OMP_NUM_THREADS", "1")


# Longest first: pytest-xdist (--dist loadgroup) hands the tests to its workers in collection order, so the
# minute-long ones (a group run by one worker, the soak, the tests that start processes) start at once and
# the short ones fill in around them, instead of one worker running a long test alone at the end.
_LONG_FIRST = ("xdist_group", "soak", "subprocess")


# Set on a test whose xdist_group pytest-xdist did not group; the test then fails with this message.
_UNGROUPED = pytest.StashKey[str]()


# After pytest-xdist's own hook, which marks a test's group in its node id.
@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        return next((i for i, name in enumerate(_LONG_FIRST) if item.get_closest_marker(name)), len(_LONG_FIRST))

    items.sort(key=rank)
    # A group shares one worker's setup (SmolLM2's conversion, the shared broker queue). pytest-xdist's loadgroup
    # appends `@group` to a test's node id in the worker; on a pytest whose node ids cannot be changed so (9.2,
    # pytest-xdist#1386) every group is silently scattered over the workers.
    if getattr(config.option, "loadgroup", False):
        for item in items:
            if item.get_closest_marker("xdist_group") and "@" not in item.nodeid:
                item.stash[_UNGROUPED] = (
                    "pytest-xdist's --dist loadgroup did not group this test with its xdist_group: this pytest and "
                    "pytest-xdist do not work together (pytest-xdist#1386); install the versions pyproject.toml pins"
                )


def pytest_runtest_setup(item: pytest.Item) -> None:
    if _UNGROUPED in item.stash:
        pytest.fail(item.stash[_UNGROUPED], pytrace=False)


def _create_database(admin_url: str, name: str, template: str | None = None) -> str:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if template is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        else:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template))
            )
    return with_database(admin_url, name)


def _drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def admin_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    configured = os.environ.get(ADMIN_URL_ENV, "").strip()
    if configured:
        return configured
    # Short path: the server's Unix socket lives in the data folder and paths are length-limited.
    return start_embedded_server(Path(tmp_path_factory.mktemp("pg", numbered=True)))


@pytest.fixture(scope="session")
def migrated_template(admin_url: str) -> Iterator[str]:
    name = f"babylon_template_{uuid.uuid4().hex[:10]}"
    url = _create_database(admin_url, name)
    create_game_tables(url)
    apply_migrations(store_conninfo(url, DEFAULT_SCHEMA), DEFAULT_SCHEMA)
    yield name
    _drop_database(admin_url, name)


@pytest.fixture(scope="session")
def instance_template(admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Dagster instance database with the schema the project's dagster.yaml creates, made once per session:
    creating that schema takes about 0.5 s, cloning it about 0.07 s."""
    import dagster as dg

    game = f"babylon_instance_template_{uuid.uuid4().hex[:10]}"
    url = _create_database(admin_url, game)
    home = tmp_path_factory.mktemp("instance_template")
    prepare_instance(url, home)
    dg.DagsterInstance.from_config(str(home)).dispose()  # creates the schema; no session stays open on it
    _drop_database(admin_url, game)
    template = storage_target(url).db_name
    yield template
    _drop_database(admin_url, template)


@pytest.fixture
def instance_database(admin_url: str, instance_template: str, database_url: str) -> Iterator[None]:
    """The test database's Dagster instance database (`<db>_dagster`), with its schema, cloned from the template;
    the project instance (tests/support/dagster_instance.py) then finds it ready."""
    name = storage_target(database_url).db_name
    _create_database(admin_url, name, template=instance_template)
    yield
    _drop_database(admin_url, name)


@pytest.fixture
def instance(
    database_url: str, instance_database: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator["DagsterInstance"]:
    """The project's Dagster instance (its dagster.yaml, PostgreSQL storage) on the test's database, with the
    environment its processes get."""
    from tests.support.dagster_instance import project_instance

    with project_instance(database_url, tmp_path / "dagster_home", monkeypatch) as project:
        yield project


@pytest.fixture
def database_url(admin_url: str, migrated_template: str) -> Iterator[str]:
    """A fresh, fully migrated database of this test's own."""
    name = f"babylon_test_{uuid.uuid4().hex[:12]}"
    url = _create_database(admin_url, name, template=migrated_template)
    yield url
    _drop_database(admin_url, name)


@pytest.fixture
def store_url(database_url: str) -> str:
    """The platform's schema in the test's database, as the platform connects to it."""
    return store_conninfo(database_url, DEFAULT_SCHEMA)


def create_game_tables(url: str) -> None:
    """The game's tables, from the DDL the game's Prisma schema generates."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(GAME_SCHEMA_SQL.read_text().encode())


@pytest.fixture
def empty_database_url(admin_url: str) -> Iterator[str]:
    """A fresh database with no schema at all, for migration tests."""
    name = f"babylon_empty_{uuid.uuid4().hex[:12]}"
    url = _create_database(admin_url, name)
    yield url
    _drop_database(admin_url, name)


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Generation and training with one torch thread: beside the other test worker, two threads on two
    cores contend and are slower than one (README, a real model on a laptop)."""
    import torch  # only the tests that ask for it pay for the import

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
