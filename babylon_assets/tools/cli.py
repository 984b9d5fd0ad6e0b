"""`babylon`: one entry point for the platform's commands."""

import argparse
import sys
import traceback
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TypeVar

from pydantic import BaseModel, ValidationError, create_model

from babylon_assets.errors import BabylonError, ConfigurationError
from babylon_assets.evaluation.settings import EvaluationSettings
from babylon_assets.judging.local_settings import SERVE_PORT, LocalJudgeSettings
from babylon_assets.training.parameters import TrainingParameters
from babylon_assets.trajectories.rules import Lookback, WindowDiscovery, WindowRule

_Model = TypeVar("_Model", bound=BaseModel)


def _cmd_migrate(args: argparse.Namespace) -> int:
    from babylon_assets.db.connection import (
        platform_schema,
        redact_url,
        resolve_database_url,
        resolve_store_base_url,
        resolve_store_url,
    )
    from babylon_assets.db.migrate import apply_migrations

    game_url = resolve_database_url()
    schema = platform_schema()
    report = apply_migrations(resolve_store_url(game_url), schema)
    where = f"schema {schema} of {redact_url(resolve_store_base_url(game_url))}"
    for name in report.applied:
        print(f"applied {name}")
    if report.applied:
        print(f"{len(report.applied)} migration(s) applied to {where}")
    else:
        print(f"nothing to apply: all {len(report.already_applied)} migration(s) are in place in {where}")
    print("the game's tables are read only; migrate never creates or alters them")
    return 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    from babylon_assets.db.connection import redact_url, resolve_database_url
    from babylon_assets.simulation.writer import simulate

    url = resolve_database_url()
    summary = simulate(url, agents=args.agents, windows=args.windows, seed=args.seed, start=args.start)
    print(
        f"simulated {len(summary.windows)} window(s) {summary.windows[0]} .. {summary.windows[-1]}: "
        f"{summary.agents} agents, {summary.trajectories} trajectories, {summary.steps} steps "
        f"(seed {summary.seed}) into {redact_url(url)}"
    )
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from babylon_assets.tools.verify import run_verify

    rule = _from_flags(WindowRule, args)
    return run_verify(
        lookback_hours=_from_flags(Lookback, args).lookback_hours,
        min_agents=rule.min_agents,
        min_actions=rule.min_actions,
        min_windows=args.min_windows,
        now=datetime.now(UTC),
    )


def _add_flags(
    parser: argparse.ArgumentParser, model: type[BaseModel], *names: str, default: object = None, note: str = ""
) -> None:
    """One `--name` flag per field of `model`: its default, its description as help, and its bounds checked
    when parsed; `default` replaces the field's default (of one field), `note` follows the default in the help."""
    for name in names:
        field = model.model_fields[name]
        value = field.default if default is None else default
        if field.annotation is None:
            raise TypeError(f"{model.__name__}.{name} has no annotation to parse its flag with")
        flag = create_model(f"{model.__name__}_{name}", value=(field.annotation, field))

        def parse(text: str, flag: type[BaseModel] = flag) -> object:
            try:
                return flag.model_validate({"value": text}).model_dump()["value"]
            except ValidationError as error:
                raise argparse.ArgumentTypeError(f"{error.errors()[0]['msg']}, got {text}") from error

        parser.add_argument(
            "--" + name.replace("_", "-"),
            type=parse,
            default=value,
            help=f"{field.description} (default {value}{note})",
        )


def _from_flags(model: type[_Model], args: argparse.Namespace) -> _Model:
    """`model` from the flags `_add_flags` added for its fields; fields without a flag keep their defaults."""
    given = vars(args)
    return model.model_validate({name: given[name] for name in model.model_fields if name in given})


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
    from babylon_assets.tools.dev_server import run_dev_server

    return run_dev_server(args.port)


def _cmd_worker(args: argparse.Namespace) -> int:
    from babylon_assets.tools.workers import run_worker

    return run_worker(args.queue, args.concurrency)


def _cmd_dagster(args: argparse.Namespace) -> int:
    from babylon_assets.tools.dev_server import run_dagster

    arguments: list[str] = args.arguments
    return run_dagster(arguments)


