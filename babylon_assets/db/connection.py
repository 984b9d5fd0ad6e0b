"""Where the databases are: the game's (`DATABASE_URL`, or the project's embedded server when it is unset)
and the platform's own store (the `BABYLON_SCHEMA` schema of `BABYLON_STORE_URL`, or of the game's database).

The game's tables are only read (and written only where publishing is switched on); everything the
platform derives lives in its own schema. A store connection finds the platform's tables through its
search_path, which holds only that schema, so no platform table can collide with a game table.
The embedded server is a deliberate local profile, announced on stderr, never a fallback for an
unreachable `DATABASE_URL`.
"""

import asyncio
import os
import re
import sys
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import psycopg
from psycopg.rows import TupleRow

from babylon_assets.errors import BabylonError, ConfigurationError
from babylon_assets.paths import babylon_home
from babylon_assets.profile import active_profile

Conn = psycopg.Connection[TupleRow]
AsyncConn = psycopg.AsyncConnection[TupleRow]

DATABASE_URL_ENV = "DATABASE_URL"
STORE_URL_ENV = "BABYLON_STORE_URL"
SCHEMA_ENV = "BABYLON_SCHEMA"
DEFAULT_SCHEMA = "babylon"
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_Result = TypeVar("_Result")


class DatabaseUnavailableError(BabylonError):
    """The configured database cannot be reached; the message says what to do."""

    exit_code = 2


def redact_url(url: str) -> str:
    """The connection string with any password replaced, safe for logs and metadata.

    Covers the URL's user part (`postgresql://user:pw@host`), its `password=` and `sslpassword=` query
    parameters, and a libpq `key=value` string (`host=... password=pw sslpassword=pw`).
    """
    if "://" not in url:
        return _CONNINFO_PASSWORD.sub(r"\g<1>***", url)
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password:
        userinfo, _, hostinfo = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:***@{hostinfo}"
    query = "&".join(
        f"{key}=***" if (key := pair.partition("=")[0]).lower() in _SECRET_PARAMETERS else pair
        for pair in parts.query.split("&")
    )
    # Rebuilt by hand: urlunsplit drops the `//` of an empty host (`postgresql:///db`).
    return (
        f"{parts.scheme}://{netloc}{parts.path}"
        + (f"?{query}" if query else "")
        + (f"#{parts.fragment}" if parts.fragment else "")
    )


_SECRET_PARAMETERS = ("password", "sslpassword")
# `password=secret`, `sslpassword=secret` or `password = 'quoted \' secret'` in a libpq key=value string.
_CONNINFO_PASSWORD = re.compile(r"(\b(?:ssl)?password\s*=\s*)(?:'(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def with_database(url: str, name: str) -> str:
    """The connection string `url` pointed at database `name` (host, user and options kept)."""
    params = psycopg.conninfo.conninfo_to_dict(url)
    params["dbname"] = name
    return psycopg.conninfo.make_conninfo(**{key: str(value) for key, value in params.items()})


# pgserver keeps one handle per process and stops the server when the last process lets go,
# so the handle must live as long as the process.
_embedded_urls: dict[Path, str] = {}


def start_embedded_server(data_dir: Path) -> str:
    """Start (or join) the embedded PostgreSQL in `data_dir` and return its socket URL."""
    if data_dir in _embedded_urls:
        return _embedded_urls[data_dir]
    with warnings.catch_warnings():
        # platformdirs warns about XDG_RUNTIME_DIR on headless machines; pgserver copes without it.
        warnings.simplefilter("ignore")
        import pgserver  # heavy import, only for the embedded profile

    data_dir.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(data_dir, cleanup_mode="stop")
    url: str = server.get_uri()
    _embedded_urls[data_dir] = url
    return url


def resolve_database_url() -> str:
    """`DATABASE_URL` when set; otherwise (local profile only) the embedded server, announced on stderr."""
    url = os.environ.get(DATABASE_URL_ENV, "").strip()
    if url:
        return url
    if active_profile() == "production":
        raise ConfigurationError(
            f"the production profile needs {DATABASE_URL_ENV}; set it to the PostgreSQL holding the trajectories "
            "(postgresql://USER@HOST:PORT/DB), or use BABYLON_PROFILE=local for the embedded server"
        )
    data_dir = babylon_home() / "pgdata"
    announced = data_dir in _embedded_urls
    url = start_embedded_server(data_dir)
    if not announced:
        print(
            f"babylon: DATABASE_URL is not set; using the embedded PostgreSQL in {data_dir}",
            file=sys.stderr,
        )
    return url


def platform_schema() -> str:
    """`BABYLON_SCHEMA` (default `babylon`): the schema that holds everything the platform owns."""
    name = os.environ.get(SCHEMA_ENV, "").strip() or DEFAULT_SCHEMA
    if not _SCHEMA_NAME.match(name) or name in ("public", "pg_catalog", "information_schema"):
        raise ConfigurationError(
            f"{SCHEMA_ENV}={name!r} is not usable: give a lower-case schema name of letters, digits and _ "
            f"that is not public or a system schema (default {DEFAULT_SCHEMA})"
        )
    return name


def resolve_store_base_url(game_url: str) -> str:
    """The database holding the platform's schema: `BABYLON_STORE_URL`, or the game's database."""
    return os.environ.get(STORE_URL_ENV, "").strip() or game_url


def store_conninfo(base_url: str, schema: str) -> str:
    """`base_url` with a search_path of only the platform's schema: platform tables resolve there, and a
    game table of the same name (the game's `trajectories`) can never be reached by mistake."""
    options = str(psycopg.conninfo.conninfo_to_dict(base_url).get("options") or "")
    return psycopg.conninfo.make_conninfo(base_url, options=f"{options} -c search_path={schema}".strip())


def resolve_store_url(game_url: str) -> str:
    """The connection string for the platform's own tables (see `store_conninfo`)."""
    return store_conninfo(resolve_store_base_url(game_url), platform_schema())


def connect(url: str, *, autocommit: bool = False) -> Conn:
    """Open a connection, turning a refused or misconfigured server into one actionable error."""
    try:
        return psycopg.connect(url, autocommit=autocommit, connect_timeout=10)
    except psycopg.OperationalError as error:
        raise DatabaseUnavailableError(unreachable_message(url, error)) from error


async def connect_async(url: str, *, autocommit: bool = False) -> AsyncConn:
    """Async twin of `connect` for the reader."""
    try:
        return await psycopg.AsyncConnection.connect(url, autocommit=autocommit, connect_timeout=10)
    except psycopg.OperationalError as error:
        raise DatabaseUnavailableError(unreachable_message(url, error)) from error


def run_with_connection(
    url: str, work: Callable[[AsyncConn], Awaitable[_Result]], *, autocommit: bool = False
) -> _Result:
    """Run the async `work` with one connection to `url`, closed afterwards: the one bridge from the sync
    callers (assets, sensors, commands, the trainer) to the async reader."""

    async def with_connection() -> _Result:
        async with await connect_async(url, autocommit=autocommit) as conn:
            return await work(conn)

    return asyncio.run(with_connection())


def unreachable_message(url: str, error: Exception) -> str:
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return (
        f"cannot connect to PostgreSQL at {redact_url(url)} ({first_line}). "
        f"Start the server or fix {DATABASE_URL_ENV}; unset it to use the embedded server."
    )
