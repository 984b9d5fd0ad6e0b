"""The tags the two jobs (jobs.py) put on their runs, named by the instance's limits (instance.py), the
training sensor and the training assets. No Dagster import: `babylon` writes dagster.yaml without it."""

# Every training run and step carries this tag; the instance runs one such run at a time and the
# `training` pool has one slot.
TRAINING_WORKLOAD_TAG = "workload"
TRAINING_WORKLOAD = "training"
# Automatic re-executions of a failed window chain run (its job's `dagster/max_retries` tag).
WINDOW_CHAIN_RETRIES = 2