def _cmd_train(args: argparse.Namespace) -> int:
    from babylon_assets.tools.train_run import render_report, train
    from babylon_assets.training.config import TrainingConfig

    windows = WindowDiscovery(
        rule=_from_flags(WindowRule, args),
        lookback_hours=args.lookback_hours,
        settle_minutes=args.settle_minutes,
    )
    training = _from_flags(TrainingConfig, args)
    evaluation = _from_flags(EvaluationSettings, args)
    print(render_report(train(windows, training, evaluation, now=datetime.now(UTC), debug=args.debug)))
    return 0


def _cmd_lineage(args: argparse.Namespace) -> int:
    from babylon_assets.db.connection import resolve_database_url, resolve_store_url
    from babylon_assets.db.migrate import require_migrated
    from babylon_assets.settings import model_name_from_env
    from babylon_assets.training.lineage import checkpoint_lineage, render_lineage

    url = resolve_store_url(resolve_database_url())
    require_migrated(url)
    # Reading a lineage needs only the model's name, not the trainer's requirements (GPU, keys).
    model_name = args.model or model_name_from_env()
    print(render_lineage(checkpoint_lineage(url, model_name, args.step)))
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    from babylon_assets.tools.doctor import diagnose, render_doctor

    report = diagnose()
    print(render_doctor(report))
    return ConfigurationError.exit_code if report.problems else 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from babylon_assets.db.connection import resolve_database_url, resolve_store_url
    from babylon_assets.db.migrate import require_migrated
    from babylon_assets.evaluation.evaluate import evaluate_checkpoint, render_evaluation
    from babylon_assets.evaluation.tracking import log_evaluation
    from babylon_assets.paths import babylon_home
    from babylon_assets.profile import active_profile
    from babylon_assets.settings import model_name_from_env
    from resources.wandb import wandb_resource_for

    url = resolve_store_url(resolve_database_url())
    require_migrated(url)
    settings = _from_flags(EvaluationSettings, args)
    model_name = args.model or model_name_from_env()
    result = evaluate_checkpoint(url, model_name, args.step, settings, models_root=babylon_home() / "models")
    log_evaluation(wandb_resource_for(active_profile()), result)
    print(render_evaluation(result))
    return 0


