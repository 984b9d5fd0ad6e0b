"""The two asset jobs the sensors and `babylon train` launch.

Selections name asset keys, so this module imports no asset code and the sensors can import it.
"""

import dagster as dg

from babylon_assets.instance import TRAINING_WORKLOAD, TRAINING_WORKLOAD_TAG, WINDOW_CHAIN_RETRIES

WINDOW_ASSETS = ("raw_trajectories", "validated_windows", "scored_groups")

# Ingest, validate and score one window (one partition per run); checks of these assets run too.
# The steps form a chain, so a process per step (the multiprocess default) buys no parallelism and
# costs a Python start with the whole import tree per step: run them in the run's own process.
window_chain_job = dg.define_asset_job(
    "window_chain_job",
    selection=dg.AssetSelection.assets(*WINDOW_ASSETS),
    executor_def=dg.in_process_executor,
    # A failed chain (a judge outage, a lost connection, a killed worker) is re-executed from its failed
    # step by the daemon's run retries; every step replaces its window's results, so a rerun is safe.
    tags={"dagster/max_retries": str(WINDOW_CHAIN_RETRIES)},
    description="Ingest, validate and score one window.",
)

# The tag puts every training run under the instance's concurrency limit of one.
training_job = dg.define_asset_job(
    "training_job",
    selection=dg.AssetSelection.assets("trained_checkpoint"),
    tags={TRAINING_WORKLOAD_TAG: TRAINING_WORKLOAD},
    executor_def=dg.in_process_executor,
    description="Train the policy on fresh scored windows and register a checkpoint.",
)
