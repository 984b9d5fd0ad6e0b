"""The platform left alone for simulated hours, with late rows, a failing judge, broken connections and
a training run killed mid-step, ends with every window scored once per content version and trained
(tests/soak.py drives it; bench/bench_soak.py runs the long version)."""

from pathlib import Path

import dagster as dg
import pytest

from tests.support.soak import SoakPlan, soak


@pytest.mark.soak
def test_unattended_hours_lose_and_duplicate_nothing(database_url: str, admin_url: str, tmp_path: Path) -> None:
    # Window 1 is recorded with 4 agents, completed at hour 3; windows 0-2 get a sixth agent at hour 4.
    plan = SoakPlan(hours=6, agents=5, late=[(3, 1), (4, 0), (4, 1), (4, 2)])
    with soak(database_url, admin_url, tmp_path, plan) as driver:
        report = driver.run()
        killed = driver.instance.get_run_by_id(report.killed_run or "")

    assert report.lost == [] and report.duplicated == []
    assert report.windows_eligible == report.windows_scored == plan.hours
    # Windows 0-2 ran twice (their first content, then with the late agent); the rest once each.
    assert report.content_versions_scored == plan.hours + 3
    assert report.faults_survived == {
        "late rows": 4,
        "judge failures": 1,
        "connections terminated": report.faults_survived["connections terminated"],
        "training run killed": 1,
    }
    assert report.faults_survived["connections terminated"] >= 1
    assert report.chain_retries == 2  # the judge's window and the broken connection's, once each
    assert killed is not None and killed.status == dg.DagsterRunStatus.FAILURE
    assert report.trained_after_kill
    # Late rows were trained on by the sensors alone, at each window's latest content; at most 2 of
    # 6 windows are held out for evaluation (held_out_fraction 0.2), so at least one of the 3 is trained.
    assert len(report.late_windows) == 3
    assert "not trained" not in report.late_windows.values() and "trained" in report.late_windows.values()
    assert report.left_started == [] and report.slots_claimed == []
    assert report.steps == list(range(1, len(report.steps) + 1)) and report.steps
