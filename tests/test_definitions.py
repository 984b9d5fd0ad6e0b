"""The one Definitions loads, tells the data's story, and the instance config keeps secrets out."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml

from babylon_assets.definitions import defs
from babylon_assets.errors import ConfigurationError
from babylon_assets.tools.instance import DAGSTER_PASSWORD_ENV, instance_config, instance_environment

ROOT = Path(__file__).resolve().parents[1]


def test_definitions_load() -> None:
    dg.Definitions.validate_loadable(defs)


@pytest.mark.subprocess
def test_dagster_cli_validates_the_workspace() -> None:
    result = subprocess.run(
        [str(Path(sys.executable).with_name("dagster")), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT,
        # Validation needs no instance; a DAGSTER_HOME left by the caller must not be required to exist.
        env={name: value for name, value in os.environ.items() if name != "DAGSTER_HOME"},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_lineage_groups_and_kinds_tell_the_story() -> None:
    graph = defs.resolve_asset_graph()
    parents = {
        key.to_user_string(): sorted(parent.to_user_string() for parent in graph.get(key).parent_keys)
        for key in graph.get_all_asset_keys()
    }
    assert parents == {
        "raw_trajectories": [],
        "validated_windows": ["raw_trajectories"],
        "scored_groups": ["validated_windows"],
        "trained_checkpoint": ["scored_groups"],
        "policy_evaluation": ["trained_checkpoint"],
    }
    groups = {key.to_user_string(): graph.get(key).group_name for key in graph.get_all_asset_keys()}
    assert groups == {
        "raw_trajectories": "trajectories",
        "validated_windows": "trajectories",
        "scored_groups": "judging",
        "trained_checkpoint": "training",
        "policy_evaluation": "training",
    }
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.owners, f"{key.to_user_string()} has no owner"
        assert node.description, f"{key.to_user_string()} has no description"
        assert node.kinds, f"{key.to_user_string()} has no kinds"
    partitioned = {key.to_user_string() for key in graph.get_all_asset_keys() if graph.get(key).is_partitioned}
    assert partitioned == {"raw_trajectories", "validated_windows", "scored_groups"}


def test_jobs_sensors_and_resources() -> None:
    training = defs.resolve_job_def("training_job")
    assert training.tags.get("workload") == "training"
    # Retried by its sensor, after a pause, never at once by the daemon (the Celery profile retries untagged runs).
    assert training.tags.get("dagster/max_retries") == "0"
    chain = defs.resolve_job_def("window_chain_job")
    assert chain.partitions_def is not None
    assert chain.tags.get("dagster/max_retries") == "2"
    assert {sensor.name for sensor in defs.sensors or []} == {"fresh_windows_sensor", "training_sensor"}
    assert defs.resolve_sensor_def("fresh_windows_sensor").job_name == "window_chain_job"
    assert defs.resolve_sensor_def("training_sensor").job_name == "training_job"
    assert set(defs.resources or {}) == {"database", "judge", "trainer", "wandb"}


def test_instance_config_keeps_the_password_out_of_the_yaml() -> None:
    url = "postgresql://babylon:s3cret-pw@db.example:6543/babylon?sslmode=require"
    text = yaml.safe_dump(instance_config(url))
    assert "s3cret-pw" not in text
    config = instance_config(url)
    storage = config["storage"]
    assert isinstance(storage, dict)
    assert storage == {
        "custom": {
            "module": "babylon_assets.tools.pooled_storage",
            "class": "PooledPostgresStorage",
            "config": {
                "postgres_db": {
                    "username": "babylon",
                    "hostname": "db.example",
                    "port": 6543,
                    "db_name": "babylon_dagster",
                    "scheme": "postgresql+psycopg2",
                    "password": {"env": DAGSTER_PASSWORD_ENV},
                    "params": {"sslmode": "require"},
                }
            },
        }
    }
    assert config["run_coordinator"] == {
        "module": "dagster.core.run_coordinator",
        "class": "QueuedRunCoordinator",
        "config": {"dequeue_interval_seconds": 1},
    }
    assert config["concurrency"] == {
        "runs": {
            "max_concurrent_runs": 4,
            "tag_concurrency_limits": [{"key": "workload", "value": "training", "limit": 1}],
        },
        "pools": {"default_limit": 1},
    }
    assert config["telemetry"] == {"enabled": False}
    # A run whose process died is failed by run monitoring, its slots freed; failed chains are retried.
    assert config["run_launcher"] == {
        "module": "babylon_assets.tools.run_launcher",
        "class": "ForkingRunLauncher",
    }
    monitoring = config["run_monitoring"]
    assert isinstance(monitoring, dict)
    assert monitoring["enabled"] is True and monitoring["free_slots_after_run_end_seconds"] == 15
    assert config["run_retries"] == {"enabled": True, "max_retries": 0}
    assert instance_environment(url)[DAGSTER_PASSWORD_ENV] == "s3cret-pw"


def test_instance_config_refuses_a_secret_it_would_have_to_write_in_clear() -> None:
    with pytest.raises(ConfigurationError, match=r"carries sslpassword, which would be written into dagster\.yaml"):
        instance_config("postgresql://babylon@db.example/babylon?sslmode=require&sslpassword=key-secret")


# Each takes seconds and hundreds of MB to import; every Dagster process loads the definitions, few use them.
HEAVY_MODULES = ["torch", "transformers", "peft", "art", "litellm", "openai", "wandb", "pandas"]


@pytest.mark.parametrize("module", ["babylon_assets.definitions", "babylon_assets.tools.cli"])
def test_loading_imports_none_of_the_heavy_libraries(module: str) -> None:
    probe = f"import sys, {module}; print(','.join(sorted(name for name in {HEAVY_MODULES!r} if name in sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == "", f"{module} imports {result.stdout.strip()} at module level"


def test_scored_groups_shows_the_kinds_of_the_judge_that_runs() -> None:
    from babylon_assets.judging.assets import scored_groups, with_judge_kinds

    assert with_judge_kinds(scored_groups, "outcome").specs_by_key[scored_groups.key].kinds == {"python", "postgres"}
    assert with_judge_kinds(scored_groups, "ruler").specs_by_key[scored_groups.key].kinds == {"openai", "postgres"}
    # The local profile (the tests') runs the outcome judge: no LLM badge in the UI.
    assert defs.resolve_asset_graph().get(scored_groups.key).kinds == {"python", "postgres"}
