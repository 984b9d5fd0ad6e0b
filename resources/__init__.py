"""The Dagster resources (database, judge, trainer, wandb); import each from its module."""
