"""Start-up cost of the platform's processes next to `python -c pass` and `import dagster`, measured now.

    python -m bench.bench_startup [--repeat 5]

Each figure is the median wall time and peak memory (max RSS, by GNU time) of a fresh process, run
`--repeat` times:
- loading the definitions (what every Dagster CLI call, code server and run worker pays), target at
  most 1.5x `import dagster` in time and memory;
- `babylon --help`, `babylon verify` and `babylon lineage`, target under 1 s each.
`verify` and `lineage` run against a scratch database on BABYLON_BENCH_ADMIN_URL holding 3 simulated
windows and one trained checkpoint (made once with `babylon train`); it is dropped afterwards.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg import sql
from pydantic import BaseModel, ConfigDict

from babylon_assets.db.connection import DATABASE_URL_ENV
from babylon_assets.tools.instance import storage_target
from bench.scratch import ADMIN_URL_ENV, DEFAULT_ADMIN_URL, scratch_database

ROOT = Path(__file__).resolve().parent.parent
GNU_TIME = "/usr/bin/time"
TARGET_SECONDS = 1.0
TARGET_RATIO_TO_DAGSTER = 1.5


class Figure(BaseModel):
    model_config = ConfigDict(frozen=True)

    label: str
    seconds: float
    max_rss_mb: float


def babylon_command() -> list[str]:
    """The installed `babylon` script next to this interpreter, as a user runs it."""
    script = Path(sys.executable).with_name("babylon")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "babylon_assets.tools.cli"]


def measure(label: str, command: list[str], environment: dict[str, str], repeat: int) -> Figure:
    """Median wall time and peak memory of `repeat` fresh processes running `command`.

    Memory comes from GNU time: Linux keeps a process's peak RSS across exec, so a child forked from
    this (larger) interpreter would report at least this interpreter's size.
    """
    seconds: list[float] = []
    peaks: list[float] = []
    with tempfile.NamedTemporaryFile(mode="r", suffix=".rss") as rss:
        for _ in range(repeat):
            started = time.perf_counter()
            result = subprocess.run(
                [GNU_TIME, "-f", "%M", "-o", rss.name, *command],
                env=environment,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            seconds.append(time.perf_counter() - started)
            if result.returncode != 0:
                raise SystemExit(f"{label}: {' '.join(command)} exited {result.returncode}: {result.stderr[-2000:]}")
            rss.seek(0)
            peaks.append(int(rss.read().split()[-1]) / 1024)  # kilobytes
    return Figure(label=label, seconds=statistics.median(seconds), max_rss_mb=statistics.median(peaks))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    python = sys.executable
    babylon = babylon_command()
    with tempfile.TemporaryDirectory(prefix="babylon-bench-") as home, scratch_database() as url:
        environment = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            DATABASE_URL_ENV: url,
            "BABYLON_HOME": home,
            "BABYLON_PROFILE": "local",
        }
        try:
            setup = [
                [*babylon, "simulate", "--agents", "5", "--windows", "3", "--seed", "7"],
                [*babylon, "train", "--iterations", "1", "--windows-per-iteration", "3"],
            ]
            for command in setup:
                subprocess.run(command, env=environment, cwd=ROOT, check=True, capture_output=True)
            figures = [
                measure("python -c pass", [python, "-c", "pass"], environment, args.repeat),
                measure("import dagster", [python, "-c", "import dagster"], environment, args.repeat),
                measure(
                    "import babylon_assets.definitions",
                    [python, "-c", "import babylon_assets.definitions"],
                    environment,
                    args.repeat,
                ),
                measure("babylon --help", [*babylon, "--help"], environment, args.repeat),
                measure("babylon verify", [*babylon, "verify"], environment, args.repeat),
                measure("babylon lineage", [*babylon, "lineage"], environment, args.repeat),
            ]
        finally:
            # `babylon train` created the instance's own database next to the scratch one.
            admin_url = os.environ.get(ADMIN_URL_ENV, DEFAULT_ADMIN_URL)
            with psycopg.connect(admin_url, autocommit=True) as admin:
                admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(storage_target(url).db_name)
                    )
                )

    by_label = {figure.label: figure for figure in figures}
    bare = by_label["python -c pass"]
    dagster = by_label["import dagster"]
    print(f"median of {args.repeat} fresh processes each")
    print(f"{'':36}{'wall s':>8}{'x pass':>9}{'x dagster':>11}{'max RSS MB':>12}{'x dagster':>11}")
    for figure in figures:
        print(
            f"{figure.label:36}{figure.seconds:8.3f}{figure.seconds / bare.seconds:9.1f}"
            f"{figure.seconds / dagster.seconds:11.2f}{figure.max_rss_mb:12.1f}"
            f"{figure.max_rss_mb / dagster.max_rss_mb:11.2f}"
        )
    definitions = by_label["import babylon_assets.definitions"]
    print(
        f"definitions: {definitions.seconds / dagster.seconds:.2f}x import dagster in time, "
        f"{definitions.max_rss_mb / dagster.max_rss_mb:.2f}x in memory (target <= {TARGET_RATIO_TO_DAGSTER}x)"
    )
    slow = [f.label for f in figures if f.label.startswith("babylon") and f.seconds >= TARGET_SECONDS]
    print(f"babylon commands under {TARGET_SECONDS:.0f} s: {'all' if not slow else 'not ' + ', '.join(slow)}")


if __name__ == "__main__":
    main()
