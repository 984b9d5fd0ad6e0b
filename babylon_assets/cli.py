"""`babylon`: one entry point for the platform's commands."""

import argparse
import sys
import traceback
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from babylon_assets.errors import BabylonError


def _cmd_migrate(args: argparse.Namespace) -> int:
    from babylon_assets.db.connection import redact_url, resolve_database_url
    from babylon_assets.db.migrate import apply_migrations

    url = resolve_database_url()
    report = apply_migrations(url)
    if report.applied:
        for name in report.applied:
            print(f"applied {name}")
        print(f"{len(report.applied)} migration(s) applied to {redact_url(url)}")
    else:
        print(f"nothing to apply: all {len(report.already_applied)} migration(s) are in place")
    return 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    from babylon_assets.db.connection import redact_url, resolve_database_url
    from babylon_assets.db.migrate import require_migrated
    from babylon_assets.trajectories.simulate import simulate

    url = resolve_database_url()
    require_migrated(url)
    summary = simulate(url, agents=args.agents, windows=args.windows, seed=args.seed, start=args.start)
    print(
        f"simulated {len(summary.windows)} window(s) {summary.windows[0]} .. {summary.windows[-1]}: "
        f"{summary.agents} agents, {summary.trajectories} trajectories, {summary.steps} steps "
        f"(seed {summary.seed}) into {redact_url(url)}"
    )
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from babylon_assets.trajectories.verify import run_verify

    return run_verify(
        lookback_hours=args.lookback_hours,
        min_agents=args.min_agents,
        min_actions=args.min_actions,
        min_windows=args.min_windows,
    )


def _utc_time(text: str) -> datetime:
    """An ISO time; without an offset it is read as UTC."""
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO time such as 2026-11-24T13:00") from error
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _cmd_dev(args: argparse.Namespace) -> int:
    from babylon_assets.dev_server import run_dev_server

    return run_dev_server(args.port)


def _cmd_train(args: argparse.Namespace) -> int:
    from babylon_assets.train_run import render_report, train
    from babylon_assets.training.config import TrainingConfig
    from babylon_assets.trajectories.config import WindowConfig, WindowDiscovery

    windows = WindowDiscovery(
        rule=WindowConfig(min_agents=args.min_agents, min_actions=args.min_actions),
        lookback_hours=args.lookback_hours,
        settle_minutes=args.settle_minutes,
    )
    training = TrainingConfig(
        min_agents=args.min_agents,
        min_actions=args.min_actions,
        lookback_hours=args.lookback_hours,
        iterations=args.iterations,
        windows_per_iteration=args.windows_per_iteration,
        learning_rate=args.learning_rate,
        target_trajectories=args.target_trajectories,
        max_dropout=args.max_dropout,
    )
    print(render_report(train(windows, training)))
    return 0