def _cmd_judge_serve(args: argparse.Namespace) -> int:
    import signal
    import threading

    from pydantic import SecretStr

    from babylon_assets.judging.local_llm import local_judge_server
    from babylon_assets.settings import SettingsReader
    from resources.judge import JUDGE_API_BASE_ENV, JUDGE_API_KEY_ENV, JUDGE_ENV

    settings = SettingsReader()
    key = settings.required(
        JUDGE_API_KEY_ENV,
        "the server accepts only requests carrying it; e.g. "
        f"export {JUDGE_API_KEY_ENV}=$(python -c 'import secrets; print(secrets.token_urlsafe())')",
    )
    settings.check()
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda _signum, _frame: stop.set())
    with local_judge_server(_from_flags(LocalJudgeSettings, args), SecretStr(key)) as server:
        print(
            f"babylon judge serve: SmolLM2-135M at {server.api_base}; point the platform at it with "
            f"BABYLON_PROFILE=local-llm (or {JUDGE_ENV}=local-llm) {JUDGE_API_BASE_ENV}={server.api_base} and the "
            f"same {JUDGE_API_KEY_ENV}. Ctrl-C stops it.",
            flush=True,
        )
        stop.wait()
    return 0


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
    _add_flags(verify, Lookback, "lookback_hours")
    _add_flags(verify, WindowRule, "min_agents", "min_actions")
    verify.add_argument(
        "--min-windows",
        type=_positive,
        default=3,
        help="windows with --min-agents valid agents required to report READY (default 3)",
    )
    verify.set_defaults(handler=_cmd_verify)

    dev = commands.add_parser(
        "dev", parents=[debug], help="run the Dagster web UI and daemon on 127.0.0.1 against the project's instance"
    )
    dev.add_argument("--port", type=_positive, default=3000, help="web UI port (default 3000)")
    dev.set_defaults(handler=_cmd_dev)

    worker = commands.add_parser(
        "worker",
        parents=[debug],
        help="run a Celery worker that executes the instance's runs of one queue (needs BABYLON_CELERY_BROKER)",
    )
    worker.add_argument(
        "--queue",
        choices=["windows", "training"],
        default="windows",
        help="windows: ingest, validate, judge; training: training_job, e.g. on a GPU machine (default windows)",
    )
    worker.add_argument("--concurrency", type=_positive, default=1, help="runs at once, one process each (default 1)")
    worker.set_defaults(handler=_cmd_worker)

    dagster = commands.add_parser(
        "dagster",
        parents=[debug],
        help="run any Dagster CLI command against the project's instance, e.g. `babylon dagster asset list`",
        description="Runs `dagster ARGUMENTS...` from the project root with the project's instance "
        "(DAGSTER_HOME, dagster.yaml, database) in its environment.",
    )
    dagster.add_argument("arguments", nargs=argparse.REMAINDER, help="the Dagster command and its arguments")
    dagster.set_defaults(handler=_cmd_dagster)

    train = commands.add_parser(
        "train",
        parents=[debug],
        help="ingest, validate and score the lookback's windows, then train a checkpoint (runs show in the UI)",
    )
    _add_flags(
        train,
        TrainingParameters,
        "min_agents",
        "iterations",
        "windows_per_iteration",
        "lookback_hours",
        "min_actions",
        "learning_rate",
        "target_trajectories",
        "max_dropout",
    )
    _add_flags(train, WindowDiscovery, "settle_minutes", default=0, note="; the sensor waits 10")
    _add_flags(
        train, EvaluationSettings, "markets", "decisions", "max_new_tokens", note="; of the evaluation after training"
    )
    train.set_defaults(handler=_cmd_train)

    lineage = commands.add_parser("lineage", parents=[debug], help="show what a registered checkpoint was trained on")
    lineage.add_argument("--model", default=None, help="model name (default: the trainer resource's)")
    lineage.add_argument("--step", type=_positive, default=None, help="checkpoint step (default: the latest)")
    lineage.set_defaults(handler=_cmd_lineage)

    doctor = commands.add_parser(
        "doctor",
        parents=[debug],
        help="check the active profile's whole configuration and list every missing or invalid setting",
    )
    doctor.set_defaults(handler=_cmd_doctor)

    evaluate = commands.add_parser(
        "evaluate",
        parents=[debug],
        help="let the base model, a checkpoint and the scripted strategies play the same unseen simulated markets",
    )
    evaluate.add_argument("--model", default=None, help="model name (default: the trainer resource's)")
    evaluate.add_argument("--step", type=_positive, default=None, help="checkpoint step (default: the latest)")
    _add_flags(evaluate, EvaluationSettings, "markets", "seed", "decisions", "max_new_tokens", "decoding")
    evaluate.set_defaults(handler=_cmd_evaluate)

    judge = commands.add_parser("judge", parents=[debug], help="the local-llm judge's server")
    judge_commands = judge.add_subparsers(dest="judge_command", required=True, metavar="JUDGE_COMMAND")
    serve = judge_commands.add_parser(
        "serve",
        parents=[debug],
        help="serve SmolLM2-135M as an OpenAI-compatible judge on 127.0.0.1 in the foreground (needs "
        "BABYLON_JUDGE_API_KEY: the key requests must carry)",
    )
    _add_flags(serve, LocalJudgeSettings, "port", default=SERVE_PORT)
    _add_flags(serve, LocalJudgeSettings, "threads")
    serve.set_defaults(handler=_cmd_judge_serve)

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
    except Exception as error:
        if not _lost_database(error):
            raise
        if args.debug:
            traceback.print_exc()
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(
            f"babylon {args.command}: error: lost the connection to PostgreSQL ({first}). Start it (or fix "
            f"DATABASE_URL) and run `babylon {args.command}` again: a run left STARTED is cleaned up then",
            file=sys.stderr,
        )
        return 2


def _lost_database(error: BaseException) -> bool:
    """A dropped or refused PostgreSQL connection, from psycopg, psycopg2 (Dagster's storage) or SQLAlchemy.

    Matched by name so that this module imports none of them (every command would pay for it).
    """
    chain: BaseException | None = error
    while chain is not None:
        if any(kind.__name__ == "OperationalError" for kind in type(chain).__mro__):
            return True
        chain = chain.__cause__ or chain.__context__
    return False


if __name__ == "__main__":
    sys.exit(main())
