"""The two asset jobs the sensors and `babylon train` launch.

Selections name asset keys, so this module imports no asset code and the sensors can import it.
"""

import dagster as dg

from babylon_assets.instance import TRAINING_WORKLOAD, TRAINING_WORKLOAD_TAG

WINDOW_ASSETS = ("raw_trajectories", "validated_windows", "scored_groups")

# Ingest, validate and score one window (one partition per run); checks of these assets run too.
# The steps form a chain, so a process per step (the multiprocess default) buys no parallelism and
# costs a Python start with the whole import tree per step: run them in the run's own process.
window_chain_job = dg.define_asset_job(
    "window_chain_job",
    selection=dg.AssetSelection.assets(*WINDOW_ASSETS),
    executor_def=dg.in_process_executor,
    description="Ingest, validate and score one window.",
)

# The tag puts every training run under the instance's concurrency limit of one.
training_job = dg.define_asset_job(
    "training_job",
    # Evaluation and its blocking promotion check follow every training: `best` moves only on evidence.
    selection=dg.AssetSelection.assets("trained_checkpoint", "policy_evaluation"),
    tags={TRAINING_WORKLOAD_TAG: TRAINING_WORKLOAD},
    executor_def=dg.in_process_executor,
    description="Train the policy on fresh scored windows, register a checkpoint, evaluate it and promote it "
    "if it is better.",
)
