import os
import socket
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from babylon_assets.simulation.writer import simulate
from babylon_assets.tools.cli import main
from tests.support.trajectory_rows import insert_rows, row


@pytest.fixture
def ready_database_url(database_url: str) -> str:
    """Three just-finished windows of five simulated agents each."""
    simulate(database_url, agents=5, windows=3, seed=1)
    return database_url


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_ready_database_exits_0(
    ready_database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    insert_rows(ready_database_url, [{**row(None, "plugin-agent", shape="plugin"), "windowId": "2026-11-20 10:00"}])
    monkeypatch.setenv("DATABASE_URL", ready_database_url)
    assert main(["verify"]) == 0
    out = capsys.readouterr().out
    assert "READY FOR TRAINING: 3 window(s) have >= 5 valid agents (3 required)" in out
    assert "  5+                  3                3" in out
    assert "  8+                  0                0" in out
    assert out.count("       5             5         0") == 3  # agents, trajectories, rejected per window
    assert "1 row(s) have a windowId that is not a window key (YYYY-MM-DDTHH:00, UTC) and belong to no window" in out
    assert "windowId '2026-11-20 10:00'" in out


def test_empty_database_exits_1_with_the_command_that_generates_data(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    assert main(["verify"]) == 1
    out = capsys.readouterr().out
    assert "NOT READY: 0 of the 3 required window(s) have >= 5 valid agents" in out
    assert out.rstrip().endswith("generate simulated data with: babylon simulate --agents 5 --windows 3")


def test_agents_are_counted_after_validation(
    ready_database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # One agent's rows turn invalid: every window still has 5 agents before validation, 4 after.
    with psycopg.connect(ready_database_url, autocommit=True) as conn:
        conn.execute("""UPDATE "trajectories" SET "finalStatus" = 'exploded' WHERE "agentId" = 'sim-balanced-01'""")
    monkeypatch.setenv("DATABASE_URL", ready_database_url)
    assert main(["verify"]) == 1
    out = capsys.readouterr().out
    assert "  5+                  3                0" in out
    assert "3 window(s) had enough agents before validation but not after" in out
    assert "finalStatus: Input should be" in out and "'exploded'" in out
    assert main(["verify", "--min-agents", "4"]) == 0
    assert "READY FOR TRAINING" in capsys.readouterr().out


def test_unreachable_database_exits_2_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"postgresql://babylon:secret@127.0.0.1:{_closed_port()}/babylon")
    assert main(["verify"]) == 2
    captured = capsys.readouterr()
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("babylon verify: error: cannot connect to PostgreSQL at postgresql://babylon:***@127.0.0.1")
    assert "secret" not in captured.err and captured.out == ""
    assert main(["verify", "--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_a_database_without_the_games_tables_exits_2(
    empty_database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", empty_database_url)
    assert main(["verify"]) == 2
    assert 'no "trajectories" table of the game; point DATABASE_URL at the game\'s database' in capsys.readouterr().err


@pytest.mark.subprocess
def test_babylon_entry_point_runs_verify(ready_database_url: str) -> None:
    babylon = Path(sys.executable).parent / "babylon"
    result = subprocess.run(
        [str(babylon), "verify", "--min-windows", "2"],
        env={**os.environ, "DATABASE_URL": ready_database_url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "READY FOR TRAINING: 3 window(s) have >= 5 valid agents (2 required)" in result.stdout
