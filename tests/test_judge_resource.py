"""The judge resource's configuration, and the scored_groups asset and its check run through Dagster."""

import asyncio
import gc
import logging
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from babylon_assets.errors import BabylonError, ConfigurationError
from babylon_assets.judging.assets import scored_groups, scored_groups_check
from babylon_assets.judging.local_llm import LOCAL_JUDGE_MODEL
from babylon_assets.judging.outcome_judge import OutcomeJudge
from babylon_assets.judging.ruler_judge import RulerJudge
from babylon_assets.profile import Profile
from babylon_assets.simulation.writer import simulate
from babylon_assets.trajectories.models import window_key
from resources.database import DatabaseResource
from resources.judge import JudgeResource, judge_resource_for
from tests.support.judge_server import JudgeServer
from tests.support.trajectory_rows import ingest_and_validate

WINDOW = datetime(2026, 11, 20, 10, tzinfo=UTC)
SECRET = "sk-test-never-shown-0123456789"


@pytest.fixture
def judge_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for name in ("BABYLON_JUDGE", "BABYLON_JUDGE_MODEL", "BABYLON_JUDGE_API_BASE", "BABYLON_JUDGE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    yield monkeypatch


def test_the_local_profile_scores_with_the_outcome_judge(judge_env: pytest.MonkeyPatch) -> None:
    resource = judge_resource_for("local")

    assert resource.kind == "outcome"
    assert isinstance(resource.build_judge(), OutcomeJudge)


@pytest.mark.parametrize("missing", ["BABYLON_JUDGE_API_BASE", "BABYLON_JUDGE_API_KEY"])
def test_production_without_the_judge_endpoint_is_a_configuration_error_naming_it(
    judge_env: pytest.MonkeyPatch, missing: str
) -> None:
    judge_env.setenv("BABYLON_JUDGE_API_BASE", "http://127.0.0.1:9/v1")
    judge_env.setenv("BABYLON_JUDGE_API_KEY", SECRET)
    judge_env.delenv(missing)

    with pytest.raises(ConfigurationError, match=missing):
        judge_resource_for("production")


def test_production_reads_the_ruler_judge_from_the_environment(judge_env: pytest.MonkeyPatch) -> None:
    judge_env.setenv("BABYLON_JUDGE_API_BASE", "http://127.0.0.1:9/v1")
    judge_env.setenv("BABYLON_JUDGE_API_KEY", SECRET)
    judge_env.setenv("BABYLON_JUDGE_MODEL", "openai/qwen-judge")

    resource = judge_resource_for("production")

    assert (resource.kind, resource.model) == ("ruler", "openai/qwen-judge")
    assert isinstance(resource.api_key, dg.EnvVar)
    assert SECRET not in repr(resource)


def test_babylon_judge_picks_the_judge_whatever_the_profile(judge_env: pytest.MonkeyPatch) -> None:
    judge_env.setenv("BABYLON_JUDGE", "outcome")
    assert judge_resource_for("production").kind == "outcome"
    judge_env.setenv("BABYLON_JUDGE", "ruler")
    with pytest.raises(ConfigurationError, match="BABYLON_JUDGE_API_BASE"):
        judge_resource_for("local")
    judge_env.setenv("BABYLON_JUDGE", "llm")
    with pytest.raises(ConfigurationError, match="'llm' is not one of ruler, outcome"):
        judge_resource_for("local")


def test_a_judge_model_without_a_provider_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="provider/name"):
        JudgeResource(kind="ruler", model="o3-without-provider", api_key=SECRET).build_judge()
    with pytest.raises(ConfigurationError, match="BABYLON_JUDGE_API_KEY"):
        JudgeResource(kind="ruler").build_judge()


def test_the_local_llm_profile_judges_with_ruler_on_a_server_each_run_starts_and_stops(
    judge_env: pytest.MonkeyPatch,
) -> None:
    resource = judge_resource_for("local-llm")
    assert (resource.kind, resource.model, resource.api_base) == ("local-llm", LOCAL_JUDGE_MODEL, None)
    with pytest.raises(BabylonError, match="runs only while a Dagster step uses the resource"):
        resource.build_judge()

    with dg.build_resources({"judge": resource}) as resources:
        judge = resources.judge.build_judge()
        assert isinstance(judge, RulerJudge)
        api_base = judge.settings.api_base
        assert api_base is not None and api_base.startswith("http://127.0.0.1:")
        assert judge.settings.grammar_constrained and judge.settings.judge_model == LOCAL_JUDGE_MODEL
        with urllib.request.urlopen(f"{api_base.removesuffix('/v1')}/health", timeout=5) as health:
            assert health.status == 200
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{api_base.removesuffix('/v1')}/health", timeout=2)


