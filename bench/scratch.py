"""A scratch database shaped like a Babylon deployment for one benchmark run (the game's tables and the
platform's migrated schema), on the server of BABYLON_BENCH_ADMIN_URL, dropped afterwards."""

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

from babylon_assets.db.connection import DEFAULT_SCHEMA, connect, store_conninfo, with_database
from babylon_assets.db.migrate import apply_migrations
from babylon_assets.simulation.writer import create_game_tables

ADMIN_URL_ENV = "BABYLON_BENCH_ADMIN_URL"
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@contextmanager
def scratch_database() -> Iterator[str]:
    """Create a database of its own with the game's tables and the migrated platform schema, yield its URL
    (the game's database; `store_url` gives the platform's), and drop it whatever happens."""
    admin_url = os.environ.get(ADMIN_URL_ENV, DEFAULT_ADMIN_URL)
    name = f"babylon_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        url = with_database(admin_url, name)
        with connect(url) as conn, conn.transaction():
            create_game_tables(conn)
        apply_migrations(store_url(url), DEFAULT_SCHEMA)
        yield url
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def store_url(game_url: str) -> str:
    """The platform's schema in the scratch database."""
    return store_conninfo(game_url, DEFAULT_SCHEMA)
