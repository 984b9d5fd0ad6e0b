"""The one `babylon` entry point: --help on every subcommand, errors as one line, --debug anywhere."""

import socket

import pytest

from babylon_assets.judging.local_settings import SERVE_PORT, LocalJudgeSettings
from babylon_assets.tools.cli import build_parser, main

COMMANDS = ["migrate", "simulate", "verify", "dev", "worker", "train", "lineage", "doctor", "dagster", "judge"]


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


def test_doctor_lists_every_missing_and_invalid_setting_at_once(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ["DATABASE_URL", "BABYLON_JUDGE", "BABYLON_JUDGE_API_BASE", "BABYLON_JUDGE_API_KEY", "WANDB_API_KEY"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BABYLON_PROFILE", "production")
    monkeypatch.setenv("BABYLON_TRAINER_BACKEND", "gpu")
    monkeypatch.setenv("BABYLON_BASE_MODEL", "")
    monkeypatch.setenv("BABYLON_WANDB_MODE", "sometimes")
    assert main(["doctor"]) == 2
    out = capsys.readouterr().out
    assert "6 setting(s) to fix:" in out
    for expected in [
        "the production profile needs DATABASE_URL",
        "BABYLON_JUDGE_API_BASE is not set",
        "BABYLON_JUDGE_API_KEY is not set",
        "BABYLON_TRAINER_BACKEND='gpu' is not one of torch, art-local, art-serverless",
        "BABYLON_BASE_MODEL is not set",
        "BABYLON_WANDB_MODE='sometimes' is not one of offline, online",
    ]:
        assert expected in out


def test_doctor_passes_a_complete_local_configuration(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("BABYLON_PROFILE", "local")
    for name in ["BABYLON_JUDGE", "BABYLON_TRAINER_BACKEND", "BABYLON_BASE_MODEL", "BABYLON_WANDB_MODE"]:
        monkeypatch.delenv(name, raising=False)
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1] == "configuration OK"
    assert "judge:    outcome" in out and "trainer:  torch on cpu" in out


def test_doctor_describes_the_local_llm_profile_and_its_served_judge_needing_a_key(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("BABYLON_PROFILE", "local-llm")
    for name in ["BABYLON_JUDGE", "BABYLON_JUDGE_API_BASE", "BABYLON_JUDGE_API_KEY", "BABYLON_TRAINER_BACKEND"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BABYLON_BASE_MODEL", "smollm2-135m")
    monkeypatch.setenv("BABYLON_WANDB_MODE", "offline")
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "judge:    local-llm, RULER with openai/smollm2-135m" in out and "started per run" in out
    assert "trainer:  torch on cpu" in out and "wandb:    offline" in out

    monkeypatch.setenv("BABYLON_JUDGE_API_BASE", "http://127.0.0.1:8765/v1")
    assert main(["doctor"]) == 2
    assert "BABYLON_JUDGE_API_KEY is not set; the server of `babylon judge serve` checks it" in capsys.readouterr().out


def test_a_connection_lost_mid_command_is_one_line(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The server ends the command's session half way (what a restart does); no traceback follows."""
    import psycopg

    from babylon_assets.db import migrate

    def applied_then_dropped(url: str, schema: str) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")

    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setattr(migrate, "apply_migrations", applied_then_dropped)
    assert main(["migrate"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("babylon migrate: error: lost the connection to PostgreSQL (")
    assert "Traceback" not in err


def test_judge_serve_flags_are_the_local_judge_settings_with_the_serve_port() -> None:
    args = build_parser().parse_args(["judge", "serve"])
    assert (args.port, args.threads) == (SERVE_PORT, LocalJudgeSettings().threads)
    args = build_parser().parse_args(["judge", "serve", "--port", "0", "--threads", "2"])
    assert (args.port, args.threads) == (0, 2)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["judge", "serve", "--port", "65536"])
