"""Apply the numbered plain-SQL files in `migrations/`, each once, in order, in its own transaction.

They create the platform's own tables in its schema (`BABYLON_SCHEMA`), never a table of the game's:
`url` is a store connection (see `db.connection.store_conninfo`), whose search_path is that schema.
"""

import hashlib
import re
from importlib.resources import files
from pathlib import Path

import psycopg
from psycopg import sql
from pydantic import BaseModel, ConfigDict

from babylon_assets.db.connection import connect
from babylon_assets.errors import BabylonError

# Any constant works; it only has to be the same for every `babylon migrate` on this database.
MIGRATION_LOCK_KEY = 0x6261_6279_6C6F_6E  # "babylon"
MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


class MigrationError(BabylonError):
    """A migration cannot be applied safely, or the schema is behind; the message says what to do."""

    exit_code = 2


class MigrationFile(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


class MigrationReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    applied: list[str]
    already_applied: list[str]


def migration_files(directory: Path | None = None) -> list[MigrationFile]:
    """The migrations in name order; a file that does not follow `NNNN_name.sql` is an error."""
    root = directory if directory is not None else Path(str(files("migrations")))
    found: list[MigrationFile] = []
    for path in sorted(root.glob("*.sql")):
        if not MIGRATION_NAME.match(path.name):
            raise MigrationError(f"{path} is not named NNNN_snake_case.sql; rename it so its order is explicit")
        found.append(MigrationFile(name=path.name, sql=path.read_text()))
    numbers = [item.name[:4] for item in found]
    duplicates = sorted({number for number in numbers if numbers.count(number) > 1})
    if duplicates:
        raise MigrationError(f"two migrations share the number(s) {', '.join(duplicates)}; renumber one")
    return found


def apply_migrations(url: str, schema: str, directory: Path | None = None) -> MigrationReport:
    """Create `schema` if needed and apply what is pending there, under an advisory lock, so concurrent
    runs cannot interleave."""
    pending_files = migration_files(directory)
    with connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        try:
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            conn.execute(
                """
                CREATE TABLE IF NOT EXISTS schema_migrations (
                    name text PRIMARY KEY,
                    checksum text NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now()
                )
                """
            )
            rows = conn.execute("SELECT name, checksum FROM schema_migrations").fetchall()
            recorded: dict[str, str] = {str(name): str(checksum) for name, checksum in rows}
            known = {item.name for item in pending_files}
            missing = sorted(set(recorded) - known)
            if missing:
                raise MigrationError(
                    f"the database has applied {', '.join(missing)}, which this checkout does not have; "
                    "update the checkout before migrating"
                )
            applied: list[str] = []
            already: list[str] = []
            for item in pending_files:
                checksum = recorded.get(item.name)
                if checksum is not None:
                    if checksum != item.checksum:
                        raise MigrationError(
                            f"migrations/{item.name} was edited after it was applied; "
                            "restore the file and put the change in a new numbered migration"
                        )
                    already.append(item.name)
                    continue
                try:
                    with conn.transaction():
                        conn.execute(item.sql.encode())
                        conn.execute(
                            "INSERT INTO schema_migrations (name, checksum) VALUES (%s, %s)",
                            (item.name, item.checksum),
                        )
                except psycopg.DatabaseError as error:
                    # Re-raised as one line naming the file; its transaction rolled back, so nothing of it stays.
                    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                    raise MigrationError(
                        f"migrations/{item.name} failed and was rolled back ({first_line}); "
                        f"{len(applied)} earlier migration(s) of this run are applied. Fix the file and run "
                        "`babylon migrate` again"
                    ) from error
                applied.append(item.name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
    return MigrationReport(applied=applied, already_applied=already)


def require_migrated(url: str) -> None:
    """Refuse to work on a database whose schema is behind this checkout."""
    with connect(url) as conn:
        exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
        recorded: set[str] = set()
        if exists is not None and exists[0]:
            recorded = {str(row[0]) for row in conn.execute("SELECT name FROM schema_migrations")}
    pending = [item.name for item in migration_files() if item.name not in recorded]
    if pending:
        raise MigrationError(f"the database is missing migrations {', '.join(pending)}; run `babylon migrate` first")
