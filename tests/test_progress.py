"""`babylon train` shows its progress (windows scored, training step n of N with the loss) to a person at a
terminal; test_unattended checks that a pipe gets none of it."""

import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from tests.support.dagster_instance import SHORT_EVALUATION, simulate_windows


def train_on_a_terminal(database_url: str, home: Path) -> tuple[int, str]:
    """`babylon train --iterations 2` with its stderr on a terminal (a pty): exit code, what it showed."""
    command = [sys.executable, "-m", "babylon_assets.tools.cli", "train", "--iterations", "2", *SHORT_EVALUATION]
    environment = {**os.environ, "BABYLON_HOME": str(home), "DATABASE_URL": database_url}
    leader, follower = pty.openpty()
    process = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: the process closed its end of the terminal
            break
        if not chunk:
            break
        seen += chunk
    os.close(leader)
    return process.wait(timeout=60), seen.decode()


@pytest.mark.subprocess
def test_progress_shows_on_a_terminal(database_url: str, instance: dg.DagsterInstance, tmp_path: Path) -> None:
    simulate_windows(database_url, windows=3, agents=5)

    code, on_terminal = train_on_a_terminal(database_url, tmp_path)
    assert code == 0, on_terminal
    assert "babylon train: window " in on_terminal and "scored (1 of 3)" in on_terminal
    assert re.search(r"training step 1 of 2, loss -?\d+\.\d{4}", on_terminal), on_terminal
    assert re.search(r"training step 2 of 2, loss -?\d+\.\d{4}", on_terminal), on_terminal
    # Dagster mirrors a step's stderr into its compute logs: progress is for the terminal alone.
    logged = [path for path in tmp_path.rglob("*") if path.is_file() and b"training step" in path.read_bytes()]
    assert not logged, f"progress landed in {logged}"