def _cmd_lineage(args: argparse.Namespace) -> int:
    from babylon_assets.db.connection import resolve_database_url
    from babylon_assets.db.migrate import require_migrated
    from babylon_assets.training.lineage import checkpoint_lineage, render_lineage
    from resources.trainer import model_name_from_env

    url = resolve_database_url()
    require_migrated(url)
    # Reading a lineage needs only the model's name, not the trainer's requirements (GPU, keys).
    model_name = args.model or model_name_from_env()
    print(render_lineage(checkpoint_lineage(url, model_name, args.step)))
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from babylon_assets.db.connection import babylon_home, resolve_database_url
    from babylon_assets.db.migrate import require_migrated
    from babylon_assets.evaluation.evaluate import EvaluationSettings, evaluate_checkpoint, render_evaluation
    from babylon_assets.evaluation.tracking import log_evaluation
    from babylon_assets.profile import active_profile
    from resources.trainer import model_name_from_env
    from resources.wandb import wandb_resource_for

    url = resolve_database_url()
    require_migrated(url)
    settings = EvaluationSettings(
        markets=args.markets, seed=args.seed, decisions=args.decisions, max_new_tokens=args.max_new_tokens
    )
    model_name = args.model or model_name_from_env()
    result = evaluate_checkpoint(url, model_name, args.step, settings, models_root=babylon_home() / "models")
    log_evaluation(wandb_resource_for(active_profile()), result)
    print(render_evaluation(result))
    return 0


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def _dropout(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1, got {text}")
    return value


Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="babylon",
        description="Turn recorded Babylon agent trajectories into a better policy.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # Every subcommand takes --debug too; SUPPRESS: only when given there, so it does not reset `babylon --debug X`.
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks on errors")

    migrate = commands.add_parser("migrate", parents=[debug], help="apply pending database migrations")
    migrate.set_defaults(handler=_cmd_migrate)

    simulate = commands.add_parser(
        "simulate",
        parents=[debug],
        help="write simulated agent trajectories and market outcomes for consecutive hourly windows",
    )
    simulate.add_argument("--agents", type=_positive, default=5, help="agents per window (default 5)")
    simulate.add_argument("--windows", type=_positive, default=3, help="consecutive hourly windows (default 3)")
    simulate.add_argument("--seed", type=int, default=0, help="same seed, same data (default 0)")
    simulate.add_argument(
        "--start",
        type=_utc_time,
        default=None,
        help="first window's hour start, ISO, UTC unless an offset is given (default: the last window ends "
        "at the current hour's start); earlier simulated rows of these windows are replaced",
    )
    simulate.set_defaults(handler=_cmd_simulate)

    verify = commands.add_parser(
        "verify", parents=[debug], help="check that the database holds enough valid windows to train on"
    )
    verify.add_argument("--lookback-hours", type=_positive, default=168, help="window age limit (default 168)")
    verify.add_argument(
        "--min-agents", type=_positive, default=5, help="valid distinct agents a window needs (default 5)"
    )
    verify.add_argument("--min-actions", type=_positive, default=5, help="steps a trajectory needs (default 5)")
    verify.add_argument("--min-windows", type=_positive, default=3, help="ready windows required (default 3)")
    verify.set_defaults(handler=_cmd_verify)

    dev = commands.add_parser(
        "dev", parents=[debug], help="run the Dagster web UI and daemon on 127.0.0.1 against the project's instance"
    )
    dev.add_argument("--port", type=_positive, default=3000, help="web UI port (default 3000)")
    dev.set_defaults(handler=_cmd_dev)

    train = commands.add_parser(
        "train",
        parents=[debug],
        help="ingest, validate and score the lookback's windows, then train a checkpoint (runs show in the UI)",
    )
    train.add_argument(
        "--min-agents", type=_positive, default=5, help="valid distinct agents a window needs (default 5)"
    )
    train.add_argument("--iterations", type=_positive, default=10, help="training steps (default 10)")
    train.add_argument(
        "--windows-per-iteration", type=_positive, default=20, help="windows per training step (default 20)"
    )
    train.add_argument("--lookback-hours", type=_positive, default=168, help="window age limit (default 168)")
    train.add_argument("--min-actions", type=_positive, default=5, help="steps a trajectory needs (default 5)")
    train.add_argument("--learning-rate", type=_positive_float, default=5e-6, help="learning rate (default 5e-6)")
    train.add_argument(
        "--target-trajectories", type=_positive, default=1000, help="dropout sizes toward this many (default 1000)"
    )
    train.add_argument("--max-dropout", type=_dropout, default=0.3, help="upper bound of dropout (default 0.3)")
    train.add_argument(
        "--settle-minutes",
        type=_non_negative,
        default=0,
        help="use a window only this long after it ended (default 0; the sensor waits 10)",
    )
    train.set_defaults(handler=_cmd_train)

    lineage = commands.add_parser("lineage", parents=[debug], help="show what a registered checkpoint was trained on")
    lineage.add_argument("--model", default=None, help="model name (default: the trainer resource's)")
    lineage.add_argument("--step", type=_positive, default=None, help="checkpoint step (default: the latest)")
    lineage.set_defaults(handler=_cmd_lineage)

    evaluate = commands.add_parser(
        "evaluate",
        parents=[debug],
        help="let the base model, a checkpoint and the scripted strategies play the same unseen simulated markets",
    )
    evaluate.add_argument("--model", default=None, help="model name (default: the trainer resource's)")
    evaluate.add_argument("--step", type=_positive, default=None, help="checkpoint step (default: the latest)")
    evaluate.add_argument("--markets", type=_positive, default=8, help="simulated markets (default 8)")
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the markets (default 0)")
    evaluate.add_argument("--decisions", type=_positive, default=6, help="decisions per market (default 6)")
    evaluate.add_argument("--max-new-tokens", type=_positive, default=96, help="reply length limit (default 96)")
    evaluate.set_defaults(handler=_cmd_evaluate)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except BabylonError as error:
        if args.debug:
            traceback.print_exc()
        print(f"babylon {args.command}: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"babylon {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
