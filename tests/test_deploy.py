"""deploy/: the Helm values for Dagster's chart and the project image, checked without a cluster.

Helm is not installable from the package registries here (PyPI's `helm` is an unrelated system monitor),
so `helm template` does not run: the test renders the instance sections the chart builds from these values
(its templates configmap-instance.yaml, _run-launcher.tpl and _concurrency.tpl, for the keys set here) and
validates them with Dagster's own instance schema and dagster-k8s' K8sRunLauncher schema.
"""

import tomllib
from pathlib import Path

import pytest
import yaml
from dagster._config import process_config
from dagster._core.instance.config import dagster_instance_config
from dagster_k8s import K8sRunLauncher
from dagster_k8s.job import get_user_defined_k8s_config

from babylon_assets.jobs import K8S_CONFIG_TAG, training_job
from babylon_assets.tools.instance import instance_config

ROOT = Path(__file__).resolve().parents[1]
VALUES = yaml.safe_load((ROOT / "deploy" / "values.yaml").read_text())


def rendered_instance() -> dict[str, object]:
    """dagster.yaml as the chart renders it from deploy/values.yaml (the sections these values set)."""
    postgres = VALUES["postgresql"]
    postgres_db = {
        "username": postgres["postgresqlUsername"],
        "password": {"env": "DAGSTER_PG_PASSWORD"},
        "hostname": postgres["postgresqlHost"],
        "db_name": postgres["postgresqlDatabase"],
        "port": postgres["service"]["port"],
    }
    launcher = VALUES["runLauncher"]["config"]["k8sRunLauncher"]
    retries = VALUES["dagsterDaemon"]["runRetries"]
    concurrency = VALUES["concurrency"]
    return {
        "storage": {"postgres": {"postgres_db": postgres_db}},
        "run_coordinator": {"module": "dagster.core.run_coordinator", "class": "QueuedRunCoordinator"},
        "run_launcher": {
            "module": "dagster_k8s",
            "class": "K8sRunLauncher",
            "config": {
                "load_incluster_config": launcher["loadInclusterConfig"],
                "job_namespace": "babylon",
                "image_pull_policy": launcher["imagePullPolicy"],
                "service_account_name": "babylon-dagster",
                "dagster_home": {"env": "DAGSTER_HOME"},
                "instance_config_map": {"env": "DAGSTER_K8S_INSTANCE_CONFIG_MAP"},
                "postgres_password_secret": {"env": "DAGSTER_K8S_PG_PASSWORD_SECRET"},
                "env_config_maps": [{"env": "DAGSTER_K8S_PIPELINE_RUN_ENV_CONFIGMAP"}],
                "env_secrets": [secret["name"] for secret in launcher["envSecrets"]],
            },
        },
        "run_retries": {"enabled": retries["enabled"], "max_retries": retries["maxRetries"]},
        "concurrency": {
            "pools": {"default_limit": concurrency["pools"]["defaultLimit"]},
            "runs": {
                "max_concurrent_runs": concurrency["runs"]["maxConcurrentRuns"],
                "tag_concurrency_limits": concurrency["runs"]["tagConcurrencyLimits"],
            },
        },
        "telemetry": {"enabled": VALUES["telemetry"]["enabled"]},
    }


def test_the_rendered_instance_passes_dagsters_instance_schema(tmp_path: Path) -> None:
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(rendered_instance()))
    config, _ = dagster_instance_config(str(tmp_path))
    assert config["run_launcher"]["class"] == "K8sRunLauncher"


def test_the_run_launcher_config_passes_dagster_k8s_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DAGSTER_HOME", "DAGSTER_K8S_INSTANCE_CONFIG_MAP", "DAGSTER_K8S_PG_PASSWORD_SECRET"):
        monkeypatch.setenv(name, f"value-of-{name.lower()}")
    monkeypatch.setenv("DAGSTER_K8S_PIPELINE_RUN_ENV_CONFIGMAP", "babylon-pipeline-env")
    launcher = rendered_instance()["run_launcher"]
    assert isinstance(launcher, dict)
    result = process_config(K8sRunLauncher.config_type(), launcher["config"])  # type: ignore[no-untyped-call]
    assert result.success, result.errors
    assert result.value is not None and result.value["env_secrets"] == ["babylon-env"]


def test_the_charts_limits_are_the_generated_instances() -> None:
    """Kubernetes and `babylon dev` hold training to the same limits: the pool and one training run at a time."""
    local = instance_config("postgresql://postgres@127.0.0.1:5432/babylon")["concurrency"]
    assert isinstance(local, dict)
    chart = rendered_instance()["concurrency"]
    assert isinstance(chart, dict)
    assert chart["pools"] == local["pools"]
    runs = local["runs"]
    assert isinstance(runs, dict)
    assert chart["runs"]["tag_concurrency_limits"] == runs["tag_concurrency_limits"]


def test_training_runs_ask_kubernetes_for_a_gpu_node() -> None:
    tags = training_job.tags
    assert tags is not None
    config = get_user_defined_k8s_config({K8S_CONFIG_TAG: tags[K8S_CONFIG_TAG]})
    assert config.container_config["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    assert config.pod_spec_config["node_selector"] == {"nvidia.com/gpu.present": "true"}
    assert config.pod_spec_config["tolerations"][0]["key"] == "nvidia.com/gpu"


def test_the_image_holds_the_code_location_the_values_load() -> None:
    """Docker cannot build here (no daemon, no network for pip): the Dockerfile is checked against the project."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    for package in pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]:
        assert f"COPY {package} ./{package}" in dockerfile
    assert "pip install --no-cache-dir '.[kubernetes]'" in dockerfile
    assert "dagster-k8s==0.29.27" in pyproject["project"]["optional-dependencies"]["kubernetes"]
    (deployment,) = VALUES["dagster-user-deployments"]["deployments"]
    assert deployment["dagsterApiGrpcArgs"] == ["--module-name", pyproject["tool"]["dagster"]["module_name"]]
    assert {"name": "BABYLON_PROFILE", "value": "production"} in deployment["env"]
