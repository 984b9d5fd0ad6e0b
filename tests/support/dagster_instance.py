"""The project's Dagster instance for tests: dagster.yaml from babylon_assets.tools.instance, PostgreSQL storage
in a fresh `<db>_dagster` database next to the test database, dropped afterwards."""

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import psycopg
import pytest
import yaml
from psycopg import sql

from babylon_assets.simulation.writer import simulate
from babylon_assets.tools.instance import YamlValue, instance_environment, prepare_instance, storage_target

# Over and settled, yet inside the default 168-hour lookback that discovery and training use.
FIRST_WINDOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=12)
# `babylon train` flags for a short closed-loop evaluation after training (the default one, 4 markets of 6
# decisions of up to 128 tokens, was half of a test's `babylon train`); tests/test_evaluation.py plays
# the default, and the soak (tests/support/soak.py) runs the same short one.
SHORT_EVALUATION = ["--markets", "2", "--decisions", "2", "--max-new-tokens", "16"]


@contextmanager
def project_instance(
    url: str, home: Path, monkeypatch: pytest.MonkeyPatch, launcher_config: dict[str, YamlValue] | None = None
) -> Iterator[dg.DagsterInstance]:
    """A DagsterInstance built from the project's dagster.yaml, with the environment its processes get; with
    `launcher_config`, its run launcher's config is that."""
    prepare_instance(url, home)
    if launcher_config is not None:
        config = yaml.safe_load((home / "dagster.yaml").read_text())
        config["run_launcher"]["config"] = launcher_config
        (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    for name, value in instance_environment(url, home).items():
        monkeypatch.setenv(name, value)
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        yield instance
    finally:
        instance.dispose()
        drop_dagster_database(url)


def drop_dagster_database(url: str) -> None:
    """The instance database prepare_instance created next to the test database."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(storage_target(url).db_name))
        )


def simulate_windows(url: str, *, windows: int, agents: int = 5, seed: int = 7) -> list[str]:
    """Simulated windows starting at FIRST_WINDOW; returns their keys."""
    summary = simulate(url, agents=agents, windows=windows, seed=seed, start=FIRST_WINDOW)
    return summary.windows


def drop_one_agent(url: str, key: str) -> None:
    """Make one agent's trajectory in the window malformed, leaving one valid agent fewer."""
    with psycopg.connect(url) as conn:
        conn.execute(
            """
            UPDATE "trajectories" SET "stepsJson" = 'not json'
            WHERE "id" = (SELECT min("id") FROM "trajectories" WHERE "windowId" = %s)
            """,
            (key,),
        )
