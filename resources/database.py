"""The `database` resource: where the platform's PostgreSQL is, checked to be migrated before use."""

import dagster as dg

from babylon_assets.db.connection import resolve_database_url
from babylon_assets.db.migrate import require_migrated

# Checking the schema costs a connection; once a URL is migrated it stays so for this process.
_migrated_urls: set[str] = set()


class DatabaseResource(dg.ConfigurableResource["DatabaseResource"]):
    """PostgreSQL from DATABASE_URL, or the embedded server when it is unset (see resolve_database_url).

    The URL is read from the environment, never stored in resource config, so its password never
    shows in the UI or in run records.
    """

    def url(self) -> str:
        """The database URL, after making sure its schema matches this checkout."""
        url = resolve_database_url()
        if url not in _migrated_urls:
            require_migrated(url)
            _migrated_urls.add(url)
        return url
