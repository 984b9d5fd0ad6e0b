"""`babylon`: one entry point for the platform's commands."""

import argparse
import sys
import traceback
from collections.abc import Callable, Sequence

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


Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="babylon",
        description="Turn recorded Babylon agent trajectories into a better policy.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    migrate = commands.add_parser("migrate", help="apply pending database migrations")
    migrate.set_defaults(handler=_cmd_migrate)

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
