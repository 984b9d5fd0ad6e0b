"""Helpers of the tests and the benchmarks: a local judge server, trajectory rows, the project's Dagster
instance, a local Celery deployment, SmolLM2 converted once, and scored trajectories and checkpoints for training."""
