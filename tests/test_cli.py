"""The one `babylon` entry point: --help on every subcommand, errors as one line, --debug anywhere."""

import socket

import pytest

from babylon_assets.cli import build_parser, main

COMMANDS = ["migrate", "simulate", "verify", "dev", "train", "lineage"]


def test_every_subcommand_is_listed() -> None:
    help_text = build_parser().format_help()
    for command in COMMANDS:
        assert command in help_text


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: babylon {command}") and "--debug" in out


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.mark.parametrize("argv", [["migrate"], ["--debug", "migrate"], ["migrate", "--debug"]])
def test_an_unreachable_database_is_one_line_and_debug_adds_the_traceback(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"postgresql://babylon:pw@127.0.0.1:{_closed_port()}/babylon")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("babylon migrate: error: cannot connect to PostgreSQL at ")
    assert ("Traceback" in err) == ("--debug" in argv)


def test_a_connection_lost_mid_command_is_one_line(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The server ends the command's session half way (what a restart does); no traceback follows."""
    import psycopg

    from babylon_assets.db import migrate

    def applied_then_dropped(url: str) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")

    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setattr(migrate, "apply_migrations", applied_then_dropped)
    assert main(["migrate"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("babylon migrate: error: lost the connection to PostgreSQL (")
    assert "Traceback" not in err
