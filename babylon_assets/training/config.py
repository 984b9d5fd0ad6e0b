"""Run config of one training materialization: the parameters users know from `babylon train`."""

import dagster as dg

from babylon_assets.training.parameters import TrainingParameters


class TrainingConfig(dg.Config, TrainingParameters):
    """What to train on and how much (see TrainingParameters); the model itself is the `trainer` resource's."""
