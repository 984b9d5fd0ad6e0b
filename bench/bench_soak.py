"""A long soak: 48 simulated hours x 8 agents left to the sensors, on the project's real Dagster instance.

Usage: python -m bench.bench_soak [--hours 48] [--agents 8]
tests/soak.py drives it (the same driver as tests/test_soak.py): late rows for past hours, a judge that
fails one window's first run, the database's connections terminated during one window's scoring, and
the first training run killed with SIGKILL mid-step. A scratch database is created on
BABYLON_BENCH_ADMIN_URL (default: the local server) and dropped. Prints what the platform saw and did;
fails unless nothing was lost, duplicated, left STARTED or left holding a pool slot.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from bench.scratch import ADMIN_URL_ENV, DEFAULT_ADMIN_URL, scratch_database
from tests.support.soak import SoakPlan, soak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=int, default=48)
    parser.add_argument("--agents", type=int, default=8)
    args = parser.parse_args()
    plan = SoakPlan.regular(args.hours, args.agents)
    started = time.monotonic()
    with scratch_database() as url, tempfile.TemporaryDirectory() as home:
        with soak(url, os.environ.get(ADMIN_URL_ENV, DEFAULT_ADMIN_URL), Path(home), plan) as driver:
            report = driver.run()
    wall = time.monotonic() - started
    print(f"soak: {plan.hours} simulated hours x {plan.agents} agents in {wall:.0f} s wall time")
    states = list(report.late_windows.values())
    rows = {
        "windows seen (registered)": report.windows_seen,
        "windows eligible": report.windows_eligible,
        "windows scored (current)": report.windows_scored,
        "content versions scored": report.content_versions_scored,
        "windows trained": report.windows_trained,
        "training runs (checkpoint)": report.training_runs,
        # Steps that are not 1..N count as duplicated.
        "steps registered": len(report.steps),
        "window chain retries": report.chain_retries,
        "training retries": report.training_retries,
        **{f"faults survived: {fault}": count for fault, count in report.faults_survived.items()},
        "trained again after the kill": report.trained_after_kill,
        "late windows trained / held out": f"{states.count('trained')} / {states.count('held out')} of {len(states)}",
    }
    for name, value in rows.items():
        print(f"  {name:<42}{value}")
    problems = report.lost + report.duplicated + report.left_started + report.slots_claimed
    print(
        f"  lost {len(report.lost)}, duplicated {len(report.duplicated)}, left STARTED {len(report.left_started)}, "
        f"slots claimed {len(report.slots_claimed)}"
    )
    for problem in problems:
        print(f"    {problem}")
    return 1 if problems or not report.trained_after_kill else 0


if __name__ == "__main__":
    sys.exit(main())