def test_the_local_llm_judge_uses_a_served_judge_when_api_base_names_one_and_needs_its_key(
    judge_env: pytest.MonkeyPatch,
) -> None:
    judge_env.setenv("BABYLON_JUDGE", "local-llm")
    judge_env.setenv("BABYLON_JUDGE_API_BASE", "http://127.0.0.1:8765/v1")
    with pytest.raises(ConfigurationError, match="BABYLON_JUDGE_API_KEY"):
        judge_resource_for("local")
    judge_env.setenv("BABYLON_JUDGE_API_KEY", SECRET)

    with dg.build_resources({"judge": judge_resource_for("local")}) as resources:
        judge = resources.judge.build_judge()

    assert isinstance(judge, RulerJudge) and judge.settings.api_base == "http://127.0.0.1:8765/v1"


async def _seed(database_url: str, store_url: str) -> None:
    simulate(database_url, agents=6, windows=1, seed=5, start=WINDOW)
    await ingest_and_validate(database_url, store_url, [WINDOW], min_actions=1)


@pytest.mark.parametrize("profile", ["local", "production"])
def test_the_asset_scores_its_window_reports_metadata_and_passes_its_check(
    database_url: str, store_url: str, judge_env: pytest.MonkeyPatch, profile: Profile
) -> None:
    judge_env.setenv("DATABASE_URL", database_url)
    asyncio.run(_seed(database_url, store_url))
    key = window_key(WINDOW)
    with JudgeServer() as server, dg.instance_for_test() as instance:
        # Production's RULER judge, pointed at the local judge through the environment.
        judge_env.setenv("BABYLON_JUDGE_API_BASE", server.api_base)
        judge_env.setenv("BABYLON_JUDGE_API_KEY", SECRET)
        judge_env.setenv("BABYLON_JUDGE_MODEL", "openai/test-judge")
        instance.add_dynamic_partitions("windows", [key])
        result = dg.materialize(
            [scored_groups, scored_groups_check],
            partition_key=key,
            instance=instance,
            resources={"database": DatabaseResource(), "judge": judge_resource_for(profile)},
        )
        logs = "\n".join(str(entry) for entry in instance.all_logs(result.run_id))
        authorizations = {request.authorization for request in server.requests}

    assert result.success
    [materialization] = result.asset_materializations_for_node("scored_groups")
    metadata = {name: value.value for name, value in materialization.metadata.items()}
    assert metadata["judge"] == ("outcome" if profile == "local" else "ruler:openai/test-judge")
    assert metadata["trajectories"] == 6 and metadata["groups"] == 1
    assert metadata["calls_made"] == (0 if profile == "local" else 2) and metadata["calls_cached"] == 0
    assert authorizations == (set() if profile == "local" else {f"Bearer {SECRET}"})
    low, mean, high = (float(str(metadata[name])) for name in ("score_min", "score_mean", "score_max"))
    assert 0 <= low <= mean <= high <= 1
    # A markdown table, best first: header, rule, then one row per trajectory.
    header, _rule, best, *rest = str(metadata["scores"]).splitlines()
    assert "rank" in header and str(metadata["top_agent"]) in best and len(rest) == 5
    for name in ("prompt_tokens", "completion_tokens", "cost_usd", "bottom_agent"):
        assert name in metadata
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == "scored_groups_complete" and check.passed
    assert SECRET not in logs


def test_ruler_runs_one_after_the_other_in_a_process_leave_no_task_behind(
    database_url: str, store_url: str, judge_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # LiteLLM starts a logging task on the loop of its first call and drops it when a call comes on another
    # loop. Left pending on a closed loop, it was destroyed in the next run of the process (`babylon train`,
    # a Celery pool process): "Task was destroyed but it is pending!", then an "Event loop is closed" traceback.
    judge_env.setenv("DATABASE_URL", database_url)
    first, second = WINDOW, WINDOW + timedelta(hours=1)
    simulate(database_url, agents=5, windows=2, seed=5, start=first)
    asyncio.run(ingest_and_validate(database_url, store_url, [first, second], min_actions=1))
    unraisable: list[str] = []
    with JudgeServer() as server, dg.instance_for_test() as instance:
        judge = JudgeResource(kind="ruler", api_base=server.api_base, api_key=SECRET)
        resources = {"database": DatabaseResource(), "judge": judge}
        instance.add_dynamic_partitions("windows", [window_key(first), window_key(second)])
        # The first run also replaces whatever an earlier test left in LiteLLM's process-wide worker, and the
        # collection below destroys it now, outside what is captured.
        assert dg.materialize(
            [scored_groups], partition_key=window_key(first), instance=instance, resources=resources
        ).success
        gc.collect()
        caplog.clear()
        judge_env.setattr(sys, "unraisablehook", lambda failure: unraisable.append(repr(failure.exc_value)))
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            second_run = dg.materialize(
                [scored_groups], partition_key=window_key(second), instance=instance, resources=resources
            )
            gc.collect()

    assert second_run.success and server.request_count == 4
    assert [record.getMessage() for record in caplog.records if record.name == "asyncio"] == []
    assert unraisable == []
