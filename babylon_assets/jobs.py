"""The two asset jobs the sensors and `babylon train` launch.

Selections name asset keys, so this module imports no asset code and the sensors can import it.
Their tags place the runs wherever the instance launches them: the Celery queue (tools/workers.py) and, on
Kubernetes (deploy/), the training pod's GPU. Under the default run launcher both are inert.
"""

import dagster as dg
from pydantic import JsonValue

from babylon_assets.run_tags import (
    QUEUE_TAG,
    TRAINING_QUEUE,
    TRAINING_WORKLOAD,
    TRAINING_WORKLOAD_TAG,
    WINDOW_CHAIN_RETRIES,
    WINDOWS_QUEUE,
)

WINDOW_ASSETS = ("raw_trajectories", "validated_windows", "scored_groups")

# dagster-k8s reads this run tag (dagster_k8s.job.USER_DEFINED_K8S_CONFIG_KEY) for the run's pod: one
# NVIDIA GPU, on a node that has one (the label and taint NVIDIA's GPU operator puts on GPU nodes).
K8S_CONFIG_TAG = "dagster-k8s/config"
TRAINING_POD: dict[str, JsonValue] = {
    "container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}}},
    "pod_spec_config": {
        "node_selector": {"nvidia.com/gpu.present": "true"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    },
}

# Ingest, validate and score one window (one partition per run); checks of these assets run too.
# The steps form a chain, so a process per step (the multiprocess default) buys no parallelism and
# costs a Python start with the whole import tree per step: run them in the run's own process.
window_chain_job = dg.define_asset_job(
    "window_chain_job",
    selection=dg.AssetSelection.assets(*WINDOW_ASSETS),
    executor_def=dg.in_process_executor,
    # A failed chain (a judge outage, a lost connection, a killed worker) is re-executed from its failed
    # step by the daemon's run retries; every step replaces its window's results, so a rerun is safe.
    tags={QUEUE_TAG: WINDOWS_QUEUE, "dagster/max_retries": str(WINDOW_CHAIN_RETRIES)},
    description="Ingest, validate and score one window.",
)

# The workload tag puts every training run under the instance's concurrency limit of one.
training_job = dg.define_asset_job(
    "training_job",
    # Evaluation and its blocking promotion check follow every training: `best` moves only on evidence.
    selection=dg.AssetSelection.assets("trained_checkpoint", "policy_evaluation"),
    # Never re-executed by the daemon's run retries (the Celery profile retries untagged runs once): a
    # training step is not repeated behind the registry's back; the training sensor starts the next one.
    tags={
        TRAINING_WORKLOAD_TAG: TRAINING_WORKLOAD,
        QUEUE_TAG: TRAINING_QUEUE,
        K8S_CONFIG_TAG: TRAINING_POD,
        "dagster/max_retries": "0",
    },
    executor_def=dg.in_process_executor,
    description="Train the policy on fresh scored windows, register a checkpoint, evaluate it and promote it "
    "if it is better.",
)
