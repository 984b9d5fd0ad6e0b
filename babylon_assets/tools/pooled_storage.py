"""dagster-postgres' storage, keeping its connections open between queries.

Outside dagster-webserver, dagster-postgres opens a new connection for every query (SQLAlchemy's NullPool,
so that many DagsterInstances in one process do not pile up connections): a window chain run made about
108 connections, and on the project's instance the chain took 0.66-0.88 s in process against 0.14-0.19 s
on an in-memory instance (bench_runs). A process of ours holds one instance, so here its run, event log and
schedule storages each keep one connection, as Dagster's webserver mode does, and ping it when it is taken
from the pool: after a server restart the first query reconnects instead of failing.

The engines are replaced after dagster-postgres built them (its `_engine` attribute, which its own
`optimize_for_webserver` replaces the same way): dagster-postgres takes no pool settings. As in the
webserver's mode, the kept connections close when the instance is freed: `DagsterInstance.dispose` does not
dispose dagster-postgres' engines.
"""

from dagster._config.config_schema import UserConfigSchema
from dagster._core.storage.config import PostgresStorageConfig, pg_config
from dagster._serdes import ConfigurableClassData
from dagster_postgres import DagsterPostgresStorage
from dagster_postgres.utils import create_pg_engine, get_token_provider_from_config, pg_url_from_config

# One connection kept per storage; more are opened while threads of the daemon or webserver query at once,
# and closed when returned.
KEPT_CONNECTIONS = 1
EXTRA_CONNECTIONS = 20
# A kept connection is replaced after this long, so no session outlives a server-side idle limit.
RECYCLE_SECONDS = 3600


class PooledPostgresStorage(DagsterPostgresStorage):
    """DagsterPostgresStorage whose storages keep their connections (see the module docstring)."""

    def __init__(
        self, postgres_url: str, inst_data: ConfigurableClassData | None, config: PostgresStorageConfig
    ) -> None:
        token_provider = get_token_provider_from_config(config)
        super().__init__(
            postgres_url,
            should_autocreate_tables=config.get("should_autocreate_tables") is not False,
            inst_data=inst_data,
            token_provider=token_provider,
        )
        for storage in (self._run_storage, self._event_log_storage, self._schedule_storage):
            storage._engine = create_pg_engine(
                postgres_url,
                token_provider,
                isolation_level="AUTOCOMMIT",
                pool_size=KEPT_CONNECTIONS,
                max_overflow=EXTRA_CONNECTIONS,
                pool_recycle=RECYCLE_SECONDS,
                pool_pre_ping=True,
            )

    @classmethod
    def config_type(cls) -> UserConfigSchema:
        return pg_config()

    @classmethod
    def from_config_value(  # type: ignore[override]  # dagster-postgres narrows the config's type
        cls, inst_data: ConfigurableClassData | None, config_value: PostgresStorageConfig
    ) -> "PooledPostgresStorage":
        return cls(pg_url_from_config(config_value), inst_data, config_value)
