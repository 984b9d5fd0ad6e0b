"""A migrated scratch database for one benchmark run, on the server of BABYLON_BENCH_ADMIN_URL, dropped afterwards."""

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

from babylon_assets.db.connection import with_database
from babylon_assets.db.migrate import apply_migrations

ADMIN_URL_ENV = "BABYLON_BENCH_ADMIN_URL"
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@contextmanager
def scratch_database() -> Iterator[str]:
    """Create and migrate a database of its own, yield its URL, and drop it whatever happens."""
    admin_url = os.environ.get(ADMIN_URL_ENV, DEFAULT_ADMIN_URL)
    name = f"babylon_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        url = with_database(admin_url, name)
        apply_migrations(url)
        yield url
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
