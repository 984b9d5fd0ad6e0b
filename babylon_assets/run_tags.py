"""The tags the two jobs (jobs.py) put on their runs, named by the instance's limits (tools/instance.py), the
training sensor and the training assets. No Dagster import: `babylon` writes dagster.yaml without it."""

from typing import Literal

# Every training run and step carries this tag; the instance runs one such run at a time and the
# `training` pool has one slot.
TRAINING_WORKLOAD_TAG = "workload"
TRAINING_WORKLOAD = "training"
# Automatic re-executions of a failed window chain run (its job's `dagster/max_retries` tag).
WINDOW_CHAIN_RETRIES = 2

# dagster-celery's run tag naming the queue (dagster_celery.tags.DAGSTER_CELERY_QUEUE_TAG); a constant here
# so that jobs.py does not import celery.
QUEUE_TAG = "dagster-celery/queue"

# The queues `babylon worker` serves (tools/workers.py).
Queue = Literal["windows", "training"]
WINDOWS_QUEUE: Queue = "windows"
TRAINING_QUEUE: Queue = "training"
