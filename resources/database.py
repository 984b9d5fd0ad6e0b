"""The `database` resource: the game's database (read) and the platform's store (checked to be migrated)."""

import dagster as dg

from babylon_assets.db.connection import resolve_database_url, resolve_store_url
from babylon_assets.db.migrate import require_migrated

# Checking the schema costs a connection; once a store is migrated it stays so for this process.
_migrated_urls: set[str] = set()


class DatabaseResource(dg.ConfigurableResource["DatabaseResource"]):
    """The game's PostgreSQL from DATABASE_URL (or the embedded server when it is unset, see
    resolve_database_url) and the platform's schema in it or in BABYLON_STORE_URL.

    The URLs are read from the environment, never stored in resource config, so their passwords never
    show in the UI or in run records.
    """

    def game_url(self) -> str:
        """The game's database: its tables are read, never altered (publishing aside)."""
        return resolve_database_url()

    def store_url(self) -> str:
        """The platform's store (search_path = its schema), after making sure it matches this checkout."""
        url = resolve_store_url(resolve_database_url())
        if url not in _migrated_urls:
            require_migrated(url)
            _migrated_urls.add(url)
        return url
