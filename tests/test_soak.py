"""The platform left alone for simulated hours, with late rows, a failing judge, broken connections and
a training run killed mid-step, ends with every window scored once per content version and trained
(tests/soak.py drives it; bench/bench_soak.py runs the long version)."""

from pathlib import Path

import dagster as dg
import pytest

from tests.soak import SoakPlan, soak


@pytest.mark.soak
def test_unattended_hours_lose_and_duplicate_nothing(database_url: str, admin_url: str, tmp_path: Path) -> None:
    plan = SoakPlan(hours=6, agents=5)
    with soak(database_url, admin_url, tmp_path, plan) as driver:
        report = driver.run()
        killed = driver.instance.get_run_by_id(report.killed_run or "")

    assert report.lost == [] and report.duplicated == []
    # Window 1 had 4 agents until hour 3; window 1 got a sixth agent at hour 5: both eligible, all 6 scored.
    assert report.windows_eligible == report.windows_scored == plan.hours
    # Window 1 ran twice (4+1 agents, then 6); the rest once each.
    assert report.content_versions_scored == plan.hours + 1
    assert report.faults_survived == {
        "late rows": 2,
        "judge failures": 1,
        "connections terminated": report.faults_survived["connections terminated"],
        "training run killed": 1,
    }
    assert report.faults_survived["connections terminated"] >= 1
    assert report.chain_retries == 2  # the judge's window and the broken connection's, once each
    assert killed is not None and killed.status == dg.DagsterRunStatus.FAILURE
    assert report.trained_after_kill
    assert report.left_started == [] and report.slots_claimed == []
    assert report.steps == list(range(1, len(report.steps) + 1)) and report.steps
