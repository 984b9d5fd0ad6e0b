"""The README's `babylon dagster` examples run as printed against a project instance."""

import os
import re
import shlex
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from babylon_assets.partitions import WINDOW_PARTITIONS
from babylon_assets.simulation.writer import simulate

pytestmark = pytest.mark.subprocess

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
DAGSTER_EXAMPLES = sorted({found for found in re.findall(r"`(babylon dagster [^`]+)`", README) if "..." not in found})
# The window the README's examples name.
README_WINDOW = datetime(2026, 11, 24, 13, tzinfo=UTC)


@pytest.fixture
def project(database_url: str, instance: dg.DagsterInstance, tmp_path: Path) -> dict[str, str]:
    """A migrated database with the README's window simulated and registered; the environment to run in."""
    simulate(database_url, agents=5, windows=1, seed=7, start=README_WINDOW)
    instance.add_dynamic_partitions(WINDOW_PARTITIONS, ["2026-11-24T13:00"])
    return {**os.environ, "DATABASE_URL": database_url, "BABYLON_HOME": str(tmp_path), "BABYLON_PROFILE": "local"}


def babylon(arguments: list[str], environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).with_name("babylon")), *arguments],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_readme_has_dagster_examples() -> None:
    assert any("asset materialize" in example for example in DAGSTER_EXAMPLES)
    assert any("sensor start" in example for example in DAGSTER_EXAMPLES)


@pytest.mark.parametrize("example", DAGSTER_EXAMPLES)
def test_each_readme_dagster_example_runs_as_printed(example: str, project: dict[str, str]) -> None:
    result = babylon(shlex.split(example)[1:], project)
    assert result.returncode == 0, result.stdout + result.stderr
    # Neither Dagster's superseded-command warning nor a run's DEBUG lines reach the terminal.
    assert "Warning" not in result.stderr and "DEBUG" not in result.stderr, result.stderr


def test_an_unregistered_partition_is_one_line_naming_the_registered_ones(project: dict[str, str]) -> None:
    result = babylon(
        [
            "dagster",
            "asset",
            "materialize",
            "-m",
            "babylon_assets.definitions",
            "--select",
            "raw_trajectories",
            "--partition",
            "2026-11-25T00:00",
        ],
        project,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "babylon dagster: error: window 2026-11-25T00:00 is not a registered partition (1 are, 2026-11-24T13:00 .. "
        "2026-11-24T13:00); windows are registered by `babylon train` and by fresh_windows_sensor once they are "
        "over and have 5+ valid agents"
    ]


def test_the_profile_is_announced_once_per_command_not_per_dagster_process(project: dict[str, str]) -> None:
    environment = {name: value for name, value in project.items() if name != "BABYLON_PROFILE"}
    result = babylon(["dagster", "asset", "list", "-m", "babylon_assets.definitions"], environment)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "policy_evaluation",
        "raw_trajectories",
        "scored_groups",
        "trained_checkpoint",
        "validated_windows",
    ]
    assert result.stderr.count("BABYLON_PROFILE is not set; using the local profile") == 1, result.stderr
